"""Checking event data, with errors that name the file, the sequence, the event and the field
(``mmtpp.problems``).

Two levels:

- ``conform_table``: column names and types of one Parquet file (a file-level problem: the
  whole file is unusable, so it always raises);
- ``validate_table``: every sequence of a conformed table — list lengths, missing values,
  NaN/inf times, unsorted times (negative gaps), types out of range, text length, and images
  (missing, undecodable, oversize, path escaping the root). It splits the table into good rows
  and rejected rows; rejected rows carry their problems so they can be quarantined.

``mmtpp.quarantine.validate_dataset`` runs both over a dataset directory, raising or setting
bad sequences aside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmtpp.events import (
    IMAGE_STRUCT,
    SEQUENCE_SCHEMA,
    EventSequence,
    iter_tables,
    table_to_sequences,
)
from mmtpp.images import ImageError, ImageSpec, load_image
from mmtpp.problems import Problem, ValidationError, rejected_records

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
    """What ``validate_table`` checks beyond structure.

    ``image_root`` is the folder image paths are relative to (the dataset root);
    ``trusted_root`` a folder under which absolute image paths and symlinks may also lead
    (``mmtpp.images.resolve_path``).
    """

    num_types: int
    image_root: str | None = None
    image_spec: ImageSpec = field(default_factory=ImageSpec)
    check_images: bool = True
    max_text_chars: int = 4096
    trusted_root: str | None = None


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
                    load_image(ref, checks.image_root, checks.image_spec, checks.trusted_root)
                except ImageError as err:
                    found.append(Problem(source, seq.seq_id, i, "image", err.reason, str(err)))
        if found:
            problems[row] = found
    keep = [r for r in range(table.num_rows) if r not in problems]
    flat = [p for r in sorted(problems) for p in problems[r]]
    return table.take(pa.array(keep, pa.int64())), rejected_records(table, source, problems), flat


def read_sequences(root: str | Path) -> list[EventSequence]:
    """All sequences of a dataset, with column types checked (raises naming the file and
    column); sequence-level checks are ``validate_dataset``'s."""
    out: list[EventSequence] = []
    for path, table in iter_tables(root):
        out.extend(table_to_sequences(conform_table(table, source=str(path))))
    return out
