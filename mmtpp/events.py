"""Event sequences, their Arrow schema, and event datasets on disk (design §2).

A dataset is a directory::

    <root>/dataset.json              DatasetInfo: name, type names, time unit, source metadata
    <root>/sequences/part-*.parquet  one row per sequence (list columns, SEQUENCE_SCHEMA)
    <root>/images/...                optional image files, referenced by relative path

One row per sequence keeps a sequence whole inside one Ray Data block, so sharding never
splits a history. Images are stored either as encoded bytes inside the row or as a path
relative to the dataset root (``{"bytes": ..., "path": ...}``, exactly one set).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmtpp.compression import gaps_from_times

INFO_FILE = "dataset.json"
SEQUENCES_DIR = "sequences"
IMAGES_DIR = "images"

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SEQUENCE_SCHEMA = pa.schema(
    [
        ("seq_id", pa.string()),
        ("time", pa.list_(pa.float64())),
        ("type", pa.list_(pa.int32())),
        ("text", pa.list_(pa.string())),
        ("image", pa.list_(IMAGE_STRUCT)),
    ]
)

# An image is encoded bytes (PNG/JPEG/...) or a path relative to the dataset root.
ImageRef = bytes | str


@dataclass
class EventSequence:
    """One event sequence: parallel arrays of length n, ordered by time.

    ``text[i]`` and ``image[i]`` may be None (absent modality).
    """

    seq_id: str
    time: np.ndarray
    type: np.ndarray
    text: list[str | None] = field(default_factory=list)
    image: list[ImageRef | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seq_id = str(self.seq_id)
        self.time = np.asarray(self.time, dtype=np.float64)
        self.type = np.asarray(self.type, dtype=np.int64)
        n = self.time.size
        if not self.text:
            self.text = [None] * n
        if not self.image:
            self.image = [None] * n

    def __len__(self) -> int:
        return int(self.time.size)

    @property
    def gaps(self) -> np.ndarray:
        """Inter-event times τ ``[n]``, τ_0 = 0."""
        return gaps_from_times(self.time)

    def slice(self, start: int, stop: int) -> EventSequence:
        return EventSequence(
            seq_id=self.seq_id,
            time=self.time[start:stop],
            type=self.type[start:stop],
            text=list(self.text[start:stop]),
            image=list(self.image[start:stop]),
        )

    @property
    def has_images(self) -> bool:
        return any(im is not None for im in self.image)

    def with_modalities(self, modalities: Iterable[str]) -> EventSequence:
        """This sequence as a model restricted to ``modalities`` sees it: text and images
        outside them left out (times and types are always kept)."""
        kept = set(modalities)
        if {"text", "image"} <= kept:
            return self
        return EventSequence(
            seq_id=self.seq_id,
            time=self.time,
            type=self.type,
            text=self.text if "text" in kept else [],
            image=self.image if "image" in kept else [],
        )


SPLITS = ("train", "val", "test")


def split_of(seq_ids: list[str], fractions: list[float], seed: int) -> list[str]:
    """Deterministic train/val/test assignment from a hash of (seed, seq_id): stable when
    sequences are added, removed or reordered."""
    edges = np.cumsum(fractions)
    out = []
    for seq_id in seq_ids:
        digest = hashlib.blake2b(f"{seed}:{seq_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        out.append(SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)])
    return out


@dataclass
class DatasetInfo:
    """What a dataset is: its event types, time unit and where it came from.

    ``source`` holds free-form provenance; the synthetic generator stores its true process
    parameters there (``source["hawkes"]``) so the Bayes-optimal baseline can be computed.
    ``time_resolution``: the step its times are recorded to, in ``time_unit`` (NYC flights:
    whole minutes, 1/60 h), or None for continuous times; evaluation then also scores the
    probability of each gap's bin (``timecodec.resolution_bins``).
    """

    name: str
    type_names: list[str]
    time_unit: str = "s"
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    time_resolution: float | None = None

    def __post_init__(self) -> None:
        if not self.type_names:
            raise ValueError(f"dataset {self.name!r}: type_names must not be empty")
        if len(set(self.type_names)) != len(self.type_names):
            raise ValueError(f"dataset {self.name!r}: type_names must be distinct")
        r = self.time_resolution
        if r is not None and not (isinstance(r, int | float) and math.isfinite(r) and r > 0):
            raise ValueError(
                f"dataset {self.name!r}: time_resolution must be a positive number or null, "
                f"got {r!r}"
            )

    @property
    def num_types(self) -> int:
        return len(self.type_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(**data)


def read_info(root: str | Path) -> DatasetInfo:
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not an mmtpp dataset (no {INFO_FILE}); create one with "
            "`mmtpp data synth` or `mmtpp data import`"
        )
    try:
        return DatasetInfo.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: invalid dataset info: {err}") from err


def write_info(root: str | Path, info: DatasetInfo) -> None:
    path = Path(root) / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")


# Sequences per Parquet row group: the unit of parallel work when a dataset is prepared.
ROW_GROUP_SEQUENCES = 32


def sequence_files(root: str | Path) -> list[Path]:
    files = sorted((Path(root) / SEQUENCES_DIR).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{Path(root) / SEQUENCES_DIR}: no parquet files")
    return files


def _image_to_struct(ref: ImageRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    if isinstance(ref, bytes | bytearray | memoryview):
        return {"bytes": bytes(ref), "path": None}
    return {"bytes": None, "path": str(ref)}


def sequences_to_table(sequences: Iterable[EventSequence]) -> pa.Table:
    """Sequences → an Arrow table with SEQUENCE_SCHEMA (one row per sequence)."""
    rows: dict[str, list] = {name: [] for name in SEQUENCE_SCHEMA.names}
    for seq in sequences:
        rows["seq_id"].append(seq.seq_id)
        rows["time"].append(seq.time)
        rows["type"].append(seq.type.astype(np.int32))
        rows["text"].append(seq.text)
        rows["image"].append([_image_to_struct(im) for im in seq.image])
    return pa.Table.from_pydict(rows, schema=SEQUENCE_SCHEMA)


def _list_values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Offsets and flat values of a list column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.offsets.to_numpy(), arr.flatten()


def table_to_sequences(table: pa.Table) -> list[EventSequence]:
    """An Arrow table with SEQUENCE_SCHEMA (see ``conform_table``) → sequences."""
    if table.num_rows == 0:
        return []
    offsets, times = _list_values(table.column("time"))
    _, types = _list_values(table.column("type"))
    _, texts = _list_values(table.column("text"))
    _, images = _list_values(table.column("image"))
    time_np = times.to_numpy(zero_copy_only=False)
    type_np = types.to_numpy(zero_copy_only=False)
    text_py = texts.to_pylist()
    image_bytes = images.field("bytes").to_pylist()
    image_paths = images.field("path").to_pylist()
    image_valid = images.is_valid().to_numpy(zero_copy_only=False)
    image_py: list[ImageRef | None] = [
        (b if b is not None else p) if ok else None
        for b, p, ok in zip(image_bytes, image_paths, image_valid, strict=True)
    ]
    out = []
    for row, seq_id in enumerate(table.column("seq_id").to_pylist()):
        a, b = int(offsets[row]), int(offsets[row + 1])
        out.append(
            EventSequence(
                seq_id=seq_id,
                time=time_np[a:b],
                type=type_np[a:b],
                text=text_py[a:b],
                image=image_py[a:b],
            )
        )
    return out


def write_sequences(
    root: str | Path,
    sequences: Iterable[EventSequence],
    rows_per_file: int = 256,
) -> int:
    """Write sequences as ``sequences/part-NNNNN.parquet`` files; returns the sequence count."""
    out_dir = Path(root) / SEQUENCES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*.parquet"):
        old.unlink()
    count = part = 0
    batch: list[EventSequence] = []

    def flush() -> None:
        nonlocal part
        if batch:
            pq.write_table(
                sequences_to_table(batch),
                out_dir / f"part-{part:05d}.parquet",
                row_group_size=ROW_GROUP_SEQUENCES,
            )
            part += 1
            batch.clear()

    for seq in sequences:
        batch.append(seq)
        count += 1
        if len(batch) >= rows_per_file:
            flush()
    flush()
    return count


def write_dataset(
    root: str | Path,
    info: DatasetInfo,
    sequences: Iterable[EventSequence],
    rows_per_file: int = 256,
) -> int:
    """Write a whole dataset (info + sequences); returns the sequence count."""
    write_info(root, info)
    return write_sequences(root, sequences, rows_per_file)


def iter_tables(root: str | Path) -> Iterator[tuple[Path, pa.Table]]:
    """Yield ``(file, table)`` for each sequence file, as stored (not yet conformed)."""
    for path in sequence_files(root):
        yield path, pq.read_table(path)
