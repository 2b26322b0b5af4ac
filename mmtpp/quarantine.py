"""Setting bad event data aside instead of raising, and the file that keeps it
(``<root>/quarantine.parquet``).

The quarantine file (``<root>/quarantine.parquet``, ``QUARANTINE_SCHEMA``) is shared by the two
places that set data aside: an import in quarantine mode (``Quarantine``: rows or sequences of
the source that could not be read, ``stage="import"``) and ``validate_dataset`` (sequences of
the dataset that fail a check, ``stage="validate"``). Each record is one sequence, or one row
of a table without a ``seq_id``, with its values as far as they could be read (null where not)
and its problems: event index, source row, field, reason, message and the raw value. An import
replaces the whole file (the dataset is new); validation replaces only its own records.

``validate_dataset`` runs ``mmtpp.validation``'s checks over a dataset directory: in ``strict``
mode the first bad sequence raises; in ``quarantine`` mode bad sequences go to the quarantine
file with their reasons and are counted. Nothing is dropped silently.
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

from mmtpp.events import DatasetInfo, iter_tables, read_info
from mmtpp.images import ImageSpec
from mmtpp.problems import (
    QUARANTINE_SCHEMA,
    Problem,
    ValidationError,
    as_utf8,
    rejected_records,
)
from mmtpp.validation import Checks, conform_table, validate_table

Mode = Literal["strict", "quarantine"]
MODES: tuple[Mode, ...] = ("strict", "quarantine")
QUARANTINE_FILE = "quarantine.parquet"


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

    def count(
        self,
        table: pa.Table,
        good: pa.Table,
        rejected: pa.Table,
        problems: list[Problem],
        max_listed: int,
    ) -> None:
        """Add one file: its sequences and events, the valid and rejected ones, and its
        problems (listed up to ``max_listed`` in all)."""
        self.files += 1
        self.sequences += table.num_rows
        self.events += _count(table)
        self.valid_sequences += good.num_rows
        self.valid_events += _count(good)
        self.rejected_sequences += rejected.num_rows
        room = max_listed - len(self.problems)
        self.problems.extend(str(p) for p in problems[:room])

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
        good, rejected, problems = _drop_duplicates(good, rejected, problems, source, seen)
        if problems and mode == "strict":
            raise ValidationError(problems)
        report.count(table, good, rejected, problems, max_problems_listed)
        reasons.update(p.reason for p in problems)
        if rejected.num_rows:
            rejected_tables.append(rejected.cast(QUARANTINE_SCHEMA))
        if progress:
            progress(done, len(tables))
    report.reasons = dict(reasons)
    if mode == "quarantine":
        target = Path(quarantine_file) if quarantine_file else root / QUARANTINE_FILE
        kept = imported if target == root / QUARANTINE_FILE else import_records(target)
        _write_records(target, kept, rejected_tables, report)
    return report


def _drop_duplicates(
    good: pa.Table,
    rejected: pa.Table,
    problems: list[Problem],
    source: str,
    seen: Counter[str],
) -> tuple[pa.Table, pa.Table, list[Problem]]:
    """Move the good rows of file ``source`` whose seq_id was seen before (``seen`` counts them
    across the dataset's files) to the rejected ones, each with a ``duplicate_seq_id``
    problem."""
    duplicates: dict[int, list[Problem]] = {}
    for row, seq_id in enumerate(good.column("seq_id").to_pylist()):
        seen[seq_id] += 1
        if seen[seq_id] > 1:
            message = "seq_id appears more than once in the dataset"
            duplicates[row] = [Problem(source, seq_id, -1, "seq_id", "duplicate_seq_id", message)]
    if not duplicates:
        return good, rejected, problems
    rejected = pa.concat_tables([rejected, rejected_records(good, source, duplicates)])
    good = good.filter(pa.array([r not in duplicates for r in range(good.num_rows)]))
    return good, rejected, problems + [p for r in sorted(duplicates) for p in duplicates[r]]


def _write_records(
    target: Path, kept: pa.Table | None, rejected: list[pa.Table], report: ValidationReport
) -> None:
    """Write the import's ``kept`` records and this validation's ``rejected`` ones to
    ``target``, or remove it when there are none (an earlier validation's records are
    stale)."""
    records = ([kept] if kept is not None else []) + rejected
    if records:
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(records), target)
        report.quarantine_file = str(target) if rejected else None
    else:
        target.unlink(missing_ok=True)
