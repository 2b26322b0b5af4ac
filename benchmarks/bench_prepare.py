"""Ray Data preparation throughput: 1 vs 2 CPUs, against a plain single-process loop.

    python benchmarks/bench_prepare.py [--sequences 800] [--repeats 3]   (800 ≈ 220k events)

The dataset is the synthetic generator's (text, no images, so the figures are about the
pipeline rather than PNG decoding). The plain loop does the same work event by event in
Python: a per-event codec and compression scan, per-text tokenizer calls, and each stage-2
prompt rendered event by event.

"N CPUs" means the job has N cores: each Ray run is told ``num_cpus=N`` and all its processes
(driver, raylet, Ray Data's helper actors, workers) are pinned to the first N cores, as on a
machine with N CPUs. ``--no-pin`` only sets ``num_cpus``: on a 2-core machine the 1-CPU run
then still has the second core for Ray's own processes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHILD = """
import os, sys, time, ray
if sys.argv[4] == "pin":  # every process of the job (Ray's own too) on the first N cores
    os.sched_setaffinity(0, range(int(sys.argv[3])))
from mmtpp.config import load_config
from mmtpp.prepare import run_prepare
ray.init(num_cpus=int(sys.argv[3]), include_dashboard=False, log_to_driver=False)
cfg = load_config(overrides=sys.argv[5:])
t0 = time.perf_counter()
m = run_prepare(cfg, sys.argv[1], sys.argv[2], batch_size=8).manifest
print("PHASES", m.phase_seconds)
print("SECONDS", time.perf_counter() - t0)
"""


def loop_prepare(root: Path, cfg) -> int:
    """The same outputs computed the straightforward way, one event at a time."""
    from mmtpp.events import split_of
    from mmtpp.shards import sample_targets
    from mmtpp.tokens import TokenIds, train_tokenizer
    from mmtpp.validation import read_sequences

    seqs = read_sequences(root)
    d = cfg.data
    tok = train_tokenizer((t for s in seqs[:50] for t in s.text if t), 4, d.vocab_size)
    ids = TokenIds.from_tokenizer(tok, 4)
    byte_ids = ids.byte_ids.tolist()
    splits = split_of([s.seq_id for s in seqs], d.split, d.seed)
    out_tokens = 0
    for seq, split in zip(seqs, splits, strict=True):
        times = seq.time.tolist()
        gaps = [0.0] + [b - a for a, b in itertools.pairwise(times)]
        texts = [tok.encode(t, add_special_tokens=False) if t else None for t in seq.text]

        def event(i, gaps=gaps, texts=texts, seq=seq):
            toks = [ids.start_of_event, ids.time_start]
            toks += [byte_ids[b] for b in struct.pack(">f", gaps[i])]
            toks += [ids.time_end, ids.type_start, int(ids.type_ids[seq.type[i]]), ids.type_end]
            if texts[i] is not None:
                toks += [ids.text_start, *texts[i], ids.text_end]
            return [*toks, ids.end_of_event]

        # stage 1: forward scan, windows under the budget
        doc, n = [], len(gaps)
        for i in range(n):
            similar = i >= 2 and abs(gaps[i] - gaps[i - 1]) < d.delta and doc
            piece = [ids.similar_event] if similar else event(i)
            if len(doc) + len(piece) + 1 > d.budget:
                out_tokens += len(doc) + 1
                doc = event(i)
            else:
                doc += piece
        out_tokens += len(doc) + 1
        # stage 2: for each target and task, the most recent history under the budget
        count = d.eval_targets_per_sequence if split == "test" else d.targets_per_sequence
        for target in sample_targets(n, count, d.min_history, d.seed, seq.seq_id).tolist():
            for _task in d.tasks:
                prompt, i = [], target - 1
                while i >= 0:
                    similar = 1 <= i < target - 1 and abs(gaps[i] - gaps[i + 1]) < d.delta
                    piece = [ids.similar_event] if similar else event(i)
                    if len(prompt) + len(piece) + 8 > d.budget:
                        break
                    prompt = piece + prompt
                    i -= 1
                out_tokens += len(prompt)
    return out_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequences", type=int, default=800)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="runs per CPU count (best kept)")
    parser.add_argument(
        "--no-pin", action="store_true", help="only set num_cpus=N; Ray may use every core"
    )
    args = parser.parse_args()
    pin = "nopin" if args.no_pin or not hasattr(os, "sched_setaffinity") else "pin"
    if pin == "pin" and (os.cpu_count() or 1) < 2:
        raise SystemExit("pinning to 1 and 2 cores needs a machine with 2 cores (or --no-pin)")
    from mmtpp.config import load_config
    from mmtpp.sources.synthetic import SynthConfig, synthesize
    from mmtpp.validation import read_sequences

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    data = work / "data"
    synthesize(SynthConfig(num_sequences=args.sequences, images=False), data)
    events = sum(len(s) for s in read_sequences(data))
    overrides = [f"data.budget={args.budget}", "data.targets_per_sequence=8"]
    cfg = load_config(overrides=overrides)
    t0 = time.perf_counter()
    loop_prepare(data, cfg)
    loop_s = time.perf_counter() - t0
    seconds, phases = {}, {}
    for cpus in (1, 2):
        runs = []
        for rep in range(args.repeats):  # a fresh local Ray each time; the best run counts
            out = work / f"out{cpus}_{rep}"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(data), str(out), str(cpus), pin, *overrides],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(
                (
                    float(proc.stdout.split("SECONDS")[-1]),
                    proc.stdout.split("PHASES")[-1].split("\n")[0].strip(),
                )
            )
        seconds[cpus], phases[cpus] = min(runs)
    where = "every process pinned to N cores" if pin == "pin" else "Ray told num_cpus=N only"
    print(
        f"{events} events in {args.sequences} sequences, budget {args.budget}, text only; "
        f"best of {args.repeats} runs; {where}"
    )
    print(f"{'':<28}{'seconds':>9}{'events/s':>12}")
    print(f"{'plain loop (1 process)':<28}{loop_s:>9.1f}{events / loop_s:>12,.0f}")
    for cpus, s in seconds.items():
        print(f"{f'Ray Data, {cpus} CPU':<28}{s:>9.1f}{events / s:>12,.0f}   {phases[cpus]}")
    eff = seconds[1] / (2 * seconds[2])
    print(
        f"scaling efficiency 1 -> 2 CPUs: {eff:.2f}; "
        f"2 CPUs vs plain loop: {loop_s / seconds[2]:.1f}x"
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
