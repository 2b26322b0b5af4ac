"""Evaluation figures, each with its 95% interval over the test targets (design §7).

Every figure is a function of per-target contributions (a squared error, a hit, an NLL, a
ROUGE-L score …), so ``mmtpp.intervals`` gives it a bootstrap interval over targets and two
variants scored on the same targets a paired difference. ``FIGURES`` names the model's
figures by the per-target columns of an evaluation's ``targets.parquet`` (``evaluate``
writes it): the experiment job pairs variants with them. The point functions below are the
plain definitions (hand-checked in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.intervals import Statistic, bootstrap_ci, paired_difference, sqrt_of_mean

# --- plain definitions --------------------------------------------------------------------


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true)))


def f1_counts(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-target indicators ``[n, 3K]``: true positive, false positive and false negative of
    each class, whose column means give macro-F1 (``macro_f1_of_means``)."""
    pred, true = np.asarray(pred), np.asarray(true)
    k = np.arange(num_classes)
    tp = (pred[:, None] == k) & (true[:, None] == k)
    fp = (pred[:, None] == k) & (true[:, None] != k)
    fn = (pred[:, None] != k) & (true[:, None] == k)
    return np.concatenate([tp, fp, fn], axis=1).astype(np.float64)


def macro_f1_of_means(means: np.ndarray) -> np.ndarray:
    """Macro-F1 from the column means of ``f1_counts`` (vectorised over leading axes): the
    mean over classes present in the truth or the predictions of 2TP / (2TP + FP + FN)."""
    tp, fp, fn = np.split(means, 3, axis=-1)
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1.0), 0.0)
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def macro_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in ``true`` or ``pred`` of 2PR/(P+R)."""
    return float(macro_f1_of_means(f1_counts(pred, true, num_classes).mean(axis=0)))


def rouge_l_scores(preds: list[str], refs: list[str]) -> np.ndarray:
    """ROUGE-L F-measure of each prediction against its reference (``rouge_score``)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)]
    )


def bleu(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU (sacrebleu's defaults: 4-grams, its 13a tokenizer), in [0, 1]."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(preds, [refs]).score / 100)


def captured_of_means(means: np.ndarray) -> np.ndarray:
    """(baseline − model) / (baseline − optimum) from the means of three columns: the share
    of the baseline → Bayes-optimal improvement the model captures."""
    model, base, best = means[..., 0], means[..., 1], means[..., 2]
    return (base - model) / (base - best)


# --- figures with intervals ---------------------------------------------------------------


def with_interval(values: np.ndarray, stat: Statistic | None = None, seed: int = 0) -> dict | None:
    """A figure and its 95% bootstrap interval over targets; None with < 2 targets or when
    the figure is undefined on some resamples (e.g. a captured fraction whose baseline and
    optimum coincide there): a number without a meaningful interval is not reported."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = bootstrap_ci(values, stat, seed=seed)
    if not np.isfinite([ci.estimate, ci.low, ci.high]).all():
        return None
    return ci.to_dict()


def captured_with_interval(columns: np.ndarray, root: bool = False) -> dict | None:
    """The captured fraction (``captured_of_means``) of columns (model, baseline, optimum)
    with its interval, or None when the baseline is not clearly worse than the optimum (the
    95% interval of baseline − optimum, paired on the targets, reaches 0, or the difference
    is under 1% of the baseline's figure): the fraction would divide by noise, or by a
    difference too small to mean anything (the median gap under MAE is within 0.3% of the
    optimum on the embedded default). ``root``: the columns are squared errors and the
    figure is an RMSE."""
    columns = np.asarray(columns, dtype=np.float64)
    if columns.shape[0] < 2:
        return None
    stat = sqrt_of_mean if root else None
    margin = paired_difference(columns[:, 1], columns[:, 2], stat)
    base = bootstrap_ci(columns[:, 1], stat).estimate
    if margin.low * margin.high <= 0 or abs(margin.estimate) < 0.01 * abs(base):
        return None
    if root:
        return with_interval(columns, lambda m: captured_of_means(np.sqrt(m)))
    return with_interval(columns, captured_of_means)


@dataclass(frozen=True)
class Figure:
    """A model figure over the targets of ``targets.parquet``: which rows count, their
    contributions and the statistic of the contributions' means."""

    label: str
    rows: Callable[[pd.DataFrame], np.ndarray]
    values: Callable[[pd.DataFrame], np.ndarray]
    stat: Statistic | None = None
    lower_is_better: bool = True


def _valid_time(f: pd.DataFrame) -> np.ndarray:
    return f["pred_gap"].notna().to_numpy() & f["true_gap"].notna().to_numpy()


def _finite(column: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """Rows where ``column`` is a finite number (none when the frame has no such column)."""

    def rows(f: pd.DataFrame) -> np.ndarray:
        if column not in f:
            return np.zeros(len(f), dtype=bool)
        return np.isfinite(f[column].to_numpy(dtype=np.float64, na_value=np.nan))

    return rows


def _all(f: pd.DataFrame) -> np.ndarray:
    return f["true_type"].notna().to_numpy()


def _type_hits(f: pd.DataFrame) -> np.ndarray:
    return (f["pred_type"].fillna(-1).to_numpy() == f["true_type"].to_numpy()).astype(float)


def _covered(f: pd.DataFrame, low: int, high: int) -> np.ndarray:
    q = np.stack(f["gap_quantiles"].to_numpy())
    y = f["true_gap"].to_numpy(dtype=np.float64)
    return ((q[:, low] <= y) & (y <= q[:, high])).astype(float)


FIGURES: dict[str, Figure] = {
    "time_rmse": Figure(
        "time RMSE",
        _valid_time,
        lambda f: (f["pred_gap"].to_numpy(float) - f["true_gap"].to_numpy(float)) ** 2,
        sqrt_of_mean,
    ),
    "time_mae": Figure(
        "time MAE",
        _valid_time,
        lambda f: np.abs(f["pred_gap"].to_numpy(float) - f["true_gap"].to_numpy(float)),
    ),
    "type_accuracy": Figure("type accuracy", _all, _type_hits, lower_is_better=False),
    "time_nll": Figure("time NLL", _finite("time_nll"), lambda f: f["time_nll"].to_numpy(float)),
    "type_nll": Figure("type NLL", _finite("type_nll"), lambda f: f["type_nll"].to_numpy(float)),
    # on data recorded to a time resolution: −log P(the true gap's bin), ties included
    "time_nll_binned": Figure(
        "time NLL of the gap's bin",
        _finite("time_nll_binned"),
        lambda f: f["time_nll_binned"].to_numpy(float) if len(f) else np.empty(0),
    ),
    "joint_nll": Figure(
        "time + type NLL",
        lambda f: _finite("time_nll")(f) & _finite("type_nll")(f),
        lambda f: f["time_nll"].to_numpy(float) + f["type_nll"].to_numpy(float),
    ),
    "coverage_90": Figure(
        "90% interval coverage",
        lambda f: f["gap_quantiles"].notna().to_numpy() & f["true_gap"].notna().to_numpy(),
        lambda f: _covered(f, 0, 4),
        lower_is_better=False,
    ),
    "crps": Figure("CRPS", _finite("crps"), lambda f: f["crps"].to_numpy(float)),
}


def figure_values(name: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(row mask, contributions of those rows) of a figure on an evaluation's targets."""
    fig = FIGURES[name]
    rows = fig.rows(frame)
    if not rows.any():  # e.g. a figure whose column this evaluation does not have
        return rows, np.empty(0)
    return rows, fig.values(frame[rows])


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Every figure of ``FIGURES`` on ``frame`` with its interval (None where < 2 targets)."""
    out: dict[str, Any] = {}
    for name, fig in FIGURES.items():
        rows, values = figure_values(name, frame)
        out[name] = with_interval(values, fig.stat)
        if out[name] is not None:
            out[name]["targets"] = int(rows.sum())
    return out
