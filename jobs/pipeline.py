"""The whole method on one config: prepare -> stage 1 -> stage 2 -> evaluate -> report.

    python jobs/pipeline.py --config jobs/configs/tiny_cpu.yaml
    python jobs/pipeline.py --config jobs/configs/tiny_cpu.yaml data.delta=0    # ablation
    python jobs/pipeline.py --config jobs/configs/flights_cpu.yaml              # real data

Steps whose outputs already exist for the same inputs are skipped, so after a crash the same
command continues. The report (results.json, results.md, PNG plots) is in <output_dir>/report.
"""

from mmtpp.launch import run_job
from mmtpp.pipeline import run_pipeline


def main(config, args) -> int:
    run_pipeline(config)
    return 0


if __name__ == "__main__":
    run_job(__doc__, main)
