r"""Two-stage LoRA training of Qwen2.5-VL on Ray Train + DeepSpeed ZeRO.

    python jobs/train.py --config jobs/configs/tiny_cpu.yaml stage=both
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --config jobs/configs/qwen2_5_vl_3b.yaml stage=both

Runs prepare first when <output_dir>/prepared is missing or stale (cached otherwise).
--stage 1 | 2 | both (default both; `stage=both` works too).
"""

import sys

from mmtpp.launch import run_job
from mmtpp.prepare import prepare_from_config
from mmtpp.train import run_training


def main(config, args) -> int:
    prepared = prepare_from_config(config)
    stages = {"1": [1], "2": [2], "both": [1, 2]}[args.stage]
    for stage in stages:
        result = run_training(config, stage, prepared.output_dir)
        losses = [m["loss"] for m in result.metrics if "loss" in m]
        val = [m["val_loss"] for m in result.metrics if "val_loss" in m]
        print(
            f"stage {stage}: {len(losses)} logged steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"val_loss {val[-1]:.4f}; adapter in {result.model_dir}"
            if losses and val
            else f"stage {stage}: adapter in {result.model_dir}"
        )
    return 0


def stage_argument(parser) -> None:
    parser.add_argument(
        "--stage",
        choices=["1", "2", "both"],
        default="both",
        help="training stage(s) to run (default: both)",
    )


def stage_alias(argv: list[str]) -> list[str]:
    """`stage=2` reads like a config override: accept it as `--stage 2`."""
    return [x for a in argv for x in (["--stage", a[6:]] if a.startswith("stage=") else [a])]


if __name__ == "__main__":
    sys.argv[1:] = stage_alias(sys.argv[1:])
    run_job(__doc__, main, stage_argument)
