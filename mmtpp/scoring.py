"""What offline prediction computes for each target, without Ray (design §7).

A target is (sequence, event index i): event i predicted from events < i. ``score_sequences``
builds each target's prompts exactly as the ``Predictor`` does and returns one row per target
(``PREDICTION_SCHEMA``): the decoded time, type and text with invalid reasons; the next gap's
quantiles (``QUANTILE_LEVELS``), mean and, when the truth is known, PIT value and CRPS; the
type probabilities; the teacher-forced time NLL (a density, nats) and type NLL; and optionally
the value-of-history curve (time and type NLL with at most L history events, compressed and
uncompressed) and the model's multi-step forecast (``forecast_samples`` sampled continuations of
``forecast_steps`` events, ``Predictor.forecast``; null in rows without one).
``offline.PredictionActor`` runs it on Ray Data actors.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mmtpp.compression import CompressionRule
from mmtpp.decoding import DISTRIBUTION_MODES, QUANTILE_LEVELS, DecodeOptions
from mmtpp.events import EventSequence
from mmtpp.templates import RESPONSE_LENGTH, SHORT_RESPONSE_ROOM
from mmtpp.tokens import TASKS

PREDICTION_SCHEMA = pa.schema(
    [
        ("seq_id", pa.string()),
        ("target", pa.int64()),
        ("error", pa.string()),  # why the target could not be scored (null: scored)
        ("history_events", pa.int32()),
        ("compressed_events", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("pred_gap", pa.float64()),
        ("time_invalid", pa.string()),
        ("time_invalid_samples", pa.string()),  # JSON: reason -> samples left out
        ("gap_quantiles", pa.list_(pa.float64())),  # at QUANTILE_LEVELS
        ("gap_mean", pa.float64()),  # mean of the byte distribution
        ("gap_kept_mass", pa.float64()),  # probability the distribution is built from
        ("pred_type", pa.int32()),
        ("type_invalid", pa.string()),
        ("type_probs", pa.list_(pa.float32())),
        ("pred_text", pa.string()),
        ("text_invalid", pa.string()),
        ("true_gap", pa.float64()),
        ("true_type", pa.int32()),
        ("true_text", pa.string()),
        ("time_nll", pa.float64()),  # NaN for a zero gap (a tie)
        # −log P(the true gap's bin) on data recorded to a time resolution (else null)
        ("time_nll_binned", pa.float64()),
        ("type_nll", pa.float64()),
        ("pit", pa.float64()),
        ("crps", pa.float64()),
        # [2 x len(history_lengths)]: compressed first, then uncompressed
        ("curve_time_nll", pa.list_(pa.float64())),
        ("curve_type_nll", pa.list_(pa.float64())),
        ("curve_events", pa.list_(pa.float64())),
        # the model's forecast: per sampled continuation, its events' absolute times and types
        # ([samples][<= forecast_steps]), and JSON reason -> invalid draws redrawn
        ("forecast_times", pa.list_(pa.list_(pa.float64()))),
        ("forecast_types", pa.list_(pa.list_(pa.int32()))),
        ("forecast_invalid", pa.string()),
    ]
)


@dataclass(frozen=True)
class PredictionRequest:
    """What to compute for each target (plain values: it crosses the Ray boundary)."""

    model_dir: str
    options: DecodeOptions = field(default_factory=DecodeOptions)
    tasks: tuple[str, ...] = TASKS
    history_lengths: tuple[int, ...] = ()  # the NLL-vs-history curve (empty: none)
    # the (seq_id, target) pairs the curve is computed for (empty: every target)
    curve_targets: frozenset[tuple[str, int]] = frozenset()
    batch_size: int = 16
    image_root: str | None = None
    dtype: str | None = None
    forecast_steps: int = 0  # events per sampled continuation (0: no forecasts)
    forecast_samples: int = 8  # continuations per forecast target
    # the (seq_id, target) pairs that get a forecast (empty: every target)
    forecast_targets: frozenset[tuple[str, int]] = frozenset()
    forecast_seed: int = 0  # with (seq_id, target): the seed of a target's forecast
    # the data's time resolution (DatasetInfo.time_resolution): also score each true gap's bin
    time_resolution: float | None = None

    def __post_init__(self) -> None:
        if unknown := set(self.tasks) - set(TASKS):
            raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {TASKS}")
        if any(n < 1 for n in self.history_lengths):
            raise ValueError(f"history lengths must be >= 1, got {self.history_lengths}")
        if self.forecast_steps < 0 or self.forecast_samples < 1 or self.forecast_seed < 0:
            raise ValueError(
                f"forecast_steps must be >= 0, forecast_samples >= 1 and forecast_seed >= 0, "
                f"got {self.forecast_steps}, {self.forecast_samples}, {self.forecast_seed}"
            )


# --- scoring, without Ray -----------------------------------------------------------------


class PredictionRows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, **values: Any) -> None:
        self.rows.append(values)

    def table(self) -> pa.Table:
        columns = {f.name: [r.get(f.name) for r in self.rows] for f in PREDICTION_SCHEMA}
        return pa.Table.from_pydict(columns, schema=PREDICTION_SCHEMA)


def _room(predictor, task: str, options: DecodeOptions) -> int:
    reserve = SHORT_RESPONSE_ROOM if task in RESPONSE_LENGTH else options.response_length(task)
    return predictor.budget - reserve


def score_sequences(
    predictor, sequences: Sequence[EventSequence], targets: Sequence[Sequence[int]], request
) -> pa.Table:
    """Score ``targets[k]`` (event indices, 1..len) of ``sequences[k]`` (see the module
    docstring); one output row per target, in order."""
    options = request.options
    seen = predictor.seen(sequences)
    rule = predictor.prompt_rule(options.compress)
    ets = predictor.renderer.event_tokens(seen, predictor.count_image_tokens)
    predictor.renderer.tokenize_shown(ets, rule, [predictor.direction])
    items = [(s, et, int(t)) for s, et, ts in zip(seen, ets, targets, strict=True) for t in ts]
    rows = PredictionRows()
    for start in range(0, len(items), request.batch_size):
        _score_batch(predictor, items[start : start + request.batch_size], rule, request, rows)
    return rows.table()


def _truth(seq: EventSequence, target: int) -> dict[str, Any]:
    if target >= len(seq):
        return {}
    return {
        "true_gap": float(seq.gaps[target]),
        "true_type": int(seq.type[target]),
        "true_text": seq.text[target],
    }


def _score_batch(predictor, items, rule, request, rows: PredictionRows) -> None:
    """Score a batch of (sequence, event tokens, target) items into ``rows``, one row each."""
    options = request.options
    good, prompts = _batch_prompts(predictor, items, rule, request, rows)
    if not good:
        return
    from_dist = options.time_mode in DISTRIBUTION_MODES  # the time is read from `dist`
    decoded = [t for t in request.tasks if not (t == "time" and from_dist)]
    preds = predictor.predict_prompts(prompts["time"], decoded, options, prompts) if decoded else []
    dist = predictor.gap_distribution(prompts["time"])
    quantiles = dist.quantiles(QUANTILE_LEVELS)
    means = dist.mean()
    point = means if options.time_mode == "expected" else dist.median()
    type_probs = predictor.type_probabilities(prompts["type"])
    truths = [_truth(seq, t) for seq, _, t in good]
    gaps = np.array([x.get("true_gap", 1.0) for x in truths])
    nll_time = _on_known(predictor.time_nll, prompts["time"], truths, gaps)
    binned = None
    if request.time_resolution:
        r = request.time_resolution
        binned = _on_known(
            lambda ps, g: predictor.binned_time_nll(ps, g, r), prompts["time"], truths, gaps
        )
    pit, crps = dist.pit(gaps), dist.crps(gaps)
    curves = _chosen_curves(predictor, good, request, options)
    forecasts = _forecasts(predictor, good, request)
    for i, ((seq, _, target), truth) in enumerate(zip(good, truths, strict=True)):
        p = preds[i] if preds else None
        row: dict[str, Any] = {
            "seq_id": seq.seq_id,
            "target": target,
            "history_events": prompts["time"][i].history_events,
            "compressed_events": prompts["time"][i].compressed_events,
            "prompt_tokens": len(prompts["time"][i].input_ids),
            "gap_quantiles": quantiles[i].tolist(),
            "gap_mean": float(means[i]),
            "gap_kept_mass": float(dist.kept_mass[i]),
            "type_probs": type_probs[i].tolist(),
            **truth,
        }
        if from_dist:
            ok = bool(dist.valid[i])
            row["pred_gap"] = float(point[i]) if ok else None
            row["time_invalid"] = None if ok else "not_a_byte_token"
        if p is not None:
            row.update(_decoded_columns(p, decoded))
        if truth:
            row["time_nll"] = float(nll_time[i])
            row["time_nll_binned"] = None if binned is None else float(binned[i])
            row["type_nll"] = float(-np.log(max(type_probs[i][truth["true_type"]], 1e-45)))
            row["pit"], row["crps"] = float(pit[i]), float(crps[i])
        if curves is not None and i in curves:
            row["curve_time_nll"], row["curve_type_nll"], row["curve_events"] = (
                c.tolist() for c in curves[i]
            )
        row.update(forecasts.get(i, {}))
        rows.add(**row)


def _batch_prompts(predictor, items, rule, request, rows: PredictionRows):
    """The items whose prompts could be built, and task → their prompts (the time and type
    prompts always: the distributions and NLLs read them); an item whose prompt cannot be
    built gets an error row in ``rows`` instead."""
    options = request.options
    good, prompts = [], {task: [] for task in ("time", "type", *request.tasks)}
    for seq, et, target in items:
        try:
            built = {
                task: predictor.prompt_for(
                    seq, et, target, task, rule, _room(predictor, task, options)
                )
                for task in prompts
            }
        except ValueError as err:  # e.g. the last event alone exceeds the budget
            rows.add(seq_id=seq.seq_id, target=target, error=str(err), **_truth(seq, target))
            continue
        good.append((seq, et, target))
        for task, prompt in built.items():
            prompts[task].append(prompt)
    return good, prompts


def _decoded_columns(prediction, decoded: Sequence[str]) -> dict[str, Any]:
    """The columns of the tasks decoded by ``predict_prompts``: value and invalid reason
    per task, and the sampled time's invalid samples (JSON)."""
    names = {"time": "pred_gap", "type": "pred_type", "text": "pred_text"}
    out: dict[str, Any] = {}
    for task in decoded:
        out[names[task]] = getattr(prediction, task)
        out[f"{task}_invalid"] = prediction.invalid.get(task)
    if prediction.invalid_samples:
        out["time_invalid_samples"] = json.dumps(prediction.invalid_samples.get("time", {}))
    return out


def _on_known(score, prompts, truths, gaps: np.ndarray) -> np.ndarray:
    """[targets] ``score(prompts, gaps)`` (a time NLL) of the targets whose truth is known; NaN
    for the others."""
    known = np.array([bool(x) for x in truths])
    nll = np.full(len(truths), np.nan)
    if known.any():
        known_prompts = [p for p, k in zip(prompts, known, strict=True) if k]
        nll[known] = score(known_prompts, gaps[known])
    return nll


def _chosen(good, wanted: frozenset[tuple[str, int]]) -> list[int]:
    """Indices of the batch's targets in ``wanted`` (every target when it is empty)."""
    return [i for i, (seq, _, t) in enumerate(good) if not wanted or (seq.seq_id, t) in wanted]


def _chosen_curves(predictor, good, request, options) -> dict[int, tuple] | None:
    """Row index → (time NLL, type NLL, history events) of the value-of-history curve, for
    the batch's targets that get one; None when no target does."""
    chosen = _chosen(good, request.curve_targets)
    if not (request.history_lengths and chosen):
        return None
    curves = _curves(predictor, [good[i] for i in chosen], request, options)
    return dict(zip(chosen, zip(*curves, strict=True), strict=True))


def forecast_seed(seed: int, seq_id: str, target: int) -> int:
    """The seed of one target's forecast: the same whatever batch or actor scores it."""
    return zlib.crc32(f"{seed}:{seq_id}:{target}".encode())


def _forecasts(predictor, good, request) -> dict[int, dict[str, Any]]:
    """Row index → forecast columns, for the batch's targets that get a forecast."""
    if not request.forecast_steps:
        return {}
    chosen = _chosen(good, request.forecast_targets)
    if not chosen:
        return {}
    histories = [good[i][0].slice(0, good[i][2]) for i in chosen]
    seeds = [forecast_seed(request.forecast_seed, good[i][0].seq_id, good[i][2]) for i in chosen]
    fc = predictor.forecast(
        histories,
        steps=request.forecast_steps,
        samples=request.forecast_samples,
        seed=seeds,
        max_rows=request.batch_size,
    )
    events = fc.continuations.to_events()
    return {
        i: {
            "forecast_times": [[t for t, _ in c] for c in events[h]],
            "forecast_types": [[k for _, k in c] for c in events[h]],
            "forecast_invalid": json.dumps(fc.invalid_of(h)),
        }
        for h, i in enumerate(chosen)
    }


def _curves(predictor, good, request, options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[targets, 2·len(L)] time NLL, type NLL and history events with at most L events,
    compressed (the model's rule) then uncompressed; NaN where the truth is unknown."""
    lengths = request.history_lengths
    rules = [predictor.rule, CompressionRule(predictor.rule.mode, 0.0, predictor.rule.keep_type)]
    n, width = len(good), 2 * len(lengths)
    time_nll, type_nll, events = (np.full((n, width), np.nan) for _ in range(3))
    known = [k for k, (seq, _, t) in enumerate(good) if t < len(seq)]
    if not known:
        return time_nll, type_nll, events
    gaps = np.array([good[k][0].gaps[good[k][2]] for k in known])
    true_types = np.array([good[k][0].type[good[k][2]] for k in known])
    for j, (rule, length) in enumerate((r, L) for r in rules for L in lengths):
        for task in ("time", "type"):
            room = _room(predictor, task, options)
            prompts = [
                predictor.prompt_for(good[k][0], good[k][1], good[k][2], task, rule, room, length)
                for k in known
            ]
            if task == "time":
                time_nll[known, j] = predictor.time_nll(prompts, gaps)
                events[known, j] = [p.history_events for p in prompts]
            else:
                probs = predictor.type_probabilities(prompts)
                picked = probs[np.arange(len(known)), true_types]
                type_nll[known, j] = -np.log(np.maximum(picked, 1e-45))
    return time_nll, type_nll, events
