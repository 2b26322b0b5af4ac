"""EasyTPP's data: ``{dim_process, train|dev|test: [[{time_since_start, time_since_last_event,
type_event}, ...], ...]}`` in a ``.pkl`` or ``.json`` file (the "Gatech" format).

Also read: EasyTPP's Hugging Face layout, a JSON list (or JSON lines) of one record per
sequence, ``{dim_process, seq_idx?, time_since_start: [...], type_event: [...], ...}``.

Pickles are loaded with ``RestrictedUnpickler``, never plain ``pickle.load``: a pickle can
call any importable function while it loads (``os.system`` included), and these files are
usually downloaded from third parties.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mmtpp.events import DatasetInfo, EventSequence

SPLITS = ("train", "dev", "test")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles call to rebuild bytes;
    limited to latin-1, the only encoding those pickles use."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers and strings (which need no global at all) and numpy
    scalars and arrays; every other global, e.g. ``posix.system``, is refused before it can run.

    The numpy helpers allowed only build arrays from a dtype and raw bytes; the classes they
    may instantiate are limited to ``numpy.ndarray`` because no other class can be loaded.
    """

    NUMPY_GLOBALS = frozenset(
        {
            ("numpy", "dtype"),
            ("numpy", "ndarray"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def __init__(self, file: BinaryIO, source: str = "<pickle>"):
        # latin1: EasyTPP's pickles come from Python 2, whose str must load as str.
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"{self.source}: the restricted unpickler refuses to load global '{module}.{name}' "
            "(EasyTPP data holds only dicts, lists, numbers and numpy arrays; the file may be "
            "malicious)"
        )


def _read(path: Path) -> Any:
    if path.suffix in (".pkl", ".pickle"):
        with path.open("rb") as f:
            return RestrictedUnpickler(f, source=str(path)).load()
    if path.suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            if path.suffix == ".json" and err.msg != "Extra data":
                raise ValueError(f"{path}: invalid JSON: {err}") from err
        try:  # JSON lines: one record per line
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON lines: {err}") from err
    raise ValueError(f"{path}: expected a .pkl, .pickle, .json or .jsonl file")


def _integer(value: Any, where: str, field: str) -> int:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{where}: field {field!r} is not an integer: {value!r}")
    return int(value)


def _float_array(values: Any, where: str, field: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field {field!r} holds a value that is not a number") from err
    if out.ndim != 1:
        raise ValueError(f"{where}: field {field!r} is not a list of numbers")
    return out


def _gatech_sequence(events: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(events, list | tuple):
        raise ValueError(f"{where}: expected a list of events, got {type(events).__name__}")
    times, types = [], []
    for i, event in enumerate(events):
        at = f"{where} event {i}"
        if not isinstance(event, dict):
            raise ValueError(f"{at}: expected a dict, got {type(event).__name__}")
        for field in ("time_since_start", "type_event"):
            if field not in event:
                raise ValueError(f"{at}: field {field!r} is missing")
        t = event["time_since_start"]
        if isinstance(t, bool) or not isinstance(t, int | float | np.integer | np.floating):
            raise ValueError(f"{at}: field 'time_since_start' is not a number: {t!r}")
        times.append(float(t))
        types.append(_integer(event["type_event"], at, "type_event"))
    return np.asarray(times, dtype=np.float64), np.asarray(types, dtype=np.int64)


def _record_sequence(record: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a record (dict), got {type(record).__name__}")
    for field in ("time_since_start", "type_event"):
        if field not in record:
            raise ValueError(f"{where}: field {field!r} is missing")
    times = _float_array(record["time_since_start"], where, "time_since_start")
    types = [
        _integer(k, f"{where} event {i}", "type_event") for i, k in enumerate(record["type_event"])
    ]
    if len(types) != times.size:
        raise ValueError(
            f"{where}: fields 'time_since_start' and 'type_event' differ in length "
            f"({times.size} vs {len(types)})"
        )
    return times, np.asarray(types, dtype=np.int64)


def _choose_split(data: dict, split: str | None, path: Path) -> str:
    present = [s for s in SPLITS if s in data]
    if split is not None:
        if split not in data:
            raise ValueError(f"{path}: split {split!r} not found (present: {present})")
        return split
    # EasyTPP's train.pkl also holds empty 'dev' and 'test' lists: count only non-empty ones.
    filled = [s for s in present if data[s]]
    if len(filled) == 1:
        return filled[0]
    if "train" in present:
        return "train"
    raise ValueError(f"{path}: no 'train', 'dev' or 'test' split (keys: {sorted(map(str, data))})")


def load_easytpp(
    path: str | Path, split: str | None = None
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of one split of an EasyTPP file; time = ``time_since_start``.

    ``split=None`` picks the only non-empty split, else ``train``. Type names are
    ``type_0..type_{dim_process-1}``; there is no text or image. Sequence ids are
    ``<split>-<index>`` (Hugging Face layout: ``seq_idx`` when present).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = _read(path)
    if isinstance(data, list):  # Hugging Face layout: one record per sequence
        if not data:
            raise ValueError(f"{path}: no sequences")
        records, chosen = data, split or "train"
        first = data[0]
        dim = first.get("dim_process") if isinstance(first, dict) else None
        where_dim = f"{path} record 0"
    elif isinstance(data, dict):
        chosen = _choose_split(data, split, path)
        records, dim, where_dim = data[chosen], data.get("dim_process"), str(path)
        if not isinstance(records, list | tuple):
            raise ValueError(f"{path}: split {chosen!r} is not a list of sequences")
    else:
        raise ValueError(f"{path}: expected a dict with 'dim_process', got {type(data).__name__}")
    if dim is None:
        raise ValueError(f"{where_dim}: field 'dim_process' is missing")
    num_types = _integer(dim, where_dim, "dim_process")
    if num_types < 1:
        raise ValueError(f"{where_dim}: field 'dim_process' must be >= 1, got {num_types}")
    is_records = isinstance(data, list)

    def sequences() -> Iterator[EventSequence]:
        for s, item in enumerate(records):
            if is_records:
                seq_id = str(item.get("seq_idx", s)) if isinstance(item, dict) else str(s)
                times, types = _record_sequence(item, f"{path} record {s}")
            else:
                seq_id = f"{chosen}-{s:06d}"
                times, types = _gatech_sequence(item, f"{path} split {chosen!r} sequence {s}")
            yield EventSequence(seq_id, times, types)

    info = DatasetInfo(
        name=path.stem,
        type_names=[f"type_{k}" for k in range(num_types)],
        description=f"imported from the EasyTPP file {path} (split {chosen!r})",
        source={"format": "easytpp", "path": str(path), "split": chosen, "sequences": len(records)},
    )
    return info, sequences()
