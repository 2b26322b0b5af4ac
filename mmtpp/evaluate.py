"""Evaluation of a trained model on the prepared test split, every figure with its 95%
interval (design §7).

The model's predictions come from the offline prediction job (``offline.predict_dataset``:
Ray Data actors running the ``Predictor``, the code path Serve uses), on the prepared test
split's targets. On exactly those targets: the simple baselines and, on synthetic data, the
Bayes-optimal predictor (``baselines``). Per-target results land in ``targets.parquet``
(what an experiment pairs variants on); the figures — errors, accuracies, likelihoods,
calibration, the value-of-history curve — with bootstrap intervals over targets land in
``results.json``; ``report`` writes ``results.md`` and the plots.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.baselines import Reference, baseline_columns, oracle_columns, oracle_history_curve
from mmtpp.card import ModelCard
from mmtpp.config import EvalConfig
from mmtpp.events import read_info, split_of
from mmtpp.forecast_eval import evaluate_forecasts
from mmtpp.intervals import sqrt_of_mean
from mmtpp.metrics import (
    bleu,
    captured_with_interval,
    f1_counts,
    macro_f1_of_means,
    rouge_l_scores,
    summarize,
    with_interval,
)
from mmtpp.offline import predict_dataset, read_predictions
from mmtpp.oracle import oracle_from_source
from mmtpp.prepared import PreparedData
from mmtpp.scoring import QUANTILE_LEVELS, PredictionRequest
from mmtpp.validation import read_sequences

TARGETS_FILE = "targets.parquet"


@dataclass
class EvalInputs:
    """What one evaluation reads: the model, its prepared data and the raw dataset."""

    model_dir: Path
    prepared: PreparedData
    dataset_root: Path


def check_inputs(model_dir: str | Path, prepared_dir: str | Path, dataset_root: str | Path):
    """Fail fast, before any Ray work, when an input is missing or of another version."""
    PreparedData(prepared_dir).manifest()
    read_info(dataset_root)
    ModelCard.read(model_dir)


def test_targets(prepared: PreparedData, limit: int = 0) -> list[tuple[str, int]]:
    """The (sequence, event) targets of the prepared test split, in shard order (the first
    ``limit`` when given)."""
    table = prepared.read("stage2", "test", columns=["seq_id", "target"])
    targets = list(
        dict.fromkeys(zip(table["seq_id"].to_pylist(), table["target"].to_pylist(), strict=True))
    )
    return targets[:limit] if limit else targets


def run_predictions(inputs: EvalInputs, e: EvalConfig, out: Path, gpus: float = 0.0) -> Path:
    """The model's predictions on the test targets, by the offline prediction job."""
    targets: dict[str, list[int]] = {}
    chosen = test_targets(inputs.prepared, e.max_per_task)
    for seq_id, target in chosen:
        targets.setdefault(seq_id, []).append(int(target))
    card = ModelCard.read(inputs.model_dir)
    request = PredictionRequest(
        model_dir=str(inputs.model_dir),
        options=e.decode_only(),
        tasks=tuple(card.tasks),
        forecast_steps=e.forecast_steps if e.forecast_targets else 0,
        forecast_samples=e.forecast_samples,
        forecast_targets=frozenset((s, int(t)) for s, t in chosen[: e.forecast_targets]),
        history_lengths=tuple(e.ppl_lengths) if e.ppl_targets else (),
        curve_targets=frozenset((s, int(t)) for s, t in chosen[: e.ppl_targets]),
        batch_size=e.batch_size,
        image_root=str(inputs.dataset_root),
        time_resolution=read_info(inputs.dataset_root).time_resolution,
    )
    result = predict_dataset(
        request, inputs.dataset_root, out / "predictions", targets, gpus_per_actor=gpus
    )
    return result.output_dir


def target_frame(inputs: EvalInputs, predictions: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per scored target: the model's predictions and NLLs beside the baselines'
    and (synthetic data) the Bayes-optimal predictor's; plus what the frame was built from."""
    manifest = inputs.prepared.manifest()
    info = read_info(inputs.dataset_root)
    pred = read_predictions(predictions).to_pandas()
    scored = pred[pred["error"].isna() & pred["true_gap"].notna()].reset_index(drop=True)
    quarantined = inputs.prepared.quarantined_ids()
    sequences = {
        s.seq_id: s.with_modalities(manifest.modalities)
        for s in read_sequences(inputs.dataset_root)
        if s.seq_id not in quarantined
    }
    data = manifest.config["data"]
    seed = data["seed"] if data["seed"] is not None else manifest.config["seed"]
    splits = split_of(list(sequences), data["split"], seed)
    train = [s for s, split in zip(sequences.values(), splits, strict=True) if split == "train"]
    ref = Reference.fit(train, info.num_types)
    targets = list(zip(scored["seq_id"], scored["target"].astype(int), strict=True))
    columns = baseline_columns(ref, sequences, targets, QUANTILE_LEVELS, info.time_resolution)
    oracle = oracle_from_source(info.source)
    if oracle is not None:
        columns |= oracle_columns(oracle, sequences, targets, QUANTILE_LEVELS)
    for name, values in columns.items():
        scored[name] = list(values) if np.ndim(values) > 1 else values
    has_text = scored["true_text"].notna() & scored["pred_text"].notna()
    scored["rouge_l"] = np.nan
    if has_text.any():
        scored.loc[has_text, "rouge_l"] = rouge_l_scores(
            scored.loc[has_text, "pred_text"].tolist(), scored.loc[has_text, "true_text"].tolist()
        )
    context = {
        "info": info,
        "reference": ref,
        "oracle": oracle,
        "sequences": sequences,
        "targets": targets,
        "errors": pred[pred["error"].notna()],
        "rows": len(pred),
    }
    return scored, context


# --- figures ------------------------------------------------------------------------------


def _time(f: pd.DataFrame, ref: Reference, bayes: bool) -> dict[str, Any]:
    """Gap errors of the model and of each baseline on the model's valid time targets."""
    v = f[f["pred_gap"].notna()]
    y = v["true_gap"].to_numpy(float)
    if len(v) < 2:
        return {"valid": len(v)}
    sq = {
        "model": (v["pred_gap"].to_numpy(float) - y) ** 2,
        "mean_gap": (ref.mean_gap - y) ** 2,
        "last_gap": (v["last_gap"].to_numpy(float) - y) ** 2,
    }
    # the decoded gap is the mean under the default time_mode (RMSE's optimum); MAE's optimum
    # is the median, which the model's predictive distribution also gives
    half = QUANTILE_LEVELS.index(0.5)
    quantiles = v["gap_quantiles"] if "gap_quantiles" in v else [None] * len(v)
    median = np.array([np.nan if q is None else q[half] for q in quantiles], float)
    ab = {
        "model": np.abs(v["pred_gap"].to_numpy(float) - y),
        "median_gap": np.abs(ref.median_gap - y),
        "last_gap": np.abs(v["last_gap"].to_numpy(float) - y),
    }
    if np.isfinite(median).all():
        ab["model_median"] = np.abs(median - y)
    if bayes:
        sq["bayes"] = (v["bayes_mean"].to_numpy(float) - y) ** 2
        ab["bayes"] = np.abs(v["bayes_median"].to_numpy(float) - y)
    out: dict[str, Any] = {"valid": len(v)}
    out["rmse"] = {k: with_interval(x, sqrt_of_mean) for k, x in sq.items()}
    out["mae"] = {k: with_interval(x) for k, x in ab.items()}
    if bayes:
        rmse_cols = np.stack([sq["model"], sq["mean_gap"], sq["bayes"]], 1)
        mae_cols = np.stack([ab["model"], ab["median_gap"], ab["bayes"]], 1)
        out["rmse_captured"] = captured_with_interval(rmse_cols, root=True)
        out["mae_captured"] = captured_with_interval(mae_cols)
        if "model_median" in ab:
            cols = np.stack([ab["model_median"], ab["median_gap"], ab["bayes"]], 1)
            out["mae_median_captured"] = captured_with_interval(cols)
    return out


def _type(f: pd.DataFrame, ref: Reference, k: int, bayes: bool) -> dict[str, Any]:
    true = f["true_type"].to_numpy(int)
    preds = {
        "model": f["pred_type"].fillna(-1).to_numpy(int),
        "majority": np.full_like(true, ref.majority),
        "last_type": f["last_type"].to_numpy(int),
    }
    if bayes:
        preds["bayes"] = f["bayes_type"].to_numpy(int)
    hits = {name: (p == true).astype(float) for name, p in preds.items()}
    out: dict[str, Any] = {
        "accuracy": {name: with_interval(h) for name, h in hits.items()},
        "macro_f1": {
            name: with_interval(f1_counts(p, true, k), macro_f1_of_means)
            for name, p in preds.items()
        },
    }
    if bayes:
        cols = np.stack([hits["model"], hits["majority"], hits["bayes"]], 1)
        out["accuracy_captured"] = captured_with_interval(cols)
    return out


def _likelihood(f: pd.DataFrame, bayes: bool) -> dict[str, Any]:
    """Time, type and joint NLL of the model, the Poisson / type-frequency baseline and the
    Bayes-optimal predictor, on the targets with a finite model NLL (ties: a zero gap's
    float32 cell is degenerate, counted apart)."""
    out: dict[str, Any] = {}
    time_ok = np.isfinite(f["time_nll"].to_numpy(float))
    columns = {
        "time": ("time_nll", "poisson_time_nll", "bayes_time_nll"),
        "type": ("type_nll", "freq_type_nll", "bayes_type_nll"),
    }
    for task, (model, base, best) in columns.items():
        rows = time_ok if task == "time" else np.ones(len(f), bool)
        g = f[rows]
        cols = [model, base, *([best] if bayes else [])]
        values = np.stack([g[c].to_numpy(float) for c in cols], 1)
        res: dict[str, Any] = {
            "targets": int(rows.sum()),
            "model": with_interval(values[:, 0]),
            "baseline": with_interval(values[:, 1]),
        }
        if task == "time":
            res["zero_gaps_excluded"] = int((~time_ok).sum())
        if bayes:
            res["bayes"] = with_interval(values[:, 2])
            res["captured"] = captured_with_interval(values)
        out[task] = res
    g = f[time_ok]
    joint = {
        "model": g["time_nll"].to_numpy(float) + g["type_nll"].to_numpy(float),
        "baseline": g["poisson_time_nll"].to_numpy(float) + g["freq_type_nll"].to_numpy(float),
    }
    if bayes:
        joint["bayes"] = g["bayes_time_nll"].to_numpy(float) + g["bayes_type_nll"].to_numpy(float)
    out["joint"] = {name: with_interval(v) for name, v in joint.items()}
    if "time_nll_binned" in f and "poisson_time_nll_binned" in f:
        values = f[["time_nll_binned", "poisson_time_nll_binned"]].to_numpy(float)
        values = values[np.isfinite(values).all(axis=1)]
        out["time_binned"] = {
            "targets": len(values),
            "model": with_interval(values[:, 0]),
            "baseline": with_interval(values[:, 1]),
        }
    return out


def _calibration(f: pd.DataFrame, bayes: bool) -> dict[str, Any]:
    """Coverage of the 50% and 90% central intervals, the PIT histogram and CRPS."""
    y = f["true_gap"].to_numpy(float)
    who = {
        "model": ("gap_quantiles", "pit", "crps"),
        "poisson": ("poisson_quantiles", "poisson_pit", "poisson_crps"),
    }
    if bayes:
        who["bayes"] = ("bayes_quantiles", "bayes_pit", None)
    out = {}
    for name, (qcol, pitcol, crpscol) in who.items():
        q = np.stack(f[qcol].to_numpy())
        pit = f[pitcol].to_numpy(float)
        res = {
            "coverage_50": with_interval(((q[:, 1] <= y) & (y <= q[:, 3])).astype(float)),
            "coverage_90": with_interval(((q[:, 0] <= y) & (y <= q[:, 4])).astype(float)),
            "width_90": float(np.median(q[:, 4] - q[:, 0])),
            "pit_histogram": np.histogram(pit[np.isfinite(pit)], 10, (0, 1))[0].tolist(),
        }
        if crpscol is not None:
            res["crps"] = with_interval(f[crpscol].to_numpy(float))
        out[name] = res
    return out


def _curve(f: pd.DataFrame, lengths: list[int], context: dict[str, Any]) -> dict[str, Any]:
    """Time and type NLL with at most L history events: the model (compressed, uncompressed)
    on the targets it was computed for, and the Bayes-optimal predictor on the same ones."""
    has = f["curve_time_nll"].notna()
    if not has.any() or not lengths:
        return {}
    g = f[has]
    n = len(lengths)
    t = np.stack(g["curve_time_nll"].to_numpy())
    y = np.stack(g["curve_type_nll"].to_numpy())
    ev = np.stack(g["curve_events"].to_numpy())
    out: dict[str, Any] = {"lengths": lengths, "targets": len(g)}
    for half, name in ((slice(0, n), "compressed"), (slice(n, 2 * n), "uncompressed")):
        out[name] = {
            "time_nll": [with_interval(c[np.isfinite(c)]) for c in t[:, half].T],
            "type_nll": [with_interval(c) for c in y[:, half].T],
            "events": ev[:, half].mean(axis=0).tolist(),
        }
    oracle = context["oracle"]
    if oracle is not None:
        targets = list(zip(g["seq_id"], g["target"].astype(int), strict=True))
        curve = oracle_history_curve(oracle, context["sequences"], targets, lengths)
        out["bayes"] = {
            "time_nll": [with_interval(c) for c in curve["time_nll"].T],
            "type_nll": [with_interval(c) for c in curve["type_nll"].T],
            "accuracy": [with_interval(c) for c in curve["correct"].T],
            "all_history": {
                "time_nll": with_interval(g["bayes_time_nll"].to_numpy(float)),
                "type_nll": with_interval(g["bayes_type_nll"].to_numpy(float)),
            },
        }
    return out


def results_of(f: pd.DataFrame, context: dict[str, Any], e: EvalConfig) -> dict[str, Any]:
    info, ref = context["info"], context["reference"]
    bayes = context["oracle"] is not None
    errors = context["errors"]
    out: dict[str, Any] = {
        "dataset": info.name,
        "time_unit": info.time_unit,
        "targets": len(f),
        "errors": {"count": len(errors), "examples": errors["error"].head(5).tolist()},
        "invalid": {
            task: f[f"{task}_invalid"].value_counts().to_dict() for task in ("time", "type", "text")
        },
        "figures": summarize(f),
        "time": _time(f, ref, bayes),
        "type": _type(f, ref, info.num_types, bayes),
        "likelihood": _likelihood(f, bayes),
        "calibration": _calibration(f, bayes),
        "history_curve": _curve(f, list(e.ppl_lengths), context),
    }
    if e.forecast_targets and e.forecast_steps:
        out["forecast"] = evaluate_forecasts(
            f, context["sequences"], ref, context["oracle"], e.forecast_steps, cost=e.otd_cost
        )
    text = f[f["rouge_l"].notna()]
    if len(text):
        out["text"] = {
            "targets": len(text),
            "rouge_l": with_interval(text["rouge_l"].to_numpy(float)),
            "bleu": bleu(text["pred_text"].tolist(), text["true_text"].tolist()),
        }
    return out


def evaluate(
    model_dir: str | Path,
    prepared_dir: str | Path,
    dataset_root: str | Path,
    out_dir: str | Path,
    e: EvalConfig | None = None,
    config: dict | None = None,
    gpus: float = 0.0,
    rescore: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained model on the prepared test split (on the connected Ray cluster);
    writes ``targets.parquet``, ``results.json``, ``results.md`` and plots to ``out_dir``.

    ``rescore``: recompute the figures from the predictions already in ``out_dir`` (after a
    change to how figures are computed) instead of predicting; those predictions are used as
    they are, whatever code or options made them."""
    from mmtpp.image_evidence import image_evidence
    from mmtpp.report import card_renderer, events_per_budget, format_table, plot

    e = e or EvalConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = EvalInputs(Path(model_dir), PreparedData(prepared_dir), Path(dataset_root))
    if rescore:
        predictions = out / "predictions"
        if not predictions.is_dir():
            raise FileNotFoundError(f"{predictions}: no predictions to rescore")
    else:
        predictions = run_predictions(inputs, e, out, gpus)
    frame, context = target_frame(inputs, predictions)
    frame.to_parquet(out / TARGETS_FILE, index=False)
    results = results_of(frame, context, e)
    results["events_per_budget"] = events_per_budget(inputs, context)
    card, renderer, counter = card_renderer(inputs)
    results["image_evidence"] = image_evidence(
        context["info"], card, renderer, counter, context["sequences"], context["targets"]
    )
    results["config"] = config or inputs.prepared.manifest().config
    results["decode"] = e.decode_only().model_dump()
    results["versions"] = _versions()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json) + "\n")
    (out / "results.md").write_text(format_table(results) + "\n")
    plot(results, frame, context["info"].type_names, out)
    return results


def _json(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return str(value)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mmtpp", "torch", "ray", "transformers", "peft", "deepspeed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "n/a"
    return out
