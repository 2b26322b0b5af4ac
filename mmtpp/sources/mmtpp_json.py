"""The MM-TPP release format: one JSON file per sequence, a list of events.

Each event is ``{"time": float, "text": str|null, "image_path": str|null,
"TPP_attribute": {"time_since_last_event": float, "event_type": int}}``; the absolute
``time`` is kept and ``time_since_last_event`` is ignored (it is derived from the times).

Layouts accepted:

- a folder: every ``*.json`` below it is one sequence; its id is the file's path relative to
  the folder without ``.json`` (``v12`` for ``v12.json``, ``train/v12`` for a subfolder);
- one JSON file holding ``{seq_id: [events]}`` or ``[[events], ...]`` (ids ``"0"``, ``"1"``...).

``image_path`` is looked up first relative to the source folder, then relative to the JSON
file's own folder; paths containing ``..`` are refused, and so are absolute paths and paths
leading outside those folders (through a symlink) unless a trusted ``image_root`` is given and
they lead under it (``mmtpp.images.resolve_path``).

A sequence that cannot be read (invalid JSON, a malformed event, a refused or missing image)
raises in strict mode; with a ``Quarantine`` it is set aside whole, with the first problem
found and its events as far as they could be read, and the other sequences are imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmtpp.events import DatasetInfo, EventSequence, ImageRef
from mmtpp.images import ImageError, as_trusted_root, resolve_path
from mmtpp.problems import Problem, ReadError
from mmtpp.quarantine import Quarantine

# (seq_id, events, file they came from); the events are parsed JSON, still unchecked, or the
# error that kept the file from being parsed.
_Raw = tuple[str, Any, Path]


def _fail(path: Path, seq_id: str, event: int, field: str, reason: str, message: str) -> ReadError:
    """A sequence that cannot be read: ``message`` says what is wrong with ``field``."""
    where = f"{path} sequence {seq_id!r}" + (f" event {event}" if event >= 0 else "")
    return ReadError.at(where, Problem(str(path), seq_id, event, field, reason, message))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err


def _raw_sequences(src: Path) -> Iterator[_Raw]:
    """Yield every sequence of the source, one file read at a time for a folder."""
    if src.is_file():
        data = _read_json(src)  # the whole source: unreadable means nothing to import
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
        seq_id = path.relative_to(src).with_suffix("").as_posix()
        try:
            events: Any = _read_json(path)
        except ValueError as err:  # this sequence only: the others can still be read
            message = f"invalid JSON: {err.__cause__}"
            events = ReadError(
                str(err), Problem(str(path), seq_id, -1, "file", "invalid_json", message)
            )
        yield seq_id, events, path


class _Event:
    """Reads one event's fields, naming the file, sequence, event and field on failure."""

    def __init__(self, path: Path, seq_id: str, index: int, event: Any):
        self.path, self.seq_id, self.index, self.event = path, seq_id, index, event

    def fail(self, field: str, reason: str, message: str) -> ReadError:
        return _fail(self.path, self.seq_id, self.index, field, reason, message)

    def time(self) -> float:
        if "time" not in self.event:
            raise self.fail("time", "missing", "is missing")
        value = self.event["time"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail("time", "not_a_number", f"is not a number: {value!r}")
        return float(value)

    def type(self) -> int:
        field = "TPP_attribute.event_type"
        attr = self.event.get("TPP_attribute")
        if not isinstance(attr, dict) or "event_type" not in attr:
            raise self.fail(field, "missing", "is missing")
        k = attr["event_type"]
        if isinstance(k, float) and k.is_integer():
            return int(k)
        if isinstance(k, bool) or not isinstance(k, int):
            raise self.fail(field, "not_an_integer", f"is not an integer: {k!r}")
        return k

    def text(self) -> str | None:
        text = self.event.get("text")
        if text is not None and not isinstance(text, str):
            raise self.fail("text", "not_a_string", f"is not a string: {text!r}")
        return text

    def image(self, roots: tuple[Path, ...], trusted: Path | None, embed: bool) -> bytes | None:
        """The image file's bytes (``embed``), or only check that it exists."""
        ref = self.event.get("image_path")
        if ref is None or ref == "":
            return None
        if not isinstance(ref, str):
            raise self.fail("image_path", "not_a_string", f"is not a string: {ref!r}")
        for root in roots:
            try:
                path = resolve_path(ref, root, trusted)
            except ImageError as err:
                raise self.fail("image_path", err.reason, f"is refused: {err}") from err
            if path.is_file():
                try:
                    return path.read_bytes() if embed else None
                except OSError as err:
                    raise self.fail("image_path", "unreadable", f"cannot be read: {err}") from err
        places = " or ".join(str(r) for r in dict.fromkeys(roots))
        raise self.fail("image_path", "missing", f"is not a file: {ref!r} (looked under {places})")


def _sequence(raw: _Raw, src_dir: Path, trusted: Path | None, embed: bool) -> EventSequence:
    seq_id, events, path = raw
    if isinstance(events, ReadError):
        raise events
    if not isinstance(events, list):
        message = f"expected a list of events, got {type(events).__name__}"
        raise _fail(path, seq_id, -1, "sequence", "not_a_list", message)
    roots = (src_dir, path.parent)
    times: list[float] = []
    types: list[int] = []
    texts: list[str | None] = []
    images: list[ImageRef | None] = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise _fail(
                path, seq_id, i, "event", "not_an_object", f"expected an object, got {event!r}"
            )
        read = _Event(path, seq_id, i, event)
        times.append(read.time())
        types.append(read.type())
        texts.append(read.text())
        images.append(read.image(roots, trusted, embed))
    return EventSequence(
        seq_id,
        np.asarray(times, dtype=np.float64),
        np.asarray(types, dtype=np.int64),
        texts,
        images if embed else [],
    )


def _set_aside(quarantine: Quarantine, raw: _Raw, err: ReadError) -> None:
    """The sequence to the quarantine, its events' values as far as they can be read."""
    seq_id, events, path = raw
    values: dict[str, list] = {"times": [], "types": [], "texts": [], "images": []}
    for event in events if isinstance(events, list) else []:
        event = event if isinstance(event, dict) else {}
        attr = event.get("TPP_attribute")
        k = attr.get("event_type") if isinstance(attr, dict) else None
        t, text, image = event.get("time"), event.get("text"), event.get("image_path")
        number = isinstance(t, int | float) and not isinstance(t, bool)
        integer = isinstance(k, int) and not isinstance(k, bool)
        values["times"].append(float(t) if number else None)
        values["types"].append(k if integer else None)
        values["texts"].append(text if isinstance(text, str) else None)
        values["images"].append(image if isinstance(image, str) else None)  # the path given
    quarantine.add(str(path), seq_id, [err.problem], **values)


def load_mmtpp_json(
    src_dir: str | Path,
    type_names: list[str] | None = None,
    image_root: str | Path | None = None,
    quarantine: Quarantine | None = None,
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Sequences of an MM-TPP release folder (or single JSON file), images embedded as bytes.

    Without ``type_names`` a first pass over all files checks them and finds the number of
    types K (names ``type_0..type_{K-1}``, K = 1 + the largest type); with them the import is
    a single lazy pass and malformed files raise while iterating. ``image_root``: a trusted
    folder image paths may also lead into. ``quarantine``: None (strict) raises ``ReadError``
    at the first sequence that cannot be read; a ``Quarantine`` receives such sequences (while
    iterating) and the rest is imported.
    """
    src = Path(src_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    trusted = as_trusted_root(image_root)
    root = src.parent if src.is_file() else src
    count = None
    if type_names is None:
        max_type, count = -1, 0
        for raw in _raw_sequences(src):
            count += 1
            try:
                seq = _sequence(raw, root, trusted, embed=False)
            except ReadError:
                if quarantine is None:
                    raise
                continue  # set aside in the second pass
            if len(seq):
                max_type = max(max_type, int(seq.type.max()))
        if count == 0:
            raise ValueError(f"{src}: no .json sequence files found")
        if max_type < 0:
            raise ValueError(f"{src}: no events with a non-negative event_type; pass type_names")
        type_names = [f"type_{k}" for k in range(max_type + 1)]

    def sequences() -> Iterator[EventSequence]:
        for raw in _raw_sequences(src):
            try:
                yield _sequence(raw, root, trusted, embed=True)
            except ReadError as err:
                if quarantine is None:
                    raise
                _set_aside(quarantine, raw, err)

    described: dict[str, Any] = {"format": "mmtpp_json", "path": str(src), "sequences": count}
    if trusted is not None:
        described["image_root"] = str(trusted.resolve())
    info = DatasetInfo(
        name=src.stem,
        type_names=list(type_names),
        description=f"imported from the MM-TPP JSON at {src}",
        source=described,
    )
    return info, sequences()
