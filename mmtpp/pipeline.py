"""The whole method on one config: prepare → stage 1 → stage 2 → evaluate → report.

Each step is skipped when its output is already there for the same inputs (after a crash,
rerunning the same command continues where it stopped): preparation by its manifest
fingerprint, a training stage by ``done.json`` holding the fingerprint of what it was trained
from. The evaluation, the last step, always runs and rewrites the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmtpp.config import Config
from mmtpp.train import MODEL_SUBDIR, stage_dir, stage_fingerprint

DONE = "done.json"


def run_pipeline(config: Config) -> dict[str, Any]:
    from mmtpp.evaluate import evaluate, format_table
    from mmtpp.prepare import format_summary, prepare_from_config, resolve_dataset
    from mmtpp.train import run_training

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    prepared = prepare_from_config(config)
    print(format_summary(prepared.manifest), flush=True)
    timings["prepare"] = time.perf_counter() - t0
    for stage in (1, 2):
        t = time.perf_counter()
        fp = stage_fingerprint(config, stage, prepared.manifest["fingerprint"])
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
    e = config.eval
    options = e.decode_only()
    out = Path(config.output_dir) / "report"
    run_evaluation = evaluate
    if config.train.use_gpu:  # on a GPU node of the cluster, not in the job's driver
        import ray

        remote = ray.remote(num_gpus=1, num_cpus=1)(evaluate)
        run_evaluation = lambda *a, **k: ray.get(remote.remote(*a, **k))  # noqa: E731
    results = run_evaluation(
        stage_dir(config, 2) / MODEL_SUBDIR,
        prepared.output_dir,
        resolve_dataset(config),
        out,
        options,
        max_per_task=e.max_per_task or None,
        batch_size=e.batch_size,
        config=config.to_dict(),
        ppl_lengths=e.ppl_lengths,
        ppl_targets=e.ppl_targets,
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(format_table(results), flush=True)
    print(f"report in {out} ({timings['total']:.0f} s)", flush=True)
    return results
