"""What mmtpp is compared with, on the same targets (design §7).

- simple baselines fitted on the training split (the sequences preparation accepted): the
  mean gap (RMSE) and median gap (MAE), the previous event's gap and type, the majority type,
  and for likelihoods a Poisson process at the training rate with the training type
  frequencies (add-one smoothed) — also as a predictive distribution (exponential gaps:
  quantiles, PIT, CRPS);
- on synthetic data, the Bayes-optimal predictor of the true process (``mmtpp.oracle``):
  conditional mean and median gap, most probable type, time and type NLL, its quantiles, PIT
  and CRPS, and the value-of-history curve (the same predictor from only the last L events).

Each function returns per-target columns aligned with the given targets, so every figure is
computed on exactly the targets the model is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmtpp.bayes import Oracle
from mmtpp.events import EventSequence
from mmtpp.reference_distributions import ExponentialGapDistribution
from mmtpp.timecodec import resolution_bins

Targets = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class Reference:
    """What the simple baselines learn from the training sequences."""

    mean_gap: float
    median_gap: float
    majority: int
    type_freq: np.ndarray  # [K], add-one smoothed

    @classmethod
    def fit(cls, train: Sequence[EventSequence], num_types: int) -> Reference:
        gaps = np.concatenate([s.gaps[1:] for s in train] or [np.empty(0)])
        types = np.concatenate([s.type for s in train] or [np.empty(0, np.int64)])
        if gaps.size == 0:
            raise ValueError("no training gap to fit the baselines on")
        counts = np.bincount(types, minlength=num_types).astype(np.float64)
        return cls(
            mean_gap=float(gaps.mean()),
            median_gap=float(np.median(gaps)),
            majority=int(counts.argmax()),
            type_freq=(counts + 1.0) / (counts.sum() + num_types),
        )


def baseline_columns(
    ref: Reference,
    sequences: dict[str, EventSequence],
    targets: Targets,
    levels: Sequence[float],
    resolution: float | None = None,
) -> dict[str, np.ndarray]:
    """Per-target baseline predictions and scores (true values where the targets have them);
    with the data's time ``resolution`` also the Poisson baseline's −log P(the gap's bin)."""
    last_gap = np.array([sequences[s].gaps[t - 1] for s, t in targets])
    last_type = np.array([sequences[s].type[t - 1] for s, t in targets])
    true_gap = np.array([sequences[s].gaps[t] for s, t in targets])
    true_type = np.array([sequences[s].type[t] for s, t in targets])
    poisson = ExponentialGapDistribution(np.full(len(targets), ref.mean_gap))
    binned = {}
    if resolution:
        lo, hi = resolution_bins(true_gap, resolution).T
        inside = -np.expm1(-(hi - lo) / ref.mean_gap)  # P(bin) = e^{−lo/μ}(1 − e^{−(hi−lo)/μ})
        binned["poisson_time_nll_binned"] = lo / ref.mean_gap - np.log(inside)
    return {
        **binned,
        "last_gap": last_gap,
        "last_type": last_type,
        "poisson_time_nll": np.log(ref.mean_gap) + true_gap / ref.mean_gap,
        "freq_type_nll": -np.log(ref.type_freq[true_type]),
        "poisson_pit": poisson.pit(true_gap),
        "poisson_crps": poisson.crps(true_gap),
        "poisson_quantiles": poisson.quantiles(levels),
    }


def oracle_columns(
    oracle: Oracle, sequences: dict[str, EventSequence], targets: Targets, levels: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per-target Bayes-optimal predictions and scores (each sequence's targets at once)."""
    by_seq: dict[str, list[int]] = {}
    for k, (s, _) in enumerate(targets):
        by_seq.setdefault(s, []).append(k)
    n = len(targets)
    out = {
        "bayes_mean": np.empty(n),
        "bayes_median": np.empty(n),
        "bayes_type": np.empty(n, dtype=np.int64),
        "bayes_time_nll": np.empty(n),
        "bayes_type_nll": np.empty(n),
        "bayes_pit": np.empty(n),
        "bayes_quantiles": np.empty((n, len(levels))),
    }
    for seq_id, rows in by_seq.items():
        seq = sequences[seq_id]
        idx = np.array([targets[k][1] for k in rows])
        pred = oracle.predictions(seq.time, seq.type, idx)
        out["bayes_mean"][rows] = pred.mean_gap
        out["bayes_median"][rows] = pred.median_gap
        out["bayes_type"][rows] = pred.most_probable_type
        out["bayes_time_nll"][rows] = pred.nll_time
        out["bayes_type_nll"][rows] = pred.nll_type
        out["bayes_pit"][rows] = oracle.gap_cdf(seq.time, seq.type, targets=idx)
        out["bayes_quantiles"][rows] = oracle.gap_quantiles(seq.time, seq.type, levels, idx)
    return out


def oracle_history_curve(
    oracle: Oracle,
    sequences: dict[str, EventSequence],
    targets: Targets,
    lengths: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-target Bayes-optimal time and type NLL and type accuracy from only the last L
    events, for each L in ``lengths`` (``[n, len(lengths)]`` each): what a predictor that
    sees L events can reach."""
    by_seq: dict[str, list[int]] = {}
    for k, (s, _) in enumerate(targets):
        by_seq.setdefault(s, []).append(k)
    shape = (len(targets), len(lengths))
    time_nll, type_nll, correct = np.empty(shape), np.empty(shape), np.empty(shape)
    for seq_id, rows in by_seq.items():
        seq = sequences[seq_id]
        idx = np.array([targets[k][1] for k in rows])
        preds = oracle.predictions_for_histories(seq.time, seq.type, list(lengths), idx)
        for j, pred in enumerate(preds):
            time_nll[rows, j] = pred.nll_time
            type_nll[rows, j] = pred.nll_type
            correct[rows, j] = pred.most_probable_type == seq.type[idx]
    return {"time_nll": time_nll, "type_nll": type_nll, "correct": correct}
