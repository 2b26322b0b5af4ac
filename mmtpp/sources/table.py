"""A plain events table, one row per event: ``seq_id, time, type[, text][, image]``.

Read from CSV/TSV (UTF-8) or Parquet; other columns are ignored.

- ``type``: integer ids, or names (any value that is not an integer), mapped to ids in the
  sorted order of the distinct names (or the order of ``type_names`` when given). Ids must be
  known: ``0..len(type_names)-1`` when names are given, else ``>= 0``.
- ``time``: a number in the dataset's ``time_unit``; a Parquet timestamp column, or strings
  parsed with ``time_format`` (``"datetime"`` for ISO 8601 and other formats pandas infers, or
  a strptime pattern such as ``"%d/%m/%Y %H:%M"``), becomes time since the Unix epoch in
  ``time_unit`` (seconds by default), with naive datetimes read as UTC.
- ``text``: a string; empty means none.
- ``image``: a path (the file is embedded as bytes), or, in Parquet, the encoded bytes
  themselves; empty means none. A path is relative to the table's folder and must stay inside
  it, unless a trusted ``image_root`` is given: then absolute paths and symlinks leading under
  that root are accepted too (``mmtpp.images.resolve_path``; ``..`` is always refused).

Sequences appear in the order their ids first appear; rows keep their file order within a
sequence (unsorted times are reported by ``mmtpp.validation``, not fixed here). Rows are named
as a spreadsheet shows them for CSV (the header is row 1; blank lines are not counted) and by
0-based index for Parquet.

A row that cannot be read — an empty or unparseable time, an empty, unknown or non-integer
type, an empty seq_id, a refused or missing image, a cell that is not UTF-8, or a CSV line
whose number of fields differs from the header's — raises in strict mode (the default),
naming the first such row. With a ``Quarantine`` it is set aside instead, together with every
other row of its sequence: dropping one event would silently change the gaps of every later
event in that sequence. A row without a seq_id belongs to no sequence and is set aside alone;
a line with the wrong number of fields is attributed to the seq_id in its seq_id position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mmtpp.events import DatasetInfo, EventSequence, ImageRef
from mmtpp.images import as_trusted_root
from mmtpp.problems import Problem, ReadError
from mmtpp.quarantine import Quarantine
from mmtpp.sources.table_cells import (
    UTF8_HINT,
    BadCells,
    BrokenLine,
    TableRows,
    TableSource,
    as_strings,
    image_paths,
    parse_times,
    parse_types,
    read_source,
    sequence_codes,
)


def _broken_problem(
    path: Path, broken: BrokenLine, width: int, seq_id: str | None, event: int
) -> Problem:
    message = (
        f"has {broken.fields} fields where the header has {width} (quote values that hold "
        "the separator or a line break)"
    )
    return Problem(
        str(path),
        seq_id,
        event,
        "row",
        "wrong_field_count",
        message,
        row=broken.row,
        value=broken.text,
    )


def _raise_first(rows: TableRows, broken: list[BrokenLine], width: int) -> None:
    """Strict mode: raise for the first bad row in file order (its first bad cell)."""
    firsts = [(int(rows.numbers[f.rows[0]]), k) for k, f in enumerate(rows.found)]
    first_broken = min(broken, key=lambda b: b.row, default=None)
    if first_broken is not None and (not firsts or first_broken.row < min(firsts)[0]):
        problem = _broken_problem(rows.path, first_broken, width, first_broken.seq_id, -1)
        raise ReadError(f"{rows.path} row {first_broken.row}: {problem.message}", problem)
    if firsts:
        found = rows.found[min(firsts)[1]]
        index = int(found.rows[0])
        what, value = rows.describe(found, index)
        seq_id = rows.columns["seq_id"].iloc[index]
        seq_id = None if pd.isna(seq_id) else str(seq_id)
        problem = Problem(
            str(rows.path),
            seq_id,
            -1,
            found.column,
            found.reason,
            what,
            row=int(rows.numbers[index]),
            value=value,
        )
        raise ReadError(rows.error(found, index), problem)


@dataclass
class _Events:
    """The table's rows as read and checked, grouped into sequences.

    Per-row values are NaN (time), -1 (type) or None where the cell is bad. Sequence ``s``
    holds the rows ``order[bounds[s]:bounds[s + 1]]`` (file order) and the broken lines
    ``broken_of[s]``; ``broken_of[None]`` are broken lines without a seq_id.
    """

    path: Path
    source: TableSource
    rows: TableRows
    times: np.ndarray
    types: np.ndarray
    texts: np.ndarray | None
    images: np.ndarray | None
    files: dict[str, Path]  # image path → the file it resolved to
    codes: np.ndarray  # sequence per row; -1: no seq_id
    seq_keys: list[str]
    order: np.ndarray
    bounds: np.ndarray
    broken_of: dict[int | None, list[BrokenLine]]

    def members(self, s: int) -> np.ndarray:
        return self.order[self.bounds[s] : self.bounds[s + 1]]

    def bad_sequences(self) -> np.ndarray:
        """Whether each sequence holds a bad row or a broken line."""
        bad = np.zeros(len(self.seq_keys), dtype=bool)
        bad[np.unique(self.codes[self.rows.bad & (self.codes >= 0)])] = True
        bad[[s for s in self.broken_of if s is not None]] = True
        return bad

    def set_aside(
        self,
        quarantine: Quarantine,
        seq_id: str | None,
        members: np.ndarray,
        lines: list[BrokenLine],
        found_at: dict[int, list[BadCells]],
    ) -> None:
        """One sequence (or one row) to the quarantine: its rows in file order, with the
        problems ``found_at`` each."""
        entries = sorted(
            [(int(self.source.numbers[i]), int(i), None) for i in members]
            + [(line.row, -1, line) for line in lines],
            key=lambda e: e[0],
        )
        values: dict[str, list] = {"times": [], "types": [], "texts": [], "images": []}
        problems: list[Problem] = []
        for event, (number, i, line) in enumerate(entries):
            event = event if seq_id is not None else -1  # a lone row is in no sequence
            if line is not None:
                problems.append(_broken_problem(self.path, line, self.source.width, seq_id, event))
                for column in values.values():
                    column.append(None)
                continue
            values["times"].append(None if np.isnan(self.times[i]) else float(self.times[i]))
            values["types"].append(None if self.types[i] < 0 else int(self.types[i]))
            values["texts"].append(self.texts[i] if self.texts is not None else None)
            values["images"].append(self.images[i] if self.images is not None else None)
            for found in found_at.get(i, []):
                what, value = self.rows.describe(found, i)
                problem = Problem(str(self.path), seq_id, event, found.column, found.reason, what)
                problems.append(replace(problem, row=number, value=value))
        quarantine.add(str(self.path), seq_id, problems, **values)

    def read_images(self, members: np.ndarray) -> list[ImageRef | None]:
        """A sequence's images as bytes; a file that cannot be read is flagged, then raises
        OSError."""
        assert self.images is not None
        out: list[ImageRef | None] = []
        for j in members:
            ref = self.images[j]
            if isinstance(ref, str):
                try:
                    ref = self.files[ref].read_bytes()
                except OSError as err:
                    self.rows.flag(
                        np.arange(len(self.codes)) == j,
                        "image",
                        "unreadable",
                        "cannot be read",
                        str(err),
                    )
                    raise
            out.append(ref)
        return out

    def sequences(self, quarantine: Quarantine | None) -> Iterator[EventSequence]:
        """The sequences that could be read, images embedded."""
        for s in np.flatnonzero(~self.bad_sequences()):
            members = self.members(s)
            images: list[ImageRef | None] = []
            if self.images is not None:
                try:
                    images = self.read_images(members)
                except OSError:
                    if quarantine is None:
                        _raise_first(self.rows, [], self.source.width)
                    found_at = {i: v for i, v in self.rows.problems_at().items() if i in members}
                    self.set_aside(quarantine, self.seq_keys[s], members, [], found_at)
                    continue
            texts = self.texts[members].tolist() if self.texts is not None else []
            yield EventSequence(
                self.seq_keys[s], self.times[members], self.types[members], texts, images
            )


def _check(
    path: Path,
    source: TableSource,
    type_names: list[str] | None,
    time_format: str | None,
    time_unit: str,
    trusted: Path | None,
) -> tuple[_Events, list[str], str]:
    """Read every cell (vectorised), flag the bad ones and group rows into sequences.
    Returns the events, the type names and whether types were ids or names."""
    rows = TableRows(path, source)
    columns, not_utf8 = source.columns, source.not_utf8
    # The checks, in the order a row's problems are listed.
    codes, seq_keys = sequence_codes(columns["seq_id"], rows)
    for column in ("seq_id", "type", "text"):
        if column in not_utf8:
            rows.flag(not_utf8[column], column, "undecodable", "is not valid UTF-8", UTF8_HINT)
    times = parse_times(columns["time"], time_format, time_unit, rows)
    readable = ~not_utf8.get("type", np.zeros(len(codes), dtype=bool))
    types, names, type_mode = parse_types(columns["type"], type_names, readable, rows)
    texts = as_strings(columns["text"]) if "text" in columns else None
    images = as_strings(columns["image"]) if "image" in columns else None
    files = image_paths(images, path.parent, trusted, rows) if images is not None else {}
    # Broken lines join the sequence whose id they carry (a new one if no row has it).
    position = {key: s for s, key in enumerate(seq_keys)}
    broken_of: dict[int | None, list[BrokenLine]] = {}
    for line in source.broken:
        s = None if line.seq_id is None else position.setdefault(line.seq_id, len(position))
        if s == len(seq_keys):
            seq_keys.append(line.seq_id)
        broken_of.setdefault(s, []).append(line)
    valid = np.flatnonzero(codes >= 0)
    order = valid[np.argsort(codes[valid], kind="stable")]
    counts = np.bincount(codes[valid], minlength=len(seq_keys))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    events = _Events(
        path,
        source,
        rows,
        times,
        types,
        texts,
        images,
        files,
        codes,
        seq_keys,
        order,
        bounds,
        broken_of,
    )
    return events, names, type_mode


def load_table(
    path: str | Path,
    type_names: list[str] | None = None,
    time_format: str | None = None,
    time_unit: str = "s",
    image_root: str | Path | None = None,
    quarantine: Quarantine | None = None,
    time_resolution: float | None = None,
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of an events table (see the module docstring for the columns).

    The table is read and checked at once (vectorised; image paths resolved); sequences, with
    their images read from disk, are built lazily. ``time_unit`` is the unit of numeric
    times, and the unit datetimes are converted to (one of ``SECONDS_PER_UNIT``).
    ``image_root``: a trusted folder image paths may also lead into. ``quarantine``: None
    (strict) raises ``ReadError`` at the first unreadable row; a ``Quarantine`` receives the
    unreadable sequences and rows (at once; while iterating for an image file that cannot be
    read) and the rest is imported. ``time_resolution``: the step the times are recorded to,
    in ``time_unit`` (e.g. 60 for seconds recorded to whole minutes; ``DatasetInfo``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    trusted = as_trusted_root(image_root)
    source = read_source(path)
    if len(source.numbers) == 0 and not source.broken:
        raise ValueError(f"{path}: the table has no rows")
    events, names, type_mode = _check(path, source, type_names, time_format, time_unit, trusted)
    if quarantine is None:
        _raise_first(events.rows, source.broken, source.width)
    else:
        found_at = events.rows.problems_at()
        for s in np.flatnonzero(events.bad_sequences()):
            lines = events.broken_of.get(int(s), [])
            events.set_aside(quarantine, events.seq_keys[s], events.members(s), lines, found_at)
        for i in np.flatnonzero(events.codes < 0):
            events.set_aside(quarantine, None, np.array([i]), [], found_at)
        for line in events.broken_of.get(None, []):
            events.set_aside(quarantine, None, np.array([], dtype=np.int64), [line], found_at)
    described = {
        "format": "table",
        "path": str(path),
        "rows": len(source.numbers) + len(source.broken),  # read: imported + set aside
        "sequences": len(events.seq_keys),
        "type_column": type_mode,
    }
    if trusted is not None:
        described["image_root"] = str(trusted.resolve())
    info = DatasetInfo(
        name=path.stem,
        type_names=names,
        time_unit=time_unit,
        description=f"imported from the events table {path}",
        source=described,
        time_resolution=time_resolution,
    )
    return info, events.sequences(quarantine)
