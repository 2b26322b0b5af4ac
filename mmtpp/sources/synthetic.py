"""The synthetic multimodal dataset: city alerts from a bursty multivariate Hawkes process.

Times and types come from ``mmtpp.hawkes``. The default process (``default_hawkes``) is
bursty by construction: 85% of the alerts are triggered by earlier ones within ~1/β = 0.1 min,
so bursts are runs of short, nearly equal gaps (which adaptive compression collapses)
separated by quiet periods of ~11 min (1/Σμ). An alert mostly triggers one of its own type and
sometimes one of the next type, so the history predicts the next type well beyond the
majority class without making it trivial.

Each alert also happens in a zone of a 3×3 city grid: the sequence's home zone shifted by the
type, or anywhere (25%). The zone is named in the text and drawn as the marker position of a
small map image whose marker colour and shape show the type, so text and image carry what
the alert was and where it happened.

Everything is seeded per sequence from (seed, index), with separate streams for the process
and for the modalities: sequences can be generated in any order or in parallel, and the
Bayes-optimal summary in ``dataset.json`` needs only the cheap process stream.
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

from mmtpp.events import IMAGES_DIR, DatasetInfo, EventSequence, write_dataset
from mmtpp.hawkes import HawkesParams, bayes_predictions, simulate

TYPE_NAMES = ("traffic", "power", "water", "noise", "fire", "medical")
ZONES = ("north-west", "north", "north-east", "west", "centre", "east",
         "south-west", "south", "south-east")  # fmt: skip
STREETS = ("Elm Street", "Harbour Road", "Mill Lane", "King Avenue", "Station Square",
           "Oak Boulevard", "Canal Walk", "Bridge Street", "Market Place", "Hill Road",
           "Chapel Row", "Quarry Lane", "Foundry Yard", "Willow Crescent")  # fmt: skip
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
TYPE_COLOURS = ((220, 40, 40), (240, 190, 0), (30, 110, 230), (150, 60, 200), (240, 120, 20),
                (20, 160, 90))  # fmt: skip
MARKER_SHAPES = ("circle", "square", "triangle", "diamond", "circle", "square")
HOME_ZONE_SHIFT_PROB = 0.75  # otherwise the zone is uniform
JITTER_STEPS = 3  # marker jitter, quantised so a few hundred distinct images are cached
BAYES_SAMPLE_TARGETS = 20_000  # targets for the Bayes-optimal summary in dataset.json


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


@dataclass
class SynthConfig:
    """What to generate (``mmtpp data synth``). ``hawkes`` may be a dict (from YAML/JSON)."""

    num_sequences: int = field(default=200, metadata={"help": "sequences to generate"})
    events_per_sequence: tuple[int, int] = field(
        default=(150, 400), metadata={"help": "(min, max) events per sequence, uniform"}
    )
    num_types: int = field(
        default=4, metadata={"help": f"event types, 1..{len(TYPE_NAMES)}: {TYPE_NAMES}"}
    )
    hawkes: HawkesParams | dict[str, Any] | None = field(
        default=None,
        metadata={"help": "true process {mu, alpha, beta}; None: default_hawkes(num_types)"},
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
        if not 1 <= self.num_types <= len(TYPE_NAMES):
            raise ValueError(f"synth: num_types must be in 1..{len(TYPE_NAMES)}")
        if isinstance(self.hawkes, dict):
            self.hawkes = HawkesParams.from_dict(self.hawkes)
        if self.hawkes is None:
            self.hawkes = default_hawkes(self.num_types)
        if self.hawkes.num_types != self.num_types:
            raise ValueError(
                f"synth: hawkes has {self.hawkes.num_types} types but num_types is {self.num_types}"
            )
        if self.num_sequences < 1:
            raise ValueError(f"synth: num_sequences must be >= 1, got {self.num_sequences}")
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
        assert isinstance(self.hawkes, HawkesParams)  # resolved in __post_init__
        return self.hawkes

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_sequence"] = list(self.events_per_sequence)
        return out


@functools.lru_cache(maxsize=4096)
def draw_map(zone: int, type_id: int, size: int, jitter: tuple[int, int] = (0, 0)) -> bytes:
    """A small map patch as PNG bytes: blocks and streets on a 3×3 grid, and a marker in the
    event's zone whose colour and shape show its type. ``jitter`` (each in −1..1) nudges the
    marker by up to 15% of a cell. Cached: a dataset has only zones × types × 9 images."""
    image = Image.new("RGB", (size, size), (236, 232, 218))
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


def _streams(cfg: SynthConfig, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the process and the modalities of sequence ``index``."""
    process, modalities = np.random.SeedSequence([cfg.seed, index]).spawn(2)
    return np.random.default_rng(process), np.random.default_rng(modalities)


def simulate_sequence(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and types of sequence ``index`` (without rendering text or images)."""
    rng, _ = _streams(cfg, index)
    lo, hi = cfg.events_per_sequence
    return simulate(cfg.params, rng, num_events=int(rng.integers(lo, hi + 1)))


def generate_one(cfg: SynthConfig, index: int) -> EventSequence:
    """Sequence ``index``, identical whatever order or process generates it."""
    times, types = simulate_sequence(cfg, index)
    _, rng = _streams(cfg, index)
    zones = zones_for(types, int(rng.integers(len(ZONES))), rng)
    pairs = list(zip(types.tolist(), zones.tolist(), strict=True))
    texts: list[str | None] = [make_text(k, z, rng) for k, z in pairs] if cfg.text else []
    images: list[bytes | str | None] = []
    if cfg.images:
        jitter = rng.integers(-1, 2, size=(len(pairs), 2)).tolist()
        images = [
            draw_map(z, k, cfg.image_size, (dx, dy))
            for (k, z), (dx, dy) in zip(pairs, jitter, strict=True)
        ]
    return EventSequence(
        seq_id=f"seq-{index:05d}", time=times, type=types, text=texts, image=images
    )


def _rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true)))


def bayes_summary(
    params: HawkesParams, sequences: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """What the Bayes-optimal predictor and simple baselines reach on ``(times, types)``.

    Every event after the first of a sequence is a target, predicted from its full history.
    Baselines: the last gap, the sample's mean gap (RMSE) and median gap (MAE), the majority
    type, and for NLL a homogeneous Poisson process with the sample's rate and type
    frequencies (NLL = −log(r·p_k) + r·τ). Baselines are fitted on the same sample, which
    flatters them slightly.
    """
    parts = [(bayes_predictions(params, t, k), np.diff(t), k) for t, k in sequences if len(t) > 1]
    gaps = np.concatenate([g for _, g, _ in parts])
    last = np.concatenate([np.r_[0.0, g[:-1]] for _, g, _ in parts])  # τ_0 = 0 convention
    target = np.concatenate([k[1:] for _, _, k in parts])
    b = {
        name: np.concatenate([getattr(p, name) for p, _, _ in parts])
        for name in ("mean_gap", "median_gap", "nll", "nll_time", "nll_type")
    }
    best = np.concatenate([p.most_probable_type for p, _, _ in parts])
    freq = np.bincount(target, minlength=params.num_types) / target.size
    rate = 1.0 / gaps.mean()
    with np.errstate(divide="ignore"):
        log_freq = np.log(freq)
    return {
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


def generate(cfg: SynthConfig) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Dataset info and a lazy, deterministic iterator over the sequences.

    The info's Bayes-optimal summary is computed on the first sequences (times and types
    only) until ``BAYES_SAMPLE_TARGETS`` targets are reached.
    """
    sample: list[tuple[np.ndarray, np.ndarray]] = []
    targets = 0
    for i in range(cfg.num_sequences):
        if targets >= BAYES_SAMPLE_TARGETS:
            break
        sample.append(simulate_sequence(cfg, i))
        targets += len(sample[-1][0]) - 1
    info = DatasetInfo(
        name="synthetic-city-alerts",
        type_names=list(TYPE_NAMES[: cfg.num_types]),
        time_unit="min",
        description=(
            "Synthetic city alerts: times and types from a bursty multivariate Hawkes process "
            "(true parameters in source.hawkes), a sentence and a 3x3 map image per alert "
            "showing its zone and type."
        ),
        source={
            "generator": cfg.to_dict(),
            "hawkes": cfg.params.to_dict(),
            "bayes_optimal": bayes_summary(cfg.params, sample),
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
