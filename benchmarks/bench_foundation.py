"""Foundation throughput: codec + compression, and events → token ids, on one core.

    python benchmarks/bench_foundation.py [--events 100000]

Compares the vectorised path (mmtpp.timecodec / compression / templates) with a plain
per-event Python loop doing the same work, on text events without images.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers: one core
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import itertools

from mmtpp.compression import similar_mask
from mmtpp.events import EventSequence
from mmtpp.sources.synthetic import SynthConfig, generate
from mmtpp.templates import Renderer
from mmtpp.timecodec import ByteTokenCodec
from mmtpp.tokens import TokenIds, train_tokenizer


def make_sequences(total: int, per_seq: int = 500, seed: int = 0) -> list[EventSequence]:
    """Text-only synthetic sequences (the generator's Hawkes times and varied sentences)."""
    cfg = SynthConfig(
        num_sequences=total // per_seq,
        events_per_sequence=(per_seq, per_seq),
        images=False,
        seed=seed,
    )
    return list(generate(cfg)[1])


def loop_codec_compression(seqs, byte_ids, delta):
    out = []
    for seq in seqs:
        times = seq.time.tolist()
        gaps = [0.0] + [b - a for a, b in itertools.pairwise(times)]
        mask = [False] * len(gaps)
        for i in range(len(gaps) - 2, 0, -1):  # backward scan, the last event kept
            mask[i] = abs(gaps[i] - gaps[i + 1]) < delta
        ids = [[byte_ids[b] for b in struct.pack(">f", g)] for g in gaps]
        out.append((ids, mask))
    return out


def vector_codec_compression(seqs, codec, delta):
    out = []
    for seq in seqs:
        gaps = seq.gaps
        out.append((codec.to_ids(gaps), similar_mask(gaps, delta, "backward", keep_last=True)))
    return out


def loop_render(seqs, tokenizer, ids: TokenIds, delta):
    docs = []
    for seq, (time_ids, mask) in zip(
        seqs, loop_codec_compression(seqs, ids.byte_ids.tolist(), delta), strict=True
    ):
        doc = []
        for i in range(len(seq)):
            if mask[i]:
                doc.append(ids.similar_event)
                continue
            doc += [ids.start_of_event, ids.time_start, *time_ids[i], ids.time_end]
            doc += [ids.type_start, int(ids.type_ids[seq.type[i]]), ids.type_end]
            text = tokenizer.encode(seq.text[i], add_special_tokens=False)
            doc += [ids.text_start, *text, ids.text_end, ids.end_of_event]
        docs.append(doc)
    return docs


def vector_render(seqs, renderer: Renderer, delta):
    ets = renderer.event_tokens(seqs)
    return [
        renderer.render(et, 0, len(et), similar_mask(et.gaps, delta, "backward", keep_last=True))
        for et in ets
    ]


def rate(fn, events: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return events / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--delta", type=float, default=0.2)
    args = parser.parse_args()
    seqs = make_sequences(args.events)
    n = sum(len(s) for s in seqs)
    tokenizer = train_tokenizer((t for s in seqs[:20] for t in s.text), 4, vocab_size=2048)
    ids = TokenIds.from_tokenizer(tokenizer, 4)
    codec = ByteTokenCodec(ids.byte_ids)
    renderer = Renderer(tokenizer, ids)
    # identical outputs first
    loop_docs = loop_render(seqs[:3], tokenizer, ids, args.delta)
    vec_docs = vector_render(seqs[:3], renderer, args.delta)
    assert all(list(v) == lst for v, lst in zip(vec_docs, loop_docs, strict=True))

    byte_list = ids.byte_ids.tolist()
    r_loop = rate(lambda: loop_codec_compression(seqs, byte_list, args.delta), n)
    r_vec = rate(lambda: vector_codec_compression(seqs, codec, args.delta), n)
    t_loop = rate(lambda: loop_render(seqs, tokenizer, ids, args.delta), n, repeat=1)
    t_vec = rate(lambda: vector_render(seqs, renderer, args.delta), n)
    print(f"{n} text events in {len(seqs)} sequences, delta={args.delta}, one core")
    print(f"{'stage':<34}{'loop ev/s':>14}{'mmtpp ev/s':>14}{'ratio':>8}")
    print(f"{'codec + compression':<34}{r_loop:>14,.0f}{r_vec:>14,.0f}{r_vec / r_loop:>7.1f}x")
    print(
        f"{'codec+compression+render+tokenize':<34}{t_loop:>14,.0f}{t_vec:>14,.0f}"
        f"{t_vec / t_loop:>7.1f}x"
    )


if __name__ == "__main__":
    main()
