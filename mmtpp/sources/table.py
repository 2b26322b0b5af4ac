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

import csv
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from mmtpp.events import DatasetInfo, EventSequence, ImageRef
from mmtpp.images import ImageError, as_trusted_root, resolve_path
from mmtpp.validation import Problem, Quarantine, ReadError, as_utf8

REQUIRED = ("seq_id", "time", "type")
OPTIONAL = ("text", "image")
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "d": 86400.0}
UTF8_HINT = "the table is read as UTF-8: save it with that encoding"


@dataclass(frozen=True)
class _Broken:
    """A CSV line whose number of fields differs from the header's: it cannot be split into
    columns, so only its row number, raw text and the seq_id it appears to carry are known."""

    row: int
    text: str
    fields: int
    seq_id: str | None


@dataclass
class _Source:
    """The table as read: its known columns (from a CSV every cell is str, or None where
    empty), the row number the user sees for each row, the cells that were not UTF-8 (CSV),
    and the broken lines (CSV)."""

    columns: dict[str, pd.Series]
    numbers: np.ndarray
    not_utf8: dict[str, np.ndarray]
    broken: list[_Broken]
    width: int  # fields per line, from the header


def _decoded(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Binary CSV cells → (object array of str, None where empty; where bytes were not
    UTF-8). Undecodable bytes are kept as surrogates (``surrogateescape``) so messages can
    show them."""
    try:
        values = column.cast(pa.string()).to_numpy(zero_copy_only=False)
        bad = np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:  # some cell is not UTF-8: find which, one by one
        raw = column.to_pylist()
        values = np.array([v.decode("utf-8", "surrogateescape") for v in raw], dtype=object)
        bad = np.array([not _is_utf8(v) for v in raw], dtype=bool)
    values = values.astype(object)
    values[values == ""] = None
    return values, bad


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_csv(path: Path, names: list[str], columns: list[str]) -> _Source:
    sep = "\t" if path.suffix == ".tsv" else ","
    broken: list[tuple[int, str, int]] = []

    def set_aside(row: pcsv.InvalidRow) -> str:
        if row.number is None:  # known when reading on one thread, as below
            return "error"
        broken.append((row.number, row.text, row.actual_columns))
        return "skip"

    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(use_threads=False),
            parse_options=pcsv.ParseOptions(
                delimiter=sep, newlines_in_values=True, invalid_row_handler=set_aside
            ),
            convert_options=pcsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.binary() for c in columns},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:  # e.g. a quote never closed: no row after it is readable
        raise ValueError(f"{path}: cannot be read as a {sep!r}-separated table: {err}") from err
    decoded = {c: _decoded(table.column(c)) for c in columns}
    # Rows keep the numbers they have in the file: the broken lines among them are skipped.
    bad_numbers = np.array([b[0] for b in broken], dtype=np.int64)
    every = np.arange(2, table.num_rows + len(broken) + 2, dtype=np.int64)
    numbers = np.setdiff1d(every, bad_numbers, assume_unique=True)
    at = names.index("seq_id")
    guessed = []
    for number, text, fields in broken:
        cells = next(csv.reader([text], delimiter=sep), [])
        seq_id = cells[at] if at < len(cells) and cells[at] != "" else None
        guessed.append(_Broken(number, text, fields, seq_id))
    return _Source(
        columns={c: pd.Series(v, dtype=object) for c, (v, _) in decoded.items()},
        numbers=numbers,
        not_utf8={c: bad for c, (_, bad) in decoded.items() if c != "time"},
        broken=guessed,
        width=len(names),
    )


def _read(path: Path) -> _Source:
    """The table's known columns; fails on a missing required column before reading rows."""
    parquet = path.suffix in (".parquet", ".pq")
    if parquet:
        names = pq.read_schema(path).names
    elif path.suffix in (".csv", ".tsv"):
        sep = "\t" if path.suffix == ".tsv" else ","
        names = list(pd.read_csv(path, sep=sep, nrows=0, encoding_errors="replace").columns)
    else:
        raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")
    for column in REQUIRED:
        if column not in names:
            raise ValueError(f"{path}: required column {column!r} is missing (columns: {names})")
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in names]
    if not parquet:
        return _read_csv(path, names, columns)
    frame = pd.read_parquet(path, columns=columns)
    n = len(frame)
    return _Source(
        columns={c: frame[c] for c in columns},
        numbers=np.arange(n, dtype=np.int64),
        not_utf8={},
        broken=[],
        width=len(names),
    )


@dataclass(frozen=True)
class _Found:
    """Bad cells of one column, all with one kind of problem; ``hint`` per row or shared."""

    rows: np.ndarray  # indices into the table's rows
    column: str
    reason: str
    problem: str
    hint: str | np.ndarray


class _Rows:
    """The rows of the table as the user sees them, and the bad cells found in them."""

    def __init__(self, path: Path, source: _Source):
        self.path, self.columns, self.numbers = path, source.columns, source.numbers
        self.found: list[_Found] = []
        self.bad = np.zeros(len(source.numbers), dtype=bool)

    def flag(
        self, mask: np.ndarray, column: str, reason: str, problem: str, hint: str | np.ndarray = ""
    ) -> None:
        """Record the rows where ``mask`` holds as bad in ``column``."""
        rows = np.flatnonzero(mask)
        if rows.size:
            self.found.append(_Found(rows, column, reason, problem, hint))
            self.bad[rows] = True

    def describe(self, found: _Found, index: int) -> tuple[str, str | None]:
        """(what is wrong with the cell, its raw value as text or None)."""
        value = self.columns[found.column].iloc[index]
        value = (
            None if value is None or (not isinstance(value, bytes) and pd.isna(value)) else value
        )
        shown = "" if value is None else f": {value!r}"
        if isinstance(value, str) and as_utf8(value) != value:  # bytes that were not UTF-8
            shown = f": '{as_utf8(value)}'"
        hint = found.hint if isinstance(found.hint, str) else str(found.hint[index])
        text = None if value is None or isinstance(value, bytes) else str(value)
        return f"{found.problem}{shown}" + (f" ({hint})" if hint else ""), text

    def seq_label(self, index: int) -> str:
        seq_id = self.columns["seq_id"].iloc[index]
        return "" if pd.isna(seq_id) else f" (seq_id {str(seq_id)!r})"

    def error(self, found: _Found, index: int) -> str:
        what, _ = self.describe(found, index)
        number = int(self.numbers[index])
        return f"{self.path} row {number}{self.seq_label(index)}: column {found.column!r} {what}"

    def problems_at(self) -> dict[int, list[_Found]]:
        """Row index → the bad cells found in it, in the order the checks ran."""
        out: dict[int, list[_Found]] = {}
        for found in self.found:
            for index in found.rows.tolist():
                out.setdefault(index, []).append(found)
        return out


def _times(col: pd.Series, time_format: str | None, time_unit: str, rows: _Rows) -> np.ndarray:
    """Times in ``time_unit``, NaN where the cell is bad (and flagged)."""
    missing = col.isna().to_numpy()
    rows.flag(missing, "time", "missing", "is empty")
    if pd.api.types.is_datetime64_any_dtype(col):
        stamps = col if col.dt.tz is not None else col.dt.tz_localize("UTC")
    elif time_format is None:
        numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        hint = "for dates pass time_format='datetime' or a strptime pattern"
        rows.flag(np.isnan(numbers) & ~missing, "time", "not_a_number", "is not a number", hint)
        return numbers
    else:
        pattern = "mixed" if time_format == "datetime" else time_format
        text = col.where(~missing, None).astype(object)
        stamps = pd.to_datetime(text, format=pattern, utc=True, errors="coerce")
        unparsed = stamps.isna().to_numpy() & ~missing
        hint = f"time_format {time_format!r}"
        rows.flag(unparsed, "time", "not_a_datetime", "is not a datetime", hint)
    if time_unit not in SECONDS_PER_UNIT:
        raise ValueError(f"{rows.path}: datetimes need a time_unit in {list(SECONDS_PER_UNIT)}")
    known = stamps.notna().to_numpy()
    utc = stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    nanos = utc[known].astype("int64").to_numpy()
    out = np.full(len(col), np.nan)
    out[known] = nanos / (1e9 * SECONDS_PER_UNIT[time_unit])
    return out


def _types(
    col: pd.Series, type_names: list[str] | None, usable: np.ndarray, rows: _Rows
) -> tuple[np.ndarray, list[str], str]:
    """Type ids (-1 where the cell is bad), type names, and whether the column held ids or
    names. ``usable``: the cells worth reading (decodable)."""
    missing = col.isna().to_numpy()
    rows.flag(missing, "type", "missing", "is empty")
    usable = usable & ~missing
    codes = np.full(len(col), -1, dtype=np.int64)
    codes[usable], uniques = pd.factorize(col[usable], sort=False)  # checks run on the few
    if uniques.size == 0 and not type_names:
        raise ValueError(f"{rows.path}: column 'type' has no readable value")
    numbers = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce")
    numbers = numbers.to_numpy(dtype=np.float64)
    at = np.maximum(codes, 0)  # a valid index for every row; masked by ``usable``
    if uniques.size and not np.isnan(numbers).any():
        integral = (numbers == np.round(numbers)) & (np.abs(numbers) < 2**62)
        unique_ids = np.where(integral, numbers, -1).astype(np.int64)
        largest = int(unique_ids.max())
        names = list(type_names or [f"type_{k}" for k in range(max(largest + 1, 1))])
        known = integral & (unique_ids >= 0) & (unique_ids < len(names))
        rows.flag(usable & ~integral[at], "type", "not_an_integer", "is not an integer")
        hint = f"type ids are 0..{len(names) - 1}"
        unknown = usable & integral[at] & ~known[at]
        rows.flag(unknown, "type", "unknown_type", "is not a known type", hint)
        mode = "ids"
    else:
        labels = [str(u) for u in uniques]
        names = list(type_names) if type_names else sorted(set(labels))
        lookup = {n: i for i, n in enumerate(names)}
        unique_ids = np.array([lookup.get(label, -1) for label in labels], dtype=np.int64)
        known = unique_ids >= 0
        hint = f"type_names {names}"
        unknown = usable & ~known[at] if uniques.size else np.zeros(len(col), dtype=bool)
        rows.flag(unknown, "type", "unknown_type", "is not a known type", hint)
        mode = "names"
    if uniques.size == 0:
        return np.full(len(col), -1, dtype=np.int64), [str(n) for n in names], mode
    ids = np.where(usable & known[at], unique_ids[at], -1)
    return ids, [str(n) for n in names], mode


def _strings(col: pd.Series) -> np.ndarray:
    """Object array of str / bytes / None (missing)."""
    values = col.to_numpy(dtype=object, na_value=None)
    return np.array(
        [v if v is None or isinstance(v, str | bytes) else str(v) for v in values], dtype=object
    )


def _image_paths(
    images: np.ndarray, base: Path, trusted_root: Path | None, rows: _Rows
) -> dict[str, Path]:
    """Resolve every distinct image path once (``mmtpp.images.resolve_path``); flag the rows
    whose path is refused or names no file. Returns path → the file to read."""
    is_path = np.array([isinstance(v, str) for v in images], dtype=bool)
    files: dict[str, Path] = {}
    refused: dict[str, tuple[str, str]] = {}
    missing: set[str] = set()
    for ref in pd.unique(images[is_path]):
        try:
            path = resolve_path(ref, base, trusted_root)
        except ImageError as err:
            refused[ref] = (err.reason, str(err))
            continue
        if path.is_file():
            files[ref] = path
        else:
            missing.add(ref)
    cells = pd.Series(np.where(is_path, images, None), dtype=object)
    if refused:
        reasons = cells.map({ref: r for ref, (r, _) in refused.items()}).to_numpy(dtype=object)
        messages = cells.map({ref: m for ref, (_, m) in refused.items()}).to_numpy(dtype=object)
        for reason in sorted({r for r, _ in refused.values()}):
            rows.flag(reasons == reason, "image", reason, "is refused", messages)
    if missing:
        where = f"looked under {base.resolve()}" + (f" and {trusted_root}" if trusted_root else "")
        rows.flag(cells.isin(missing).to_numpy(), "image", "missing", "is not a file", where)
    return files


def _seq_keys(col: pd.Series, rows: _Rows) -> tuple[np.ndarray, list[str]]:
    """Sequence code per row (-1: no seq_id, flagged) and the ids, in order of appearance."""
    values = col.to_numpy(dtype=object, na_value=None)
    missing = np.array([v is None or v == "" for v in values], dtype=bool)
    rows.flag(missing, "seq_id", "missing", "is empty")
    keys = np.array(
        [None if m else str(v) for v, m in zip(values, missing, strict=True)], dtype=object
    )
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    return codes.astype(np.int64), [str(k) for k in uniques]


def _broken_problem(
    path: Path, broken: _Broken, width: int, seq_id: str | None, event: int
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


def _raise_first(rows: _Rows, broken: list[_Broken], width: int) -> None:
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
    source: _Source
    rows: _Rows
    times: np.ndarray
    types: np.ndarray
    texts: np.ndarray | None
    images: np.ndarray | None
    files: dict[str, Path]  # image path → the file it resolved to
    codes: np.ndarray  # sequence per row; -1: no seq_id
    seq_keys: list[str]
    order: np.ndarray
    bounds: np.ndarray
    broken_of: dict[int | None, list[_Broken]]

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
        lines: list[_Broken],
        found_at: dict[int, list[_Found]],
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
    source: _Source,
    type_names: list[str] | None,
    time_format: str | None,
    time_unit: str,
    trusted: Path | None,
) -> tuple[_Events, list[str], str]:
    """Read every cell (vectorised), flag the bad ones and group rows into sequences.
    Returns the events, the type names and whether types were ids or names."""
    rows = _Rows(path, source)
    columns, not_utf8 = source.columns, source.not_utf8
    # The checks, in the order a row's problems are listed.
    codes, seq_keys = _seq_keys(columns["seq_id"], rows)
    for column in ("seq_id", "type", "text"):
        if column in not_utf8:
            rows.flag(not_utf8[column], column, "undecodable", "is not valid UTF-8", UTF8_HINT)
    times = _times(columns["time"], time_format, time_unit, rows)
    readable = ~not_utf8.get("type", np.zeros(len(codes), dtype=bool))
    types, names, type_mode = _types(columns["type"], type_names, readable, rows)
    texts = _strings(columns["text"]) if "text" in columns else None
    images = _strings(columns["image"]) if "image" in columns else None
    files = _image_paths(images, path.parent, trusted, rows) if images is not None else {}
    # Broken lines join the sequence whose id they carry (a new one if no row has it).
    position = {key: s for s, key in enumerate(seq_keys)}
    broken_of: dict[int | None, list[_Broken]] = {}
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
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of an events table (see the module docstring for the columns).

    The table is read and checked at once (vectorised; image paths resolved); sequences, with
    their images read from disk, are built lazily. ``time_unit`` is the unit of numeric
    times, and the unit datetimes are converted to (one of ``SECONDS_PER_UNIT``).
    ``image_root``: a trusted folder image paths may also lead into. ``quarantine``: None
    (strict) raises ``ReadError`` at the first unreadable row; a ``Quarantine`` receives the
    unreadable sequences and rows (at once; while iterating for an image file that cannot be
    read) and the rest is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    trusted = as_trusted_root(image_root)
    source = _read(path)
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
    )
    return info, events.sequences(quarantine)
