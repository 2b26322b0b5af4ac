r"""Offline prediction on Ray Data: the next event of every sequence of a dataset (or the
prepared test split's targets), written as Parquet by a pool of prediction actors.

    python jobs/predict.py --model runs/tiny_cpu/stage2/model --dataset runs/tiny_cpu/data \
        --out runs/tiny_cpu/predictions                       # the event after each sequence
    python jobs/predict.py --model runs/tiny_cpu/stage2/model --dataset runs/tiny_cpu/data \
        --prepared runs/tiny_cpu/prepared --out runs/tiny_cpu/test_predictions   # test targets
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/predict.py \
        --model /shared/runs/qwen3b/stage2/model --dataset /shared/events/my_dataset \
        --out /shared/runs/qwen3b/predictions --gpus 1

Each row: sequence id, target index, predicted gap with its quantiles, type probabilities and
prediction, text, invalid reasons, and (where the truth is known) the teacher-forced time and
type NLL. A sequence that fails validation or does not fit the budget gets an error row per
target. Rerunning with the same model, data and options reuses the output.
"""

import argparse
import sys

from mmtpp.config import EvalConfig, describe, load_config
from mmtpp.launch import connect_ray
from mmtpp.progress import quiet_third_party


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="decoding keys (override with eval.key=value):\n"
        + "\n".join(describe(EvalConfig, "eval.")),
    )
    parser.add_argument("--model", required=True, help="trained model dir (stage<N>/model)")
    parser.add_argument("--dataset", required=True, help="mmtpp dataset directory")
    parser.add_argument("--out", required=True, help="output directory (Parquet + manifest)")
    parser.add_argument(
        "--prepared",
        help="prepared dir: score its test split's targets (default: the event "
        "after each sequence's end)",
    )
    parser.add_argument("--actors", type=int, help="prediction actors (default: one per CPU)")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per actor (GPU cluster)")
    parser.add_argument("--image-root", help="trusted root of the dataset's image paths")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", metavar="eval.key=value")
    args = parser.parse_args()
    if other := [o for o in args.overrides if not o.startswith("eval.")]:
        parser.error(f"only eval.* keys apply here, got {other}")
    try:
        e = load_config(None, args.overrides).eval
    except ValueError as err:
        parser.error(str(err))
    quiet_third_party()
    connect_ray(args.address)
    from mmtpp.evaluate import test_targets
    from mmtpp.events import read_info
    from mmtpp.offline import predict_dataset
    from mmtpp.prepared import PreparedData
    from mmtpp.scoring import PredictionRequest

    try:
        targets = None
        if args.prepared:
            targets = {}
            for seq_id, target in test_targets(PreparedData(args.prepared), e.max_per_task):
                targets.setdefault(seq_id, []).append(int(target))
        request = PredictionRequest(
            model_dir=args.model,
            options=e.decode_only(),
            batch_size=e.batch_size,
            image_root=args.image_root or args.dataset,
            time_resolution=read_info(args.dataset).time_resolution,
        )
        result = predict_dataset(request, args.dataset, args.out, targets, args.actors, args.gpus)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"predictions in {result.output_dir} ({result.manifest['rows']} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
