"""The model card: what a trained adapter records so that prediction rebuilds it exactly.

Training writes it once (``<output_dir>/stage<N>/model/mmtpp_model.json``) beside the
adapter and the tokenizer; evaluation, offline prediction, Serve and ``merge`` read it and
nothing else: the base checkpoint and model settings, the event types, the token budget, the
compression rule (its calibrated Δ included), the scan directions and the modalities the
prompts were built with (design §6). A card of another version is refused with a clear error
instead of being half-read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmtpp.compression import CompressionRule
from mmtpp.config import ModelConfig

CARD_FILE = "mmtpp_model.json"
CARD_VERSION = 2
MODALITIES = ("time", "type", "text", "image")


class CompressionSpec(BaseModel):
    """The compression rule prompts are built with (``compression.CompressionRule``) and,
    when Δ was calibrated on the training split, the target it was calibrated to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["absolute", "relative", "typed"] = "absolute"
    delta: float = Field(0.2, ge=0)
    keep_type: bool = False
    calibrated_to: str | None = None  # e.g. "gain=2" (None: Δ as configured)

    @property
    def rule(self) -> CompressionRule:
        return CompressionRule(self.mode, self.delta, self.keep_type)


class ModelCard(BaseModel):
    """Everything a trained adapter's prompts depend on (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = CARD_VERSION
    stage: int = Field(ge=1, le=2)
    base_path: str
    model: ModelConfig
    num_types: int = Field(ge=1)
    type_names: list[str]
    budget: int = Field(ge=1)
    compression: CompressionSpec
    stage1_direction: Literal["forward", "backward"] = "forward"
    stage2_direction: Literal["forward", "backward"] = "backward"
    modalities: list[Literal["time", "type", "text", "image"]] = list(MODALITIES)
    tasks: list[Literal["time", "type", "text"]] = ["time", "type", "text"]  # trained for
    image_min_pixels: int
    image_max_pixels: int
    prepared_fingerprint: str = ""

    @property
    def rule(self) -> CompressionRule:
        return self.compression.rule

    def write(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / CARD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, model_dir: str | Path) -> ModelCard:
        path = Path(model_dir) / CARD_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{model_dir}: not a trained mmtpp model (no {CARD_FILE}; jobs/train.py writes "
                "<output_dir>/stage<N>/model)"
            )
        data = json.loads(path.read_text())
        version = data.get("version", 1) if isinstance(data, dict) else None
        if version != CARD_VERSION:
            raise ValueError(
                f"{path}: model card version {version}, this mmtpp reads version "
                f"{CARD_VERSION}: train the model again with this version (the pipeline "
                "retrains stages whose inputs changed)"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ValueError(f"{path}: invalid model card: {err}") from None
