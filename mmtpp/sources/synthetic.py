"""The synthetic multimodal dataset: city alerts from a bursty multivariate Hawkes process.

Times and types come from ``mmtpp.hawkes`` (strong cross-excitation: an alert of type j
mostly triggers one of type j+1, so the history predicts the next type well beyond the
majority class). Each event also happens in a zone of a 3×3 city grid, drawn around the
sequence's home zone and shifted by the type; the zone is written into the text and drawn as
the marker position of a small map image, so text and image carry information that times
and types alone do not. Everything is seeded per sequence (``seed``, index), so sequences
can be generated in any order or in parallel. The true process parameters, and what the
Bayes-optimal predictor reaches on the generated data, go to ``dataset.json``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmtpp.events import IMAGES_DIR, DatasetInfo, EventSequence, write_dataset
from mmtpp.hawkes import HawkesParams, bayes_predictions, simulate

TYPE_NAMES = ["traffic", "power", "water", "noise"]
ZONES = ["north-west", "north", "north-east", "west", "centre", "east",
         "south-west", "south", "south-east"]  # fmt: skip
STREETS = ["Elm St", "Harbour Rd", "Mill Lane", "King Ave", "Station Sq", "Oak Blvd",
           "Canal Walk", "Bridge St", "Market Pl", "Hill Rd"]  # fmt: skip
TEMPLATES = {
    "traffic": [
        "Traffic jam near {street} in the {zone} district, about {n} cars queued.",
        "Collision reported on {street} ({zone}); {n} vehicles delayed.",
        "Signal failure at {street}, {zone} side: expect {n} minutes of delay.",
    ],
    "power": [
        "Power outage across {n} buildings in the {zone} district.",
        "Voltage drop reported on {street} ({zone}), {n} homes affected.",
        "Substation alarm in the {zone} quarter; crews dispatched to {street}.",
    ],
    "water": [
        "Water main leak on {street} in the {zone} district, pressure down {n}%.",
        "Flooded underpass near {street} ({zone}); {n} cm of water.",
        "Boil-water notice for {n} streets in the {zone} quarter.",
    ],
    "noise": [
        "Noise complaint from {street} in the {zone} district, {n} dB measured.",
        "Late construction work on {street} ({zone}) reported by {n} residents.",
        "Street party near {street}, {zone} side, {n} complaints so far.",
    ],
}
TYPE_COLOURS = [(220, 40, 40), (240, 200, 0), (30, 110, 230), (150, 60, 200)]


def default_hawkes(num_types: int = 4) -> HawkesParams:
    """Bursty by construction: fast decay (β = 10), 85% of events are children, and an alert
    of type j mostly excites type j+1 (a cycle), so bursts are chains of predictable types
    with nearly equal short gaps, separated by long quiet periods (base rate 0.02/type)."""
    alpha = np.zeros((num_types, num_types))
    for j in range(num_types):
        alpha[(j + 1) % num_types, j] += 0.75
        alpha[j, j] += 0.1
    return HawkesParams(mu=[0.02] * num_types, alpha=alpha.tolist(), beta=10.0)


@dataclass
class SynthConfig:
    """What to generate. Defaults: 200 sequences of 150–400 events, 4 types, text + images."""

    num_sequences: int = 200
    min_events: int = 150
    max_events: int = 400
    hawkes: HawkesParams = field(default_factory=default_hawkes)
    text: bool = True
    images: bool = True
    image_size: int = 56  # pixels; 56×56 is 4 <|image_pad|> tokens in Qwen2.5-VL
    image_storage: str = "bytes"  # "bytes" (inside the rows) or "files" (under images/)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.hawkes, dict):
            self.hawkes = HawkesParams.from_dict(self.hawkes)
        if self.num_sequences < 1:
            raise ValueError("num_sequences must be >= 1")
        if not 2 <= self.min_events <= self.max_events:
            raise ValueError("need 2 <= min_events <= max_events")
        if self.hawkes.num_types > len(TYPE_NAMES):
            raise ValueError(f"at most {len(TYPE_NAMES)} types have text templates")
        if self.image_storage not in ("bytes", "files"):
            raise ValueError("image_storage must be 'bytes' or 'files'")
        if self.image_size < 28:
            raise ValueError("image_size must be >= 28 pixels")

    def to_dict(self) -> dict:
        return asdict(self)


def draw_map(zone: int, type_id: int, size: int, rng: np.random.Generator) -> bytes:
    """A small map patch: streets on a 3×3 grid, a marker in the event's zone whose colour
    and shape encode its type. PNG bytes."""
    image = Image.new("RGB", (size, size), (235, 232, 220))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for i in (1, 2):
        draw.line([(i * cell, 0), (i * cell, size)], fill=(180, 180, 180), width=1)
        draw.line([(0, i * cell), (size, i * cell)], fill=(180, 180, 180), width=1)
    jitter = rng.uniform(-0.15, 0.15, 2) * cell
    cx = (zone % 3 + 0.5) * cell + jitter[0]
    cy = (zone // 3 + 0.5) * cell + jitter[1]
    r = cell * 0.3
    colour = TYPE_COLOURS[type_id % len(TYPE_COLOURS)]
    box = [cx - r, cy - r, cx + r, cy + r]
    if type_id % 2 == 0:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def zones_for(types: np.ndarray, home: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly the home zone shifted by the type; sometimes anywhere."""
    zones = (home + types) % len(ZONES)
    wander = rng.random(types.size) < 0.25
    zones[wander] = rng.integers(0, len(ZONES), int(wander.sum()))
    return zones


def make_text(type_id: int, zone: int, rng: np.random.Generator) -> str:
    template = TEMPLATES[TYPE_NAMES[type_id]][int(rng.integers(0, 3))]
    return template.format(
        zone=ZONES[zone], street=STREETS[int(rng.integers(0, len(STREETS)))],
        n=int(rng.integers(2, 95)),
    )  # fmt: skip


def generate_one(cfg: SynthConfig, index: int) -> EventSequence:
    rng = np.random.default_rng([cfg.seed, index])
    n = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    times, types = simulate(cfg.hawkes, n, rng)
    zones = zones_for(types, int(rng.integers(0, len(ZONES))), rng)
    texts = [make_text(int(k), int(z), rng) for k, z in zip(types, zones, strict=True)]
    images = [
        draw_map(int(z), int(k), cfg.image_size, rng) for k, z in zip(types, zones, strict=True)
    ]
    return EventSequence(
        seq_id=f"seq-{index:05d}",
        time=times,
        type=types,
        text=texts if cfg.text else [],
        image=images if cfg.images else [],
    )


def bayes_summary(params: HawkesParams, sequences: list[EventSequence]) -> dict[str, float]:
    """What the Bayes-optimal predictor and simple baselines reach on these sequences."""
    gaps, mean, median, probs, true_types, last, nll = [], [], [], [], [], [], []
    for seq in sequences:
        b = bayes_predictions(params, seq.time, seq.type)
        gaps.append(np.diff(seq.time))
        mean.append(b.mean_gap)
        median.append(b.median_gap)
        probs.append(b.most_probable_type)
        true_types.append(seq.type[1:])
        last.append(np.r_[0.0, np.diff(seq.time)][:-1])
        nll.append(b.nll)
    g, m, md, p, y, lg = map(np.concatenate, (gaps, mean, median, probs, true_types, last))
    majority = np.bincount(y).argmax()
    return {
        "targets": int(g.size),
        "rmse_bayes_mean": float(np.sqrt(np.mean((m - g) ** 2))),
        "mae_bayes_median": float(np.mean(np.abs(md - g))),
        "accuracy_bayes": float(np.mean(p == y)),
        "nll_bayes": float(np.mean(np.concatenate(nll))),
        "rmse_mean_gap": float(np.sqrt(np.mean((g.mean() - g) ** 2))),
        "rmse_last_gap": float(np.sqrt(np.mean((lg - g) ** 2))),
        "mae_median_gap": float(np.mean(np.abs(np.median(g) - g))),
        "accuracy_majority": float(np.mean(y == majority)),
    }


def generate(cfg: SynthConfig) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Dataset info and a lazy, deterministic iterator over the sequences."""
    sample = [generate_one(cfg, i) for i in range(min(cfg.num_sequences, 50))]
    info = DatasetInfo(
        name="synthetic-city-alerts",
        type_names=TYPE_NAMES[: cfg.hawkes.num_types],
        time_unit="min",
        description="Synthetic multivariate Hawkes city alerts with text and map images.",
        source={
            "generator": "mmtpp.sources.synthetic",
            "config": cfg.to_dict(),
            "hawkes": cfg.hawkes.to_dict(),
            "bayes_optimal": bayes_summary(cfg.hawkes, sample),
        },
    )
    return info, (generate_one(cfg, i) for i in range(cfg.num_sequences))


def synthesize(
    cfg: SynthConfig, out_dir: str | Path, progress: Callable[[int, int], None] | None = None
) -> int:
    """Write the dataset to ``out_dir``; returns the number of sequences."""
    out = Path(out_dir)
    info, sequences = generate(cfg)

    def stream() -> Iterator[EventSequence]:
        for i, seq in enumerate(sequences, start=1):
            if cfg.images and cfg.image_storage == "files":
                folder = out / IMAGES_DIR / seq.seq_id
                folder.mkdir(parents=True, exist_ok=True)
                refs = []
                for j, data in enumerate(seq.image):
                    (folder / f"{j}.png").write_bytes(data)
                    refs.append(f"{IMAGES_DIR}/{seq.seq_id}/{j}.png")
                seq.image = refs
            if progress:
                progress(i, cfg.num_sequences)
            yield seq

    return write_dataset(out, info, stream())
