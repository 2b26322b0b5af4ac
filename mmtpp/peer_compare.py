"""EasyTPP's peers next to mmtpp on one evaluation's scored targets (docs/peers.md §6).

An evaluation writes one row per scored test target (``targets.parquet``: mmtpp's NLLs and
predictions, the baselines' and, on synthetic data, the true process's). ``compare`` trains
the peers on the training split the run was prepared from (same split seed, same quarantined
sequences left out) and scores exactly those targets, so every row of the table is measured
on the same events and every difference to mmtpp is paired target by target.

Figures: time NLL (nats per event, the dataset's unit; targets with a zero gap — no density —
left out, as the evaluation does), type NLL (before the gap is known: the peers' marginal
P(k), what mmtpp's type prompt predicts), their sum, RMSE and MAE of the predicted gap (mmtpp:
its decoded gap; peers: EasyTPP's thinning prediction; Poisson: the training mean gap;
true process: its conditional mean) and type accuracy, each with a 95% bootstrap
interval over targets; then every row minus mmtpp, paired on the targets. On data recorded to
a time resolution (``DatasetInfo.time_resolution``) also −log P(the gap's bin), ties
included: the likelihood that compares a byte distribution with a density (design §7).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.intervals import bootstrap_ci, paired_difference, sqrt_of_mean
from mmtpp.peer_models import PEER_NAMES, PeerSettings
from mmtpp.peers import run_peers
from mmtpp.prepared import PreparedData

FIGURES = (
    *("time NLL", "type NLL", "time + type NLL", "gap RMSE", "gap MAE", "type accuracy"),
    "time NLL of the bin",
)


def _row(time_nll, type_nll, pred_gap, pred_type, binned=None) -> dict[str, np.ndarray]:
    n = len(time_nll)
    return {
        "time_nll": np.asarray(time_nll, np.float64),
        "type_nll": np.asarray(type_nll, np.float64),
        "pred_gap": np.asarray(pred_gap, np.float64),
        "pred_type": np.asarray(pred_type, np.float64),
        "binned": np.full(n, np.nan) if binned is None else np.asarray(binned, np.float64),
    }


def target_rows(frame: pd.DataFrame, mean_gap: float) -> dict[str, dict[str, np.ndarray]]:
    """mmtpp's, the Poisson baseline's (gap predicted: the training mean ``mean_gap``; no type
    prediction) and, when known, the true process's per-target columns."""
    n = len(frame)
    rows = {
        # an invalid type generation counts as wrong (as in the evaluation); an invalid time
        # leaves the target out of the gap errors, for every row
        "mmtpp": _row(
            frame["time_nll"],
            frame["type_nll"],
            frame["pred_gap"],
            frame["pred_type"].fillna(-1),
            frame.get("time_nll_binned"),
        ),
        "Poisson / type frequencies": _row(
            frame["poisson_time_nll"],
            frame["freq_type_nll"],
            np.full(n, mean_gap),
            np.full(n, np.nan),
            frame.get("poisson_time_nll_binned"),
        ),
    }
    if "bayes_time_nll" in frame:
        rows["true process"] = _row(
            frame["bayes_time_nll"],
            frame["bayes_type_nll"],
            frame["bayes_mean"],
            frame["bayes_type"],
        )
    return rows


def _figures(row: dict[str, np.ndarray], truth: dict[str, np.ndarray], keep: np.ndarray):
    """Per-figure (contributions [n_kept], statistic) on the targets ``keep`` selects."""
    err = row["pred_gap"][keep] - truth["gap"][keep]
    return {
        "time NLL": (row["time_nll"][keep], None),
        "type NLL": (row["type_nll"][keep], None),
        "time + type NLL": (row["time_nll"][keep] + row["type_nll"][keep], None),
        "gap RMSE": (err**2, sqrt_of_mean),
        "gap MAE": (np.abs(err), None),
        "type accuracy": ((row["pred_type"][keep] == truth["type"][keep]).astype(float), None),
        "time NLL of the bin": (row.get("binned", np.full(keep.size, np.nan))[keep], None),
    }


def table(rows: dict[str, dict[str, np.ndarray]], truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every row's figures with bootstrap intervals and its paired difference to mmtpp.

    A figure is computed on the targets where every row has a value (a zero gap has no time
    NLL; a baseline without a type prediction has no accuracy), the same targets for all
    rows; ``targets`` records how many.
    """
    out: dict[str, Any] = {"figures": {}, "versus_mmtpp": {}, "targets": {}}
    for figure in FIGURES:
        have = [r for r in rows if _defined(rows[r], figure)]
        if not have:  # e.g. the bin NLL on data without a time resolution
            continue
        everything = np.ones(truth["gap"].size, bool)
        keep = everything.copy()
        for name in have:
            keep &= np.isfinite(_figures(rows[name], truth, everything)[figure][0])
        out["targets"][figure] = int(keep.sum())
        for name in have:
            values, stat = _figures(rows[name], truth, keep)[figure]
            out["figures"].setdefault(name, {})[figure] = bootstrap_ci(values, stat).to_dict()
            if name != "mmtpp" and "mmtpp" in have:
                ours, _ = _figures(rows["mmtpp"], truth, keep)[figure]
                diff = paired_difference(values, ours, stat)
                out["versus_mmtpp"].setdefault(name, {})[figure] = diff.to_dict()
    return out


def _defined(row: dict[str, np.ndarray], figure: str) -> bool:
    column = {
        "type accuracy": "pred_type",
        "gap RMSE": "pred_gap",
        "gap MAE": "pred_gap",
        "time NLL of the bin": "binned",
    }
    values = row.get(column.get(figure, "time_nll"))
    return values is not None and not np.all(np.isnan(values))


def compare(
    prepared_dir: str | Path,
    report_dir: str | Path,
    names: list[str] | tuple[str, ...] = PEER_NAMES,
    settings: PeerSettings | None = None,
) -> dict[str, Any]:
    """Train ``names`` on the run's training split, score the report's targets, tabulate."""
    prepared = PreparedData(prepared_dir)
    manifest = prepared.manifest()
    path = Path(report_dir) / "targets.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no scored targets (run the evaluation first)")
    frame = pd.read_parquet(path)
    data = manifest.config["data"]
    seed = data["seed"] if data["seed"] is not None else manifest.config["seed"]
    targets = list(zip(frame["seq_id"], frame["target"].astype(int), strict=True))
    res = run_peers(
        manifest.dataset, data["split"], seed, targets, names, settings, prepared.quarantined_ids()
    )
    if not np.allclose(res["true_gap"], frame["true_gap"], rtol=1e-9, atol=1e-12):
        raise ValueError(
            f"{path}: the targets' gaps differ from {manifest.dataset}'s (the dataset changed "
            "after the run was prepared?)"
        )
    truth = {"gap": res["true_gap"], "type": res["true_type"].astype(np.float64)}
    rows = target_rows(frame, next(iter(res["peers"].values()))["time_scale"])
    for name, peer in res["peers"].items():
        s = peer["scores"]
        rows[name] = _row(
            s["time_nll"],
            s["type_nll_marginal"],
            s["pred_gap"],
            s["pred_type"],
            s.get("time_nll_binned"),
        )
    # a zero gap has no density: the evaluation leaves it out of the time NLL, so do the peers
    zero = truth["gap"] <= 0
    for row in rows.values():
        row["time_nll"] = np.where(zero, np.nan, row["time_nll"])
    result = table(rows, truth)
    result.update(
        dataset=res["dataset"],
        time_unit=res["time_unit"],
        scored=len(targets),
        settings=(settings or PeerSettings()).__dict__,
        peers={
            n: {k: p[k] for k in ("train_seconds", "score_seconds", "epochs_run", "best_epoch")}
            for n, p in res["peers"].items()
        },
    )
    return result


def _cell(value: dict[str, Any] | None) -> str:
    if value is None:
        return "—"
    return f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as markdown: figures, then differences to mmtpp (negative NLL, RMSE or
    MAE differences and positive accuracy differences favour the row over mmtpp)."""
    shown = [f for f in FIGURES if f in result["targets"] and result["targets"][f] > 0]
    head = "| model | " + " | ".join(shown) + " |"
    rule = "|" + " --- |" * (len(shown) + 1)
    lines = [
        f"{result['dataset']}: {result['scored']} test targets (time unit {result['time_unit']});"
        " targets per figure: "
        + ", ".join(f"{f} {n}" for f, n in result["targets"].items())
        + "; 95% bootstrap intervals over targets.",
        "",
        head,
        rule,
    ]
    for name, figs in result["figures"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(figs.get(f)) for f in shown) + " |")
    lines += ["", "row − mmtpp, paired on the same targets:", "", head, rule]
    for name, figs in result["versus_mmtpp"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(figs.get(f)) for f in shown) + " |")
    lines += ["", "peer training (best epoch / epochs run, seconds) and scoring seconds:"]
    for name, p in result["peers"].items():
        lines.append(
            f"- {name}: {p['best_epoch'] + 1}/{p['epochs_run']} epochs, "
            f"{p['train_seconds']:.0f} s training, {p['score_seconds']:.0f} s scoring"
        )
    return "\n".join(lines) + "\n"
