"""Raw event dataset → training-ready shards, in parallel on Ray Data (SPEC §1, issue 3).

Per batch of sequences (``process_table``, plain Python, unit-testable without Ray):
validate (strict: raise naming the sequence; quarantine: emit the sequence with its reasons)
→ split by a hash of the sequence id → tokenize → stage-1 windows under forward compression,
packed into documents of at most ``budget`` tokens → stage-2 examples (backward-compressed
prompt + response) for sampled targets → one output table whose ``kind`` column says what
each row is.

``run_prepare`` makes one Ray Data row per Parquet row group of the dataset, runs
``map_batches`` over them on a pool of one actor per CPU Ray gives it (each reads its row
groups, calls ``process_table`` on slices of ``batch_size`` sequences and writes the unit's
shards, ``<kind>/<split>/part-<unit>.parquet``); the driver only gathers their counts and
writes ``manifest.json``. Data-preparation workers import neither
torch nor transformers. Work is bounded per batch (a long sequence yields several windows,
each rendered on its own), outputs are deterministic for a config, and a run whose inputs,
config and code version match an existing manifest reuses it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtpp.config import Config, DataConfig
from mmtpp.events import SEQUENCES_DIR, ImageRef, read_info, sequence_files
from mmtpp.images import ImageSpec, read_bytes
from mmtpp.stats import image_token_counter
from mmtpp.templates import EventTokens, Renderer, need_texts
from mmtpp.tokens import (
    TokenIds,
    extend_tokenizer,
    fingerprint,
    load_backend,
    load_tokenizer,
    save_bpe,
    train_bpe,
)
from mmtpp.validation import (
    Checks,
    Problem,
    ValidationError,
    conform_table,
    validate_table,
)

SPLITS = ("train", "val", "test")
KINDS = ("stage1", "stage2")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

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


def split_of(seq_ids: list[str], fractions: list[float], seed: int) -> list[str]:
    """Deterministic train/val/test assignment from a hash of (seed, seq_id): stable when
    sequences are added, removed or reordered."""
    edges = np.cumsum(fractions)
    out = []
    for seq_id in seq_ids:
        digest = hashlib.blake2b(f"{seed}:{seq_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        out.append(SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)])
    return out


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
    """Everything ``process_table`` needs; built once per Ray worker from plain values."""

    data: DataConfig
    tokenizer_dir: str
    num_types: int
    root: str
    duplicate_ids: frozenset[str] = frozenset()
    renderer: Renderer = field(init=False)
    spec: ImageSpec = field(init=False)

    def __post_init__(self) -> None:
        tokenizer = load_backend(self.tokenizer_dir)
        self.renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, self.num_types))
        self.spec = ImageSpec(
            min_pixels=self.data.image_min_pixels, max_pixels=self.data.image_max_pixels
        )


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


def _image_bytes(refs: list[ImageRef | None], events: np.ndarray, ctx: PrepareContext) -> list:
    return [read_bytes(refs[i], ctx.root, ctx.spec) for i in events]


def _stage1_rows(
    ets: list[EventTokens], seqs: list, splits: list[str], ctx: PrepareContext, rows: _Rows
) -> None:
    """Windows of every sequence, packed in order into documents of ≤ budget tokens."""
    r, d = ctx.renderer, ctx.data
    open_doc: dict[str, dict] = {}
    docs = 0

    def close(doc: dict) -> None:
        ids = np.concatenate(doc.pop("pieces"))
        rows.add(**doc, input_ids=ids, num_tokens=int(ids.size))

    for et, seq, split in zip(ets, seqs, splits, strict=True):
        for start, stop, mask in r.stage1_windows(et, d.delta, d.budget, d.stage1_direction):
            ids = np.append(r.render(et, start, stop, mask), r.ids.eos)
            kept = np.arange(start, stop)[~mask]
            images = _image_bytes(seq.image, kept[et.image_tokens[kept] > 0], ctx)
            doc = open_doc.get(split)
            if doc is not None and sum(doc["doc_lengths"]) + ids.size > d.budget:
                close(open_doc.pop(split))
                doc = None
            if doc is None:
                doc = open_doc[split] = {
                    "kind": "stage1", "split": split, "seq_id": et.seq_id, "start": start,
                    "target": docs, "pieces": [], "doc_lengths": [], "images": [],
                    "events": 0, "compressed_events": 0,
                }  # fmt: skip
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
    return sample_targets(len(et), count, d.min_history, d.seed, et.seq_id)


def _stage2_rows(
    et: EventTokens, seq, split: str, targets: np.ndarray, ctx: PrepareContext, rows: _Rows
) -> None:
    d, r = ctx.data, ctx.renderer
    for target in targets.tolist():
        examples = r.examples(et, target, d.tasks, d.delta, d.budget, d.stage2_direction)
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
                images=_image_bytes(seq.image, ex.image_events, ctx),
                true_gap=float(et.gaps[target]),
                true_type=int(et.types[target]),
                true_text=seq.text[target],
            )


def process_table(table: pa.Table, ctx: PrepareContext, source: str = "<batch>") -> pa.Table:
    """One batch of raw sequences → output rows (see module docstring)."""
    from mmtpp.events import table_to_sequences

    d = ctx.data
    table = conform_table(table, source)
    checks = Checks(ctx.num_types, ctx.root, ctx.spec)
    good, rejected, problems = validate_table(table, source, checks)
    if ctx.duplicate_ids:
        dup = pc.is_in(good.column("seq_id"), pa.array(sorted(ctx.duplicate_ids), pa.string()))
        for seq_id in good.filter(dup).column("seq_id").to_pylist():
            problems.append(_dup_problem(source, seq_id))
        rejected_dups = good.filter(dup).to_pylist()
        good = good.filter(pc.invert(dup))
    else:
        rejected_dups = []
    if problems and d.validation == "strict":
        raise ValidationError(problems)
    rows = _Rows()
    dup_problem = [{"event": -1, "field": "seq_id", "reason": "duplicate_seq_id",
                    "message": "seq_id appears more than once in the dataset"}]  # fmt: skip
    for q in rejected.to_pylist() + [{**r, "source_file": source, "problems": dup_problem}
                                     for r in rejected_dups]:  # fmt: skip
        record = {"source": q["source_file"], "problems": q["problems"]}
        rows.add(kind="quarantine", split="", seq_id=q["seq_id"] or "",
                 problems=json.dumps(record), events=len(q["time"] or []))  # fmt: skip
    seqs = table_to_sequences(good)
    splits = split_of([s.seq_id for s in seqs], d.split, d.seed)
    counter = image_token_counter(ctx.root, ctx.spec)
    ets = ctx.renderer.event_tokens(seqs, counter)
    ctx.renderer.tokenize_shown(ets, d.delta, [d.stage1_direction, d.stage2_direction])
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
                summary.append({"kind": kind, "split": split, "rows": part.num_rows,
                                "tokens": tokens})  # fmt: skip
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
        self.ctx = PrepareContext(**ctx_args)
        self.batch_size = batch_size
        self.out = Path(out_dir)

    def __call__(self, units: pa.Table) -> pa.Table:
        summary = []
        for file, group, unit in zip(units["file"].to_pylist(), units["row_group"].to_pylist(),
                                     units["unit"].to_pylist(), strict=True):  # fmt: skip
            table = pq.ParquetFile(file).read_row_group(group)
            rows = pa.concat_tables(
                process_table(table.slice(start, self.batch_size), self.ctx, source=file)
                for start in range(0, table.num_rows, self.batch_size)
            )
            summary.extend(write_unit(rows, self.out, unit))
        return pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA)


def _dup_problem(source: str, seq_id: str) -> Problem:
    return Problem(source, seq_id, -1, "seq_id", "duplicate_seq_id", "seq_id appears twice")


# --- the driver -------------------------------------------------------------------------


def input_fingerprint(root: Path) -> str:
    """Hash of the dataset's files (names, sizes, modification times) and its info."""
    h = hashlib.sha256()
    for path in sorted((root / SEQUENCES_DIR).glob("*.parquet")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update((root / "dataset.json").read_bytes())
    return h.hexdigest()[:16]


def scan_ids_and_text(root: Path, data: DataConfig) -> tuple[list[str], list[str], frozenset]:
    """seq ids, training-split text (for the tokenizer: at most ``data.tokenizer_texts``)
    and duplicated ids, read column-wise."""
    ids: list[str] = []
    texts: list[str] = []
    for path in sequence_files(root):
        columns = ["seq_id", "text"] if "text" in pq.read_schema(path).names else ["seq_id"]
        table = pq.read_table(path, columns=columns)
        batch_ids = [str(s) for s in table.column("seq_id").to_pylist()]
        ids.extend(batch_ids)
        if "text" in table.column_names:
            in_train = [s == "train" for s in split_of(batch_ids, data.split, data.seed)]
            for keep, row in zip(in_train, table.column("text").to_pylist(), strict=True):
                if keep and row:
                    texts.extend(t for t in row if t)
    dups = frozenset(s for s, c in Counter(ids).items() if c > 1)
    if 0 < data.tokenizer_texts < len(texts):  # evenly spaced: every part of the data counts
        step = len(texts) / data.tokenizer_texts
        texts = [texts[int(i * step)] for i in range(data.tokenizer_texts)]
    return ids, texts, dups


def build_tokenizer(data: DataConfig, texts: list[str], num_types: int, out_dir: Path) -> str:
    """Save the run's tokenizer to ``out_dir``: trained on the training text, or a local
    tokenizer (e.g. Qwen2.5-VL's) extended with mmtpp's tokens."""
    if data.tokenizer:
        tokenizer = load_tokenizer(data.tokenizer)
        extend_tokenizer(tokenizer, num_types)
        tokenizer.save_pretrained(out_dir)
        return fingerprint(tokenizer)
    bpe = train_bpe(texts, num_types, data.vocab_size)  # no transformers import: ~0.6 s
    save_bpe(bpe, out_dir)
    return fingerprint(bpe)


@dataclass
class PrepareResult:
    output_dir: Path
    manifest: dict[str, Any]
    reused: bool


def _code_version() -> str:
    h = hashlib.sha256()
    for name in ("prepare.py", "templates.py", "compression.py", "tokens.py", "validation.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def _fingerprint(root: Path, data: DataConfig) -> str:
    payload = {"data": data.model_dump(), "input": input_fingerprint(root), "code": _code_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def run_prepare(
    config: Config, dataset_root: str | Path, output_dir: str | Path, batch_size: int = 16
) -> PrepareResult:
    """Prepare ``dataset_root`` into ``output_dir`` on the connected Ray cluster."""
    import ray

    root = Path(dataset_root).resolve()
    out = Path(output_dir)
    data = config.data
    info = read_info(root)
    fp = _fingerprint(root, data)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("fingerprint") == fp:
            print(f"prepare: reusing {out} (inputs and config unchanged)", flush=True)
            return PrepareResult(out, old, reused=True)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        phases[name] = round(time.perf_counter() - since, 2)
        return time.perf_counter()

    ids, texts, dups = scan_ids_and_text(root, data)
    if dups and data.validation == "strict":
        raise ValidationError([_dup_problem(str(root), s) for s in sorted(dups)])
    t = phase("scan", t0)
    out.mkdir(parents=True, exist_ok=True)
    tok_fp = build_tokenizer(data, texts, info.num_types, out / "tokenizer")
    t = phase("tokenizer", t)
    print(f"prepare: {len(ids)} sequences, tokenizer {tok_fp} ({phases})", flush=True)

    ctx_args = {
        "data": data,
        "tokenizer_dir": str((out / "tokenizer").resolve()),
        "num_types": info.num_types,
        "root": str(root),
        "duplicate_ids": dups,
    }

    ray_ctx = ray.data.DataContext.get_current()
    ray_ctx.execution_options.preserve_order = True
    # One unit of work per Parquet row group (mmtpp writes 32 sequences per group), spread
    # over a pool of one actor per CPU of the cluster: the actors start together and keep
    # their tokenizer, where Ray Data's tasks on a small cluster ran one at a time.
    units = [
        {"file": str(f), "row_group": g}
        for f in sequence_files(root)
        for g in range(pq.ParquetFile(f).num_row_groups)
    ]
    for unit, row in enumerate(units):
        row["unit"] = unit
    for kind in KINDS:
        for split in SPLITS:
            _clear(out / kind / split)
    workers = max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1))))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    summary = ds.map_batches(
        RowGroupProcessor,
        fn_constructor_kwargs={"ctx_args": ctx_args, "batch_size": batch_size,
                               "out_dir": str(out.resolve())},
        batch_size=1,
        batch_format="pyarrow",
        concurrency=workers,
    ).take_all()  # fmt: skip
    t = phase("process", t)

    counts: Counter[tuple[str, str]] = Counter()
    tokens: Counter[tuple[str, str]] = Counter()
    quarantined: list[dict] = []
    for r in summary:
        if r["kind"] == "quarantine":
            quarantined.append({"seq_id": r["seq_id"], **json.loads(r["problems"])})
        else:
            counts[(r["kind"], r["split"])] += r["rows"]
            tokens[(r["kind"], r["split"])] += r["tokens"]
    (out / "quarantine.json").unlink(missing_ok=True)  # none of an earlier run's
    if quarantined:
        (out / "quarantine.json").write_text(json.dumps(quarantined, indent=1))

    stats = token_stats(out, data)
    phase("stats", t)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "dataset": str(root),
        "dataset_name": info.name,
        "type_names": info.type_names,
        "num_types": info.num_types,
        "sequences_in": len(ids),
        "sequences_quarantined": len(quarantined),
        "sequences_out": len(ids) - len(quarantined),
        "quarantine_reasons": dict(
            Counter(p["reason"] for q in quarantined for p in q["problems"])
        ),
        "splits": dict(Counter(split_of(ids, data.split, data.seed))),
        "rows": {f"{k}/{s}": counts[(k, s)] for k in KINDS for s in SPLITS},
        "tokens": {f"{k}/{s}": tokens[(k, s)] for k in KINDS for s in SPLITS},
        "delta": data.delta,
        "budget": data.budget,
        "tokenizer_fingerprint": tok_fp,
        "token_stats": stats,
        "config": config.to_dict(),
        "seconds": round(time.perf_counter() - t0, 2),
        "phase_seconds": phases,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return PrepareResult(out, manifest, reused=False)


def _clear(path: Path) -> None:
    if path.is_dir():
        for f in path.glob("*.parquet"):
            f.unlink()


def token_stats(out: Path, data: DataConfig) -> dict[str, Any]:
    """Summary of the written shards: document and prompt lengths, compression."""
    stats: dict[str, Any] = {}
    for kind in KINDS:
        files = sorted((out / kind / "train").glob("*.parquet"))
        if not files:
            continue
        t = pa.concat_tables(
            pq.read_table(f, columns=["num_tokens", "events", "compressed_events"]) for f in files
        )
        n = np.asarray(t["num_tokens"])
        ev = np.asarray(t["events"])
        comp = np.asarray(t["compressed_events"])
        stats[kind] = {
            "rows": int(n.size),
            "mean_tokens": float(n.mean()),
            "max_tokens": int(n.max()),
            "mean_events": float(ev.mean()),
            "compressed_fraction": float(comp.sum() / max(ev.sum(), 1)),
        }
    return stats


def format_summary(manifest: dict[str, Any]) -> str:
    lines = [
        f"sequences in {manifest['sequences_in']}, out {manifest['sequences_out']}, "
        f"quarantined {manifest['sequences_quarantined']}  (Δ={manifest['delta']}, "
        f"budget {manifest['budget']}, tokenizer {manifest['tokenizer_fingerprint']})",
        f"{'rows':<14}{'train':>10}{'val':>10}{'test':>10}",
    ]
    for kind in KINDS:
        cells = "".join(f"{manifest['rows'][f'{kind}/{s}']:>10}" for s in SPLITS)
        lines.append(f"{kind:<14}{cells}")
        cells = "".join(f"{manifest['tokens'][f'{kind}/{s}']:>10}" for s in SPLITS)
        lines.append(f"{'  tokens':<14}{cells}")
    for kind, s in manifest.get("token_stats", {}).items():
        lines.append(
            f"{kind} train: mean {s['mean_tokens']:.0f} tokens (max {s['max_tokens']}), "
            f"{s['mean_events']:.1f} events/row, {s['compressed_fraction']:.1%} compressed"
        )
    return "\n".join(lines)


GENERATED_MARKERS = {"synthetic": "synth_config.json", "nycflights": "flights_config.json"}


def resolve_dataset(config: Config) -> Path:
    """The dataset directory of a config; 'synthetic' generates it under the run and
    'nycflights' imports the NYC flights (``synth_sequences`` aircraft, 0 = all) the same
    way, again whenever the source or its settings change (a marker file records them)."""
    d = config.data
    if d.source not in GENERATED_MARKERS:
        root = Path(d.source)
        read_info(root)  # a clear error if this is not a dataset
        return root
    root = Path(config.output_dir) / "data"
    if d.source == "nycflights":
        wanted = {"source": "nycflights", "max_sequences": d.synth_sequences or None}
    else:
        from mmtpp.sources.synthetic import SynthConfig

        synth = SynthConfig(num_sequences=d.synth_sequences, seed=d.synth_seed)
        wanted = vars(synth)
    marker = root / GENERATED_MARKERS[d.source]
    text = json.dumps(wanted, sort_keys=True, default=str)
    if marker.is_file() and marker.read_text() == text:
        return root
    for name in GENERATED_MARKERS.values():  # what the directory held is being replaced
        (root / name).unlink(missing_ok=True)
    if d.source == "nycflights":
        from mmtpp.events import write_dataset
        from mmtpp.sources.flights import load_nycflights

        print(f"importing NYC flights into {root}", flush=True)
        info, sequences = load_nycflights(max_sequences=wanted["max_sequences"])
        write_dataset(root, info, sequences)
    else:
        from mmtpp.cli import progress_printer
        from mmtpp.sources.synthetic import synthesize

        synthesize(synth, root, progress=progress_printer("synthesizing"))
    marker.write_text(text)
    return root


def prepare_from_config(config: Config) -> PrepareResult:
    """Resolve the dataset and prepare it into ``<output_dir>/prepared``."""
    root = resolve_dataset(config)
    return run_prepare(config, root, Path(config.output_dir) / "prepared")
