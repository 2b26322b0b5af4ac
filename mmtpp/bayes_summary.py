"""What the Bayes-optimal predictor and simple baselines reach on a sample of sequences of a
known process: the summary a synthetic dataset records in ``dataset.json``
(``source.bayes_optimal``), the value-of-history curve (what the predictor reaches from only
the last L events) and what the images' latent view could add (the regime known, or every
image's hint read perfectly).

Every event after the first of a sequence is a target. These figures bound what a learned
model can reach on data the process generated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmtpp import regime_filter
from mmtpp.bayes import BayesPredictions, Oracle
from mmtpp.hawkes import HawkesParams
from mmtpp.oracle import ProfileOracle, oracle_for
from mmtpp.profile import ProfileParams
from mmtpp.regime import RegimeParams


def _rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true)))


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
    oracle = oracle_for(params)
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
    ``(times, types, regimes)`` (``regime_filter.known_regime_predictions``): the most that reading
    the images' regime could add to the full-history Bayes-optimal predictor."""
    gaps = np.concatenate([np.diff(t) for t, _, _ in sequences])
    target = np.concatenate([k[1:] for _, k, _ in sequences])
    parts = [regime_filter.known_regime_predictions(params, t, k, z) for t, k, z in sequences]
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
