"""Evaluate a trained adapter on a prepared test split; writes results.json/.md and plots.

    python jobs/evaluate.py --model runs/tiny_cpu/stage2/model --prepared runs/tiny_cpu/prepared \
        --dataset runs/tiny_cpu/data --out runs/tiny_cpu/report [eval.time_mode=median ...]
"""

import argparse
import sys

from mmtpp.config import load_config
from mmtpp.evaluate import evaluate, format_table
from mmtpp.predict import DecodeOptions


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="trained model dir (stage<N>/model)")
    parser.add_argument("--prepared", required=True, help="prepared data dir (with manifest)")
    parser.add_argument("--dataset", required=True, help="raw dataset dir (for baselines)")
    parser.add_argument("--out", required=True, help="report directory")
    parser.add_argument("--config", help="YAML config (only its eval section is used)")
    parser.add_argument("overrides", nargs="*", metavar="eval.key=value")
    args = parser.parse_args()
    e = load_config(args.config, args.overrides).eval
    options = DecodeOptions(
        time_mode=e.time_mode,
        samples=e.samples,
        max_text_tokens=e.max_text_tokens,
        compress=e.compress,
    )
    results = evaluate(
        args.model,
        args.prepared,
        args.dataset,
        args.out,
        options,
        max_per_task=e.max_per_task or None,
        batch_size=e.batch_size,
        ppl_lengths=e.ppl_lengths,
        ppl_targets=e.ppl_targets,
    )
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
