"""A batch of raw sequences → the rows of prepared shards (design §1), without Ray.

``process_table``: validate (strict: raise naming the sequence; quarantine: emit the sequence
with its reasons) → split by a hash of the sequence id → restrict to the configured
modalities → tokenize → stage-1 windows under forward compression, packed into documents of
at most ``budget`` tokens → stage-2 examples (backward-compressed prompt + response) for
sampled targets → one output table whose ``kind`` column says what each row is.
``RowGroupProcessor`` is the Ray Data actor that runs it on row groups and writes each
unit's shards (``prepare.run_prepare`` drives it). Data-preparation workers import neither
torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtpp.compression import CompressionRule
from mmtpp.config import DataConfig
from mmtpp.events import ImageRef, split_of, table_to_sequences
from mmtpp.eventtokens import EventTokens, need_texts
from mmtpp.images import ImageSpec, image_token_counter, read_bytes
from mmtpp.prepared import KINDS, SPLITS
from mmtpp.problems import Problem, ValidationError
from mmtpp.templates import Renderer
from mmtpp.tokens import TokenIds, load_backend
from mmtpp.validation import Checks, conform_table, validate_table

OUTPUT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # stage1 | stage2 | quarantine
        ("split", pa.string()),
        ("seq_id", pa.string()),  # stage1: first sequence of the packed document
        ("task", pa.string()),  # stage2 only
        ("target", pa.int64()),  # stage2: index of the predicted event
        ("start", pa.int64()),  # first event of the (first) window
        ("input_ids", pa.list_(pa.int32())),
        ("prompt_length", pa.int32()),  # stage2: loss only after this position
        ("num_tokens", pa.int32()),
        ("events", pa.int32()),  # events covered (compressed ones included)
        ("compressed_events", pa.int32()),
        ("doc_lengths", pa.list_(pa.int32())),  # stage1: packed document lengths
        ("images", pa.list_(pa.binary())),  # encoded images, in order of appearance
        ("true_gap", pa.float64()),
        ("true_type", pa.int32()),
        ("true_text", pa.string()),
        ("problems", pa.string()),  # quarantine: JSON list of problems
    ]
)


def sample_targets(n: int, count: int, min_history: int, seed: int, seq_id: str) -> np.ndarray:
    """Indices of the events to predict: ``count`` of ``[min_history, n)`` (0 = all), seeded
    per sequence so the choice does not depend on batching."""
    candidates = np.arange(min_history, n)
    if count <= 0 or count >= candidates.size:
        return candidates
    digest = hashlib.blake2b(f"targets:{seed}:{seq_id}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "big"))
    return np.sort(rng.choice(candidates, size=count, replace=False))


@dataclass
class PrepareContext:
    """Everything ``process_table`` needs; built once per Ray worker from plain values.
    ``rule`` is the compression rule with its final Δ (calibrated by the driver for
    ``data.compression_target``; default: ``data.rule()``)."""

    data: DataConfig
    tokenizer_dir: str
    num_types: int
    root: str
    duplicate_ids: frozenset[str] = frozenset()
    rule: CompressionRule | None = None
    renderer: Renderer = field(init=False)
    spec: ImageSpec = field(init=False)

    def __post_init__(self) -> None:
        tokenizer = load_backend(self.tokenizer_dir)
        self.renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, self.num_types))
        self.spec = ImageSpec(
            min_pixels=self.data.image_min_pixels, max_pixels=self.data.image_max_pixels
        )
        if self.rule is None:
            self.rule = self.data.rule()

    @property
    def compression(self) -> CompressionRule:
        assert self.rule is not None  # set in __post_init__
        return self.rule

    def image_bytes(self, refs: list[ImageRef | None], events: np.ndarray) -> list[bytes]:
        return [read_bytes(refs[i], self.root, self.spec, self.data.image_root) for i in events]


class _Rows:
    """Output rows gathered column by column; token ids stay arrays until one final join."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in OUTPUT_SCHEMA.names}

    def add(self, **values: Any) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name))

    def table(self) -> pa.Table:
        arrays = []
        for f in OUTPUT_SCHEMA:
            values = self.columns[f.name]
            if f.name == "input_ids":
                arrays.append(_list_array(values))
            else:
                arrays.append(pa.array(values, f.type))
        return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def _list_array(rows: list[np.ndarray | None]) -> pa.Array:
    """int32 list column from arrays (None: a null row) with one concatenation."""
    lengths = np.array([0 if r is None else r.size for r in rows], dtype=np.int32)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [r for r in rows if r is not None]
    values = np.concatenate(present).astype(np.int32) if present else np.empty(0, np.int32)
    null = [r is None for r in rows]
    mask = pa.array(null) if any(null) else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def _stage1_rows(
    ets: list[EventTokens], seqs: list, splits: list[str], ctx: PrepareContext, rows: _Rows
) -> None:
    """Windows of every sequence, packed in order into documents of ≤ budget tokens."""
    r, d, rule = ctx.renderer, ctx.data, ctx.compression
    open_doc: dict[str, dict] = {}
    docs = 0

    def close(doc: dict) -> None:
        ids = np.concatenate(doc.pop("pieces"))
        rows.add(**doc, input_ids=ids, num_tokens=int(ids.size))

    for et, seq, split in zip(ets, seqs, splits, strict=True):
        for start, stop, mask in r.stage1_windows(et, rule, d.budget, d.stage1_direction):
            ids = np.append(r.render(et, start, stop, mask, rule.keep_type), r.ids.eos)
            kept = np.arange(start, stop)[~mask]
            images = ctx.image_bytes(seq.image, kept[et.image_tokens[kept] > 0])
            doc = open_doc.get(split)
            if doc is not None and sum(doc["doc_lengths"]) + ids.size > d.budget:
                close(open_doc.pop(split))
                doc = None
            if doc is None:
                doc = open_doc[split] = {
                    "kind": "stage1",
                    "split": split,
                    "seq_id": et.seq_id,
                    "start": start,
                    "target": docs,
                    "pieces": [],
                    "doc_lengths": [],
                    "images": [],
                    "events": 0,
                    "compressed_events": 0,
                }
                docs += 1
            doc["pieces"].append(ids)
            doc["doc_lengths"].append(int(ids.size))
            doc["images"].extend(images)
            doc["events"] += stop - start
            doc["compressed_events"] += int(mask.sum())
    for split in SPLITS:
        if split in open_doc:
            close(open_doc[split])


def _targets(et: EventTokens, split: str, d: DataConfig) -> np.ndarray:
    count = d.eval_targets_per_sequence if split == "test" else d.targets_per_sequence
    assert d.seed is not None  # derived from the top-level seed by Config
    return sample_targets(len(et), count, d.min_history, d.seed, et.seq_id)


def _stage2_rows(
    et: EventTokens, seq, split: str, targets: np.ndarray, ctx: PrepareContext, rows: _Rows
) -> None:
    d, r = ctx.data, ctx.renderer
    for target in targets.tolist():
        examples = r.examples(et, target, d.tasks, ctx.compression, d.budget, d.stage2_direction)
        for task, ex in examples.items():
            rows.add(
                kind="stage2",
                split=split,
                seq_id=et.seq_id,
                task=task,
                target=target,
                start=ex.start,
                input_ids=ex.input_ids,
                prompt_length=ex.prompt_length,
                num_tokens=int(ex.input_ids.size),
                events=target - ex.start,
                compressed_events=ex.compressed_events,
                images=ctx.image_bytes(seq.image, ex.image_events),
                true_gap=float(et.gaps[target]),
                true_type=int(et.types[target]),
                true_text=seq.text[target],
            )


def duplicate_problem(source: str, seq_id: str) -> Problem:
    return Problem(source, seq_id, -1, "seq_id", "duplicate_seq_id", "seq_id appears twice")


def _quarantine_rows(rejected: pa.Table, duplicates: pa.Table, source: str, rows: _Rows) -> None:
    """One ``quarantine`` row per sequence set aside, with its source file and problems."""
    dup = [
        {
            "event": -1,
            "field": "seq_id",
            "reason": "duplicate_seq_id",
            "message": "seq_id appears more than once in the dataset",
        }
    ]
    records = rejected.to_pylist()
    records += [{**r, "source_file": source, "problems": dup} for r in duplicates.to_pylist()]
    for q in records:
        record = {"source": q["source_file"], "problems": q["problems"]}
        rows.add(
            kind="quarantine",
            split="",
            seq_id=q["seq_id"] or "",
            problems=json.dumps(record),
            events=len(q["time"] or []),
        )


def process_table(table: pa.Table, ctx: PrepareContext, source: str = "<batch>") -> pa.Table:
    """One batch of raw sequences → output rows (see module docstring)."""
    d = ctx.data
    table = conform_table(table, source)
    checks = Checks(ctx.num_types, ctx.root, ctx.spec, trusted_root=d.image_root)
    good, rejected, problems = validate_table(table, source, checks)
    dup = pc.is_in(good.column("seq_id"), pa.array(sorted(ctx.duplicate_ids), pa.string()))
    duplicates = good.filter(dup)
    problems += [duplicate_problem(source, s) for s in duplicates.column("seq_id").to_pylist()]
    good = good.filter(pc.invert(dup))
    if problems and d.validation == "strict":
        raise ValidationError(problems)
    rows = _Rows()
    _quarantine_rows(rejected, duplicates, source, rows)
    seqs = [s.with_modalities(d.modalities) for s in table_to_sequences(good)]
    assert d.seed is not None  # derived from the top-level seed by Config
    splits = split_of([s.seq_id for s in seqs], d.split, d.seed)
    counter = image_token_counter(ctx.root, ctx.spec, d.image_root)
    ets = ctx.renderer.event_tokens(seqs, counter)
    ctx.renderer.tokenize_shown(ets, ctx.compression, [d.stage1_direction, d.stage2_direction])
    _stage1_rows(ets, seqs, splits, ctx, rows)
    targets = [_targets(et, split, d) for et, split in zip(ets, splits, strict=True)]
    # in one call, the texts of each target and of the event before it (their prompt's
    # last), which compression mostly hides from the windows `tokenize_shown` foresaw
    need_texts(ets, [np.concatenate([t, t - 1]) for t in targets], ctx.renderer.encode)
    for et, seq, split, tg in zip(ets, seqs, splits, targets, strict=True):
        _stage2_rows(et, seq, split, tg, ctx, rows)
    return rows.table()


SUMMARY_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # stage1 | stage2 (a shard written) | quarantine
        ("split", pa.string()),
        ("rows", pa.int64()),
        ("tokens", pa.int64()),
        ("seq_id", pa.string()),  # quarantine only
        ("problems", pa.string()),  # quarantine: JSON source and problems
    ]
)


def write_unit(rows: pa.Table, out: Path, unit: int) -> list[dict[str, Any]]:
    """Write one unit's output rows as ``<out>/<kind>/<split>/part-<unit>.parquet`` and
    return what the manifest needs: rows and tokens per shard, the quarantined sequences."""
    summary = []
    for kind in KINDS:
        for split in SPLITS:
            chosen = pc.and_(pc.equal(rows["kind"], kind), pc.equal(rows["split"], split))
            part = rows.filter(chosen)
            if part.num_rows:
                target = out / kind / split
                target.mkdir(parents=True, exist_ok=True)
                pq.write_table(part, target / f"part-{unit:05d}.parquet")
                tokens = int(pc.sum(part["num_tokens"]).as_py() or 0)
                summary.append(
                    {"kind": kind, "split": split, "rows": part.num_rows, "tokens": tokens}
                )
    quarantined = rows.filter(pc.equal(rows["kind"], "quarantine"))
    for r in quarantined.select(["seq_id", "problems"]).to_pylist():
        summary.append({"kind": "quarantine", "split": "", "rows": 1, "tokens": 0, **r})
    return summary


class RowGroupProcessor:
    """Ray Data actor: reads the row groups it is given, turns them into output rows
    (``batch_size`` sequences per ``process_table`` call: bounded work) and writes each
    unit's shards itself (``write_unit``), returning only their summary; one
    PrepareContext (tokenizer) for its whole life."""

    def __init__(self, ctx_args: dict[str, Any], batch_size: int, out_dir: str):
        from mmtpp.progress import quiet_third_party

        quiet_third_party()
        self.ctx = PrepareContext(**ctx_args)
        self.batch_size = batch_size
        self.out = Path(out_dir)

    def __call__(self, units: pa.Table) -> pa.Table:
        summary = []
        columns = [units[name].to_pylist() for name in ("file", "row_group", "unit")]
        for file, group, unit in zip(*columns, strict=True):
            table = pq.ParquetFile(file).read_row_group(group)
            rows = pa.concat_tables(
                process_table(table.slice(start, self.batch_size), self.ctx, source=file)
                for start in range(0, table.num_rows, self.batch_size)
            )
            summary.extend(write_unit(rows, self.out, unit))
        return pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA)
