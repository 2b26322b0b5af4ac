"""Training throughput of the tiny model on Ray Train + DeepSpeed: 1 vs 2 workers, and the
memory plan of Qwen2.5-VL-3B/7B on 80 GB GPUs.

    python benchmarks/bench_train.py [--steps 30] [--budget 512]

Tokens/s per worker is the mean of the loop's own reports after the first (warm-up) one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--budget", type=int, default=512)
    args = parser.parse_args()
    import ray
    import torch

    from mmtpp.config import load_config
    from mmtpp.memory import format_plan, plan
    from mmtpp.prepare import run_prepare
    from mmtpp.sources.synthetic import SynthConfig, synthesize
    from mmtpp.train import run_training

    torch.set_flush_denormal(True)
    ray.init(num_cpus=2, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    synthesize(SynthConfig(num_sequences=60), work / "data")
    common = [
        f"data.budget={args.budget}",
        "data.targets_per_sequence=4",
        "train.log_every=5",
        f"train.stage1.max_steps={args.steps}",
        "train.micro_batch=4",
        "train.cpus_per_worker=0.5",
    ]
    prepared = run_prepare(load_config(overrides=common), work / "data", work / "prepared")
    rates = {}
    for workers in (1, 2):
        cfg = load_config(
            overrides=[
                *common,
                f"train.num_workers={workers}",
                f"output_dir={work / f'w{workers}'}",
            ]
        )
        result = run_training(cfg, 1, prepared.output_dir)
        reports = [m["tokens_per_s"] for m in result.metrics if "tokens_per_s" in m][1:]
        rates[workers] = sum(reports) / len(reports)
    print(
        f"tiny Qwen2.5-VL (H128, 2 layers, LoRA r=16), stage 1, budget {args.budget}, "
        "micro-batch 4, ZeRO-2 over gloo, 2 cores"
    )
    for workers, rate in rates.items():
        print(
            f"  {workers} worker(s): {rate:,.0f} tokens/s per worker, "
            f"{rate * workers:,.0f} tokens/s in total"
        )
    root = Path(__file__).resolve().parents[1]
    for preset in ("3b", "7b"):  # the shipped GPU presets, as configured
        cfg = load_config(root / f"jobs/configs/qwen2_5_vl_{preset}.yaml")
        p = plan(cfg, preset, gpu_memory_gib=80, world=cfg.train.num_workers)
        print(format_plan(p))
        print(json.dumps({"preset": preset, "total_gib": round(p.total_gib, 2)}))


if __name__ == "__main__":
    main()
