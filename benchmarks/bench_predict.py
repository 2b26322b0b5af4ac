"""Offline prediction throughput: the Ray Data job on 1 and 2 CPUs against in-process
scoring of the same targets (``scoring.score_sequences`` in one process, what evaluation did
before it became a job).

    python benchmarks/bench_predict.py [--sequences 40] [--targets 60] [--repeats 2]

The model is the tiny Qwen2.5-VL with an untrained LoRA adapter (its scoring costs what a
trained one's does: time and type tasks, fixed lengths); the data is the synthetic
generator's, with images. "N CPUs" means the job has N cores: each run is a fresh process
whose every process (driver, raylet, actors) is pinned to the first N cores, with one
prediction actor per core. The in-process run is pinned to one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHILD = """
import os, sys, time, json
os.sched_setaffinity(0, range(int(sys.argv[4])))
import torch
torch.set_num_threads(1)
from mmtpp.decoding import DecodeOptions
from mmtpp.scoring import PredictionRequest
targets = json.loads(open(sys.argv[3]).read())
request = PredictionRequest(sys.argv[1], DecodeOptions(), tasks=("time", "type"), batch_size=16,
                            image_root=sys.argv[2])
if sys.argv[5] == "inprocess":
    from mmtpp.predict import Predictor
    from mmtpp.scoring import score_sequences
    from mmtpp.validation import read_sequences
    seqs = [s for s in read_sequences(sys.argv[2]) if s.seq_id in targets]
    p = Predictor(sys.argv[1], image_root=sys.argv[2])
    t0 = time.perf_counter()
    rows = score_sequences(p, seqs, [targets[s.seq_id] for s in seqs], request).num_rows
else:
    import ray
    from mmtpp.offline import predict_dataset
    ray.init(num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    rows = predict_dataset(request, sys.argv[2], sys.argv[6], targets).manifest["rows"]
print("ROWS", rows)
print("SECONDS", time.perf_counter() - t0)
"""


def build_model(work: Path) -> Path:
    """An untrained LoRA adapter on the tiny base, saved as a trained model."""
    import torch

    from mmtpp.card import CompressionSpec, ModelCard
    from mmtpp.config import load_config
    from mmtpp.model import add_lora, added_token_ids, load_base, materialize_base, save_trained
    from mmtpp.tokens import build_tokenizer, load_tokenizer

    cfg = load_config(overrides=["data.budget=512"])
    build_tokenizer(work / "tok", ["storm north delay taxi"] * 50, 4)
    tokenizer = load_tokenizer(work / "tok")
    base = materialize_base(cfg.model, tokenizer, work / "base")
    torch.manual_seed(0)
    model = add_lora(load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, 4))
    card = ModelCard(
        stage=2,
        base_path=str(base),
        model=cfg.model,
        num_types=4,
        type_names=["t0", "t1", "t2", "t3"],
        budget=512,
        compression=CompressionSpec(),
        image_min_pixels=56 * 56,
        image_max_pixels=112 * 112,
    )
    return save_trained(model, tokenizer, work / "model", card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequences", type=int, default=40)
    parser.add_argument("--targets", type=int, default=60, help="targets per sequence")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (best kept)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        raise SystemExit("the benchmark pins runs to 1 and 2 cores: it needs 2 cores (Linux)")
    import json

    from mmtpp.sources.synthetic import SynthConfig, synthesize
    from mmtpp.validation import read_sequences

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    synthesize(SynthConfig(num_sequences=args.sequences, seed=3), work / "data")
    model = build_model(work)
    targets = {}
    for s in read_sequences(work / "data"):
        step = max(1, (len(s) - 9) // args.targets)
        targets[s.seq_id] = list(range(9, len(s), step))[: args.targets]
    total = sum(len(t) for t in targets.values())
    (work / "targets.json").write_text(json.dumps(targets))
    runs = {}
    for name, cpus in (("in-process", 1), ("Ray Data, 1 CPU", 1), ("Ray Data, 2 CPUs", 2)):
        best = None
        for rep in range(args.repeats):
            mode = "inprocess" if name == "in-process" else "ray"
            argv = [
                sys.executable,
                "-c",
                CHILD,
                str(model),
                str(work / "data"),
                str(work / "targets.json"),
                str(cpus),
                mode,
                str(work / f"out_{cpus}_{rep}"),
            ]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            seconds = float(out.split("SECONDS")[-1])
            assert int(out.split("ROWS")[-1].split()[0]) == total
            best = seconds if best is None else min(best, seconds)
        runs[name] = best
        print(f"{name:<20} {best:8.1f} s {total / best:8.1f} targets/s", flush=True)
    one, two = runs["Ray Data, 1 CPU"], runs["Ray Data, 2 CPUs"]
    print(
        f"{total} targets of {len(targets)} sequences (time + type, images); best of "
        f"{args.repeats}; scaling 1 -> 2 CPUs: {one / two / 2:.2f}; 2 CPUs vs in-process: "
        f"{runs['in-process'] / two:.2f}x"
    )


if __name__ == "__main__":
    main()
