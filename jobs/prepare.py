r"""Prepare an event dataset for training on Ray Data.

    python jobs/prepare.py --config jobs/configs/tiny_cpu.yaml [key=value ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/prepare.py --config jobs/configs/tiny_cpu.yaml data.source=/shared/events
"""

from mmtpp.launch import run_job
from mmtpp.prepare import format_summary, prepare_from_config


def main(config, args) -> int:
    result = prepare_from_config(config)
    print(format_summary(result.manifest))
    print(f"prepared data in {result.output_dir}")
    return 0


if __name__ == "__main__":
    run_job(__doc__, main)
