"""Metrics, baselines and the Bayes-optimal limit on the test split (SPEC §7).

The model answers the prepared test prompts through ``Predictor`` (the serving code path).
On the same targets: last-gap and mean-gap predictors, the majority type, and — when the
dataset records its true Hawkes parameters — the Bayes-optimal predictor (conditional mean
and median of the next gap, most probable next type), which no model can beat. Invalid
generations are counted per reason and excluded from the time errors (never silently): the
baselines are scored on the same valid targets so the comparison stays fair.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtpp.events import read_info, read_sequences
from mmtpp.hawkes import HawkesParams, bayes_predictions
from mmtpp.predict import DecodeOptions, Predictor, Prompt
from mmtpp.prepare import split_of
from mmtpp.tokens import TASKS

# --- metric functions (hand-checked in tests) -------------------------------------------


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true)))


def macro_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in ``true`` or ``pred`` of 2PR/(P+R)."""
    pred, true = np.asarray(pred), np.asarray(true)
    scores = []
    for k in range(num_classes):
        tp = np.sum((pred == k) & (true == k))
        fp = np.sum((pred == k) & (true != k))
        fn = np.sum((pred != k) & (true == k))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def rouge_l(preds: list[str], refs: list[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(
        np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)])
    )


def captured(model: float, baseline: float, optimal: float) -> float | None:
    """Fraction of the baseline → Bayes-optimal improvement the model captures."""
    if abs(baseline - optimal) < 1e-12:
        return None
    return float((baseline - model) / (baseline - optimal))


# --- evaluation -------------------------------------------------------------------------


def _test_rows(prepared: Path, max_per_task: int | None) -> dict[str, list[dict]]:
    files = sorted((prepared / "stage2" / "test").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{prepared}/stage2/test: no test examples")
    table = pa.concat_tables(pq.read_table(f) for f in files)
    rows: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(row["task"], []).append(row)
    if max_per_task:
        rows = {t: r[:max_per_task] for t, r in rows.items()}
    return rows


def _reference(dataset_root: Path, split: list[float], seed: int, rows: dict[str, list[dict]]):
    """Per (seq_id, target): last gap, Bayes-optimal predictions; plus training means."""
    info = read_info(dataset_root)
    sequences = {s.seq_id: s for s in read_sequences(dataset_root)}
    splits = dict(zip(sequences, split_of(list(sequences), split, seed), strict=True))
    train_gaps = np.concatenate([s.gaps[1:] for k, s in sequences.items() if splits[k] == "train"])
    train_types = np.concatenate([s.type for k, s in sequences.items() if splits[k] == "train"])
    hawkes = info.source.get("hawkes")
    params = HawkesParams.from_dict(hawkes) if hawkes else None
    bayes = {}
    if params is not None:
        needed = {r["seq_id"] for task_rows in rows.values() for r in task_rows}
        for seq_id in needed:
            s = sequences[seq_id]
            bayes[seq_id] = bayes_predictions(params, s.time, s.type)
    return (
        info,
        sequences,
        float(train_gaps.mean()),
        float(np.median(train_gaps)),
        int(np.bincount(train_types).argmax()),
        bayes,
    )


def evaluate(
    model_dir: str | Path,
    prepared_dir: str | Path,
    dataset_root: str | Path,
    out_dir: str | Path,
    options: DecodeOptions | None = None,
    max_per_task: int | None = None,
    batch_size: int = 16,
    config: dict | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on the prepared test split; writes results.json, results.md
    and plots to ``out_dir`` and returns the results."""
    options = options or DecodeOptions()
    prepared, out = Path(prepared_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((prepared / "manifest.json").read_text())
    data_cfg = manifest["config"]["data"]
    predictor = Predictor(model_dir, image_root=dataset_root)
    rows = _test_rows(prepared, max_per_task)
    info, sequences, mean_gap, median_gap, majority, bayes = _reference(
        Path(dataset_root), data_cfg["split"], data_cfg["seed"], rows
    )
    results: dict[str, Any] = {"dataset": info.name, "targets": {}, "invalid": {}}
    curves: dict[str, Any] = {}
    for task in TASKS:
        task_rows = rows.get(task, [])
        if not task_rows:
            continue
        preds = []
        for i in range(0, len(task_rows), batch_size):
            chunk = task_rows[i : i + batch_size]
            prompts = [
                Prompt(r["input_ids"][: r["prompt_length"]], r["images"] or []) for r in chunk
            ]
            preds.extend(predictor.predict_prompts(prompts, [task], options))
            print(
                f"\revaluate {task}: {min(i + batch_size, len(task_rows))}/{len(task_rows)}",
                end="",
                flush=True,
            )
        print(flush=True)
        invalid = Counter(p.invalid[task] for p in preds if task in p.invalid)
        results["targets"][task] = len(task_rows)
        results["invalid"][task] = dict(invalid)
        last_gaps = np.array([sequences[r["seq_id"]].gaps[r["target"] - 1] for r in task_rows])
        results[task] = _score(
            task,
            task_rows,
            preds,
            mean_gap,
            median_gap,
            majority,
            bayes,
            info.num_types,
            curves,
            last_gaps,
        )
    results["config"] = config or manifest["config"]
    results["decode"] = vars(options)
    results["versions"] = _versions()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    plot(curves, info.type_names, out)
    return results


def _score(task, rows, preds, mean_gap, median_gap, majority, bayes, num_types, curves, last_gaps):
    valid = [i for i, p in enumerate(preds) if task not in p.invalid]
    res: dict[str, Any] = {"valid": len(valid), "total": len(rows)}
    if task == "text":
        res["rouge_l"] = (
            rouge_l([preds[i].text for i in valid], [rows[i]["true_text"] for i in valid])
            if valid
            else None
        )
        return res
    true = np.array([rows[i]["true_gap" if task == "time" else "true_type"] for i in valid])
    has_bayes = bool(bayes)
    if has_bayes:
        b = [bayes[rows[i]["seq_id"]] for i in valid]
        idx = [rows[i]["target"] - 1 for i in valid]
    if task == "time":
        model = np.array([preds[i].time for i in valid], dtype=float)
        last = last_gaps[valid]
        res["model"] = {"rmse": rmse(model, true), "mae": mae(model, true)}
        res["last_gap"] = {"rmse": rmse(last, true), "mae": mae(last, true)}
        res["mean_gap"] = {
            "rmse": rmse(np.full_like(true, mean_gap), true),
            "mae": mae(np.full_like(true, median_gap), true),
        }
        curves["time"] = (true, model)
        if has_bayes:
            bm = np.array([x.mean_gap[j] for x, j in zip(b, idx, strict=True)])
            bmed = np.array([x.median_gap[j] for x, j in zip(b, idx, strict=True)])
            res["bayes"] = {
                "rmse": rmse(bm, true),
                "mae": mae(bmed, true),
                "nll": float(np.mean([x.nll_time[j] for x, j in zip(b, idx, strict=True)])),
            }
            res["rmse_ratio_to_bayes"] = res["model"]["rmse"] / res["bayes"]["rmse"]
            res["rmse_captured"] = captured(
                res["model"]["rmse"], res["mean_gap"]["rmse"], res["bayes"]["rmse"]
            )
            res["mae_captured"] = captured(
                res["model"]["mae"], res["mean_gap"]["mae"], res["bayes"]["mae"]
            )
    else:
        all_true = np.array([r["true_type"] for r in rows])
        model = np.array([-1 if task in p.invalid else p.type for p in preds])
        res["model"] = {
            "accuracy": accuracy(model, all_true),
            "macro_f1": macro_f1(model, all_true, num_types),
        }
        res["majority"] = {
            "accuracy": accuracy(np.full_like(all_true, majority), all_true),
            "macro_f1": macro_f1(np.full_like(all_true, majority), all_true, num_types),
        }
        curves["type"] = (all_true, model)
        if has_bayes:
            bt = np.array([bayes[r["seq_id"]].most_probable_type[r["target"] - 1] for r in rows])
            res["bayes"] = {
                "accuracy": accuracy(bt, all_true),
                "macro_f1": macro_f1(bt, all_true, num_types),
            }
            res["accuracy_gap_to_bayes"] = res["bayes"]["accuracy"] - res["model"]["accuracy"]
            res["accuracy_captured"] = captured(
                res["model"]["accuracy"], res["majority"]["accuracy"], res["bayes"]["accuracy"]
            )
    return res


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mmtpp", "torch", "ray", "transformers", "peft", "deepspeed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _row(name: str, model: Any, baseline: str, optimal: Any, got: Any) -> str:
    return f"| {name} | {_fmt(model)} | {baseline} | {_fmt(optimal)} | {_fmt(got, '.0%')} |"


def format_table(r: dict[str, Any]) -> str:
    lines = ["| metric | model | baseline | Bayes-optimal | captured |", "|---|---|---|---|---|"]
    t, y, x = r.get("time"), r.get("type"), r.get("text")
    if t:
        b = t.get("bayes", {})
        base = f"mean gap {_fmt(t['mean_gap']['rmse'])}, last gap {_fmt(t['last_gap']['rmse'])}"
        lines.append(
            _row("time RMSE", t["model"]["rmse"], base, b.get("rmse"), t.get("rmse_captured"))
        )
        base = f"median gap {_fmt(t['mean_gap']['mae'])}, last gap {_fmt(t['last_gap']['mae'])}"
        lines.append(_row("time MAE", t["model"]["mae"], base, b.get("mae"), t.get("mae_captured")))
    if y:
        b = y.get("bayes", {})
        base = f"majority {_fmt(y['majority']['accuracy'])}"
        lines.append(
            _row(
                "type accuracy",
                y["model"]["accuracy"],
                base,
                b.get("accuracy"),
                y.get("accuracy_captured"),
            )
        )
        base = f"majority {_fmt(y['majority']['macro_f1'])}"
        lines.append(_row("type macro-F1", y["model"]["macro_f1"], base, b.get("macro_f1"), None))
    if x:
        lines.append(_row("text ROUGE-L", x.get("rouge_l"), "", None, None))
    inv = ", ".join(f"{k}: {sum(c.values())}/{r['targets'][k]}" for k, c in r["invalid"].items())
    lines.append(f"\ninvalid generations (counted, excluded from time errors): {inv}")
    if t and y and "rmse_ratio_to_bayes" in t:
        lines.append(
            f"time RMSE / Bayes-optimal RMSE = {t['rmse_ratio_to_bayes']:.3f}; type accuracy "
            f"gap to Bayes-optimal = {y['accuracy_gap_to_bayes'] * 100:.1f} points"
        )
    return "\n".join(lines)


def plot(curves: dict[str, Any], type_names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "time" in curves:
        true, pred = curves["time"]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(np.maximum(true, 1e-4), np.maximum(pred, 1e-4), s=6, alpha=0.5)
        lim = [1e-4, max(float(np.max(true)), float(np.max(pred)), 1e-3)]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="true gap",
            ylabel="predicted gap",
            title="next-event gap",
        )
        fig.tight_layout()
        fig.savefig(out / "gap_pred_vs_true.png", dpi=120)
        plt.close(fig)
    if "type" in curves:
        true, pred = curves["type"]
        k = len(type_names)
        matrix = np.zeros((k, k + 1), dtype=int)  # last column: invalid
        for t, p in zip(true, pred, strict=True):
            matrix[t, p if p >= 0 else k] += 1
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(k + 1), [*type_names, "invalid"], rotation=45)
        ax.set_yticks(range(k), type_names)
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title="next-event type")
        fig.tight_layout()
        fig.savefig(out / "type_confusion.png", dpi=120)
        plt.close(fig)
