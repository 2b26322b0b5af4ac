"""The synthetic multimodal dataset: city alerts from a bursty Hawkes process, plain or
modulated by a hidden regime, or from a process whose every sequence has its own profile
(``SynthConfig.process``).

**Process "hawkes"** (the default). Times and types come from ``mmtpp.hawkes``. The default
process (``default_hawkes``) is bursty by construction: 85% of the alerts are triggered by
earlier ones within ~1/β = 0.1 min, so bursts are runs of short, nearly equal gaps (which
adaptive compression collapses) separated by quiet periods of ~11 min (1/Σμ). An alert mostly
triggers one of its own type and sometimes one of the next type, so the history predicts the
next type well beyond the majority class without making it trivial. It forgets within a few
events: its Bayes-optimal predictor gains nothing from events beyond the last ~14.

**Process "regime"** (``mmtpp.regime``): the same kind of bursts, but the base rate and type
mix of the alerts that start them follow a hidden regime that lasts ~500 events, which only
a long history — or the images — reveal. ``default_regime``, time unit minutes:

- R = 4 regimes, one per type: regime z's immigrants are of type z with probability 0.625
  and of each other type with 0.125; base rates 0.25, 0.4, 0.63, 1.0 per minute;
- excitation α = 0.75/K everywhere (branching ratio 0.75; a child's type is uniform, so the
  type structure is the regime's alone), β = 10/min: 65% of the gaps are within 0.2 min of
  the previous one (the absolute compression rule at Δ = 0.2 fires on them; 7.5% are within a
  factor e^0.2, the relative rule);
- Q: leave regime z after 500 of its events on average, to any other regime uniformly
  (reversible, as ``mmtpp.regime`` needs; every regime then holds a quarter of the events).

Each event's image shows its regime as the map's background colour (``REGIME_BACKGROUNDS``,
brightness nudged by ±6), except for a fraction ``regime_image_noise`` (15%) of the images,
which show another regime drawn uniformly; the text does not mention it.

Measured on 200 sequences (54,278 targets, ``oracle.predictions_for_histories``): type
accuracy / time NLL (nats) of the Bayes-optimal predictor with all history 0.335 / −0.664,
with the last 14 events 0.311 / −0.657, with the regime of the last event known (a perfect
image reader) 0.342 / −0.666; majority type 0.271, Poisson 0.660. So history beyond 14 events
is worth +2.4 points of accuracy and 0.006 nats of time NLL here (the plain default: +0.01
points, 0.002 nats). More is out of reach for this family: the regime's evidence per event
cannot be both small enough that 14 events leave it open and large enough that knowing it
changes the next event much. The gains of seeing j events instead of j − 1 add up, over all
j, to at most the regime's entropy log R, and they shrink with j, so the gain at L = 14 is
≲ log 4/15 ≈ 0.09 nats for time and type together. The time law depends on the regime through
one number, μ_z, so its gain is bounded like learning one rate from the events seen,
≈ 1/(2·14) ≈ 0.04 nats. Every variant measured (R 3–16, branching 0.3–0.95, β 0.5–20, rates
up to 400× apart) stayed below 0.045 nats; accuracy gains reached 4–5 points (screens of
~15k targets) only with branching ≤ 0.5, where compression fires on 21–36% of the gaps
instead of 65%. R = 4 rather than 3 because each type then has its regime: +2.4 points
against +1.8 for R = 3 (rates 0.25, 0.5, 1.0, the rest equal), and the majority type is
weaker (0.271 against 0.287).

**Process "profile"** (``mmtpp.profile``): every sequence draws its own type-transition
matrix and per-type gap rates, so a long history is worth what it teaches about ~K² + K
parameters of this sequence — not a few nats of one latent label. ``default_profile``, time
unit minutes, K = 6 types (``num_types`` defaults to 6 for this process):

- row k of the transition matrix ~ Dirichlet(0.5·1 + 4·e_f) around a favourite next type f
  drawn uniformly per row: after type k the next type is the row's favourite with probability
  0.64 on average, the rest spread unevenly — each sequence its own routine;
- the gap after a type-k event ~ Gamma(3, λ_k) (coefficient of variation 0.58), with λ_k ~
  Gamma(1.2, 0.05 min): mean rate 24/min, and 95% of the rates within a factor ~80, so some
  types make runs of short, similar gaps: 57% of the gaps are within 0.2 min of the previous
  one (the absolute compression rule at Δ = 0.2 fires on them), 12% within a factor e^0.2;
- each event's image shows, as the map's background colour (``HINT_BACKGROUNDS``: a pale
  shade of the hinted type's marker colour, brightness nudged by ±6), the favourite next type
  after the event's own type — except on 15% of the images, which show another type drawn
  uniformly. The text does not; the marker still shows the event's own zone and type.

Measured on 200 sequences (seed 0: 54,478 events, 54,278 targets; ``ProfileOracle``): type
accuracy / type NLL / time NLL (nats) with all history 0.632 / 1.063 / −0.770, with the last
14 events 0.530 / 1.307 / −0.611, i.e. +10.2 points (95% interval 9.7–10.7, bootstrap over
sequences) and 0.159 nats (0.152–0.166) of time NLL for the events beyond the last 14 (seed
1: +10.1 points, 0.155 nats). A perfect reader of the images reaches 0.656 with all history,
0.638 with the last 14 events — more than all history without images — and 0.567 with the
last event alone; knowing the sequence's own parameters, 0.663 / 0.949 / −0.822. Majority
type 0.178; Poisson time NLL 0.406, type NLL 1.790. Why these values: a rate learnt from m
gaps costs ~1/(2m) nats per gap over the true one (an unseen rate far more), and a row's
favourite needs a few transitions to show; in 14 events each of the 6 types follows ~2 times,
in ~275 events ~45 times. Gamma gaps with shape 3 instead of exponential ones make the gaps
more regular (the premise of compression) and the rates worth more: 0.159 nats against 0.106
for shape 1 and 0.140 for shape 2 (same seed); 6 types rather than 4 give +10.2 points and
0.159 nats against +5.6 and 0.101; the favourite's weight 4 makes the hinted type the likely
next one, so an image is a shortcut that the times and types give only after dozens of
events. RMSE is a poor guide here: slow
types (rates near the prior's lower tail) make a few long gaps that dominate the squares.

Each alert also happens in a zone of a 3×3 city grid: the sequence's home zone shifted by the
type, or anywhere (25%). The zone is named in the text and drawn as the marker position of a
small map image whose marker colour and shape show the type, so text and image carry what
the alert was and where it happened.

Everything is seeded per sequence from (seed, index), with separate streams for the process
(for 'profile': the sequence's profile, then its events), the modalities and the latent view
(which regime or which hint each image shows, and its tint): sequences can be generated in
any order or in parallel, ``sequence_regimes`` / ``sequence_profile`` re-draw a sequence's
regimes / profile and hints without rendering, and the Bayes-optimal summary in
``dataset.json`` needs only the cheap process and view streams.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmtpp import profile, regime
from mmtpp.events import IMAGES_DIR, DatasetInfo, EventSequence, write_dataset
from mmtpp.hawkes import BayesPredictions, HawkesParams, simulate
from mmtpp.oracle import HawkesOracle, Oracle, ProfileOracle, RegimeOracle
from mmtpp.profile import ProfileParams, SequenceProfile
from mmtpp.regime import RegimeParams, uniform_switching

TYPE_NAMES = ("traffic", "power", "water", "noise", "fire", "medical")
ZONES = (
    "north-west",
    "north",
    "north-east",
    "west",
    "centre",
    "east",
    "south-west",
    "south",
    "south-east",
)
STREETS = (
    "Elm Street",
    "Harbour Road",
    "Mill Lane",
    "King Avenue",
    "Station Square",
    "Oak Boulevard",
    "Canal Walk",
    "Bridge Street",
    "Market Place",
    "Hill Road",
    "Chapel Row",
    "Quarry Lane",
    "Foundry Yard",
    "Willow Crescent",
)
TIMES_OF_DAY = ("early", "this morning", "around noon", "this afternoon", "tonight", "just now")
SEVERITY = ("minor", "moderate", "serious", "major")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "traffic": (
        "Traffic jam near {street} in the {zone} district, about {n} cars queued {when}.",
        "{Sev} collision reported on {street} ({zone}); {n} vehicles delayed.",
        "Signal failure at {street}, {zone} side: expect {n} minutes of delay.",
        "Lane closure on {street} in the {zone} quarter after a {sev} breakdown.",
        "Bus diverted around {street} ({zone}), {n} stops skipped {when}.",
    ),
    "power": (
        "Power outage across {n} buildings in the {zone} district {when}.",
        "Voltage drop reported on {street} ({zone}), {n} homes affected.",
        "Substation alarm in the {zone} quarter; crews dispatched to {street}.",
        "{Sev} cable fault under {street} leaves the {zone} side dark.",
        "Streetlights out along {street} in the {zone} district, {n} lamps dark.",
    ),
    "water": (
        "Water main leak on {street} in the {zone} district, pressure down {n} percent.",
        "Flooded underpass near {street} ({zone}) with {n} cm of water {when}.",
        "Boil-water notice issued for {n} streets in the {zone} quarter.",
        "{Sev} burst pipe on {street}, {zone} side, road partly closed.",
        "Low water pressure reported by {n} households around {street} ({zone}).",
    ),
    "noise": (
        "Noise complaint from {street} in the {zone} district, {n} dB measured {when}.",
        "Late construction work on {street} ({zone}) reported by {n} residents.",
        "Street party near {street}, {zone} side, {n} complaints so far.",
        "Car alarm sounding for {n} minutes on {street} in the {zone} quarter.",
        "{Sev} disturbance from a bar on {street} ({zone}) reported {when}.",
    ),
    "fire": (
        "Smoke seen above {street} in the {zone} district {when}, {n} crews sent.",
        "{Sev} kitchen fire in a flat on {street} ({zone}), building evacuated.",
        "Bin fire next to {street}, {zone} side, put out in {n} minutes.",
        "Fire alarm at a warehouse on {street} in the {zone} quarter, {n} staff outside.",
    ),
    "medical": (
        "Ambulance called to {street} in the {zone} district {when}, {n} minutes away.",
        "{Sev} fall reported on {street} ({zone}); paramedics on scene.",
        "Heat exhaustion cases near {street}, {zone} side, {n} people treated.",
        "First aid requested at the market on {street} in the {zone} quarter.",
    ),
}
TYPE_COLOURS = (
    (220, 40, 40),
    (240, 190, 0),
    (30, 110, 230),
    (150, 60, 200),
    (240, 120, 20),
    (20, 160, 90),
)
MARKER_SHAPES = ("circle", "square", "triangle", "diamond", "circle", "square")
HOME_ZONE_SHIFT_PROB = 0.75  # otherwise the zone is uniform
JITTER_STEPS = 3  # marker jitter, quantised so a few hundred distinct images are cached
BAYES_SAMPLE_TARGETS = 20_000  # targets for the Bayes-optimal summary in dataset.json
PROCESSES = ("hawkes", "regime", "profile")
DEFAULT_EVENTS = {"hawkes": (150, 400), "regime": (150, 400), "profile": (150, 400)}
DEFAULT_TYPES = {"hawkes": 4, "regime": 4, "profile": 6}  # num_types when not given
# Map background per regime (pale, so the type markers stay clear); TINTS nudge each image's
# background brightness so that the colour is not one exact value per regime.
REGIME_BACKGROUNDS = (
    (236, 232, 218),  # sand (the plain Hawkes maps' colour)
    (196, 232, 192),  # green
    (196, 214, 250),  # blue
    (248, 204, 200),  # rose
    (230, 196, 250),  # lilac
    (248, 242, 176),  # yellow
)
TINTS = (-6, 0, 6)  # colours >= 50 apart (L1), a tint moves one by <= 18: each names a regime
# The default regime process (see the module docstring for why these values).
REGIME_MU = (0.25, 0.4, 0.63, 1.0)  # base (immigrant) rate per regime, per minute
REGIME_FAVOURITE = 0.5  # extra share of a regime's immigrants of its own type (z mod K)
REGIME_BRANCHING = 0.75  # spectral radius of α: the share of events that are triggered
REGIME_SELF = 0.0  # share of a trigger's children of its own type (the rest: uniform)
REGIME_BETA = 10.0  # 1/min: children follow within ~0.1 min, in runs of near-equal gaps
REGIME_DWELL_EVENTS = 500.0  # mean events per regime visit
HISTORY_LENGTHS = (1, 2, 4, 8, 14, 16, 32, 64, 128, 256)  # for the value-of-history curve
# Map background per hinted type (process 'profile'): an index into REGIME_BACKGROUNDS, a pale
# shade of the type's marker colour (traffic red → rose, power yellow → yellow, water blue →
# blue, noise purple → lilac, fire orange → sand, medical green → green).
HINT_BACKGROUNDS = (3, 5, 2, 4, 0, 1)
# The default profile process (see the module docstring for why these values).
PROFILE_CONCENTRATION = 0.5  # α: Dirichlet weight of every next type
PROFILE_FAVOURITE_WEIGHT = 4.0  # κ: extra weight of each row's favourite next type
PROFILE_RATE_SHAPE = 1.2  # a: gap rates ~ Gamma(a, b), ~2 orders of magnitude apart
PROFILE_RATE_TIME = 0.05  # b, minutes: the rates' prior mean a/b = 24/min
PROFILE_GAP_SHAPE = 3.0  # s: gaps ~ Gamma(s, λ), coefficient of variation 1/√3
PROFILE_IMAGE_NOISE = 0.15  # ε: images whose hint is another type than the favourite


def default_hawkes(num_types: int = 4) -> HawkesParams:
    """The built-in bursty process (time unit: minutes).

    β = 10/min: an alert's excitation fades within ~0.1 min, so triggered alerts follow at
    near-equal short gaps. α[j, j] = 0.7 (an alert mostly triggers its own type) and
    α[j+1, j] = 0.15 (sometimes the next type), so the branching ratio is 0.85: 85% of the
    events belong to bursts. The base rates decrease with the type (0.04 … 0.01/min), so the
    classes are unbalanced (majority ≈ 0.31) and quiet periods last ~11 min.
    """
    if not 1 <= num_types <= len(TYPE_NAMES):
        raise ValueError(f"num_types must be in 1..{len(TYPE_NAMES)}, got {num_types}")
    alpha = np.zeros((num_types, num_types))
    for j in range(num_types):
        alpha[j, j] += 0.7
        alpha[(j + 1) % num_types, j] += 0.15
    mu = np.geomspace(0.04, 0.01, num_types) if num_types > 1 else np.array([0.04])
    return HawkesParams(mu=[round(float(m), 6) for m in mu], alpha=alpha.tolist(), beta=10.0)


def default_profile(num_types: int = 6) -> ProfileParams:
    """The built-in profile process (time unit: minutes); see the module docstring."""
    if not 2 <= num_types <= len(TYPE_NAMES):
        raise ValueError(f"num_types must be in 2..{len(TYPE_NAMES)}, got {num_types}")
    return ProfileParams(
        num_types=num_types,
        concentration=PROFILE_CONCENTRATION,
        favourite_weight=PROFILE_FAVOURITE_WEIGHT,
        rate_shape=PROFILE_RATE_SHAPE,
        rate_time=PROFILE_RATE_TIME,
        gap_shape=PROFILE_GAP_SHAPE,
        image_noise=PROFILE_IMAGE_NOISE,
    )


def default_regime(num_types: int = 4) -> RegimeParams:
    """The built-in regime-modulated process (time unit: minutes); see the module docstring."""
    if not 1 <= num_types <= len(TYPE_NAMES):
        raise ValueError(f"num_types must be in 1..{len(TYPE_NAMES)}, got {num_types}")
    regimes = len(REGIME_MU)
    mix = np.full((regimes, num_types), (1.0 - REGIME_FAVOURITE) / num_types)
    for z in range(regimes):
        mix[z, z % num_types] += REGIME_FAVOURITE
    alpha = REGIME_BRANCHING * (REGIME_SELF * np.eye(num_types) + (1.0 - REGIME_SELF) / num_types)
    leave = np.ones(regimes)  # placeholder rates: only the event rates are needed first
    draft = RegimeParams(
        list(REGIME_MU), mix.tolist(), uniform_switching(leave), alpha.tolist(), REGIME_BETA
    )
    # leave each regime after REGIME_DWELL_EVENTS of its events on average (rounded for a
    # readable dataset.json; the diagonal is set so that the rows still sum to 0)
    switch = np.round(uniform_switching(draft.event_rates().sum(axis=1) / REGIME_DWELL_EVENTS), 9)
    np.fill_diagonal(switch, 0.0)
    np.fill_diagonal(switch, -switch.sum(axis=1))
    return RegimeParams(
        mu=list(REGIME_MU),
        mix=mix.tolist(),
        switch=switch.tolist(),
        alpha=[[round(float(x), 6) for x in row] for row in alpha],
        beta=REGIME_BETA,
    )


@dataclass
class SynthConfig:
    """What to generate (``mmtpp data synth``). ``hawkes`` / ``regime`` / ``profile`` may be
    dicts (from YAML/JSON)."""

    num_sequences: int = field(default=200, metadata={"help": "sequences to generate"})
    events_per_sequence: tuple[int, int] | None = field(
        default=None,
        metadata={
            "help": "(min, max) events per sequence, uniform; None: the process's default "
            f"{DEFAULT_EVENTS}"
        },
    )
    num_types: int | None = field(
        default=None,
        metadata={
            "help": f"event types, 1..{len(TYPE_NAMES)}: {TYPE_NAMES}; None: the process's "
            f"default {DEFAULT_TYPES}"
        },
    )
    process: str = field(
        default="hawkes",
        metadata={
            "help": "'hawkes' (bursty multivariate Hawkes), 'regime' (Hawkes modulated by a "
            "hidden regime that the images show and the text does not) or 'profile' (each "
            "sequence its own transition matrix and gap rates, which the images hint at)"
        },
    )
    hawkes: HawkesParams | dict[str, Any] | None = field(
        default=None,
        metadata={"help": "process 'hawkes': {mu, alpha, beta}; None: default_hawkes(num_types)"},
    )
    regime: RegimeParams | dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "process 'regime': {mu, mix, switch, alpha, beta}; None: "
            "default_regime(num_types)"
        },
    )
    profile: ProfileParams | dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "process 'profile': {num_types, concentration, favourite_weight, "
            "rate_shape, rate_time, gap_shape, image_noise}; None: default_profile(num_types)"
        },
    )
    regime_image_noise: float = field(
        default=0.15,
        metadata={
            "help": "process 'regime': fraction of images whose background shows another "
            "regime (drawn uniformly) instead of the true one"
        },
    )
    text: bool = field(default=True, metadata={"help": "give every event a sentence"})
    images: bool = field(default=True, metadata={"help": "give every event a map image"})
    image_size: int = field(
        default=56, metadata={"help": "square image side in pixels (56: 4 Qwen2.5-VL tokens)"}
    )
    image_storage: str = field(
        default="bytes",
        metadata={"help": "'bytes' (PNG inside the parquet rows) or 'files' (under images/)"},
    )
    seed: int = field(default=0, metadata={"help": "random seed (>= 0)"})

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(f"synth: process must be one of {PROCESSES}, got {self.process!r}")
        if self.num_types is None:
            self.num_types = DEFAULT_TYPES[self.process]
        if not 1 <= self.num_types <= len(TYPE_NAMES):
            raise ValueError(f"synth: num_types must be in 1..{len(TYPE_NAMES)}")
        for name in ("hawkes", "regime", "profile"):
            if name != self.process and getattr(self, name) is not None:
                raise ValueError(f"synth: {name} parameters given but process is {self.process!r}")
        if self.process == "hawkes":
            if isinstance(self.hawkes, dict):
                self.hawkes = HawkesParams.from_dict(self.hawkes)
            if self.hawkes is None:
                self.hawkes = default_hawkes(self.num_types)
            found = self.hawkes.num_types
        elif self.process == "profile":
            if isinstance(self.profile, dict):
                self.profile = ProfileParams.from_dict(self.profile)
            if self.profile is None:
                if self.num_types < 2:
                    raise ValueError("synth: process 'profile' needs num_types >= 2")
                self.profile = default_profile(self.num_types)
            found = self.profile.num_types
        else:
            if isinstance(self.regime, dict):
                self.regime = RegimeParams.from_dict(self.regime)
            if self.regime is None:
                self.regime = default_regime(self.num_types)
            found = self.regime.num_types
            if self.regime.num_regimes > len(REGIME_BACKGROUNDS):
                raise ValueError(
                    f"synth: regime images show at most {len(REGIME_BACKGROUNDS)} regimes, "
                    f"got {self.regime.num_regimes}"
                )
            if not 0 <= self.regime_image_noise <= 1:
                raise ValueError(
                    f"synth: regime_image_noise must be in [0, 1], got {self.regime_image_noise}"
                )
        if found != self.num_types:
            raise ValueError(
                f"synth: {self.process} has {found} types but num_types is {self.num_types}"
            )
        if self.num_sequences < 1:
            raise ValueError(f"synth: num_sequences must be >= 1, got {self.num_sequences}")
        if self.events_per_sequence is None:
            self.events_per_sequence = DEFAULT_EVENTS[self.process]
        bounds = [int(v) for v in self.events_per_sequence]
        if len(bounds) != 2 or not 2 <= bounds[0] <= bounds[1]:
            raise ValueError(
                f"synth: events_per_sequence must be (min, max) with 2 <= min <= max, "
                f"got {self.events_per_sequence}"
            )
        self.events_per_sequence = (bounds[0], bounds[1])
        if self.image_storage not in ("bytes", "files"):
            raise ValueError(
                f"synth: image_storage must be 'bytes' or 'files', got {self.image_storage!r}"
            )
        if not 28 <= self.image_size <= 1024:
            raise ValueError(f"synth: image_size must be 28..1024 pixels, got {self.image_size}")
        if self.seed < 0:
            raise ValueError(f"synth: seed must be >= 0, got {self.seed}")

    @property
    def params(self) -> HawkesParams:
        """The Hawkes parameters of process 'hawkes' (``process_params`` for either)."""
        if not isinstance(self.hawkes, HawkesParams):
            raise ValueError(f"synth: process is {self.process!r}; use process_params")
        return self.hawkes

    @property
    def process_params(self) -> HawkesParams | RegimeParams | ProfileParams:
        """The true process's parameters (resolved in ``__post_init__``)."""
        params = {"hawkes": self.hawkes, "regime": self.regime, "profile": self.profile}[
            self.process
        ]
        assert isinstance(params, (HawkesParams, RegimeParams, ProfileParams))
        return params

    @property
    def oracle(self) -> Oracle:
        """The Bayes-optimal predictor of the true process."""
        return _as_oracle(self.process_params)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_sequence"] = list(self.events_per_sequence or ())
        return out


@functools.lru_cache(maxsize=4096)
def draw_map(
    zone: int,
    type_id: int,
    size: int,
    jitter: tuple[int, int] = (0, 0),
    background: tuple[int, int, int] = REGIME_BACKGROUNDS[0],
) -> bytes:
    """A small map patch as PNG bytes: blocks and streets on a 3×3 grid, and a marker in the
    event's zone whose colour and shape show its type. ``jitter`` (each in −1..1) nudges the
    marker by up to 15% of a cell; ``background`` is the land colour (the regime, for process
    'regime'). Cached: a dataset has only zones × types × 9 (× backgrounds) images."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    road = max(1, size // 28)
    for i in (1, 2):
        draw.line([(i * cell, 0), (i * cell, size)], fill=(255, 255, 255), width=road + 1)
        draw.line([(0, i * cell), (size, i * cell)], fill=(255, 255, 255), width=road + 1)
    draw.line([(0, size * 0.8), (size, size * 0.55)], fill=(150, 190, 230), width=road)  # river
    cx = (zone % 3 + 0.5 + 0.15 * jitter[0]) * cell
    cy = (zone // 3 + 0.5 + 0.15 * jitter[1]) * cell
    r = cell * 0.32
    colour = TYPE_COLOURS[type_id % len(TYPE_COLOURS)]
    shape = MARKER_SHAPES[type_id % len(MARKER_SHAPES)]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    buf = io.BytesIO()
    image.quantize(colors=16).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def zones_for(types: np.ndarray, home: int, rng: np.random.Generator) -> np.ndarray:
    """Zone per event: the home zone shifted by the type, or (25%) anywhere."""
    zones = (home + types) % len(ZONES)
    wander = rng.random(types.size) >= HOME_ZONE_SHIFT_PROB
    zones[wander] = rng.integers(0, len(ZONES), int(wander.sum()))
    return zones


def make_text(type_id: int, zone: int, rng: np.random.Generator) -> str:
    """One sentence about the alert, naming its zone (8–20 words)."""
    templates = TEMPLATES[TYPE_NAMES[type_id]]
    sev = SEVERITY[int(rng.integers(len(SEVERITY)))]
    return templates[int(rng.integers(len(templates)))].format(
        zone=ZONES[zone],
        street=STREETS[int(rng.integers(len(STREETS)))],
        n=int(rng.integers(2, 95)),
        when=TIMES_OF_DAY[int(rng.integers(len(TIMES_OF_DAY)))],
        sev=sev,
        Sev=sev.capitalize(),
    )


def _streams(cfg: SynthConfig, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators of sequence ``index``: the process, the modalities (zones,
    text, marker jitter) and the regime view (which regime each image shows, its tint)."""
    seeds = np.random.SeedSequence([cfg.seed, index]).spawn(3)  # the first two as ever
    return tuple(np.random.default_rng(s) for s in seeds)


def _simulate(
    cfg: SynthConfig, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | SequenceProfile | None]:
    """Times, types and what else defines sequence ``index``: the regime of every event
    (process 'regime'), the sequence's profile (process 'profile') or None."""
    rng = _streams(cfg, index)[0]
    lo, hi = cfg.events_per_sequence or DEFAULT_EVENTS[cfg.process]
    count = int(rng.integers(lo, hi + 1))
    params = cfg.process_params
    if isinstance(params, RegimeParams):
        return regime.simulate(params, rng, num_events=count)
    if isinstance(params, ProfileParams):
        return profile.simulate(params, rng, num_events=count)
    times, types = simulate(params, rng, num_events=count)
    return times, types, None


def simulate_sequence(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and types of sequence ``index`` (without rendering text or images)."""
    times, types, _ = _simulate(cfg, index)
    return times, types


def sequence_regimes(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(true, shown) regime of every event of sequence ``index`` (int64 [n] each), process
    'regime' only: the regime in force at the event, and the one its image's background
    shows (the true one but for a fraction ``regime_image_noise``, which shows another
    regime drawn uniformly). Re-simulated from the config: generation is deterministic per
    sequence, so these are the regimes behind ``generate_one(cfg, index)`` and its images."""
    if cfg.process != "regime":
        raise ValueError(f"synth: sequence_regimes needs process 'regime', got {cfg.process!r}")
    _, _, true = _simulate(cfg, index)
    assert isinstance(true, np.ndarray)
    return true, _shown_regimes(cfg, index, true)[0]


def sequence_profile(cfg: SynthConfig, index: int) -> tuple[SequenceProfile, np.ndarray]:
    """Process 'profile' only: the profile of sequence ``index`` (its favourites, transition
    matrix and gap rates) and the hint every event's image shows (int64 [n]: the favourite
    next type after the event's type, or for a fraction ``image_noise`` another type drawn
    uniformly). Re-simulated from the config, like ``sequence_regimes``."""
    if cfg.process != "profile":
        raise ValueError(f"synth: sequence_profile needs process 'profile', got {cfg.process!r}")
    _, types, drawn = _simulate(cfg, index)
    assert isinstance(drawn, SequenceProfile)
    return drawn, _shown_hints(cfg, index, drawn, types)[0]


def _shown_hints(
    cfg: SynthConfig, index: int, drawn: SequenceProfile, types: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The hint each image shows and its tint index (from the view stream, as the regimes)."""
    params = cfg.process_params
    assert isinstance(params, ProfileParams)
    rng = _streams(cfg, index)[2]
    shown = profile.shown_hints(params, drawn, types, rng)
    return shown, rng.integers(0, len(TINTS), size=types.size)


def _shown_regimes(cfg: SynthConfig, index: int, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The regime each image shows and its tint index (from the regime-view stream)."""
    params = cfg.process_params
    assert isinstance(params, RegimeParams)
    r, rng = params.num_regimes, _streams(cfg, index)[2]
    wrong = rng.random(true.size) < cfg.regime_image_noise
    # another regime, uniformly: shift by 1..R−1
    shift = rng.integers(1, r, size=true.size) if r > 1 else np.zeros(true.size, np.int64)
    shown = np.where(wrong, (true + shift) % r, true)
    return shown.astype(np.int64), rng.integers(0, len(TINTS), size=true.size)


def _background(regime_id: int, tint: int) -> tuple[int, int, int]:
    red, green, blue = (min(255, max(0, c + TINTS[tint])) for c in REGIME_BACKGROUNDS[regime_id])
    return red, green, blue


def generate_one(cfg: SynthConfig, index: int) -> EventSequence:
    """Sequence ``index``, identical whatever order or process generates it."""
    times, types, drawn = _simulate(cfg, index)
    _, rng, _ = _streams(cfg, index)
    zones = zones_for(types, int(rng.integers(len(ZONES))), rng)
    pairs = list(zip(types.tolist(), zones.tolist(), strict=True))
    texts: list[str | None] = [make_text(k, z, rng) for k, z in pairs] if cfg.text else []
    images: list[bytes | str | None] = []
    if cfg.images:
        jitter = rng.integers(-1, 2, size=(len(pairs), 2)).tolist()
        if drawn is None:
            images = [
                draw_map(z, k, cfg.image_size, (dx, dy))
                for (k, z), (dx, dy) in zip(pairs, jitter, strict=True)
            ]
        else:
            if isinstance(drawn, SequenceProfile):
                hints, tint = _shown_hints(cfg, index, drawn, types)
                shown = np.asarray(HINT_BACKGROUNDS)[hints]
            else:
                shown, tint = _shown_regimes(cfg, index, drawn)
            images = [
                draw_map(z, k, cfg.image_size, (dx, dy), _background(g, c))
                for (k, z), (dx, dy), g, c in zip(
                    pairs, jitter, shown.tolist(), tint.tolist(), strict=True
                )
            ]
    return EventSequence(
        seq_id=f"seq-{index:05d}", time=times, type=types, text=texts, image=images
    )


def _rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true)))


def _as_oracle(params: HawkesParams | RegimeParams | ProfileParams | Oracle) -> Oracle:
    if isinstance(params, Oracle):
        return params
    if isinstance(params, ProfileParams):
        return ProfileOracle(params)
    return RegimeOracle(params) if isinstance(params, RegimeParams) else HawkesOracle(params)


def bayes_summary(
    params: HawkesParams | RegimeParams | ProfileParams | Oracle,
    sequences: list[tuple[np.ndarray, np.ndarray]],
    history_lengths: tuple[int, ...] = (),
) -> dict[str, Any]:
    """What the Bayes-optimal predictor and simple baselines reach on ``(times, types)``.

    Every event after the first of a sequence is a target, predicted from its full history.
    Baselines: the last gap, the sample's mean gap (RMSE) and median gap (MAE), the majority
    type, and for NLL a homogeneous Poisson process with the sample's rate and type
    frequencies (NLL = −log(r·p_k) + r·τ). Baselines are fitted on the same sample, which
    flatters them slightly. With ``history_lengths``, ``value_of_history`` lists what the
    predictor reaches from only the last L events, for each L (see ``value_of_history``).
    """
    oracle = _as_oracle(params)
    kept = [(t, k) for t, k in sequences if len(t) > 1]
    parts = [(oracle.predictions(t, k), np.diff(t), k) for t, k in kept]
    gaps = np.concatenate([g for _, g, _ in parts])
    last = np.concatenate([np.r_[0.0, g[:-1]] for _, g, _ in parts])  # τ_0 = 0 convention
    target = np.concatenate([k[1:] for _, _, k in parts])
    b = {
        name: np.concatenate([getattr(p, name) for p, _, _ in parts])
        for name in ("mean_gap", "median_gap", "nll", "nll_time", "nll_type")
    }
    best = np.concatenate([p.most_probable_type for p, _, _ in parts])
    freq = np.bincount(target, minlength=oracle.num_types) / target.size
    rate = 1.0 / gaps.mean()
    with np.errstate(divide="ignore"):
        log_freq = np.log(freq)
    out = {
        "targets": int(gaps.size),
        "sequences": len(parts),
        "bayes": {
            "rmse_mean": _rmse(b["mean_gap"], gaps),
            "mae_mean": _mae(b["mean_gap"], gaps),
            "rmse_median": _rmse(b["median_gap"], gaps),
            "mae_median": _mae(b["median_gap"], gaps),
            "accuracy": float(np.mean(best == target)),
            "nll": float(b["nll"].mean()),
            "nll_time": float(b["nll_time"].mean()),
            "nll_type": float(b["nll_type"].mean()),
        },
        "last_gap": {"rmse": _rmse(last, gaps), "mae": _mae(last, gaps)},
        "mean_gap": {
            "rmse": _rmse(np.full_like(gaps, gaps.mean()), gaps),
            "mae": _mae(np.full_like(gaps, np.median(gaps)), gaps),
        },
        "majority": {"accuracy": float(freq.max())},
        "poisson": {
            "nll": float(np.mean(rate * gaps - np.log(rate) - log_freq[target])),
            "nll_time": float(np.mean(rate * gaps - np.log(rate))),
            "nll_type": float(np.mean(-log_freq[target])),
        },
    }
    if history_lengths:
        out["value_of_history"] = value_of_history(oracle, kept, history_lengths)
    return out


def _scores(parts: list[BayesPredictions], gaps: np.ndarray, target: np.ndarray) -> dict:
    """Accuracy, joint/time/type NLL and RMSE of the mean gap of predictions over targets."""
    names = ("mean_gap", "nll", "nll_time", "nll_type")
    cat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in names}
    best = np.concatenate([p.most_probable_type for p in parts])
    return {
        "accuracy": float(np.mean(best == target)),
        "nll": float(cat["nll"].mean()),
        "nll_time": float(cat["nll_time"].mean()),
        "nll_type": float(cat["nll_type"].mean()),
        "rmse_mean": _rmse(cat["mean_gap"], gaps),
    }


def value_of_history(
    oracle: Oracle, sequences: list[tuple[np.ndarray, np.ndarray]], lengths: tuple[int, ...]
) -> list[dict[str, Any]]:
    """What the Bayes-optimal predictor reaches when it sees only the last L events before
    each target, for each L in ``lengths`` (every event after the first is a target, as in
    ``bayes_summary``): one record per L with accuracy, type/time/joint NLL and RMSE of the
    mean gap. A model whose prompt holds L events cannot do better in expectation."""
    gaps = np.concatenate([np.diff(t) for t, _ in sequences])
    target = np.concatenate([k[1:] for _, k in sequences])
    per_sequence = [oracle.predictions_for_histories(t, k, lengths) for t, k in sequences]
    return [
        {"history": int(length), **_scores([p[j] for p in per_sequence], gaps, target)}
        for j, length in enumerate(lengths)
    ]


def regime_known_scores(
    params: RegimeParams, sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """What a predictor that also knows the regime of each target's previous event reaches on
    ``(times, types, regimes)`` (``regime.known_regime_predictions``): the most that reading
    the images' regime could add to the full-history Bayes-optimal predictor."""
    gaps = np.concatenate([np.diff(t) for t, _, _ in sequences])
    target = np.concatenate([k[1:] for _, k, _ in sequences])
    parts = [regime.known_regime_predictions(params, t, k, z) for t, k, z in sequences]
    return _scores(parts, gaps, target)


def image_reader_scores(
    params: ProfileParams,
    sequences: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    lengths: tuple[int, ...] = (),
) -> dict[str, Any]:
    """What a perfect reader of the images reaches on ``(times, types, shown hints)`` (process
    'profile'): ``bayes`` with all history and ``value_of_history``, one record per L in
    ``lengths`` (as ``value_of_history``): the most reading the images could add."""
    oracle = ProfileOracle(params)
    kept = [(t, k, h) for t, k, h in sequences if len(t) > 1]
    gaps = np.concatenate([np.diff(t) for t, _, _ in kept])
    target = np.concatenate([k[1:] for _, k, _ in kept])
    lengths = tuple(lengths)
    per_sequence = [
        oracle.image_predictions_for_histories(t, k, h, (None, *lengths)) for t, k, h in kept
    ]
    scored = [_scores([p[j] for p in per_sequence], gaps, target) for j in range(len(lengths) + 1)]
    return {
        "bayes": scored[0],
        "value_of_history": [
            {"history": int(length), **s} for length, s in zip(lengths, scored[1:], strict=True)
        ],
    }


def generate(cfg: SynthConfig) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Dataset info and a lazy, deterministic iterator over the sequences.

    The info's Bayes-optimal summary (with the value-of-history curve and, for process
    'regime', what knowing the regime adds: ``regime_known``; for process 'profile', what
    reading the images adds: ``image_reader``) is computed on the first sequences (times and
    types, and the images' hints) until ``BAYES_SAMPLE_TARGETS`` targets are reached.
    """
    drawn = []
    targets = 0
    for i in range(cfg.num_sequences):
        if targets >= BAYES_SAMPLE_TARGETS:
            break
        drawn.append(_simulate(cfg, i))
        targets += len(drawn[-1][0]) - 1
    params = cfg.process_params
    summary = bayes_summary(cfg.oracle, [(t, k) for t, k, _ in drawn], HISTORY_LENGTHS)
    if isinstance(params, ProfileParams):
        with_hints = [
            (t, k, _shown_hints(cfg, i, z, k)[0])
            for i, (t, k, z) in enumerate(drawn)
            if isinstance(z, SequenceProfile)
        ]
        summary["image_reader"] = image_reader_scores(params, with_hints, HISTORY_LENGTHS)
        info = DatasetInfo(
            name="synthetic-city-alerts-profile",
            type_names=list(TYPE_NAMES[: cfg.num_types]),
            time_unit="min",
            description=(
                "Synthetic city alerts: each sequence draws its own type-transition matrix and "
                "per-type gap rates (priors in source.profile), so a long history teaches what "
                "a short one cannot; a sentence per alert naming its zone and type, and a 3x3 "
                "map image whose marker shows zone and type and whose background colour hints "
                "which type usually follows this alert's type in this sequence (another type's "
                f"colour on {params.image_noise:.0%} of the images; colours in "
                "source.hint_backgrounds)."
            ),
            source={
                "generator": cfg.to_dict(),
                "profile": params.to_dict(),
                "hint_backgrounds": [
                    list(REGIME_BACKGROUNDS[HINT_BACKGROUNDS[j]]) for j in range(params.num_types)
                ],
                "bayes_optimal": summary,
            },
        )
    elif isinstance(params, RegimeParams):
        with_regimes = [(t, k, z) for t, k, z in drawn if isinstance(z, np.ndarray) and t.size > 1]
        summary["regime_known"] = regime_known_scores(params, with_regimes)
        info = DatasetInfo(
            name="synthetic-city-alerts-regime",
            type_names=list(TYPE_NAMES[: cfg.num_types]),
            time_unit="min",
            description=(
                "Synthetic city alerts: times and types from a bursty Hawkes process whose base "
                "rate and type mix follow a hidden regime (true parameters in source.regime); "
                "a sentence per alert naming its zone and type, and a 3x3 map image whose "
                "marker shows zone and type and whose background colour shows the regime "
                f"(another regime's colour on {cfg.regime_image_noise:.0%} of the images)."
            ),
            source={
                "generator": cfg.to_dict(),
                "regime": params.to_dict(),
                "regime_backgrounds": [list(c) for c in REGIME_BACKGROUNDS[: params.num_regimes]],
                "bayes_optimal": summary,
            },
        )
    else:
        info = DatasetInfo(
            name="synthetic-city-alerts",
            type_names=list(TYPE_NAMES[: cfg.num_types]),
            time_unit="min",
            description=(
                "Synthetic city alerts: times and types from a bursty multivariate Hawkes "
                "process (true parameters in source.hawkes), a sentence and a 3x3 map image "
                "per alert showing its zone and type."
            ),
            source={
                "generator": cfg.to_dict(),
                "hawkes": params.to_dict(),
                "bayes_optimal": summary,
            },
        )
    return info, (generate_one(cfg, i) for i in range(cfg.num_sequences))


def synthesize(
    cfg: SynthConfig,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the dataset to ``out_dir``; returns the number of sequences.

    With ``image_storage="files"`` the PNGs go to ``images/<seq_id>/<i>.png`` and the rows
    hold those relative paths. ``progress(done, total)`` is called after each sequence.
    """
    out = Path(out_dir)
    info, sequences = generate(cfg)

    def stream() -> Iterator[EventSequence]:
        for done, seq in enumerate(sequences, start=1):
            if cfg.images and cfg.image_storage == "files":
                folder = out / IMAGES_DIR / seq.seq_id
                folder.mkdir(parents=True, exist_ok=True)
                refs: list[bytes | str | None] = []
                for i, data in enumerate(seq.image):
                    assert isinstance(data, bytes)
                    (folder / f"{i}.png").write_bytes(data)
                    refs.append(f"{IMAGES_DIR}/{seq.seq_id}/{i}.png")
                seq.image = refs
            if progress is not None:
                progress(done, cfg.num_sequences)
            yield seq

    return write_dataset(out, info, stream())
