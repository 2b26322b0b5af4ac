"""Metrics, baselines and the Bayes-optimal limit on the test split (SPEC §7).

The model answers the prepared test prompts through ``Predictor`` (the serving code path).
On the same targets: last-gap and mean-gap predictors, the majority type, and — when the
dataset records its true Hawkes parameters — the Bayes-optimal predictor (conditional mean
and median of the next gap, most probable next type), which no model can beat. Invalid
generations are counted per reason and excluded from the time errors (never silently): the
baselines are scored on the same valid targets so the comparison stays fair.

Teacher-forced likelihoods complete the picture: the model's exact time NLL (byte-token
log-probabilities made a density by the float32 cell width) and type cross-entropy next to
the true process's; the perplexity of the next event's tokens as a function of how many
history events the prompt holds, compressed vs uncompressed (the paper's Fig. 2a); and the
events that fit in the budget per Δ.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtpp.compression import compression_stats
from mmtpp.config import EvalConfig
from mmtpp.decoding import DecodeOptions
from mmtpp.events import EventSequence, read_info, read_sequences
from mmtpp.hawkes import HawkesParams, bayes_predictions
from mmtpp.predict import Predictor, Prompt
from mmtpp.prepare import split_of
from mmtpp.stats import DEFAULT_DELTAS
from mmtpp.templates import RESPONSE_LENGTH, SHORT_RESPONSE_ROOM
from mmtpp.timecodec import float32_interval_width
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


def bleu(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU (sacrebleu's defaults: 4-grams, its 13a tokenizer), in [0, 1]."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(preds, [refs]).score / 100)


def captured(model: float, baseline: float, optimal: float) -> float | None:
    """Fraction of the baseline → Bayes-optimal improvement the model captures; None when
    the baseline is within 1% of the optimum (the fraction would be noise over a tiny gap)."""
    if abs(baseline - optimal) <= 0.01 * abs(baseline):
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


def _quarantined(prepared: Path) -> set[str]:
    """The sequence ids preparation quarantined (``quarantine.json``; none when absent)."""
    path = prepared / "quarantine.json"
    return {q["seq_id"] for q in json.loads(path.read_text())} if path.is_file() else set()


def _reference(
    dataset_root: Path,
    split: list[float],
    seed: int,
    rows: dict[str, list[dict]],
    quarantined: set[str] = frozenset(),
):
    """Per (seq_id, target): last gap, Bayes-optimal predictions; plus training means.

    Only the sequences preparation accepted count: a ``quarantined`` one (NaN times, bad
    types, …) would otherwise leak into the mean-gap and majority baselines."""
    info = read_info(dataset_root)
    sequences = {s.seq_id: s for s in read_sequences(dataset_root) if s.seq_id not in quarantined}
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
        # training type frequencies (add-one smoothed): the baseline's type distribution
        (np.bincount(train_types, minlength=info.num_types) + 1.0)
        / (train_types.size + info.num_types),
    )


def _prompt_of(row: dict) -> Prompt:
    return Prompt(row["input_ids"][: row["prompt_length"]], row["images"] or [])


def rendered_prompts(
    predictor: Predictor,
    rows: dict[str, list[dict]],
    sequences: dict[str, EventSequence],
    delta: float,
) -> dict[str, list[Prompt]]:
    """The prompts of the prepared test rows rendered again from the raw sequences with
    compression threshold ``delta`` (same targets, token room and scan direction as
    preparation: at the model's Δ they are the prepared prompts)."""
    seq_ids = sorted({r["seq_id"] for task_rows in rows.values() for r in task_rows})
    ets = dict(zip(seq_ids, predictor.renderer.event_tokens(
        [sequences[s] for s in seq_ids], predictor.count_image_tokens), strict=True))  # fmt: skip
    out = {}
    for task, task_rows in rows.items():
        out[task] = []
        for r in task_rows:
            response = len(r["input_ids"]) - r["prompt_length"]
            reserve = SHORT_RESPONSE_ROOM if task in RESPONSE_LENGTH else response
            s, target = r["seq_id"], r["target"]
            room = predictor.budget - reserve
            out[task].append(predictor.prompt_for(sequences[s], ets[s], target, task, delta, room))
    return out


def eval_prompts(
    predictor: Predictor,
    rows: dict[str, list[dict]],
    sequences: dict[str, EventSequence],
    compress: bool,
) -> dict[str, list[Prompt]]:
    """The prompts the model answers: the prepared ones (history compressed at the model's
    Δ), or with ``compress`` False the same targets with uncompressed histories (Δ = 0 at
    inference: the ablation ``eval.compress=false``)."""
    if compress:
        return {task: [_prompt_of(r) for r in task_rows] for task, task_rows in rows.items()}
    return rendered_prompts(predictor, rows, sequences, 0.0)


def likelihoods(
    predictor: Predictor,
    rows: dict[str, list[dict]],
    bayes: dict,
    batch_size: int,
    prompts_by_task: dict[str, list[Prompt]] | None = None,
    baseline: tuple[float, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Teacher-forced NLL of the true next gap (nats per event, a density: the four byte
    tokens' log-probability minus the log-width of the float32 cell, SPEC §7) and of the
    true type (cross-entropy), on the test prompts (default: the prepared ones), beside
    the true process's and — given ``baseline`` = (training mean gap, type frequencies) —
    the baseline's: exponential gaps at the mean rate (a Poisson process) and types drawn
    at their training frequencies, with the fraction of the baseline → true-process gap
    the model captures (SPEC §7)."""
    out: dict[str, Any] = {}
    for task, positions in (("time", slice(1, 5)), ("type", slice(1, 2))):
        task_rows = rows.get(task, [])
        if not task_rows:
            continue
        task_prompts = (prompts_by_task or {}).get(task) or [_prompt_of(r) for r in task_rows]
        nll = []
        for i in range(0, len(task_rows), batch_size):
            chunk = task_rows[i : i + batch_size]
            prompts = task_prompts[i : i + batch_size]
            responses = [r["input_ids"][r["prompt_length"] :] for r in chunk]
            for lp in predictor.response_log_probs(prompts, responses):
                nll.append(-float(lp[positions].sum()))
        nll_arr = np.asarray(nll)
        scored = np.ones(len(task_rows), dtype=bool)
        if task == "time":
            gaps = np.array([r["true_gap"] for r in task_rows])
            nll_arr = nll_arr + np.log(float32_interval_width(gaps))
            scored = gaps > 0  # a tie's float32 cell is degenerate: counted apart
        res: dict[str, Any] = {
            "model": float(nll_arr[scored].mean()) if scored.any() else None,
            "targets": int(scored.sum()),
        }
        if task == "time":
            res["zero_gaps_excluded"] = int((~scored).sum())
        if bayes and scored.any():
            field = "nll_time" if task == "time" else "nll_type"
            true = [getattr(bayes[r["seq_id"]], field)[r["target"] - 1]
                    for r, keep in zip(task_rows, scored, strict=True) if keep]  # fmt: skip
            res["bayes"] = float(np.mean(true))
        if baseline is not None and scored.any():
            mean_gap, type_freq = baseline
            kept = [r for r, keep in zip(task_rows, scored, strict=True) if keep]
            if task == "time":
                gaps_kept = np.array([r["true_gap"] for r in kept])
                base = np.log(mean_gap) + gaps_kept / mean_gap
            else:
                base = -np.log(type_freq[[r["true_type"] for r in kept]])
            res["baseline"] = float(np.mean(base))
            if "bayes" in res:
                res["captured"] = captured(res["model"], res["baseline"], res["bayes"])
        out[f"{task}_nll"] = res
    return out


def ppl_by_history(
    predictor: Predictor,
    sequences: dict[str, EventSequence],
    targets: list[tuple[str, int]],
    lengths: Sequence[int],
    batch_size: int,
) -> list[dict[str, Any]]:
    """Perplexity of the next event's time and type response tokens when the prompt holds
    at most ``L`` history events, for each ``L``, with the history compressed at the model's
    Δ and uncompressed (both within the model's token budget, as in training)."""
    renderer = predictor.renderer
    seq_ids = sorted({s for s, _ in targets})
    ets = dict(
        zip(seq_ids, renderer.event_tokens([sequences[s] for s in seq_ids],
                                           predictor.count_image_tokens), strict=True)
    )  # fmt: skip
    points = []
    for compressed in (True, False):
        delta = predictor.delta if compressed else 0.0
        for length in lengths:
            nll = tokens = events = prompt_tokens = 0.0
            for task in ("time", "type"):
                room = predictor.budget - SHORT_RESPONSE_ROOM
                for i in range(0, len(targets), batch_size):
                    chunk = targets[i : i + batch_size]
                    prompts = [
                        predictor.prompt_for(sequences[s], ets[s], t, task, delta, room, length)
                        for s, t in chunk
                    ]
                    responses = [renderer.response(ets[s], t, task).tolist() for s, t in chunk]
                    for p, lp in zip(
                        prompts, predictor.response_log_probs(prompts, responses), strict=True
                    ):
                        nll -= float(lp.sum())
                        tokens += lp.size
                        events += p.history_events
                        prompt_tokens += len(p.input_ids)
            n = 2 * len(targets)
            points.append({
                "compressed": compressed, "max_events": int(length),
                "ppl": float(np.exp(nll / tokens)), "history_events": events / n,
                "prompt_tokens": prompt_tokens / n,
            })  # fmt: skip
            print(f"perplexity: {'compressed' if compressed else 'uncompressed'} history "
                  f"≤ {length} events: {points[-1]['ppl']:.3f}", flush=True)  # fmt: skip
    return points


def events_per_budget(
    predictor: Predictor, sequences: list[EventSequence], deltas: Sequence[float]
) -> list[dict[str, Any]]:
    """Events that fit in the model's budget per Δ (backward compression, the prompt's view),
    with the model's tokenizer, over ``sequences``."""
    ets = predictor.renderer.event_tokens(sequences, predictor.count_image_tokens)
    pairs = [(et.gaps, et.costs()) for et in ets]
    return [compression_stats(pairs, d, predictor.budget).to_dict() for d in deltas]


def evaluate(
    model_dir: str | Path,
    prepared_dir: str | Path,
    dataset_root: str | Path,
    out_dir: str | Path,
    options: DecodeOptions | None = None,
    max_per_task: int | None = None,
    batch_size: int = 16,
    config: dict | None = None,
    ppl_lengths: Sequence[int] | None = None,
    ppl_targets: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on the prepared test split; writes results.json, results.md
    and plots to ``out_dir`` and returns the results."""
    options = options or DecodeOptions()
    prepared, out = Path(prepared_dir), Path(out_dir)
    if not (prepared / "manifest.json").is_file():
        raise FileNotFoundError(f"{prepared}: no manifest.json (not a prepared directory)")
    manifest = json.loads((prepared / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = manifest["config"]["data"]
    predictor = Predictor(model_dir, image_root=dataset_root)
    rows = _test_rows(prepared, max_per_task)
    info, sequences, mean_gap, median_gap, majority, bayes, type_freq = _reference(
        Path(dataset_root), data_cfg["split"], data_cfg["seed"], rows, _quarantined(prepared)
    )
    prompts_by_task = eval_prompts(predictor, rows, sequences, options.compress)
    results: dict[str, Any] = {"dataset": info.name, "targets": {}, "invalid": {}}
    curves: dict[str, Any] = {}
    for task in TASKS:
        task_rows = rows.get(task, [])
        if not task_rows:
            continue
        preds = []
        for i in range(0, len(task_rows), batch_size):
            prompts = prompts_by_task[task][i : i + batch_size]
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
        if task == "time" and options.time_mode in ("mean", "median"):
            dropped: Counter[str] = Counter()
            for p in preds:
                dropped.update(p.invalid_samples.get(task, {}))
            results["invalid_samples"] = {
                "time": dict(dropped),
                "drawn": options.samples * len(preds),
            }
        # the previous event's gap (time) or type (type): the "last" baselines
        column = "gaps" if task == "time" else "type"
        previous = np.array(
            [getattr(sequences[r["seq_id"]], column)[r["target"] - 1] for r in task_rows]
        )
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
            previous,
        )
    results["likelihood"] = likelihoods(
        predictor, rows, bayes, batch_size, prompts_by_task, (mean_gap, type_freq)
    )
    defaults = EvalConfig()
    ppl_lengths = defaults.ppl_lengths if ppl_lengths is None else ppl_lengths
    ppl_targets = defaults.ppl_targets if ppl_targets is None else ppl_targets
    targets = list(dict.fromkeys((r["seq_id"], r["target"]) for r in rows.get("time", [])))
    results["ppl_by_history"] = (
        ppl_by_history(predictor, sequences, targets[:ppl_targets], ppl_lengths, batch_size)
        if ppl_targets and ppl_lengths
        else []
    )
    deltas = sorted({*DEFAULT_DELTAS, predictor.delta})
    test_seqs = [sequences[s] for s in dict.fromkeys(r["seq_id"] for r in rows.get("time", []))]
    results["events_per_budget"] = events_per_budget(predictor, test_seqs, deltas)
    curves["ppl"] = results["ppl_by_history"]
    curves["events_per_budget"] = results["events_per_budget"]
    results["config"] = config or manifest["config"]
    results["decode"] = options.model_dump()
    results["versions"] = _versions()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    plot(curves, info.type_names, out)
    return results


def _score(task, rows, preds, mean_gap, median_gap, majority, bayes, num_types, curves, previous):
    valid = [i for i, p in enumerate(preds) if task not in p.invalid]
    res: dict[str, Any] = {"valid": len(valid), "total": len(rows)}
    if task == "text":
        pred_texts = [preds[i].text for i in valid]
        refs = [rows[i]["true_text"] for i in valid]
        res["rouge_l"] = rouge_l(pred_texts, refs) if valid else None
        res["bleu"] = bleu(pred_texts, refs) if valid else None
        return res
    if task == "time" and not valid:  # nothing to score: the table and plot say so
        curves["time"] = (np.empty(0), np.empty(0))
        return res
    true = np.array([rows[i]["true_gap" if task == "time" else "true_type"] for i in valid])
    has_bayes = bool(bayes)
    if has_bayes:
        b = [bayes[rows[i]["seq_id"]] for i in valid]
        idx = [rows[i]["target"] - 1 for i in valid]
    if task == "time":
        model = np.array([preds[i].time for i in valid], dtype=float)
        last = previous[valid]
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
        res["last_type"] = {
            "accuracy": accuracy(previous, all_true),
            "macro_f1": macro_f1(previous, all_true, num_types),
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
    if t and "model" not in t:
        lines.append(f"| time | no valid prediction of {t['total']} | | | |")
    if t and "model" in t:
        b = t.get("bayes", {})
        base = f"mean gap {_fmt(t['mean_gap']['rmse'])}, last gap {_fmt(t['last_gap']['rmse'])}"
        lines.append(
            _row("time RMSE", t["model"]["rmse"], base, b.get("rmse"), t.get("rmse_captured"))
        )
        base = f"median gap {_fmt(t['mean_gap']['mae'])}, last gap {_fmt(t['last_gap']['mae'])}"
        lines.append(_row("time MAE", t["model"]["mae"], base, b.get("mae"), t.get("mae_captured")))
    if y:
        b = y.get("bayes", {})
        base = (f"majority {_fmt(y['majority']['accuracy'])}, "
                f"last type {_fmt(y['last_type']['accuracy'])}")  # fmt: skip
        lines.append(
            _row(
                "type accuracy",
                y["model"]["accuracy"],
                base,
                b.get("accuracy"),
                y.get("accuracy_captured"),
            )
        )
        base = (f"majority {_fmt(y['majority']['macro_f1'])}, "
                f"last type {_fmt(y['last_type']['macro_f1'])}")  # fmt: skip
        lines.append(_row("type macro-F1", y["model"]["macro_f1"], base, b.get("macro_f1"), None))
    if x:
        lines.append(_row("text ROUGE-L", x.get("rouge_l"), "", None, None))
        lines.append(_row("text BLEU", x.get("bleu"), "", None, None))
    inv = ", ".join(f"{k}: {sum(c.values())}/{r['targets'][k]}" for k, c in r["invalid"].items())
    lines.append(f"\ninvalid generations (counted, excluded from time errors): {inv}")
    samples = r.get("invalid_samples")
    if samples:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(samples["time"].items())) or "none"
        lines.append(f"invalid time samples left out of the mean/median: "
                     f"{sum(samples['time'].values())}/{samples['drawn']} ({reasons})")  # fmt: skip
    for key, name in (("time_nll", "time NLL (nats/event)"), ("type_nll", "type NLL (nats)")):
        nll = r.get("likelihood", {}).get(key)
        if nll:
            ties = nll.get("zero_gaps_excluded")
            lines.append(f"{name}: model {_fmt(nll['model'], '.3f')}, baseline "
                         f"{_fmt(nll.get('baseline'), '.3f')}, true process "
                         f"{_fmt(nll.get('bayes'), '.3f')}, captured "
                         f"{_fmt(nll.get('captured'), '.0%')}"
                         + (f" ({ties} zero gaps left out)" if ties else ""))  # fmt: skip
    ppl = r.get("ppl_by_history") or []
    if ppl:
        by = {(p["compressed"], p["max_events"]): p for p in ppl}
        lengths = sorted({p["max_events"] for p in ppl})
        lines.append("\nperplexity of the next event vs history events:")
        lines.append("| ≤ events | " + " | ".join(str(n) for n in lengths) + " |")
        lines.append("|---|" + "---|" * len(lengths))
        for c, label in ((True, "compressed"), (False, "uncompressed")):
            cells = " | ".join(f"{by[(c, n)]['ppl']:.3f} ({by[(c, n)]['history_events']:.0f})"
                               for n in lengths)  # fmt: skip
            lines.append(f"| {label} PPL (events used) | {cells} |")
    epb = r.get("events_per_budget") or []
    if epb:
        cells = ", ".join(f"Δ={s['delta']:g}: {s['events_per_budget']:.1f}" for s in epb)
        lines.append(f"events per {epb[0]['budget']}-token budget: {cells}")
    if t and y and "rmse_ratio_to_bayes" in t and "accuracy_gap_to_bayes" in y:
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
        lim = [1e-4, max(float(np.max(true, initial=0)), float(np.max(pred, initial=0)), 1e-3)]
        ax.plot(lim, lim, "k--", lw=1)
        if not true.size:
            ax.text(0.5, 0.5, "no valid time prediction", transform=ax.transAxes, ha="center")
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
    if curves.get("ppl"):
        fig, ax = plt.subplots(figsize=(5, 4))
        for compressed, label in ((True, "compressed"), (False, "uncompressed")):
            pts = [p for p in curves["ppl"] if p["compressed"] == compressed]
            ax.plot([p["max_events"] for p in pts], [p["ppl"] for p in pts], "o-", label=label)
        ax.set(xscale="log", xlabel="history events (at most, within the budget)",
               ylabel="next-event perplexity", title="perplexity vs history length")  # fmt: skip
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ppl_vs_history.png", dpi=120)
        plt.close(fig)
    if curves.get("events_per_budget"):
        stats = curves["events_per_budget"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([s["delta"] for s in stats], [s["events_per_budget"] for s in stats], "o-")
        ax.axhline(stats[0]["events_per_budget_uncompressed"], color="k", ls="--", lw=1,
                   label="uncompressed")  # fmt: skip
        ax.set(xlabel="Δ", ylabel=f"events in {stats[0]['budget']} tokens",
               title="events per budget vs Δ (test sequences)")  # fmt: skip
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "events_per_budget.png", dpi=120)
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
