"""EasyTPP peers on the embedded default's test targets, next to the true process.

    python benchmarks/bench_peers.py [--data /tmp/h3/synth] [--peers THP,NHP,IntensityFree]
                                     [--epochs 20] [--batch-size 4] [--lr 3e-3]
                                     [--targets 8] [--json out.json]

Generates the synthetic default (200 sequences, seed 0) into ``--data`` when it is not there,
splits it as preparation does (0.8/0.1/0.1, seed 0), samples 8 targets per test sequence
(min history 8, seed 0: the embedded default's evaluation targets), trains every peer on
the training split (early stopping on val) and prints, per peer: time NLL, type NLL given
the time and marginal, joint NLL (nats per event, the dataset's unit), RMSE / MAE of the gap
EasyTPP predicts (thinning) and of the model's own conditional mean / median, type
accuracy, training seconds. The true process (Bayes-optimal, from the dataset's Hawkes
parameters) and a Poisson baseline (exponential gaps at the training mean, types at their
training frequencies) anchor the table; a second table gives 95% intervals of the joint NLL
and of its paired difference to the true process.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

SPLIT, SEED, MIN_HISTORY = [0.8, 0.1, 0.1], 0, 8


def _interval(values: np.ndarray) -> str:
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    return f"{values.mean():.3f} ± {half:.3f}"


def _rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="/tmp/h3/synth")
    parser.add_argument("--peers", default="THP,NHP,IntensityFree,SAHP,RMTPP,S2P2")
    parser.add_argument("--epochs", type=int, default=None, help="default: PeerSettings'")
    parser.add_argument("--batch-size", type=int, default=None, help="default: PeerSettings'")
    parser.add_argument("--lr", type=float, default=None, help="default: PeerSettings'")
    parser.add_argument("--targets", type=int, default=8, help="targets per test sequence")
    parser.add_argument("--json", default=None, help="also write the per-target scores here")
    args = parser.parse_args()

    from mmtpp.events import read_info, split_of
    from mmtpp.hawkes import HawkesParams, bayes_predictions
    from mmtpp.peer_models import PeerSettings
    from mmtpp.peers import run_peers, split_targets
    from mmtpp.sources.synthetic import SynthConfig, synthesize
    from mmtpp.validation import read_sequences

    root = Path(args.data)
    if not (root / "dataset.json").is_file():
        synthesize(SynthConfig(num_sequences=200, seed=0), root)
    targets = split_targets(root, SPLIT, SEED, args.targets, MIN_HISTORY, SEED)
    chosen = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    settings = PeerSettings(**{k: v for k, v in chosen.items() if v is not None})
    start = time.perf_counter()
    res = run_peers(root, SPLIT, SEED, targets, args.peers.split(","), settings)
    total = time.perf_counter() - start
    gap, kind = res["true_gap"], res["true_type"]

    rows: dict[str, dict] = {}
    seqs = {s.seq_id: s for s in read_sequences(root)}
    hawkes = read_info(root).source.get("hawkes")
    if hawkes:
        params = HawkesParams.from_dict(hawkes)
        bayes = {q: bayes_predictions(params, seqs[q].time, seqs[q].type) for q, _ in targets}
        pick = [(bayes[q], i - 1) for q, i in targets]
        b = {
            key: np.array([getattr(p, key)[j] for p, j in pick])
            for key in ("nll_time", "nll_type", "nll", "mean_gap", "median_gap")
        }
        b_type = np.array([p.type_probs[j].argmax() for p, j in pick])
        rows["true process"] = {
            "time": b["nll_time"],
            "given": b["nll"] - b["nll_time"],
            "marginal": b["nll_type"],
            "joint": b["nll"],
            "rmse": _rmse(b["mean_gap"], gap),
            "mae": _mae(b["median_gap"], gap),
            "accuracy": float(np.mean(b_type == kind)),
        }
    split = split_of(list(seqs), SPLIT, SEED)
    train = [s for s, name in zip(seqs.values(), split, strict=True) if name == "train"]
    mean_gap = float(np.concatenate([np.diff(s.time) for s in train]).mean())
    freq = np.bincount(np.concatenate([s.type for s in train]), minlength=kind.max() + 1)
    freq = (freq + 1.0) / (freq.sum() + freq.size)
    poisson_time = math.log(mean_gap) + gap / mean_gap
    rows["Poisson baseline"] = {
        "time": poisson_time,
        "given": -np.log(freq[kind]),
        "marginal": -np.log(freq[kind]),
        "joint": poisson_time - np.log(freq[kind]),
        "rmse": _rmse(np.full_like(gap, mean_gap), gap),
        "mae": _mae(np.full_like(gap, mean_gap * math.log(2)), gap),
        "accuracy": float(np.mean(kind == freq.argmax())),
    }
    for name, peer in res["peers"].items():
        s, summ = peer["scores"], peer["summary"]
        rows[name] = {
            "time": s["time_nll"],
            "given": s["type_nll_given_time"],
            "marginal": s["type_nll_marginal"],
            "joint": s["joint_nll"],
            "rmse": summ["rmse"],
            "mae": summ["mae"],
            "rmse_mean": summ["rmse_mean_gap"],
            "mae_median": summ["mae_median_gap"],
            "accuracy": summ["accuracy"],
            "accuracy_marginal": summ["accuracy_marginal"],
            "seconds": peer["train_seconds"],
            "score_seconds": peer["score_seconds"],
            "epochs": f"{peer['best_epoch'] + 1}/{peer['epochs_run']}",
            "error": float(np.max(s["integration_error"])),
            "tail": summ["max_tail_mass"],
        }

    unit = res["time_unit"]
    print(
        f"{len(targets)} test targets of {res['dataset']} (gaps in {unit}); "
        f"peers trained {settings.epochs} epochs at most; whole run {total:.0f} s\n"
    )
    print(
        "| model | time NLL | type NLL given time | type NLL marginal | joint NLL | gap RMSE "
        "(thinning / mean) | gap MAE (thinning / median) | type acc. (EasyTPP / marginal) | "
        "train s (best/run epochs) | score s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        rmse = f"{r['rmse']:.3f}" + (f" / {r['rmse_mean']:.3f}" if "rmse_mean" in r else "")
        mae = f"{r['mae']:.3f}" + (f" / {r['mae_median']:.3f}" if "mae_median" in r else "")
        acc = f"{r['accuracy']:.3f}" + (
            f" / {r['accuracy_marginal']:.3f}" if "accuracy_marginal" in r else ""
        )
        secs = (
            f"{r['seconds']:.0f} ({r['epochs']}) | {r['score_seconds']:.0f}"
            if "seconds" in r
            else " "
        )
        print(
            f"| {name} | {r['time'].mean():.3f} | {r['given'].mean():.3f} | "
            f"{r['marginal'].mean():.3f} | {r['joint'].mean():.3f} | {rmse} | {mae} | {acc} | "
            f"{secs} |"
        )
    print(
        "\n| model | joint NLL (95% interval) | joint NLL − true process (paired) | "
        "type NLL marginal − true process | largest integration change | largest tail mass |"
    )
    print("|---|---|---|---|---|---|")
    ref = rows.get("true process")
    for name, r in rows.items():
        diff = _interval(r["joint"] - ref["joint"]) if ref and name != "true process" else ""
        tdiff = _interval(r["marginal"] - ref["marginal"]) if ref and name != "true process" else ""
        extra = f"{r['error']:.1e} | {r['tail']:.1e}" if "error" in r else " | "
        print(f"| {name} | {_interval(r['joint'])} | {diff} | {tdiff} | {extra} |")
    if args.json:
        out = {
            "targets": res["targets"],
            "true_gap": gap.tolist(),
            "true_type": kind.tolist(),
            "peers": {
                n: {
                    **{k: np.asarray(v).tolist() for k, v in p["scores"].items()},
                    "summary": p["summary"],
                    "train_seconds": p["train_seconds"],
                }
                for n, p in res["peers"].items()
            },
        }
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
