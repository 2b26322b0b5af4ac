"""The whole method on one config: prepare → stage 1 → stage 2 → evaluate → report.

Each step is skipped when its output is already there for the same inputs (after a crash,
rerunning the same command continues where it stopped): preparation by its manifest
fingerprint, a training stage by ``done.json`` holding the fingerprint of what it reads, the
offline predictions by theirs. Before training, the pipeline prints what it will do (rows,
steps, an estimated time); the scoring and the report always run again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmtpp.config import Config
from mmtpp.prepared import Manifest
from mmtpp.recipe import MODEL_SUBDIR, stage_dir

DONE = "done.json"
# tokens/s per worker of the tiny model (H128, 2 layers, LoRA) on the 2-core benchmark
# machine with 2 workers (benchmarks/bench_train.py): the first estimate of a run's time;
# a rerun uses what the last run of this output_dir measured
TINY_TOKENS_PER_S = 3600.0


def _measured_throughput(config: Config, stage: int) -> float | None:
    log = stage_dir(config, stage) / "metrics.jsonl"
    if not log.is_file():
        return None
    rates = [json.loads(line).get("tokens_per_s") for line in log.read_text().splitlines()]
    rates = [r for r in rates if r]
    return float(sum(rates) / len(rates)) if rates else None


def training_plan(config: Config, manifest: Manifest) -> list[dict[str, Any]]:
    """Per stage: training rows and tokens, optimizer steps, and an estimated duration."""
    t = config.train
    plan = []
    for stage in (1, 2):
        settings = t.stage1 if stage == 1 else t.stage2
        rows = manifest.rows[f"stage{stage}/train"]
        tokens = manifest.tokens[f"stage{stage}/train"]
        per_epoch = max(1, rows // t.num_workers // (t.micro_batch * t.grad_accum))
        steps = per_epoch * settings.epochs
        if settings.max_steps:
            steps = min(steps, settings.max_steps)
        share = steps / (per_epoch * settings.epochs)
        rate = _measured_throughput(config, stage)
        guess = rate is None and config.model.base == "tiny"
        rate = rate or (TINY_TOKENS_PER_S if guess else None)
        seconds = tokens * settings.epochs * share / (rate * t.num_workers) if rate else None
        plan.append(
            {
                "stage": stage,
                "rows": rows,
                "tokens": tokens,
                "epochs": settings.epochs,
                "steps": steps,
                "seconds": seconds,
                "from": "benchmark" if guess else ("last run" if rate else None),
            }
        )
    return plan


def format_plan(plan: list[dict[str, Any]]) -> str:
    lines = []
    for p in plan:
        eta = "" if p["seconds"] is None else f", about {p['seconds'] / 60:.1f} min ({p['from']})"
        lines.append(
            f"stage {p['stage']}: {p['rows']} rows ({p['tokens']} tokens) x "
            f"{p['epochs']} epoch(s) = {p['steps']} optimizer steps{eta}"
        )
    return "\n".join(lines)


def run_pipeline(config: Config) -> dict[str, Any]:
    from mmtpp.evaluate import evaluate
    from mmtpp.prepare import format_summary, prepare_from_config
    from mmtpp.report import format_table
    from mmtpp.sources.resolve import resolve_dataset
    from mmtpp.train import run_training, stage_fingerprint

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    prepared = prepare_from_config(config)
    print(format_summary(prepared.manifest), flush=True)
    timings["prepare"] = time.perf_counter() - t0
    print(format_plan(training_plan(config, prepared.manifest)), flush=True)
    for stage in (1, 2):
        t = time.perf_counter()
        fp = stage_fingerprint(config, stage, prepared.manifest.fingerprint)
        done = stage_dir(config, stage) / DONE
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp:
            print(f"stage {stage}: already trained ({done}), skipping", flush=True)
            continue
        result = run_training(config, stage, prepared.output_dir)
        losses = [m["loss"] for m in result.metrics if "loss" in m]
        val = [m["val_loss"] for m in result.metrics if "val_loss" in m]
        done.write_text(json.dumps({"fingerprint": fp, "loss": losses, "val_loss": val}) + "\n")
        timings[f"stage{stage}"] = time.perf_counter() - t
        if losses:
            print(f"stage {stage}: loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
    t = time.perf_counter()
    out = Path(config.output_dir) / "report"
    results = evaluate(
        stage_dir(config, 2) / MODEL_SUBDIR,
        prepared.output_dir,
        resolve_dataset(config),
        out,
        config.eval,
        config=config.to_dict(),
        gpus=1.0 if config.train.use_gpu else 0.0,
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(format_table(results), flush=True)
    print(f"report in {out} ({timings['total']:.0f} s)", flush=True)
    return results
