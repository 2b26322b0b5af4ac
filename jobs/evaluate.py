r"""Evaluate a trained adapter on a prepared test split: predictions on Ray Data actors, then
every figure with its 95% interval; writes targets.parquet, results.json/.md and plots.

    python jobs/evaluate.py --model runs/tiny_cpu/stage2/model --prepared runs/tiny_cpu/prepared \
        --dataset runs/tiny_cpu/data --out runs/tiny_cpu/report2 eval.time_mode=median
"""

import argparse
import sys

from mmtpp.config import EvalConfig, describe, load_config
from mmtpp.evaluate import check_inputs, evaluate
from mmtpp.launch import connect_ray
from mmtpp.progress import quiet_third_party
from mmtpp.report import format_table


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="eval keys (override with eval.key=value):\n"
        + "\n".join(describe(EvalConfig, "eval.")),
    )
    parser.add_argument("--model", required=True, help="trained model dir (stage<N>/model)")
    parser.add_argument("--prepared", required=True, help="prepared data dir (with manifest)")
    parser.add_argument("--dataset", required=True, help="raw dataset dir (for baselines)")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--config", help="YAML config (only its eval section is used)")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per prediction actor")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="recompute the figures from the predictions already in OUT (no prediction)",
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", metavar="eval.key=value")
    args = parser.parse_args()
    if other := [o for o in args.overrides if not o.startswith("eval.")]:
        parser.error(f"only eval.* keys apply here (the model and data are given), got {other}")
    try:
        e = load_config(args.config, args.overrides).eval
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    quiet_third_party()
    try:
        check_inputs(args.model, args.prepared, args.dataset)
        connect_ray(args.address)
        results = evaluate(
            args.model,
            args.prepared,
            args.dataset,
            args.out,
            e,
            gpus=args.gpus,
            rescore=args.rescore,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
