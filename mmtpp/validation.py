"""Checking event data, with errors that name the file, the sequence, the event and the field.

Two levels:

- ``conform_table``: column names and types of one Parquet file (a file-level problem: the
  whole file is unusable, so it always raises);
- ``validate_table``: every sequence of a conformed table — list lengths, missing values,
  NaN/inf times, unsorted times (negative gaps), types out of range, text length, and images
  (missing, undecodable, oversize, path escaping the root). It splits the table into good rows
  and rejected rows; rejected rows carry their problems so they can be quarantined.

``validate_dataset`` runs both over a dataset directory: in ``strict`` mode the first bad
sequence raises; in ``quarantine`` mode bad sequences go to a side Parquet file with their
reasons and are counted. Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmtpp.events import (
    IMAGE_STRUCT,
    SEQUENCE_SCHEMA,
    DatasetInfo,
    iter_tables,
    read_info,
    table_to_sequences,
)
from mmtpp.images import ImageError, ImageSpec, load_image

Mode = Literal["strict", "quarantine"]
MODES: tuple[Mode, ...] = ("strict", "quarantine")
QUARANTINE_FILE = "quarantine.parquet"

PROBLEM_STRUCT = pa.struct(
    [
        ("event", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)
QUARANTINE_SCHEMA = SEQUENCE_SCHEMA.append(pa.field("source_file", pa.string())).append(
    pa.field("problems", pa.list_(PROBLEM_STRUCT))
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``event`` is the index in the sequence, or -1."""

    file: str
    seq_id: str | None
    event: int
    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.seq_id is not None:
            where.append(f"sequence {self.seq_id!r}")
        if self.event >= 0:
            where.append(f"event {self.event}")
        where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}"


class ValidationError(ValueError):
    """Bad input; ``problems`` lists everything found (the message shows the first ones)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(f"invalid event data:\n  {shown}{more}")


# --- columns ----------------------------------------------------------------------------


def _column_problem(source: str, column: str, message: str) -> ValidationError:
    return ValidationError([Problem(source, None, -1, column, "wrong_column_type", message)])


def _cast_list(table: pa.Table, name: str, value_type: pa.DataType, source: str) -> pa.Array:
    col = table.column(name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise _column_problem(source, name, f"expected a list column, got {col.type}")
    have = col.type.value_type
    ok = {
        "time": pa.types.is_integer(have) or pa.types.is_floating(have),
        "type": pa.types.is_integer(have),
        "text": pa.types.is_string(have) or pa.types.is_large_string(have) or have == pa.null(),
    }[name]
    if not ok:
        raise _column_problem(
            source,
            name,
            f"expected list<{value_type}>, got {col.type} (types must be integers; "
            "map names to ids with `mmtpp data import table FILE --out DIR`)"
            if name == "type"
            else f"expected list<{value_type}>, got {col.type}",
        )
    if name == "type" and table.num_rows:
        flat = pc.list_flatten(col)
        info = np.iinfo(np.int32)
        low, high = pc.min_max(flat).values() if len(flat) else (None, None)
        if (high.as_py() or 0) > info.max or (low.as_py() or 0) < info.min:
            raise _column_problem(source, name, "type ids do not fit in int32")
    return col.cast(pa.list_(value_type))


def _conform_images(table: pa.Table, source: str) -> pa.ChunkedArray:
    n_events = pc.list_value_length(table.column("time"))
    if "image" not in table.column_names:
        return pa.chunked_array(
            [pa.array([[None] * (n or 0) for n in n_events.to_pylist()], pa.list_(IMAGE_STRUCT))]
        )
    col = table.column("image")
    if not pa.types.is_list(col.type):
        raise _column_problem(source, "image", f"expected a list column, got {col.type}")
    have = col.type.value_type
    if have == IMAGE_STRUCT:
        return col
    offsets_valid = []
    for chunk in col.chunks:
        values = chunk.flatten()
        if pa.types.is_binary(have) or pa.types.is_large_binary(have):
            structs = pa.StructArray.from_arrays(
                [values.cast(pa.binary()), pa.nulls(len(values), pa.string())],
                fields=list(IMAGE_STRUCT),
                mask=values.is_null(),
            )
        elif pa.types.is_string(have) or pa.types.is_large_string(have) or have == pa.null():
            structs = pa.StructArray.from_arrays(
                [pa.nulls(len(values), pa.binary()), values.cast(pa.string())],
                fields=list(IMAGE_STRUCT),
                mask=values.is_null(),
            )
        else:
            raise _column_problem(
                source, "image", f"expected list<struct<bytes, path>>, binary or string, got {have}"
            )
        offsets_valid.append(pa.ListArray.from_arrays(chunk.offsets, structs, mask=chunk.is_null()))
    return pa.chunked_array(offsets_valid, pa.list_(IMAGE_STRUCT))


def conform_table(table: pa.Table, source: str = "<table>") -> pa.Table:
    """Check and cast a sequence table to SEQUENCE_SCHEMA; raises ValidationError naming the
    file and column. ``text`` and ``image`` may be absent (all-null); ``seq_id`` may be ints.
    """
    for name in ("seq_id", "time", "type"):
        if name not in table.column_names:
            raise ValidationError(
                [
                    Problem(
                        source,
                        None,
                        -1,
                        name,
                        "missing_column",
                        f"required column {name!r} is missing (columns: {table.column_names})",
                    )
                ]
            )
    seq_type = table.column("seq_id").type
    if not (
        pa.types.is_string(seq_type)
        or pa.types.is_integer(seq_type)
        or pa.types.is_large_string(seq_type)
    ):
        raise _column_problem(source, "seq_id", f"expected string, got {seq_type}")
    time = _cast_list(table, "time", pa.float64(), source)
    types = _cast_list(table, "type", pa.int32(), source)
    if "text" in table.column_names:
        text = _cast_list(table, "text", pa.string(), source)
    else:
        lengths = pc.list_value_length(time).to_pylist()
        text = pa.chunked_array(
            [pa.array([[None] * (n or 0) for n in lengths], pa.list_(pa.string()))]
        )
    image = _conform_images(table, source)
    return pa.Table.from_arrays(
        [table.column("seq_id").cast(pa.string()), time, types, text, image],
        schema=SEQUENCE_SCHEMA,
    )


# --- sequences --------------------------------------------------------------------------


def _row_problems(table: pa.Table, source: str) -> dict[int, list[Problem]]:
    """Per-row structural problems: null ids/lists, list lengths that differ, empty rows."""
    out: dict[int, list[Problem]] = {}
    ids = table.column("seq_id").to_pylist()
    lengths = {
        name: pc.list_value_length(table.column(name)).to_numpy(zero_copy_only=False)
        for name in ("time", "type", "text", "image")
    }
    for row in range(table.num_rows):
        seq_id = ids[row]
        found = []
        if seq_id is None or seq_id == "":
            found.append(Problem(source, None, -1, "seq_id", "missing", f"row {row}: no seq_id"))
        n = lengths["time"][row]
        if np.isnan(n):
            found.append(Problem(source, seq_id, -1, "time", "missing", "time list is null"))
        elif n == 0:
            found.append(Problem(source, seq_id, -1, "time", "empty", "sequence has no events"))
        for name in ("type", "text", "image"):
            m = lengths[name][row]
            if name == "type" and np.isnan(m):
                found.append(Problem(source, seq_id, -1, name, "missing", "type list is null"))
            elif not np.isnan(m) and not np.isnan(n) and m != n:
                found.append(
                    Problem(
                        source,
                        seq_id,
                        -1,
                        name,
                        "length_mismatch",
                        f"{int(m)} values for {int(n)} events",
                    )
                )
        if found:
            out[row] = found
    return out


def check_times(times: np.ndarray, source: str, seq_id: str) -> list[Problem]:
    """NaN/inf times and unsorted times (a negative gap τ_i = t_i − t_{i−1} < 0)."""
    out = []
    bad = np.flatnonzero(~np.isfinite(times))
    for i in bad[:3]:
        out.append(
            Problem(
                source,
                seq_id,
                int(i),
                "time",
                "not_finite",
                f"time is {times[i]} (NaN or infinite)",
            )
        )
    if bad.size:
        return out
    gaps = np.diff(times)
    for i in np.flatnonzero(gaps < 0)[:3]:
        out.append(
            Problem(
                source,
                seq_id,
                int(i) + 1,
                "time",
                "unsorted",
                f"time {float(times[i + 1])!r} is before the previous event's {float(times[i])!r} "
                f"(negative gap {gaps[i]:.6g}); sort events by time",
            )
        )
    return out


def check_types(types: np.ndarray, num_types: int, source: str, seq_id: str) -> list[Problem]:
    out = []
    for i in np.flatnonzero((types < 0) | (types >= num_types))[:3]:
        out.append(
            Problem(
                source,
                seq_id,
                int(i),
                "type",
                "type_out_of_range",
                f"type {int(types[i])} is outside 0..{num_types - 1}",
            )
        )
    return out


@dataclass(frozen=True)
class Checks:
    """What ``validate_table`` checks beyond structure."""

    num_types: int
    image_root: str | None = None
    image_spec: ImageSpec = field(default_factory=ImageSpec)
    check_images: bool = True
    max_text_chars: int = 4096


def validate_table(
    table: pa.Table, source: str, checks: Checks
) -> tuple[pa.Table, pa.Table, list[Problem]]:
    """Split a conformed table into (good rows, quarantined rows with problems, problems)."""
    problems = _row_problems(table, source)
    good_rows = [r for r in range(table.num_rows) if r not in problems]
    sequences = table_to_sequences(table.take(pa.array(good_rows, pa.int64())))
    for row, seq in zip(good_rows, sequences, strict=True):
        found = check_times(seq.time, source, seq.seq_id)
        found += check_types(seq.type, checks.num_types, source, seq.seq_id)
        for i, text in enumerate(seq.text):
            if text is not None and len(text) > checks.max_text_chars:
                found.append(
                    Problem(
                        source,
                        seq.seq_id,
                        i,
                        "text",
                        "oversize",
                        f"text of {len(text)} characters > {checks.max_text_chars}",
                    )
                )
        if checks.check_images:
            for i, ref in enumerate(seq.image):
                if ref is None:
                    continue
                try:
                    load_image(ref, checks.image_root, checks.image_spec)
                except ImageError as err:
                    found.append(Problem(source, seq.seq_id, i, "image", err.reason, str(err)))
        if found:
            problems[row] = found
    bad_rows = sorted(problems)
    keep = [r for r in range(table.num_rows) if r not in problems]
    rejected = table.take(pa.array(bad_rows, pa.int64()))
    structs = [
        [
            {"event": p.event, "field": p.field, "reason": p.reason, "message": p.message}
            for p in problems[r]
        ]
        for r in bad_rows
    ]
    rejected = rejected.append_column(
        "source_file", pa.array([source] * len(bad_rows), pa.string())
    ).append_column("problems", pa.array(structs, pa.list_(PROBLEM_STRUCT)))
    flat = [p for r in bad_rows for p in problems[r]]
    return table.take(pa.array(keep, pa.int64())), rejected, flat


@dataclass
class ValidationReport:
    """Counts from ``validate_dataset``; ``reasons`` counts problems by reason."""

    root: str
    mode: str
    files: int = 0
    sequences: int = 0
    events: int = 0
    valid_sequences: int = 0
    valid_events: int = 0
    rejected_sequences: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    quarantine_file: str | None = None

    @property
    def ok(self) -> bool:
        return self.rejected_sequences == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def validate_dataset(
    root: str | Path,
    mode: Mode = "strict",
    quarantine_file: str | Path | None = None,
    image_spec: ImageSpec | None = None,
    check_images: bool = True,
    max_problems_listed: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Validate every sequence of a dataset directory.

    strict: raise ValidationError at the first file holding a bad sequence (all of that file's
    problems listed). quarantine: write rejected sequences with their reasons to
    ``quarantine_file`` (default ``<root>/quarantine.parquet``) and count them; later stages
    (``mmtpp.prepare``) skip them the same way.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    root = Path(root)
    info: DatasetInfo = read_info(root)
    checks = Checks(info.num_types, str(root), image_spec or ImageSpec(), check_images)
    report = ValidationReport(root=str(root), mode=mode)
    rejected_tables: list[pa.Table] = []
    seen: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    tables = list(iter_tables(root))
    for done, (path, raw) in enumerate(tables, start=1):
        source = str(path.relative_to(root))
        table = conform_table(raw, source)
        good, rejected, problems = validate_table(table, source, checks)
        dup_rows = []
        for row, seq_id in enumerate(good.column("seq_id").to_pylist()):
            seen[seq_id] += 1
            if seen[seq_id] > 1:
                dup_rows.append(row)
        if dup_rows:
            dups = good.take(dup_rows)
            dup_problems = [
                Problem(
                    source,
                    s,
                    -1,
                    "seq_id",
                    "duplicate_seq_id",
                    "seq_id appears more than once in the dataset",
                )
                for s in dups.column("seq_id").to_pylist()
            ]
            dups = dups.append_column("source_file", pa.array([source] * len(dup_rows)))
            dups = dups.append_column(
                "problems",
                pa.array(
                    [
                        [{"event": -1, "field": p.field, "reason": p.reason, "message": p.message}]
                        for p in dup_problems
                    ],
                    pa.list_(PROBLEM_STRUCT),
                ),
            )
            rejected = pa.concat_tables([rejected, dups.cast(QUARANTINE_SCHEMA)])
            good = good.filter(pa.array([r not in set(dup_rows) for r in range(len(good))]))
            problems = problems + dup_problems
        if problems and mode == "strict":
            raise ValidationError(problems)
        report.files += 1
        report.sequences += table.num_rows
        report.events += int(pc.sum(pc.list_value_length(table.column("time"))).as_py() or 0)
        report.valid_sequences += good.num_rows
        report.valid_events += int(pc.sum(pc.list_value_length(good.column("time"))).as_py() or 0)
        report.rejected_sequences += rejected.num_rows
        reasons.update(p.reason for p in problems)
        room = max_problems_listed - len(report.problems)
        report.problems.extend(str(p) for p in problems[:room])
        if rejected.num_rows:
            rejected_tables.append(rejected.cast(QUARANTINE_SCHEMA))
        if progress:
            progress(done, len(tables))
    report.reasons = dict(reasons)
    if mode == "quarantine" and rejected_tables:
        target = Path(quarantine_file) if quarantine_file else root / QUARANTINE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(rejected_tables), target)
        report.quarantine_file = str(target)
    return report
