"""An events table (``mmtpp.sources.table``) read into columns of cells, every cell parsed
(vectorised) and the bad ones flagged with what is wrong, by row as the user sees it.

CSV/TSV cells are read as bytes and decoded as UTF-8 (undecodable bytes kept as surrogates, so
messages can show them); a CSV line whose number of fields differs from the header's cannot be
split into columns and is kept aside whole (``BrokenLine``). Times, types, texts, images and
sequence ids are then parsed column by column; ``TableRows`` records the bad cells found.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from mmtpp.images import ImageError, resolve_path
from mmtpp.problems import as_utf8

REQUIRED = ("seq_id", "time", "type")
OPTIONAL = ("text", "image")
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "d": 86400.0}
UTF8_HINT = "the table is read as UTF-8: save it with that encoding"


@dataclass(frozen=True)
class BrokenLine:
    """A CSV line whose number of fields differs from the header's: it cannot be split into
    columns, so only its row number, raw text and the seq_id it appears to carry are known."""

    row: int
    text: str
    fields: int
    seq_id: str | None


@dataclass
class TableSource:
    """The table as read: its known columns (from a CSV every cell is str, or None where
    empty), the row number the user sees for each row, the cells that were not UTF-8 (CSV),
    and the broken lines (CSV)."""

    columns: dict[str, pd.Series]
    numbers: np.ndarray
    not_utf8: dict[str, np.ndarray]
    broken: list[BrokenLine]
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


def _read_csv(path: Path, names: list[str], columns: list[str]) -> TableSource:
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
        guessed.append(BrokenLine(number, text, fields, seq_id))
    return TableSource(
        columns={c: pd.Series(v, dtype=object) for c, (v, _) in decoded.items()},
        numbers=numbers,
        not_utf8={c: bad for c, (_, bad) in decoded.items() if c != "time"},
        broken=guessed,
        width=len(names),
    )


def read_source(path: Path) -> TableSource:
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
    return TableSource(
        columns={c: frame[c] for c in columns},
        numbers=np.arange(n, dtype=np.int64),
        not_utf8={},
        broken=[],
        width=len(names),
    )


@dataclass(frozen=True)
class BadCells:
    """Bad cells of one column, all with one kind of problem; ``hint`` per row or shared."""

    rows: np.ndarray  # indices into the table's rows
    column: str
    reason: str
    problem: str
    hint: str | np.ndarray


class TableRows:
    """The rows of the table as the user sees them, and the bad cells found in them."""

    def __init__(self, path: Path, source: TableSource):
        self.path, self.columns, self.numbers = path, source.columns, source.numbers
        self.found: list[BadCells] = []
        self.bad = np.zeros(len(source.numbers), dtype=bool)

    def flag(
        self, mask: np.ndarray, column: str, reason: str, problem: str, hint: str | np.ndarray = ""
    ) -> None:
        """Record the rows where ``mask`` holds as bad in ``column``."""
        rows = np.flatnonzero(mask)
        if rows.size:
            self.found.append(BadCells(rows, column, reason, problem, hint))
            self.bad[rows] = True

    def describe(self, found: BadCells, index: int) -> tuple[str, str | None]:
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

    def error(self, found: BadCells, index: int) -> str:
        what, _ = self.describe(found, index)
        number = int(self.numbers[index])
        return f"{self.path} row {number}{self.seq_label(index)}: column {found.column!r} {what}"

    def problems_at(self) -> dict[int, list[BadCells]]:
        """Row index → the bad cells found in it, in the order the checks ran."""
        out: dict[int, list[BadCells]] = {}
        for found in self.found:
            for index in found.rows.tolist():
                out.setdefault(index, []).append(found)
        return out


def parse_times(
    col: pd.Series, time_format: str | None, time_unit: str, rows: TableRows
) -> np.ndarray:
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


def parse_types(
    col: pd.Series, type_names: list[str] | None, usable: np.ndarray, rows: TableRows
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


def as_strings(col: pd.Series) -> np.ndarray:
    """Object array of str / bytes / None (missing)."""
    values = col.to_numpy(dtype=object, na_value=None)
    return np.array(
        [v if v is None or isinstance(v, str | bytes) else str(v) for v in values], dtype=object
    )


def image_paths(
    images: np.ndarray, base: Path, trusted_root: Path | None, rows: TableRows
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


def sequence_codes(col: pd.Series, rows: TableRows) -> tuple[np.ndarray, list[str]]:
    """Sequence code per row (-1: no seq_id, flagged) and the ids, in order of appearance."""
    values = col.to_numpy(dtype=object, na_value=None)
    missing = np.array([v is None or v == "" for v in values], dtype=bool)
    rows.flag(missing, "seq_id", "missing", "is empty")
    keys = np.array(
        [None if m else str(v) for v, m in zip(values, missing, strict=True)], dtype=object
    )
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    return codes.astype(np.int64), [str(k) for k in uniques]
