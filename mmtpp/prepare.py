"""Raw event dataset → training-ready shards, in parallel on Ray Data (design §1).

The driver scans sequence ids and training text, builds the tokenizer, calibrates Δ on the
training split when the config asks for a target (``data.compression_target`` or
``compression=auto``), then makes one Ray Data row per Parquet row group of the dataset and
runs ``map_batches`` over them on a pool of one actor per CPU (``shards.RowGroupProcessor``:
each reads its row groups, turns them into rows and writes its unit's shards). The driver
gathers their counts and writes the manifest (``prepared.Manifest``). Outputs are
deterministic for a config; a run whose inputs, config, tokenizer and package source match an
existing manifest reuses it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtpp.card import CompressionSpec
from mmtpp.compression import CompressionRule, calibrate
from mmtpp.config import Config, DataConfig
from mmtpp.events import SEQUENCES_DIR, read_info, sequence_files, split_of, table_to_sequences
from mmtpp.images import ImageSpec, image_token_counter
from mmtpp.prepared import FORMAT_VERSION, KINDS, SPLITS, Manifest, PreparedData
from mmtpp.problems import ValidationError
from mmtpp.shards import RowGroupProcessor, duplicate_problem
from mmtpp.templates import Renderer
from mmtpp.tokens import TokenIds, build_tokenizer, load_backend
from mmtpp.validation import conform_table

PACKAGE = Path(__file__).parent
CALIBRATION_SEQUENCES = 1000  # training sequences Δ is calibrated on (evenly spaced)


@dataclass
class PrepareResult:
    output_dir: Path
    manifest: Manifest
    reused: bool


# --- fingerprints -------------------------------------------------------------------------


def input_fingerprint(root: Path) -> str:
    """Hash of the dataset's files (names, sizes, modification times) and its info."""
    h = hashlib.sha256()
    for path in sorted((root / SEQUENCES_DIR).glob("*.parquet")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update((root / "dataset.json").read_bytes())
    return h.hexdigest()[:16]


def code_version() -> str:
    """Hash of every source file of the mmtpp package: a change anywhere in the code that
    turns events into tokens (the codec, compression, templates, images …) — or anywhere
    else — prepares the data again rather than reuse stale shards."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _tokenizer_source(data: DataConfig) -> str | None:
    """Hash of the tokenizer files a run extends (``data.tokenizer``), if any."""
    if not data.tokenizer:
        return None
    h = hashlib.sha256()
    for path in sorted(Path(data.tokenizer).glob("tokenizer*.json")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def prepare_fingerprint(root: Path, data: DataConfig) -> str:
    payload = {
        "data": data.model_dump(mode="json"),
        "input": input_fingerprint(root),
        "tokenizer": _tokenizer_source(data),
        "code": code_version(),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- driver steps -------------------------------------------------------------------------


def scan_ids_and_text(root: Path, data: DataConfig) -> tuple[list[str], list[str], frozenset]:
    """seq ids, training-split text (for the tokenizer: at most ``data.tokenizer_texts``)
    and duplicated ids, read column-wise."""
    assert data.seed is not None
    ids: list[str] = []
    texts: list[str] = []
    for path in sequence_files(root):
        names = pq.read_schema(path).names
        with_text = "text" in names and "text" in data.modalities
        table = pq.read_table(path, columns=["seq_id", "text"] if with_text else ["seq_id"])
        batch_ids = [str(s) for s in table.column("seq_id").to_pylist()]
        ids.extend(batch_ids)
        if with_text:
            in_train = [s == "train" for s in split_of(batch_ids, data.split, data.seed)]
            for keep, row in zip(in_train, table.column("text").to_pylist(), strict=True):
                if keep and row:
                    texts.extend(t for t in row if t)
    dups = frozenset(s for s, c in Counter(ids).items() if c > 1)
    if 0 < data.tokenizer_texts < len(texts):  # evenly spaced: every part of the data counts
        step = len(texts) / data.tokenizer_texts
        texts = [texts[int(i * step)] for i in range(data.tokenizer_texts)]
    return ids, texts, dups


def calibrated_rule(
    root: Path, data: DataConfig, tokenizer_dir: Path, num_types: int
) -> tuple[CompressionRule, dict[str, Any] | None]:
    """The rule the data is prepared with: ``data.rule()``, or with a calibration target
    its Δ calibrated on (at most ``CALIBRATION_SEQUENCES`` of) the training split's
    sequences, with token costs as the prompts will see them. Returns the rule and the
    calibration's record (None without a target)."""
    target = data.calibration_target()
    rule = data.rule()
    if target is None:
        return rule, None
    assert data.seed is not None
    sequences = []
    for path in sequence_files(root):
        table = conform_table(pq.read_table(path), str(path))
        train = [
            s == "train"
            for s in split_of(table.column("seq_id").to_pylist(), data.split, data.seed)
        ]
        sequences += table_to_sequences(table.filter(pa.array(train)))
    sequences = [s.with_modalities(data.modalities) for s in sequences if len(s)]
    if not sequences:
        raise ValueError(f"{root}: no training sequence to calibrate Δ on")
    step = max(1, len(sequences) // CALIBRATION_SEQUENCES)
    sample = sequences[::step][:CALIBRATION_SEQUENCES]
    items: list[tuple[Any, ...]]
    if target.kind == "gain":
        tokenizer = load_backend(tokenizer_dir)
        renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, num_types))
        spec = ImageSpec(data.image_min_pixels, data.image_max_pixels)
        counter = image_token_counter(root, spec, data.image_root)
        ets = renderer.event_tokens(sample, counter)
        items = [(et.gaps, et.costs(), et.types) for et in ets]
    else:
        items = [(s.gaps, None, s.type) for s in sample]
    result = calibrate(
        rule.mode, items, target, data.budget, data.stage2_direction, keep_type=rule.keep_type
    )
    record = {**result.to_dict(), "sequences": len(sample)}
    print(
        f"prepare: Δ calibrated to {result.rule.describe()} ({target.describe()} "
        f"{'reached' if result.reached else 'NOT reached'}: {result.achieved:.3g})",
        flush=True,
    )
    return result.rule, record


def _units(root: Path) -> list[dict[str, Any]]:
    """One unit of work per Parquet row group (mmtpp writes 32 sequences per group)."""
    units = [
        {"file": str(f), "row_group": g}
        for f in sequence_files(root)
        for g in range(pq.ParquetFile(f).num_row_groups)
    ]
    for unit, row in enumerate(units):
        row["unit"] = unit
    return units


def _process(units: list[dict], ctx_args: dict[str, Any], out: Path, batch_size: int) -> list:
    """Run the units on a pool of one actor per CPU of the cluster: the actors start
    together and keep their tokenizer, where Ray Data's tasks on a small cluster ran one at
    a time."""
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    workers = max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1))))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    return ds.map_batches(
        RowGroupProcessor,
        fn_constructor_kwargs={
            "ctx_args": ctx_args,
            "batch_size": batch_size,
            "out_dir": str(out.resolve()),
        },
        batch_size=1,
        batch_format="pyarrow",
        concurrency=workers,
    ).take_all()


class _Phases:
    """Seconds of each phase of a run, each timed from the end of the one before."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        self.seconds[name] = round(time.perf_counter() - self.last, 2)
        self.last = time.perf_counter()


def _reusable(out: PreparedData, fingerprint: str) -> Manifest | None:
    """The manifest already in ``out`` when it was prepared with ``fingerprint``."""
    if not out.has_manifest():
        return None
    try:
        old = out.manifest()
    except ValueError:  # another format: prepared again
        return None
    return old if old.fingerprint == fingerprint else None


def _tally(summary: list[dict]) -> tuple[dict[str, int], dict[str, int], list[dict]]:
    """The actors' records gathered: rows and tokens per ``kind/split``, and the
    quarantined sequences with their problems."""
    counts: Counter[tuple[str, str]] = Counter()
    tokens: Counter[tuple[str, str]] = Counter()
    quarantined: list[dict] = []
    for r in summary:
        if r["kind"] == "quarantine":
            quarantined.append({"seq_id": r["seq_id"], **json.loads(r["problems"])})
        else:
            counts[(r["kind"], r["split"])] += r["rows"]
            tokens[(r["kind"], r["split"])] += r["tokens"]
    rows = {f"{k}/{s}": counts[(k, s)] for k in KINDS for s in SPLITS}
    return rows, {f"{k}/{s}": tokens[(k, s)] for k in KINDS for s in SPLITS}, quarantined


def _write_quarantine(out: PreparedData, quarantined: list[dict]) -> None:
    out.quarantine_path.unlink(missing_ok=True)  # none of an earlier run's
    if quarantined:
        out.quarantine_path.write_text(json.dumps(quarantined, indent=1))


def run_prepare(
    config: Config, dataset_root: str | Path, output_dir: str | Path, batch_size: int = 16
) -> PrepareResult:
    """Prepare ``dataset_root`` into ``output_dir`` on the connected Ray cluster."""
    root = Path(dataset_root).resolve()
    out = PreparedData(output_dir)
    data = config.data
    info = read_info(root)
    fp = prepare_fingerprint(root, data)
    old = _reusable(out, fp)
    if old is not None:
        print(f"prepare: reusing {out.root} (inputs, config and code unchanged)", flush=True)
        return PrepareResult(out.root, old, reused=True)
    clock = _Phases()
    ids, texts, dups = scan_ids_and_text(root, data)
    if dups and data.validation == "strict":
        raise ValidationError([duplicate_problem(str(root), s) for s in sorted(dups)])
    clock.done("scan")
    out.root.mkdir(parents=True, exist_ok=True)
    tok_fp = build_tokenizer(
        out.tokenizer_dir, texts, info.num_types, data.tokenizer, data.vocab_size
    )
    clock.done("tokenizer")
    rule, calibration = calibrated_rule(root, data, out.tokenizer_dir, info.num_types)
    clock.done("calibration")
    print(
        f"prepare: {len(ids)} sequences, tokenizer {tok_fp}, compression "
        f"{rule.describe()} ({clock.seconds})",
        flush=True,
    )
    ctx_args = {
        "data": data,
        "tokenizer_dir": str(out.tokenizer_dir.resolve()),
        "num_types": info.num_types,
        "root": str(root),
        "duplicate_ids": dups,
        "rule": rule,
    }
    out.clear_shards()
    summary = _process(_units(root), ctx_args, out.root, batch_size)
    clock.done("process")
    rows, tokens, quarantined = _tally(summary)
    _write_quarantine(out, quarantined)
    stats = token_stats(out)
    clock.done("stats")
    assert data.seed is not None
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        fingerprint=fp,
        dataset=str(root),
        dataset_name=info.name,
        type_names=info.type_names,
        num_types=info.num_types,
        sequences_in=len(ids),
        sequences_quarantined=len(quarantined),
        sequences_out=len(ids) - len(quarantined),
        quarantine_reasons=dict(Counter(p["reason"] for q in quarantined for p in q["problems"])),
        splits=dict(Counter(split_of(ids, data.split, data.seed))),
        rows=rows,
        tokens=tokens,
        compression=CompressionSpec(
            **rule.to_dict(), calibrated_to=calibration["target"] if calibration else None
        ),
        calibration=calibration,
        budget=data.budget,
        modalities=list(data.modalities),
        tokenizer_fingerprint=tok_fp,
        token_stats=stats,
        config=config.to_dict(),
        seconds=round(time.perf_counter() - clock.start, 2),
        phase_seconds=clock.seconds,
    )
    out.write_manifest(manifest)
    return PrepareResult(out.root, manifest, reused=False)


def token_stats(prepared: PreparedData) -> dict[str, Any]:
    """Summary of the written training shards: document and prompt lengths, compression."""
    stats: dict[str, Any] = {}
    for kind in KINDS:
        if not prepared.files(kind, "train"):
            continue
        t = prepared.read(kind, "train", columns=["num_tokens", "events", "compressed_events"])
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


def format_summary(manifest: Manifest) -> str:
    m = manifest
    lines = [
        f"sequences in {m.sequences_in}, out {m.sequences_out}, quarantined "
        f"{m.sequences_quarantined}  ({m.compression.rule.describe()}, budget {m.budget}, "
        f"tokenizer {m.tokenizer_fingerprint})",
        f"{'rows':<14}{'train':>10}{'val':>10}{'test':>10}",
    ]
    for kind in KINDS:
        cells = "".join(f"{m.rows[f'{kind}/{s}']:>10}" for s in SPLITS)
        lines.append(f"{kind:<14}{cells}")
        cells = "".join(f"{m.tokens[f'{kind}/{s}']:>10}" for s in SPLITS)
        lines.append(f"{'  tokens':<14}{cells}")
    for kind, s in m.token_stats.items():
        lines.append(
            f"{kind} train: mean {s['mean_tokens']:.0f} tokens (max {s['max_tokens']}), "
            f"{s['mean_events']:.1f} events/row, {s['compressed_fraction']:.1%} compressed"
        )
    return "\n".join(lines)


def prepare_from_config(config: Config) -> PrepareResult:
    """Resolve the dataset and prepare it into ``<output_dir>/prepared``."""
    from mmtpp.sources.resolve import resolve_dataset

    root = resolve_dataset(config)
    return run_prepare(config, root, Path(config.output_dir) / "prepared")
