"""One typed config tree for every job, loaded from YAML with dotted ``key=value`` overrides.

Sections are dataclasses whose fields carry a help text and whose checks sit in
``__post_init__``. Unknown keys are errors (a typo never passes silently). The tree crosses
the Ray boundary as a plain dict (``to_dict``) and is rebuilt typed on the worker
(``Config.from_dict``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmtpp.compression import DIRECTIONS
from mmtpp.tokens import TASKS


def _at_least(section: Any, prefix: str, minimum: float, *names: str) -> None:
    """Raise naming the key when one of ``names`` is below ``minimum``."""
    for name in names:
        value = getattr(section, name)
        for v in value if isinstance(value, list) else [value]:
            if v < minimum:
                raise ValueError(f"{prefix}.{name} must be >= {minimum}, got {value}")


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class DataConfig:
    source: str = _help(
        "dataset directory (an mmtpp dataset), 'synthetic' to generate the default "
        "synthetic dataset into <output_dir>/data, or 'nycflights' to import the NYC flights",
        "synthetic",
    )
    synth_sequences: int = _help(
        "sequences to generate when source is 'synthetic'; aircraft to import when it is "
        "'nycflights' (0 = all)",
        200,
    )
    synth_seed: int = _help("seed of the synthetic generator", 0)
    delta: float = _help("compression threshold Δ on consecutive gaps (0 disables)", 0.2)
    stage1_direction: str = _help("scan direction for stage-1 documents", "forward")
    stage2_direction: str = _help("scan direction for stage-2 prompts", "backward")
    budget: int = _help("token budget of a stage-1 document / a stage-2 example", 4096)
    split: list[float] = _help("train/val/test fractions by sequence id", [0.8, 0.1, 0.1])
    targets_per_sequence: int = _help(
        "stage-2 targets sampled per sequence and task in train/val (0 = every event); the "
        "test split always uses eval_targets_per_sequence",
        16,
    )
    eval_targets_per_sequence: int = _help("stage-2 targets per test sequence (0 = all)", 32)
    min_history: int = _help("events of history before the first stage-2 target", 8)
    tasks: list[str] = _help("stage-2 tasks", list(TASKS))
    validation: str = _help("'strict' (fail on the first bad sequence) or 'quarantine'", "strict")
    tokenizer: str | None = _help(
        "tokenizer directory; null trains the tiny BPE on the training text", None
    )
    vocab_size: int = _help("BPE vocabulary size when training the tokenizer", 2048)
    tokenizer_texts: int = _help(
        "texts the BPE is trained on: an evenly spaced sample of the training split (0 = all)",
        20000,
    )
    image_min_pixels: int = _help("Qwen2.5-VL min_pixels for event images", 56 * 56)
    image_max_pixels: int = _help("Qwen2.5-VL max_pixels for event images", 112 * 112)
    seed: int = _help("seed of the split and of target sampling", 0)

    def __post_init__(self) -> None:
        if self.delta < 0:
            raise ValueError(f"data.delta must be >= 0, got {self.delta}")
        for name in ("stage1_direction", "stage2_direction"):
            if getattr(self, name) not in DIRECTIONS:
                raise ValueError(f"data.{name} must be one of {DIRECTIONS}")
        if (
            len(self.split) != 3
            or any(f < 0 for f in self.split)
            or abs(sum(self.split) - 1) > 1e-6
        ):
            raise ValueError(
                f"data.split must be 3 non-negative fractions summing to 1, got {self.split}"
            )
        if self.budget < 64:
            raise ValueError(f"data.budget must be >= 64 tokens, got {self.budget}")
        if unknown := set(self.tasks) - set(TASKS):
            raise ValueError(f"data.tasks: unknown {sorted(unknown)}; choose from {TASKS}")
        if self.validation not in ("strict", "quarantine"):
            raise ValueError("data.validation must be 'strict' or 'quarantine'")
        _at_least(self, "data", 1, "min_history", "vocab_size", "image_min_pixels")
        _at_least(self, "data", 0, "synth_sequences", "targets_per_sequence",
                  "eval_targets_per_sequence", "tokenizer_texts")  # fmt: skip
        if self.image_max_pixels < self.image_min_pixels:
            raise ValueError("data.image_max_pixels must be >= data.image_min_pixels")


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    base: str = _help(
        "'tiny' (a random Qwen2.5-VL-architecture model sized below) or a local directory "
        "holding a Qwen2.5-VL checkpoint (e.g. Qwen2.5-VL-3B-Instruct); never downloaded",
        "tiny",
    )
    hidden_size: int = _help("tiny: text hidden size", 128)
    num_layers: int = _help("tiny: text decoder layers", 2)
    num_heads: int = _help("tiny: attention heads", 4)
    num_kv_heads: int = _help("tiny: key/value heads", 2)
    intermediate_size: int = _help("tiny: MLP width", 384)
    vision_depth: int = _help("tiny: vision transformer blocks", 2)
    vision_hidden_size: int = _help("tiny: vision hidden size", 64)
    tie_embeddings: bool = _help("tiny: tie input and output embeddings (as 3B does)", True)
    dtype: str = _help("'float32' (CPU) or 'bfloat16' (GPU)", "float32")
    attn_implementation: str = _help("'sdpa' or 'eager' ('flash_attention_2' on GPU)", "sdpa")
    gradient_checkpointing: bool = _help("recompute activations to save memory (3B/7B)", False)
    seed: int = _help("seed of the tiny model's initialisation and of LoRA", 0)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype}")
        _at_least(self, "model", 1, "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                  "intermediate_size", "vision_depth", "vision_hidden_size")  # fmt: skip
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads ({self.num_kv_heads}) must divide model.num_heads "
                f"({self.num_heads})"
            )
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or head_dim % 2:
            raise ValueError("model.hidden_size must divide into heads of even size")


@dataclass
class LoraSettings:
    r: int = _help("LoRA rank", 16)
    alpha: int = _help("LoRA alpha (scale = alpha / r)", 64)
    dropout: float = _help("LoRA dropout", 0.1)
    target_modules: list[str] = _help(
        "language-model linear layers that get adapters", LORA_TARGETS
    )
    train_new_tokens: bool = _help(
        "train the embedding rows of mmtpp's added tokens (LoRA alone cannot learn them)", True
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("lora: need r >= 1, alpha > 0, 0 <= dropout < 1")
        if unknown := set(self.target_modules) - set(LORA_TARGETS):
            raise ValueError(f"lora.target_modules: unknown {sorted(unknown)}")


@dataclass
class StageConfig:
    epochs: int = _help("passes over the stage's training rows", 1)
    lr: float = _help("peak learning rate", 2e-4)
    max_steps: int = _help("stop after this many optimizer steps (0 = no limit)", 0)

    def check(self, prefix: str) -> None:
        _at_least(self, prefix, 1, "epochs")
        _at_least(self, prefix, 0, "max_steps")
        if self.lr <= 0:
            raise ValueError(f"{prefix}.lr must be > 0, got {self.lr}")


@dataclass
class TrainConfig:
    num_workers: int = _help("Ray Train workers (one per GPU on GPU nodes)", 2)
    use_gpu: bool = _help("one GPU per worker", False)
    cpus_per_worker: float = _help("CPUs reserved per worker", 1.0)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    micro_batch: int = _help("rows per worker per forward pass", 2)
    grad_accum: int = _help("micro-batches per optimizer step", 1)
    warmup_steps: int = _help("linear warm-up steps, then cosine decay to 10%", 10)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    grad_clip: float = _help("gradient norm clipping (0 = off)", 1.0)
    loss_average: str = _help(
        "stage-2 loss: 'example' (mean over each response, then over examples: every task "
        "weighs the same) or 'token' (mean over all response tokens)",
        "example",
    )
    zero_stage: int = _help("DeepSpeed ZeRO stage: 0, 1, 2 or 3", 2)
    offload: bool = _help("ZeRO-3: offload parameters and optimizer states to CPU", False)
    log_every: int = _help("report loss, lr and tokens/s every N optimizer steps", 10)
    checkpoint_every: int = _help("checkpoint every N optimizer steps (0 = each epoch only)", 0)
    max_failures: int = _help("worker-group restarts from the last checkpoint", 2)
    storage_path: str | None = _help(
        "where Ray Train keeps checkpoints: a local/NFS path or s3://, gs:// "
        "(default <output_dir>/ray_results)",
        None,
    )
    fail_at_step: int = _help(
        "fault injection for tests: raise once at this optimizer step (0 = never)", 0
    )
    seed: int = _help("seed of the data order and dropout", 0)

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0..3, got {self.zero_stage}")
        if self.num_workers < 1 or self.micro_batch < 1 or self.grad_accum < 1:
            raise ValueError("train: num_workers, micro_batch and grad_accum must be >= 1")
        self.stage1.check("train.stage1")
        self.stage2.check("train.stage2")
        _at_least(self, "train", 1, "log_every")
        _at_least(self, "train", 0, "warmup_steps", "weight_decay", "grad_clip",
                  "checkpoint_every", "fail_at_step")  # fmt: skip
        _at_least(self, "train", -1, "max_failures")  # -1: restart without limit
        if self.cpus_per_worker <= 0:
            raise ValueError(f"train.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.offload and self.zero_stage != 3:
            raise ValueError("train.offload needs zero_stage=3")
        if self.loss_average not in ("example", "token"):
            raise ValueError(
                f"train.loss_average must be example or token, got {self.loss_average!r}"
            )


@dataclass
class EvalConfig:
    time_mode: str = _help(
        "next gap: 'greedy', 'expected' (the model's conditional mean from its byte "
        "probabilities), or 'mean'/'median' of sampled byte tokens",
        "mean",
    )
    samples: int = _help("samples for time_mode mean/median", 8)
    max_text_tokens: int = _help("longest generated text", 48)
    max_per_task: int = _help("test targets per task (0 = all prepared)", 0)
    batch_size: int = _help("prompts per generate call", 16)
    compress: bool = _help(
        "compress the history of prompts (false: the same targets, histories uncompressed)", True
    )
    ppl_lengths: list[int] = _help(
        "history lengths (events) of the perplexity curve", [2, 4, 8, 16, 32, 64, 128]
    )
    ppl_targets: int = _help("test targets scored per point of that curve (0 = no curve)", 48)

    def __post_init__(self) -> None:
        if self.time_mode not in ("greedy", "expected", "mean", "median"):
            raise ValueError("eval.time_mode must be greedy, expected, mean or median")
        _at_least(self, "eval", 1, "samples", "max_text_tokens", "batch_size", "ppl_lengths")
        _at_least(self, "eval", 0, "max_per_task", "ppl_targets")


@dataclass
class TuneSettings:
    deltas: list[float] = _help("Δ values searched", [0.0, 0.05, 0.1, 0.2, 0.5])
    ranks: list[int] = _help("LoRA ranks searched", [4, 8, 16, 32])
    lrs: list[float] = _help("learning rates searched", [3e-4, 1e-3, 3e-3])
    num_samples: int = _help("trials: distinct combinations of the lists above (0 = all)", 8)
    metric: str = _help("'val_loss' (stage-2 validation loss per epoch)", "val_loss")
    epochs: int = _help("stage-2 epochs per trial (ASHA's max_t)", 4)
    grace_period: int = _help("epochs before ASHA may stop a trial", 1)
    reduction_factor: int = _help("ASHA keeps 1/reduction_factor of trials per rung", 2)
    max_concurrent: int = _help("trials at once", 1)
    cpus_per_trial: float = _help("CPU reserved by the trial's driver function", 0.1)
    with_stage1: bool = _help("run stage 1 in each trial before stage 2", False)
    seed: int = _help("seed of the search", 0)

    def __post_init__(self) -> None:
        if self.metric != "val_loss":
            raise ValueError("tune.metric: only 'val_loss' is reported per epoch")
        if min(self.deltas, default=0) < 0 or not self.ranks or not self.lrs:
            raise ValueError("tune: deltas >= 0 and non-empty ranks and lrs")
        _at_least(self, "tune", 1, "ranks", "epochs", "grace_period", "max_concurrent")
        _at_least(self, "tune", 2, "reduction_factor")
        _at_least(self, "tune", 0, "num_samples", "cpus_per_trial")
        if min(self.lrs) <= 0:
            raise ValueError(f"tune.lrs must be > 0, got {self.lrs}")


@dataclass
class Config:
    """The whole tree. ``output_dir`` holds every artefact of a run."""

    output_dir: str = _help("where the run writes data, checkpoints and reports", "runs/default")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)

    # --- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return _build(cls, data, "")

    def to_yaml(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; "
            f"valid keys here: {sorted(prefix + n for n in names)}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or value in ("None", "none")):
            return None  # YAML's null; "None" is what a Python user types
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[]") for v in value]
    if hint is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)  # YAML 1.1 reads "2e-3" as a string
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is dict and isinstance(value, dict):
        return value
    raise ValueError(f"config key {key!r} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a plain dict."""
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
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file ← overrides, checked."""
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping")
    data = apply_overrides(data, overrides or [])
    try:
        return Config.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path or 'config'}: {err}") from err


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per key with its default and help: what ``--help`` of a job prints."""
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe(hints[f.name], f"{prefix}{f.name}."))
        else:
            value = _yaml(getattr(defaults, f.name))
            lines.append(f"  {prefix}{f.name}={value}  {f.metadata.get('help', '')}")
    return lines


def _yaml(value: Any) -> str:
    """A value as it is typed in a ``key=value`` override (YAML: null, true, [1, 2])."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()
