"""The prepared dataset: the contract between preparation and every later stage.

``jobs/prepare.py`` writes, and training, evaluation, offline prediction and Tune read, one
directory (design §1)::

    <output_dir>/prepared/
      manifest.json                  Manifest: counts, splits, compression, fingerprints
      tokenizer/                     the run's tokenizer (save_pretrained layout)
      quarantine.json                sequences set aside, with their problems (if any)
      stage1/{train,val,test}/part-<unit>.parquet   packed documents
      stage2/{train,val,test}/part-<unit>.parquet   prompt → response examples

``PreparedData`` knows this layout; no other module spells a path of it. The manifest is
versioned: a reader meeting another version is told to prepare again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmtpp.card import CompressionSpec

FORMAT_VERSION = 2
KINDS = ("stage1", "stage2")
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


class Manifest(BaseModel):
    """What one preparation run made, and from what."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    fingerprint: str
    dataset: str
    dataset_name: str
    type_names: list[str]
    num_types: int = Field(ge=1)
    sequences_in: int
    sequences_out: int
    sequences_quarantined: int
    quarantine_reasons: dict[str, int]
    splits: dict[str, int]
    rows: dict[str, int]  # "<kind>/<split>" -> rows
    tokens: dict[str, int]
    compression: CompressionSpec
    calibration: dict[str, Any] | None = None  # compression.Calibration, when Δ was calibrated
    budget: int
    modalities: list[str]
    tokenizer_fingerprint: str
    token_stats: dict[str, Any]
    config: dict[str, Any]
    seconds: float
    phase_seconds: dict[str, float]

    @property
    def delta(self) -> float:
        return self.compression.delta


class PreparedData:
    """A prepared directory: its layout, its manifest and readers of its shards."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def quarantine_path(self) -> Path:
        return self.root / "quarantine.json"

    def shard_dir(self, kind: str, split: str) -> Path:
        if kind not in KINDS or split not in SPLITS:
            raise ValueError(f"no shards of kind {kind!r} and split {split!r}")
        return self.root / kind / split

    def files(self, kind: str, split: str) -> list[Path]:
        return sorted(self.shard_dir(kind, split).glob("*.parquet"))

    def num_rows(self, kind: str, split: str) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(kind, split))

    def read(self, kind: str, split: str, columns: list[str] | None = None) -> pa.Table:
        """One kind and split as one table (in shard order)."""
        files = self.files(kind, split)
        if not files:
            raise FileNotFoundError(f"{self.shard_dir(kind, split)}: no prepared rows")
        return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)

    def examples_by_task(self, split: str = "test", per_task: int | None = None):
        """The stage-2 rows of ``split`` grouped by task, in shard order (the first
        ``per_task`` of each task when given)."""
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in self.read("stage2", split).to_pylist():
            rows.setdefault(row["task"], []).append(row)
        return {t: r[:per_task] for t, r in rows.items()} if per_task else rows

    def quarantined_ids(self) -> set[str]:
        """The sequence ids preparation set aside (none when it set none aside)."""
        path = self.quarantine_path
        return {q["seq_id"] for q in json.loads(path.read_text())} if path.is_file() else set()

    def has_manifest(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        """The manifest; another format version is an error telling what to do."""
        if not self.manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root}: no {MANIFEST} (not a prepared directory: run jobs/prepare.py)"
            )
        data = json.loads(self.manifest_path.read_text())
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{self.manifest_path}: prepared data of format {version}, this mmtpp reads "
                f"format {FORMAT_VERSION}: prepare it again (jobs/prepare.py or the pipeline)"
            )
        try:
            return Manifest.model_validate(data)
        except ValidationError as err:
            raise ValueError(f"{self.manifest_path}: invalid manifest: {err}") from None

    def write_manifest(self, manifest: Manifest) -> None:
        self.manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n")

    def clear_shards(self) -> None:
        """Remove every shard (before a new run writes its own)."""
        for kind in KINDS:
            for split in SPLITS:
                for f in self.shard_dir(kind, split).glob("*.parquet"):
                    f.unlink()
