"""The synthetic multimodal dataset: city alerts from a bursty Hawkes process, plain or
modulated by a hidden regime, or from a process whose every sequence has its own profile
(``SynthConfig.process``).

The processes and their default parameters are ``mmtpp.sources.synthetic_processes``; what an
alert's text and image show, ``mmtpp.sources.city_alerts``; what the Bayes-optimal predictor
reaches on the dataset (recorded in ``dataset.json``), ``mmtpp.bayes_summary``. This module
holds the generator's config and writes the dataset.

Everything is seeded per sequence from (seed, index), with separate streams for the process
(for 'profile': the sequence's profile, then its events), the modalities and the latent view
(which regime or which hint each image shows, and its tint): sequences can be generated in
any order or in parallel, ``sequence_regimes`` / ``sequence_profile`` re-draw a sequence's
regimes / profile and hints without rendering, and the Bayes-optimal summary in
``dataset.json`` needs only the cheap process and view streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmtpp import profile, regime
from mmtpp.bayes import Oracle
from mmtpp.bayes_summary import bayes_summary, image_reader_scores, regime_known_scores
from mmtpp.events import IMAGES_DIR, DatasetInfo, EventSequence, write_dataset
from mmtpp.hawkes import HawkesParams, simulate
from mmtpp.oracle import oracle_for
from mmtpp.profile import ProfileParams, SequenceProfile
from mmtpp.regime import RegimeParams
from mmtpp.sources.city_alerts import (
    HINT_BACKGROUNDS,
    REGIME_BACKGROUNDS,
    TINTS,
    TYPE_NAMES,
    ZONES,
    draw_map,
    land_colour,
    make_text,
    zones_for,
)
from mmtpp.sources.synthetic_processes import (
    DEFAULT_EVENTS,
    DEFAULT_TYPES,
    PROCESSES,
    dataset_record,
    default_hawkes,
    default_profile,
    default_regime,
)

BAYES_SAMPLE_TARGETS = 20_000  # targets for the Bayes-optimal summary in dataset.json
HISTORY_LENGTHS = (1, 2, 4, 8, 14, 16, 32, 64, 128, 256)  # for the value-of-history curve


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
        return oracle_for(self.process_params)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_sequence"] = list(self.events_per_sequence or ())
        return out


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
                draw_map(z, k, cfg.image_size, (dx, dy), land_colour(g, c))
                for (k, z), (dx, dy), g, c in zip(
                    pairs, jitter, shown.tolist(), tint.tolist(), strict=True
                )
            ]
    return EventSequence(
        seq_id=f"seq-{index:05d}", time=times, type=types, text=texts, image=images
    )


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
    elif isinstance(params, RegimeParams):
        with_regimes = [(t, k, z) for t, k, z in drawn if isinstance(z, np.ndarray) and t.size > 1]
        summary["regime_known"] = regime_known_scores(params, with_regimes)
    name, description, process = dataset_record(params, cfg.regime_image_noise)
    info = DatasetInfo(
        name=name,
        type_names=list(TYPE_NAMES[: cfg.num_types]),
        time_unit="min",
        description=description,
        source={"generator": cfg.to_dict(), **process, "bayes_optimal": summary},
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
