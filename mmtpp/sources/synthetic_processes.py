"""The built-in processes of the synthetic dataset (``SynthConfig.process``): their default
parameters, and why these values.

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
events. RMSE is a poor guide here: slow types (rates near the prior's lower tail) make a few
long gaps that dominate the squares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmtpp.hawkes import HawkesParams
from mmtpp.profile import ProfileParams
from mmtpp.regime import RegimeParams, uniform_switching
from mmtpp.sources.city_alerts import HINT_BACKGROUNDS, REGIME_BACKGROUNDS, TYPE_NAMES

PROCESSES = ("hawkes", "regime", "profile")
DEFAULT_EVENTS = {"hawkes": (150, 400), "regime": (150, 400), "profile": (150, 400)}
DEFAULT_TYPES = {"hawkes": 4, "regime": 4, "profile": 6}  # num_types when not given
# The default regime process (see the module docstring for why these values).
REGIME_MU = (0.25, 0.4, 0.63, 1.0)  # base (immigrant) rate per regime, per minute
REGIME_FAVOURITE = 0.5  # extra share of a regime's immigrants of its own type (z mod K)
REGIME_BRANCHING = 0.75  # spectral radius of α: the share of events that are triggered
REGIME_SELF = 0.0  # share of a trigger's children of its own type (the rest: uniform)
REGIME_BETA = 10.0  # 1/min: children follow within ~0.1 min, in runs of near-equal gaps
REGIME_DWELL_EVENTS = 500.0  # mean events per regime visit
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


def dataset_record(
    params: HawkesParams | RegimeParams | ProfileParams, regime_image_noise: float
) -> tuple[str, str, dict[str, Any]]:
    """How a synthetic dataset of this process describes itself in ``dataset.json``: its name,
    its description and the process's entries of ``info.source`` (its parameters, and the
    background colours its images use)."""
    if isinstance(params, ProfileParams):
        description = (
            "Synthetic city alerts: each sequence draws its own type-transition matrix and "
            "per-type gap rates (priors in source.profile), so a long history teaches what "
            "a short one cannot; a sentence per alert naming its zone and type, and a 3x3 "
            "map image whose marker shows zone and type and whose background colour hints "
            "which type usually follows this alert's type in this sequence (another type's "
            f"colour on {params.image_noise:.0%} of the images; colours in "
            "source.hint_backgrounds)."
        )
        hints = [list(REGIME_BACKGROUNDS[HINT_BACKGROUNDS[j]]) for j in range(params.num_types)]
        source = {"profile": params.to_dict(), "hint_backgrounds": hints}
        return "synthetic-city-alerts-profile", description, source
    if isinstance(params, RegimeParams):
        description = (
            "Synthetic city alerts: times and types from a bursty Hawkes process whose base "
            "rate and type mix follow a hidden regime (true parameters in source.regime); "
            "a sentence per alert naming its zone and type, and a 3x3 map image whose "
            "marker shows zone and type and whose background colour shows the regime "
            f"(another regime's colour on {regime_image_noise:.0%} of the images)."
        )
        backgrounds = [list(c) for c in REGIME_BACKGROUNDS[: params.num_regimes]]
        source = {"regime": params.to_dict(), "regime_backgrounds": backgrounds}
        return "synthetic-city-alerts-regime", description, source
    description = (
        "Synthetic city alerts: times and types from a bursty multivariate Hawkes "
        "process (true parameters in source.hawkes), a sentence and a 3x3 map image "
        "per alert showing its zone and type."
    )
    return "synthetic-city-alerts", description, {"hawkes": params.to_dict()}
