r"""Search Δ, the LoRA rank and the learning rate with Ray Tune (ASHA early stopping).

    python jobs/tune.py --config jobs/configs/tiny_cpu.yaml tune.num_samples=8
    python jobs/tune.py --config jobs/configs/tiny_cpu.yaml --resume     # continue a search
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune.py --config jobs/configs/qwen2_5_vl_3b.yaml tune.max_concurrent=4

Watch: the Ray dashboard (http://HEAD:8265) and `tensorboard --logdir <output_dir>/tune/search`.
The best configuration is written to <output_dir>/tune/best.yaml (usable by jobs/train.py).
"""

from mmtpp.launch import run_job
from mmtpp.tune import run_search


def main(config, args) -> int:
    run_search(config, resume=args.resume)
    return 0


def resume_argument(parser) -> None:
    parser.add_argument(
        "--resume", action="store_true", help="continue the search in <output_dir>/tune/search"
    )


if __name__ == "__main__":
    run_job(__doc__, main, resume_argument)
