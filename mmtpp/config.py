"""One typed config tree for every job, loaded from YAML with dotted ``key=value`` overrides.

Sections are pydantic models (the same system as Serve's config): each field carries its
help text, checks that involve several fields sit in validators, and unknown keys are errors
(a typo never passes silently). The tree crosses the Ray boundary as a plain dict
(``to_dict``) and is rebuilt typed on the worker (``Config.from_dict``).

One ``seed`` drives every random choice of a run — the data split and target sampling, the
tiny model's and LoRA's initialisation, the order rows are read in — unless a section sets
its own (``data.seed``, ``model.seed``, ``train.seed``; null means "the top-level seed").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from mmtpp.compression import DIRECTIONS, CompressionRule, CompressionTarget
from mmtpp.decoding import DecodeOptions
from mmtpp.tokens import TASKS

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SECTION_SEEDS = ("data", "model", "train")  # sections whose seed defaults to the top-level one


def opt(default: Any, help: str, **constraints: Any) -> Any:
    """A config field: its default, its help text (``--help`` prints it) and constraints."""
    return Field(default, description=help, **constraints)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    source: str = opt(
        "synthetic",
        "dataset directory (an mmtpp dataset), 'synthetic' to generate the default "
        "synthetic dataset into <output_dir>/data, or 'nycflights' to import the NYC flights",
    )
    synth_sequences: int = opt(
        200,
        "sequences to generate when source is 'synthetic'; aircraft to import when it is "
        "'nycflights' (0 = all)",
        ge=0,
    )
    synth_seed: int = opt(0, "seed of the synthetic generator (the data itself)")
    synth_process: Literal["hawkes", "regime", "profile"] = opt(
        "hawkes",
        "synthetic process: 'hawkes' (bursty, short memory), 'regime' (Hawkes modulated by a "
        "hidden regime the images show) or 'profile' (each sequence's own type transitions "
        "and gap scales, learnt from its long history; the long-range benchmark)",
    )
    compression: Literal["absolute", "relative", "typed", "auto"] = opt(
        "absolute",
        "compression rule: 'absolute' |τ_i − τ_ref| < Δ (the paper's, Δ in the data's time "
        "unit), 'relative' |log τ_i − log τ_ref| < Δ (any unit), 'typed' (relative and the "
        "same type), 'auto' (relative, Δ calibrated on the training split to "
        "data.compression_target)",
    )
    delta: float = opt(0.2, "compression threshold Δ in the rule's units (0 disables)", ge=0)
    compression_target: str | None = opt(
        None,
        "calibrate Δ on the training split to reach 'gain=G' (events per budget, G x Δ = 0) "
        "or 'fraction=F' (share of events compressed); null: Δ as given ('auto': gain=2)",
    )
    compression_keep_type: bool = opt(
        False, "a compressed event keeps its type token: <|similar_event|><|type_k|>"
    )
    modalities: list[Literal["time", "type", "text", "image"]] = opt(
        ["time", "type", "text", "image"],
        "what the model sees of an event (time and type always): [time, type, text] is the "
        "text-only ablation",
    )
    image_root: str | None = opt(
        None,
        "trusted image root: image paths may be absolute or lead (through symlinks) under it",
    )
    stage1_direction: Literal["forward", "backward"] = opt(
        "forward", "scan direction for stage-1 documents"
    )
    stage2_direction: Literal["forward", "backward"] = opt(
        "backward", "scan direction for stage-2 prompts"
    )
    budget: int = opt(4096, "token budget of a stage-1 document / a stage-2 example", ge=64)
    split: list[float] = opt([0.8, 0.1, 0.1], "train/val/test fractions by sequence id")
    targets_per_sequence: int = opt(
        16,
        "stage-2 targets sampled per sequence and task in train/val (0 = every event); the "
        "test split always uses eval_targets_per_sequence",
        ge=0,
    )
    eval_targets_per_sequence: int = opt(32, "stage-2 targets per test sequence (0 = all)", ge=0)
    min_history: int = opt(8, "events of history before the first stage-2 target", ge=1)
    tasks: list[Literal["time", "type", "text"]] = opt(list(TASKS), "stage-2 tasks", min_length=1)
    validation: Literal["strict", "quarantine"] = opt(
        "strict", "'strict' (fail on the first bad sequence) or 'quarantine'"
    )
    tokenizer: str | None = opt(
        None, "tokenizer directory; null trains the tiny BPE on the training text"
    )
    vocab_size: int = opt(2048, "BPE vocabulary size when training the tokenizer", ge=1)
    tokenizer_texts: int = opt(
        20000,
        "texts the BPE is trained on: an evenly spaced sample of the training split (0 = all)",
        ge=0,
    )
    image_min_pixels: int = opt(56 * 56, "Qwen2.5-VL min_pixels for event images", ge=1)
    image_max_pixels: int = opt(112 * 112, "Qwen2.5-VL max_pixels for event images", ge=1)
    seed: int | None = opt(None, "seed of the split and of target sampling (null: seed)")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if (
            len(self.split) != 3
            or any(f < 0 for f in self.split)
            or abs(sum(self.split) - 1) > 1e-6
        ):
            raise ValueError(
                f"data.split must be 3 non-negative fractions summing to 1, got {self.split}"
            )
        if self.image_max_pixels < self.image_min_pixels:
            raise ValueError("data.image_max_pixels must be >= data.image_min_pixels")
        if not {"time", "type"} <= set(self.modalities):
            raise ValueError(f"data.modalities must hold time and type, got {self.modalities}")
        if "text" in self.tasks and "text" not in self.modalities:
            raise ValueError("data.tasks holds 'text' but data.modalities leaves text out")
        if self.compression_target is not None:
            CompressionTarget.parse(self.compression_target)  # a clear error now, not later
        return self

    def rule(self) -> CompressionRule:
        """The compression rule as configured (``auto``: the relative rule; its Δ is the one
        preparation calibrates, recorded in the manifest and the model card)."""
        mode = "relative" if self.compression == "auto" else self.compression
        return CompressionRule(mode, self.delta, self.compression_keep_type)

    def calibration_target(self) -> CompressionTarget | None:
        """What Δ is calibrated to on the training split (None: Δ as configured)."""
        if self.compression_target is not None:
            return CompressionTarget.parse(self.compression_target)
        return CompressionTarget("gain", 2.0) if self.compression == "auto" else None


assert set(DIRECTIONS) == {"forward", "backward"}  # the Literal above spells them


class ModelConfig(Section):
    base: str = opt(
        "tiny",
        "'tiny' (a random Qwen2.5-VL-architecture model sized below) or a local directory "
        "holding a Qwen2.5-VL checkpoint (e.g. Qwen2.5-VL-3B-Instruct); never downloaded",
    )
    hidden_size: int = opt(128, "tiny: text hidden size", ge=1)
    num_layers: int = opt(2, "tiny: text decoder layers", ge=1)
    num_heads: int = opt(4, "tiny: attention heads", ge=1)
    num_kv_heads: int = opt(2, "tiny: key/value heads", ge=1)
    intermediate_size: int = opt(384, "tiny: MLP width", ge=1)
    vision_depth: int = opt(2, "tiny: vision transformer blocks", ge=1)
    vision_hidden_size: int = opt(64, "tiny: vision hidden size", ge=1)
    tie_embeddings: bool = opt(True, "tiny: tie input and output embeddings (as 3B does)")
    dtype: Literal["float32", "bfloat16", "float16"] = opt(
        "float32", "'float32' (CPU) or 'bfloat16' (GPU)"
    )
    attn_implementation: str = opt("sdpa", "'sdpa' or 'eager' ('flash_attention_2' on GPU)")
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory (3B/7B)")
    seed: int | None = opt(None, "seed of the tiny model's initialisation (null: seed)")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads ({self.num_kv_heads}) must divide model.num_heads "
                f"({self.num_heads})"
            )
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError("model.hidden_size must divide into heads of even size")
        return self


class LoraSettings(Section):
    r: int = opt(16, "LoRA rank", ge=1)
    alpha: float = opt(64, "LoRA alpha (scale = alpha / r)", gt=0)
    dropout: float = opt(0.1, "LoRA dropout", ge=0, lt=1)
    target_modules: list[
        Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    ] = opt(list(LORA_TARGETS), "language-model linear layers that get adapters")
    train_new_tokens: bool = opt(
        True, "train the embedding rows of mmtpp's added tokens (LoRA alone cannot learn them)"
    )


class StageConfig(Section):
    epochs: int = opt(1, "passes over the stage's training rows", ge=1)
    lr: float = opt(2e-4, "peak learning rate", gt=0)
    max_steps: int = opt(0, "stop after this many optimizer steps (0 = no limit)", ge=0)


class TrainConfig(Section):
    num_workers: int = opt(2, "Ray Train workers (one per GPU on GPU nodes)", ge=1)
    use_gpu: bool = opt(False, "one GPU per worker")
    cpus_per_worker: float = opt(1.0, "CPUs reserved per worker", gt=0)
    stage1: StageConfig = Field(default_factory=StageConfig)
    stage2: StageConfig = Field(default_factory=StageConfig)
    micro_batch: int = opt(2, "rows per worker per forward pass", ge=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", ge=1)
    warmup_steps: int = opt(10, "linear warm-up steps, then cosine decay to 10%", ge=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = opt(1.0, "gradient norm clipping (0 = off)", ge=0)
    loss_average: Literal["example", "token"] = opt(
        "example",
        "stage-2 loss: 'example' (mean over each response, then over examples: every task "
        "weighs the same) or 'token' (mean over all response tokens)",
    )
    zero_stage: Literal[0, 1, 2, 3] = opt(2, "DeepSpeed ZeRO stage: 0, 1, 2 or 3")
    offload: bool = opt(False, "ZeRO-3: offload parameters and optimizer states to CPU")
    zero3_persistence_threshold: int | None = opt(
        None,
        "ZeRO-3: parameters with fewer elements stay whole on every rank (null: DeepSpeed's "
        "1e5; 0 partitions every parameter)",
        ge=0,
    )
    shuffle_buffer: int = opt(
        4096,
        "rows each worker shuffles its training rows in, with a seed per epoch from "
        "train.seed (0 = read them in prepared order)",
        ge=0,
    )
    log_every: int = opt(10, "report loss, lr and tokens/s every N optimizer steps", ge=1)
    checkpoint_every: int = opt(0, "checkpoint every N optimizer steps (0 = each epoch only)", ge=0)
    max_failures: int = opt(
        2, "worker-group restarts from the last checkpoint (-1: no limit)", ge=-1
    )
    storage_path: str | None = opt(
        None,
        "where Ray Train keeps checkpoints: a local/NFS path or s3://, gs:// "
        "(default <output_dir>/ray_results)",
    )
    seed: int | None = opt(None, "seed of the data order (per epoch) and dropout (null: seed)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.offload and self.zero_stage != 3:
            raise ValueError("train.offload needs zero_stage=3")
        return self


class EvalConfig(DecodeOptions):
    """Evaluation: the decoding options every prediction uses, and what is scored."""

    model_config = ConfigDict(
        extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False
    )

    max_per_task: int = opt(0, "test targets per task (0 = all prepared)", ge=0)
    batch_size: int = opt(16, "prompts per generate call", ge=1)
    ppl_lengths: list[int] = opt(
        [2, 4, 8, 16, 32, 64, 128], "history lengths (events) of the perplexity curve"
    )
    ppl_targets: int = opt(48, "test targets scored per point of that curve (0 = no curve)", ge=0)
    forecast_steps: int = opt(10, "events per sampled continuation of a multi-step forecast", ge=1)
    forecast_samples: int = opt(8, "sampled continuations per forecast target", ge=1)
    forecast_targets: int = opt(
        128,
        "test targets that get a multi-step forecast (0 = none): each costs forecast_samples x "
        "forecast_steps sampled events",
        ge=0,
    )
    otd_cost: float | None = opt(
        None,
        "deletion/insertion cost C of the optimal-transport distance between forecast and "
        "true events, in the data's time unit (null: the training mean gap)",
        gt=0,
    )

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if any(n < 1 for n in self.ppl_lengths):
            raise ValueError(f"eval.ppl_lengths must be >= 1, got {self.ppl_lengths}")
        return self


class TuneSettings(Section):
    compression: dict[Literal["absolute", "relative", "typed"], list[float]] = opt(
        {"absolute": [0.0, 0.05, 0.1, 0.2, 0.5]},
        "compression rules searched: each mode with its Δ grid in its own units (absolute: "
        "the data's time unit; relative/typed: log-gap), e.g. {relative: [0.5, 1, 2]}",
    )
    ranks: list[int] = opt([4, 8, 16, 32], "LoRA ranks searched", min_length=1)
    lrs: list[float] = opt([3e-4, 1e-3, 3e-3], "learning rates searched", min_length=1)
    num_samples: int = opt(8, "trials: distinct combinations of the lists above (0 = all)", ge=0)
    metric: Literal["val_loss"] = opt("val_loss", "'val_loss' (stage-2 validation loss per epoch)")
    epochs: int = opt(4, "stage-2 epochs per trial (ASHA's max_t)", ge=1)
    grace_period: int = opt(1, "epochs before ASHA may stop a trial", ge=1)
    reduction_factor: int = opt(2, "ASHA keeps 1/reduction_factor of trials per rung", ge=2)
    max_concurrent: int = opt(1, "trials at once", ge=1)
    cpus_per_trial: float = opt(0.1, "CPU reserved by the trial's driver function", ge=0)
    with_stage1: bool = opt(False, "run stage 1 in each trial before stage 2")
    seed: int = opt(0, "seed of the search")

    @model_validator(mode="after")
    def _check(self) -> TuneSettings:
        if not self.compression or any(d < 0 for ds in self.compression.values() for d in ds):
            raise ValueError(f"tune.compression needs modes with Δ >= 0, got {self.compression}")
        if min(self.ranks) < 1 or min(self.lrs) <= 0:
            raise ValueError("tune.ranks must be >= 1 and tune.lrs > 0")
        return self


class Config(Section):
    """The whole tree. ``output_dir`` holds every artefact of a run."""

    output_dir: str = opt("runs/default", "where the run writes data, checkpoints and reports")
    seed: int = opt(0, "the run's seed: split, targets, initialisation and data order")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneSettings = Field(default_factory=TuneSettings)

    # sections whose seed came from ``seed``: written back as null, so a dumped config given
    # another seed derives them again
    _derived: set[str] = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _derive_seeds(self) -> Config:
        for name in SECTION_SEEDS:
            section = getattr(self, name)
            if section.seed is None:
                section.seed = self.seed
                self._derived.add(name)
        return self

    # --- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for name in self._derived:
            data[name]["seed"] = None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ValueError(_message(err)) from None

    def to_yaml(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def with_output_dir(self, output_dir: str | Path) -> Config:
        """The same config writing to another directory (seeds still derived)."""
        data = self.to_dict()
        data["output_dir"] = str(output_dir)
        return Config.from_dict(data)


def _message(err: ValidationError) -> str:
    """Pydantic's errors as one line each, naming the key (``data.delta: ...``)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after",)))
        if e["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in e["loc"][:-1])
            lines.append(f"unknown config key {key!r}; valid keys here: {_keys(section)}")
        elif e["type"] == "value_error":
            lines.append(str(e["ctx"]["error"]))
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def _keys(section: str) -> list[str]:
    """The keys of a section (``""``: the top level), for an unknown-key message."""
    cls: type[BaseModel] = Config
    for part in filter(None, section.split(".")):
        annotation = cls.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        cls = annotation
    return [f"{section}.{name}" if section else name for name in cls.model_fields]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a plain dict;
    ``None`` (as a Python user types it) means null."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override must look like section.key=value, got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        value = yaml.safe_load(raw)
        node[parts[-1]] = None if value in ("None", "none") else value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file ← overrides, checked."""
    data: dict[str, Any] = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping")
    data = apply_overrides(data, overrides or [])
    try:
        return Config.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path or 'config'}: {err}") from err


def describe(cls: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """One line per key with its default and help: what ``--help`` of a job prints."""
    lines = []
    for name, field in cls.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            lines.extend(describe(kind, f"{prefix}{name}."))
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {prefix}{name}={_yaml(default)}  {field.description or ''}")
    return lines


def _yaml(value: Any) -> str:
    """A value as it is typed in a ``key=value`` override (YAML: null, true, [1, 2])."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()
