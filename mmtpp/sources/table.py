"""A plain events table, one row per event: ``seq_id, time, type[, text][, image]``.

Read from CSV/TSV or Parquet; other columns are ignored.

- ``type``: integer ids, or names (any value that is not an integer), mapped to ids in the
  sorted order of the distinct names (or the order of ``type_names`` when given).
- ``time``: a number in the dataset's ``time_unit``; a Parquet timestamp column, or strings
  parsed with ``time_format`` (``"datetime"`` for ISO 8601 and other formats pandas infers, or
  a strptime pattern such as ``"%d/%m/%Y %H:%M"``), becomes time since the Unix epoch in
  ``time_unit`` (seconds by default), with naive datetimes read as UTC.
- ``text``: a string; empty means none.
- ``image``: a path relative to the table's folder (the file is embedded as bytes), or, in
  Parquet, the encoded bytes themselves; empty means none.

Sequences appear in the order their ids first appear; rows keep their file order within a
sequence (unsorted times are reported by ``mmtpp.validation``, not fixed here). Errors name the
row as a spreadsheet shows it for CSV (the header is row 1) and by 0-based index for Parquet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mmtpp.events import DatasetInfo, EventSequence, ImageRef

REQUIRED = ("seq_id", "time", "type")
OPTIONAL = ("text", "image")
SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _read(path: Path) -> pd.DataFrame:
    """The table's known columns; fails on a missing required column before reading rows."""
    parquet = path.suffix in (".parquet", ".pq")
    sep = "\t" if path.suffix == ".tsv" else ","
    if parquet:
        names = pq.read_schema(path).names
    elif path.suffix in (".csv", ".tsv"):
        names = list(pd.read_csv(path, sep=sep, nrows=0).columns)
    else:
        raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")
    for column in REQUIRED:
        if column not in names:
            raise ValueError(f"{path}: required column {column!r} is missing (columns: {names})")
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in names]
    if parquet:
        return pd.read_parquet(path, columns=columns)
    # Only empty cells are missing: a text "NA" or "null" stays text.
    text_columns = {c: str for c in ("seq_id", "type", "text", "image") if c in columns}
    return pd.read_csv(
        path, sep=sep, usecols=columns, dtype=text_columns, keep_default_na=False,
        na_values=[""], low_memory=False,
    )  # fmt: skip


class _Rows:
    """Names a row of the table in error messages."""

    def __init__(self, path: Path, frame: pd.DataFrame):
        self.path, self.frame = path, frame
        self.offset = 0 if path.suffix in (".parquet", ".pq") else 2

    def error(self, index: int, column: str, problem: str, hint: str = "") -> ValueError:
        seq_id = self.frame["seq_id"].iloc[index]
        label = "" if pd.isna(seq_id) else f" (seq_id {str(seq_id)!r})"
        value = self.frame[column].iloc[index]
        shown = "" if pd.isna(value) else f": {value!r}"
        return ValueError(
            f"{self.path} row {index + self.offset}{label}: column {column!r} {problem}{shown}"
            + (f" ({hint})" if hint else "")
        )

    def first_bad(self, mask: np.ndarray, column: str, problem: str, hint: str = "") -> None:
        if mask.any():
            raise self.error(int(np.flatnonzero(mask)[0]), column, problem, hint)


def _times(col: pd.Series, time_format: str | None, time_unit: str, rows: _Rows) -> np.ndarray:
    rows.first_bad(col.isna().to_numpy(), "time", "is empty")
    if pd.api.types.is_datetime64_any_dtype(col):
        stamps = col if col.dt.tz is not None else col.dt.tz_localize("UTC")
    elif time_format is None:
        numbers = pd.to_numeric(col, errors="coerce")
        hint = "for dates pass time_format='datetime' or a strptime pattern"
        rows.first_bad(numbers.isna().to_numpy(), "time", "is not a number", hint)
        return numbers.to_numpy(dtype=np.float64)
    else:
        pattern = "mixed" if time_format == "datetime" else time_format
        stamps = pd.to_datetime(col.astype(str), format=pattern, utc=True, errors="coerce")
        rows.first_bad(
            stamps.isna().to_numpy(), "time", "is not a datetime", f"time_format {time_format!r}"
        )
    if time_unit not in SECONDS_PER_UNIT:
        raise ValueError(f"{rows.path}: datetimes need a time_unit in {list(SECONDS_PER_UNIT)}")
    nanos = stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64")
    return nanos.to_numpy() / (1e9 * SECONDS_PER_UNIT[time_unit])


def _types(
    col: pd.Series, type_names: list[str] | None, rows: _Rows
) -> tuple[np.ndarray, list[str], str]:
    """Type ids, type names, and whether the column held ids or names."""
    rows.first_bad(col.isna().to_numpy(), "type", "is empty")
    codes, uniques = pd.factorize(col, sort=False)  # checks run on the few distinct values
    numbers = pd.to_numeric(pd.Series(uniques), errors="coerce").to_numpy(dtype=np.float64)
    if not np.isnan(numbers).any():
        integral = numbers == np.round(numbers)
        rows.first_bad(~integral[codes], "type", "is not an integer")
        ids = numbers.astype(np.int64)[codes]
        names = type_names or [f"type_{k}" for k in range(max(int(ids.max()) + 1, 1))]
        return ids, list(names), "ids"
    labels = [str(u) for u in uniques]
    names = list(type_names) if type_names else sorted(set(labels))
    lookup = {n: i for i, n in enumerate(names)}
    unique_ids = np.array([lookup.get(label, -1) for label in labels], dtype=np.int64)
    rows.first_bad(unique_ids[codes] < 0, "type", "is not a known type", f"type_names {names}")
    return unique_ids[codes], names, "names"


def _strings(col: pd.Series) -> np.ndarray:
    """Object array of str / bytes / None (missing)."""
    values = col.to_numpy(dtype=object, na_value=None)
    if isinstance(col.dtype, pd.StringDtype):
        return values
    return np.array([v if v is None or isinstance(v, str | bytes) else str(v) for v in values],
                    dtype=object)  # fmt: skip


def _image(ref: Any, root: Path, rows: _Rows, index: int) -> bytes | None:
    if ref is None or ref == "":
        return None
    if isinstance(ref, bytes):
        return ref
    # Imported here: mmtpp.images pulls in transformers, which tables without images skip.
    from mmtpp.images import ImageError, resolve_path

    try:
        path = resolve_path(ref, root)
    except ImageError as err:
        raise rows.error(index, "image", "is refused", str(err)) from err
    if not path.is_file():
        raise rows.error(index, "image", "is not a file", f"looked under {root}")
    return path.read_bytes()


def load_table(
    path: str | Path,
    type_names: list[str] | None = None,
    time_format: str | None = None,
    time_unit: str = "s",
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of an events table (see the module docstring for the columns).

    The table is read and checked at once (vectorised); sequences, with their images read
    from disk, are built lazily. ``time_unit`` is the unit of numeric times, and the unit
    datetimes are converted to (one of ``SECONDS_PER_UNIT``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    frame = _read(path)
    if frame.empty:
        raise ValueError(f"{path}: the table has no rows")
    rows = _Rows(path, frame)
    rows.first_bad(frame["seq_id"].isna().to_numpy(), "seq_id", "is empty")
    times = _times(frame["time"], time_format, time_unit, rows)
    types, names, type_mode = _types(frame["type"], type_names, rows)
    codes, seq_ids = pd.factorize(frame["seq_id"].astype(str), sort=False)  # first appearance
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(seq_ids)))])
    times, types = times[order], types[order]
    texts = _strings(frame["text"])[order] if "text" in frame else None
    images = _strings(frame["image"])[order] if "image" in frame else None

    def sequences() -> Iterator[EventSequence]:
        for s, seq_id in enumerate(seq_ids):
            a, b = int(bounds[s]), int(bounds[s + 1])
            image_refs: list[ImageRef | None] = []
            if images is not None:
                image_refs = [_image(images[j], path.parent, rows, int(order[j]))
                              for j in range(a, b)]  # fmt: skip
            yield EventSequence(
                str(seq_id), times[a:b], types[a:b],
                texts[a:b].tolist() if texts is not None else [], image_refs,
            )  # fmt: skip

    info = DatasetInfo(
        name=path.stem,
        type_names=[str(n) for n in names],
        time_unit=time_unit,
        description=f"imported from the events table {path}",
        source={"format": "table", "path": str(path), "rows": len(frame),
                "sequences": len(seq_ids), "type_column": type_mode},
    )  # fmt: skip
    return info, sequences()
