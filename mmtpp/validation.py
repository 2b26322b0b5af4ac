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

The quarantine file (``<root>/quarantine.parquet``, ``QUARANTINE_SCHEMA``) is shared by the two
places that set data aside: an import in quarantine mode (``Quarantine``: rows or sequences of
the source that could not be read, ``stage="import"``) and ``validate_dataset`` (sequences of
the dataset that fail a check, ``stage="validate"``). Each record is one sequence, or one row
of a table without a ``seq_id``, with its values as far as they could be read (null where not)
and its problems: event index, source row, field, reason, message and the raw value. An import
replaces the whole file (the dataset is new); validation replaces only its own records.
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
    EventSequence,
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
        ("row", pa.int64()),  # the row of the source table (as ``Problem.row``), else null
        ("value", pa.string()),  # the raw value that could not be read, as text, else null
    ]
)
QUARANTINE_SCHEMA = (
    SEQUENCE_SCHEMA.append(pa.field("source_file", pa.string()))
    .append(pa.field("problems", pa.list_(PROBLEM_STRUCT)))
    .append(pa.field("stage", pa.string()))  # "import" or "validate": who set it aside
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``event`` is the index in the sequence, or -1; ``row``
    the row of a source table (CSV: as a spreadsheet shows it, the header is row 1; Parquet:
    0-based), or None; ``value`` the raw value that could not be read, or None."""

    file: str
    seq_id: str | None
    event: int
    field: str
    reason: str
    message: str
    row: int | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.seq_id is not None:
            where.append(f"sequence {self.seq_id!r}")
        if self.event >= 0:
            where.append(f"event {self.event}")
        where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}"

    def to_struct(self) -> dict:
        """The problem as a ``PROBLEM_STRUCT`` value (its file and sequence are the record's)."""
        return {
            "event": self.event,
            "field": self.field,
            "reason": self.reason,
            "message": as_utf8(self.message),
            "row": self.row,
            "value": as_utf8(self.value),
        }


class ReadError(ValueError):
    """A row, event or sequence an importer cannot read: the message is what strict mode
    raises, ``problem`` what quarantine mode records."""

    def __init__(self, message: str, problem: Problem):
        super().__init__(message)
        self.problem = problem

    @classmethod
    def at(cls, where: str, problem: Problem) -> ReadError:
        """The error with the message strict mode shows: ``where`` (file, sequence and event as
        the format names them), then the field and what is wrong with it."""
        whole = problem.field in ("file", "sequence", "event", "row")  # not one field
        said = problem.message if whole else f"field {problem.field!r} {problem.message}"
        return cls(f"{where}: {said}", problem)


def as_utf8(value: str | None) -> str | None:
    """A string Parquet can store: bytes that were not UTF-8 (kept as surrogates when the
    source was read) become ``\\xNN`` escapes."""
    if value is None:
        return None
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # another lone surrogate, e.g. "\ud800" written in JSON
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


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


def _rejected(table: pa.Table, source: str, problems: dict[int, list[Problem]]) -> pa.Table:
    """The rows of ``table`` that have problems, as quarantine records (QUARANTINE_SCHEMA)."""
    rows = sorted(problems)
    structs = [[p.to_struct() for p in problems[r]] for r in rows]
    return (
        table.take(pa.array(rows, pa.int64()))
        .append_column("source_file", pa.array([source] * len(rows), pa.string()))
        .append_column("problems", pa.array(structs, pa.list_(PROBLEM_STRUCT)))
        .append_column("stage", pa.array(["validate"] * len(rows), pa.string()))
    )


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
    return table.take(pa.array(keep, pa.int64())), _rejected(table, source, problems), flat


# --- the quarantine file ----------------------------------------------------------------


@dataclass
class Quarantine:
    """What an import in quarantine mode set aside instead of raising.

    One record per sequence that could not be read whole (every row of it, so that no gap
    τ_i = t_i − t_{i−1} of an imported sequence is silently changed by a dropped event), or
    per table row without a ``seq_id`` (it belongs to no sequence). A record holds the values
    as far as they could be read (None where not) and every problem found.
    """

    records: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add(
        self,
        source: str,
        seq_id: str | None,
        problems: list[Problem],
        times: list[float | None] | None = None,
        types: list[int | None] | None = None,
        texts: list[str | None] | None = None,
        images: list[bytes | str | None] | None = None,
    ) -> None:
        """Set aside one sequence (or, with ``seq_id`` None, one row): its n events' values
        (lists of length n, None where unreadable; the last three may be left out) and its
        problems."""
        n = len(times or [])
        int32 = np.iinfo(np.int32)
        self.records.append(
            {
                "seq_id": as_utf8(seq_id),
                "time": list(times or []),
                "type": [
                    k if k is None or int32.min <= k <= int32.max else None
                    for k in (types or [None] * n)
                ],
                "text": [as_utf8(t) for t in (texts or [None] * n)],
                "image": [_image_struct(ref) for ref in (images or [None] * n)],
                "source_file": as_utf8(source),
                "problems": [p.to_struct() for p in problems],
                "stage": "import",
            }
        )
        self.problems.extend(problems)

    @property
    def sequences(self) -> int:
        """Sequences set aside (records with a seq_id)."""
        return sum(r["seq_id"] is not None for r in self.records)

    @property
    def lone_rows(self) -> int:
        """Rows set aside on their own, having no seq_id."""
        return sum(r["seq_id"] is None for r in self.records)

    @property
    def rows(self) -> int:
        """Rows (events) set aside, in all records."""
        return sum(len(r["time"]) for r in self.records)

    def counts(
        self, sequences: int, rows: int, unit: str = "rows", target: Path | None = None
    ) -> str:
        """One line of counts, given what was imported: in = imported + quarantined."""
        lone = f" ({self.lone_rows} without a seq_id)" if self.lone_rows else ""
        return (
            f"sequences: {sequences + self.sequences} in = {sequences} imported + "
            f"{self.sequences} quarantined; {unit}: {rows + self.rows} in = {rows} imported + "
            f"{self.rows} quarantined{lone}" + (f"; reasons in {target}" if target else "")
        )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.records, schema=QUARANTINE_SCHEMA)

    def write(self, root: str | Path) -> Path | None:
        """Replace the dataset's quarantine file with these records (an import writes a new
        dataset, so every earlier record is stale); remove it when there are none."""
        target = Path(root) / QUARANTINE_FILE
        target.unlink(missing_ok=True)
        if not self.records:
            return None
        pq.write_table(self.table(), target)
        return target


def _image_struct(ref: bytes | str | None) -> dict | None:
    if ref is None:
        return None
    if isinstance(ref, bytes):
        return {"bytes": ref, "path": None}
    return {"bytes": None, "path": as_utf8(str(ref))}


def import_records(path: str | Path) -> pa.Table | None:
    """The records an import set aside in a quarantine file (None: no file or none there).

    Raises ValueError if ``path`` exists but is not a quarantine file, so that validation
    never overwrites another file given by mistake.
    """
    path = Path(path)
    if not path.exists():
        return None
    names = pq.read_schema(path).names
    if "problems" not in names or "source_file" not in names:
        raise ValueError(f"{path} exists and is not a quarantine file (no 'problems' column)")
    if "stage" not in names:  # written by a validation before imports could quarantine
        return None
    table = pq.read_table(path)
    table = table.filter(pc.equal(table.column("stage"), "import"))
    return table.cast(QUARANTINE_SCHEMA) if table.num_rows else None


@dataclass
class ValidationReport:
    """Counts from ``validate_dataset``; ``reasons`` counts problems by reason;
    ``quarantined_at_import`` the records an import set aside in ``<root>/quarantine.parquet``
    (not part of the dataset, so not in the other counts)."""

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
    quarantined_at_import: int = 0

    @property
    def ok(self) -> bool:
        return self.rejected_sequences == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _count(table: pa.Table) -> int:
    """Events in a sequence table."""
    return int(pc.sum(pc.list_value_length(table.column("time"))).as_py() or 0)


def validate_dataset(
    root: str | Path,
    mode: Mode = "strict",
    quarantine_file: str | Path | None = None,
    image_spec: ImageSpec | None = None,
    check_images: bool = True,
    max_problems_listed: int = 50,
    progress: Callable[[int, int], None] | None = None,
    trusted_root: str | Path | None = None,
) -> ValidationReport:
    """Validate every sequence of a dataset directory.

    strict: raise ValidationError at the first file holding a bad sequence (all of that file's
    problems listed). quarantine: write rejected sequences with their reasons to
    ``quarantine_file`` (default ``<root>/quarantine.parquet``), keeping the records an import
    set aside there and replacing those of an earlier validation, and count them; later stages
    (``mmtpp.prepare``) skip them the same way. ``trusted_root``: see ``Checks``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    root = Path(root)
    info: DatasetInfo = read_info(root)
    checks = Checks(
        info.num_types,
        str(root),
        image_spec or ImageSpec(),
        check_images,
        trusted_root=None if trusted_root is None else str(trusted_root),
    )
    report = ValidationReport(root=str(root), mode=mode)
    imported = import_records(root / QUARANTINE_FILE)
    report.quarantined_at_import = imported.num_rows if imported is not None else 0
    rejected_tables: list[pa.Table] = []
    seen: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    tables = list(iter_tables(root))
    for done, (path, raw) in enumerate(tables, start=1):
        source = str(path.relative_to(root))
        table = conform_table(raw, source)
        good, rejected, problems = validate_table(table, source, checks)
        duplicates: dict[int, list[Problem]] = {}
        for row, seq_id in enumerate(good.column("seq_id").to_pylist()):
            seen[seq_id] += 1
            if seen[seq_id] > 1:
                message = "seq_id appears more than once in the dataset"
                duplicates[row] = [
                    Problem(source, seq_id, -1, "seq_id", "duplicate_seq_id", message)
                ]
        if duplicates:
            rejected = pa.concat_tables([rejected, _rejected(good, source, duplicates)])
            good = good.filter(pa.array([r not in duplicates for r in range(good.num_rows)]))
            problems = problems + [p for r in sorted(duplicates) for p in duplicates[r]]
        if problems and mode == "strict":
            raise ValidationError(problems)
        report.files += 1
        report.sequences += table.num_rows
        report.events += _count(table)
        report.valid_sequences += good.num_rows
        report.valid_events += _count(good)
        report.rejected_sequences += rejected.num_rows
        reasons.update(p.reason for p in problems)
        room = max_problems_listed - len(report.problems)
        report.problems.extend(str(p) for p in problems[:room])
        if rejected.num_rows:
            rejected_tables.append(rejected.cast(QUARANTINE_SCHEMA))
        if progress:
            progress(done, len(tables))
    report.reasons = dict(reasons)
    if mode == "quarantine":
        target = Path(quarantine_file) if quarantine_file else root / QUARANTINE_FILE
        kept = imported if target == root / QUARANTINE_FILE else import_records(target)
        records = ([kept] if kept is not None else []) + rejected_tables
        if records:
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(records), target)
            report.quarantine_file = str(target) if rejected_tables else None
        else:  # nothing set aside now: an earlier validation's records are stale
            target.unlink(missing_ok=True)
    return report


def read_sequences(root: str | Path) -> list[EventSequence]:
    """All sequences of a dataset, with column types checked (raises naming the file and
    column); sequence-level checks are ``validate_dataset``'s."""
    out: list[EventSequence] = []
    for path, table in iter_tables(root):
        out.extend(table_to_sequences(conform_table(table, source=str(path))))
    return out
