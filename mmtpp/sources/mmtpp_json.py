"""The MM-TPP release format: one JSON file per sequence, a list of events.

Each event is ``{"time": float, "text": str|null, "image_path": str|null,
"TPP_attribute": {"time_since_last_event": float, "event_type": int}}``; the absolute
``time`` is kept and ``time_since_last_event`` is ignored (it is derived from the times).

Layouts accepted:

- a folder: every ``*.json`` below it is one sequence; its id is the file's path relative to
  the folder without ``.json`` (``v12`` for ``v12.json``, ``train/v12`` for a subfolder);
- one JSON file holding ``{seq_id: [events]}`` or ``[[events], ...]`` (ids ``"0"``, ``"1"``...).

``image_path`` is looked up first relative to the source folder, then relative to the JSON
file's own folder; paths that are absolute or contain ``..`` are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmtpp.events import DatasetInfo, EventSequence, ImageRef

# (seq_id, events, file they came from); the events are parsed JSON, still unchecked.
_Raw = tuple[str, Any, Path]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err


def _raw_sequences(src: Path) -> Iterator[_Raw]:
    """Yield every sequence of the source, one file read at a time for a folder."""
    if src.is_file():
        data = _read_json(src)
        if isinstance(data, dict):
            items = [(str(k), v) for k, v in data.items()]
        elif isinstance(data, list):
            items = [(str(i), v) for i, v in enumerate(data)]
        else:
            raise ValueError(f"{src}: expected {{seq_id: [events]}} or a list of event lists")
        for seq_id, events in items:
            yield seq_id, events, src
        return
    for path in sorted(src.rglob("*.json")):
        yield path.relative_to(src).with_suffix("").as_posix(), _read_json(path), path


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: field {field!r} is not a number: {value!r}")
    return float(value)


def _event_type(event: Any, where: str) -> int:
    attr = event.get("TPP_attribute")
    if not isinstance(attr, dict) or "event_type" not in attr:
        raise ValueError(f"{where}: field 'TPP_attribute.event_type' is missing")
    k = attr["event_type"]
    if isinstance(k, float) and k.is_integer():
        return int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"{where}: field 'TPP_attribute.event_type' is not an integer: {k!r}")
    return k


def _image(ref: Any, roots: tuple[Path, ...], where: str, embed: bool) -> bytes | None:
    """The image file's bytes (``embed``), or only check that it exists."""
    if ref is None or ref == "":
        return None
    if not isinstance(ref, str):
        raise ValueError(f"{where}: field 'image_path' is not a string: {ref!r}")
    # Imported here: mmtpp.images pulls in transformers, which datasets without images skip.
    from mmtpp.images import ImageError, resolve_path

    for root in roots:
        try:
            path = resolve_path(ref, root)
        except ImageError as err:
            raise ValueError(f"{where}: field 'image_path': {err}") from err
        if path.is_file():
            return path.read_bytes() if embed else None
    places = " or ".join(str(r) for r in dict.fromkeys(roots))
    raise ValueError(f"{where}: field 'image_path': file {ref!r} not found under {places}")


def _sequence(raw: _Raw, src_dir: Path, embed: bool) -> EventSequence:
    seq_id, events, path = raw
    if not isinstance(events, list):
        raise ValueError(
            f"{path} sequence {seq_id!r}: expected a list of events, got {type(events).__name__}"
        )
    roots = (src_dir, path.parent)
    times: list[float] = []
    types: list[int] = []
    texts: list[str | None] = []
    images: list[ImageRef | None] = []
    for i, event in enumerate(events):
        where = f"{path} sequence {seq_id!r} event {i}"
        if not isinstance(event, dict):
            raise ValueError(f"{where}: expected an object, got {event!r}")
        if "time" not in event:
            raise ValueError(f"{where}: field 'time' is missing")
        times.append(_number(event["time"], where, "time"))
        types.append(_event_type(event, where))
        text = event.get("text")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}: field 'text' is not a string: {text!r}")
        texts.append(text)
        images.append(_image(event.get("image_path"), roots, where, embed))
    return EventSequence(
        seq_id, np.asarray(times, dtype=np.float64), np.asarray(types, dtype=np.int64),
        texts, images if embed else [],
    )  # fmt: skip


def load_mmtpp_json(
    src_dir: str | Path, type_names: list[str] | None = None
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of an MM-TPP release folder (or single JSON file), images embedded as bytes.

    Without ``type_names`` a first pass over all files checks them and finds the number of
    types K (names ``type_0..type_{K-1}``, K = 1 + the largest type); with them the import is
    a single lazy pass and malformed files raise while iterating.
    """
    src = Path(src_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    root = src.parent if src.is_file() else src
    count = None
    if type_names is None:
        max_type, count = -1, 0
        for raw in _raw_sequences(src):
            seq = _sequence(raw, root, embed=False)
            count += 1
            if len(seq):
                max_type = max(max_type, int(seq.type.max()))
        if count == 0:
            raise ValueError(f"{src}: no .json sequence files found")
        if max_type < 0:
            raise ValueError(f"{src}: no events with a non-negative event_type; pass type_names")
        type_names = [f"type_{k}" for k in range(max_type + 1)]
    info = DatasetInfo(
        name=src.stem,
        type_names=list(type_names),
        description=f"imported from the MM-TPP JSON at {src}",
        source={"format": "mmtpp_json", "path": str(src), "sequences": count},
    )
    sequences = (_sequence(raw, root, embed=True) for raw in _raw_sequences(src))
    return info, sequences
