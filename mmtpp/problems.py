"""A problem found in event data, said once: where it is (file, row, sequence, event, field),
what is wrong and the raw value; the errors that carry problems (``ValidationError`` for bad
data, ``ReadError`` for what an importer cannot read); and the record of a sequence set aside
with its problems (``QUARANTINE_SCHEMA``, written by ``mmtpp.quarantine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from mmtpp.events import SEQUENCE_SCHEMA

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


def rejected_records(table: pa.Table, source: str, problems: dict[int, list[Problem]]) -> pa.Table:
    """The rows of ``table`` that have problems, as quarantine records (QUARANTINE_SCHEMA)."""
    rows = sorted(problems)
    structs = [[p.to_struct() for p in problems[r]] for r in rows]
    return (
        table.take(pa.array(rows, pa.int64()))
        .append_column("source_file", pa.array([source] * len(rows), pa.string()))
        .append_column("problems", pa.array(structs, pa.list_(PROBLEM_STRUCT)))
        .append_column("stage", pa.array(["validate"] * len(rows), pa.string()))
    )
