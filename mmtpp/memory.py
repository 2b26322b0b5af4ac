"""Per-GPU memory plan for a training config, before launching it.

Parameters are counted exactly by building the model on the ``meta`` device (no memory, no
weights) from the checkpoint's ``config.json`` or a built-in preset of Qwen2.5-VL-3B/7B. Each
line of the plan is one term, in bytes per GPU (N parameters in all, T trainable, world size W,
d bytes per weight in the training dtype, V vocabulary rows, h hidden size, s tokens per row
= ``data.budget``, b rows per micro-batch):

- parameters ``N·d`` (``/W`` under ZeRO-3); gradients ``T·d`` (``/W`` from ZeRO-2); optimizer
  ``12·T`` (fp32 master + Adam m, v; ``/W`` from ZeRO-1). LoRA freezes the rest, so only T
  carries gradients and optimizer states (Rajbhandari et al. 2020, with LoRA in mind). With
  offload the parameters and optimizer states live on the CPU.
- trainable-token copies ``2·V·h·d``: PEFT 0.21 trains only the added rows (a ``[n, h]``
  delta plus a ``[n, h]`` copy of the originals: kilobytes), but every forward builds the
  merged ``[V, h]`` table out of place (``index_copy``) and runs ``F.linear`` / ``F.embedding``
  on it. The head's merged copy is saved for backward, and the backward of each wrapped table
  makes a dense ``[V, h]`` gradient before the added rows are picked out of it: one kept copy
  plus one dense gradient at a time. Measured on CPU in float32: 1.00 table kept after the
  forward, 2.00 at the step's peak.
- activations, after Korthikanti et al. (2022) adapted to Qwen2.5-VL: per layer and token
  (16-bit) ``11h`` for attention, ``4h`` for the two RMSNorms, ``2h + 8I`` for the SwiGLU MLP
  (I its width), ``3·(6h + I)`` for LoRA dropout's kept copies and masks on the seven adapted
  linears, plus ``5·a·s`` for the score matrix only with eager attention (SDPA and flash
  attention never store it). With gradient checkpointing each layer keeps its 16-bit input
  ``2·s·b·h`` and one layer is recomputed in full at a time. The frozen vision tower keeps
  nothing for backward (no input of it requires a gradient).
- logits ``12·s·b·V``: stage 1's model loss holds 16-bit logits, their fp32 copy and the fp32
  log-softmax in the forward (10 B per logit), then the kept log-softmax, its gradient and
  the gradient of its input in the backward (12 B; measured on CPU as peak host memory per
  logit). Stage 2 computes logits only where its loss reads them (``logits_to_keep`` = the
  response positions, ``train.next_token_mask``): a few dozen positions per row instead of
  ``s``, so stage 1 sets this term.
- working set: the gradient reduce bucket (ZeRO-1/2) or the gathered parameters (ZeRO-3:
  ``stage3_max_live_parameters`` plus the largest layer, the embedding, gathered again for
  its trainable rows).
- runtime allowance ``CUDA_CONTEXT_GIB + NCCL_GIB + FRAGMENTATION·(sum of the above)``: the
  CUDA context and library handles (~0.7 GiB by PyTorch's forum answers on the "memory floor"
  of a process; lower with CUDA's lazy module loading), NCCL's buffers (``NCCL_BUFFSIZE`` =
  4 MiB per channel and peer connection, tens of channels on NVLink, more with NVLS), and the
  caching allocator's fragmentation (blocks rounded up and split; 10% of the tensors). These
  three are allowances to check on the first GPU run, not derived figures.
- the initialisation peak ``N·d`` + context + NCCL: mmtpp builds the model on the CPU and
  ``deepspeed.initialize`` moves the whole model to every GPU before ZeRO-3 partitions it
  (without ``deepspeed.zero.Init``); under ZeRO-0/1/2 the whole model stays there anyway.

The plan's peak is the larger of the steady state (the sum of the terms, which errs high:
the recomputed layer, the logits and the dense table gradient do not all peak at once) and
the initialisation peak; it fits when it leaves 10% of the GPU free. DeepSpeed's own
estimator of model states is printed next to it for full fine-tuning.

    python -m mmtpp.memory --config jobs/configs/qwen2_5_vl_7b.yaml --preset 7b
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmtpp.config import Config, load_config
from mmtpp.engine import REDUCE_BUCKET  # what train.deepspeed_config gives DeepSpeed

GIB = 1024**3
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
}
PRESETS = {
    "3b": {
        "text_config": {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
        },
        "vision_config": {**_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "7b": {
        "text_config": {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        "vision_config": {**_VISION, "out_hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MAX_LIVE_PARAMETERS = 1_000_000_000  # elements: DeepSpeed's stage3_max_live_parameters
NEW_ROWS = 9 + 256 + 3 + 64  # structure, bytes, tasks, up to 64 event types
LOGIT_BYTES = 12  # per logit at stage 1's loss peak (see the module docstring)
CUDA_CONTEXT_GIB = 0.75  # CUDA context, cuBLAS/cuDNN handles and workspaces
NCCL_GIB = 1.0  # NCCL's communicator buffers
FRAGMENTATION = 0.10  # caching-allocator slack, as a fraction of the planned tensors
HEADROOM = 0.10  # fraction of the GPU a plan must leave free to fit


@dataclass
class MemoryPlan:
    """One GPU's memory, term by term (GiB); ``total_gib`` is what must fit."""

    name: str
    total_params: int
    trainable_params: int
    world_size: int
    zero_stage: int
    gradient_checkpointing: bool
    params_gib: float
    grads_gib: float
    optimizer_gib: float
    token_copies_gib: float  # PEFT trainable tokens: merged [V, h] copy + dense gradient
    activations_gib: float  # decoder layers
    logits_gib: float
    working_gib: float  # reduce bucket (ZeRO-1/2) or gathered parameters (ZeRO-3)
    runtime_gib: float  # CUDA context + NCCL + allocator fragmentation
    steady_gib: float
    init_gib: float  # the whole model on the GPU before ZeRO partitions it
    total_gib: float  # the larger of the two: the peak the GPU must hold
    deepspeed_full_finetune_gib: float
    gpu_memory_gib: float

    @property
    def fits(self) -> bool:
        return self.total_gib <= (1 - HEADROOM) * self.gpu_memory_gib


def _model_config(config: Config, preset: str | None) -> Qwen2_5_VLConfig:
    if preset:
        return Qwen2_5_VLConfig(**PRESETS[preset])
    path = Path(config.model.base) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --preset 3b|7b or a local checkpoint")
    return Qwen2_5_VLConfig(**json.loads(path.read_text()))


def count_parameters(model_config: Qwen2_5_VLConfig, config: Config) -> tuple[int, int, int]:
    """(total, trainable with LoRA + new token rows, largest layer) — on the meta device."""
    from mmtpp.model import lora_config

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(model_config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    hidden = model_config.text_config.hidden_size
    lora = config.lora
    lc = lora_config(lora, [], bool(model_config.tie_word_embeddings))
    trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and _matches(lc.target_modules, name):
            trainable += lora.r * (module.in_features + module.out_features)
    if lora.train_new_tokens:
        trainable += NEW_ROWS * hidden * (1 if model_config.tie_word_embeddings else 2)
    return total, trainable, largest


def _matches(pattern: str, name: str) -> bool:
    import re

    return re.fullmatch(pattern, name) is not None


def plan(config: Config, preset: str | None, gpu_memory_gib: float, world: int) -> MemoryPlan:
    """The per-GPU memory plan of ``config`` on ``world`` GPUs of ``gpu_memory_gib`` each."""
    mc = _model_config(config, preset)
    total, trainable, largest = count_parameters(mc, config)
    t = config.train
    d = BYTES[config.model.dtype]
    z = t.zero_stage
    params = total * d / (world if z == 3 else 1)
    grads = trainable * d / (world if z >= 2 else 1)
    optimizer = trainable * 12 / (world if z >= 1 else 1)  # fp32 master + Adam m, v
    if t.offload:
        params, optimizer = 0.0, 0.0  # on the CPU; the GPU holds the gathered working set
    text = mc.text_config
    s, b, h, a = config.data.budget, t.micro_batch, text.hidden_size, text.num_attention_heads
    vocab, width = text.vocab_size, text.intermediate_size
    token_copies = 2 * vocab * h * d if config.lora.train_new_tokens else 0.0
    per_token = 11 * h + 4 * h + (2 * h + 8 * width) + 3 * (6 * h + width)
    if config.model.attn_implementation == "eager":
        per_token += 5 * a * s
    full_layer = s * b * per_token
    layers = text.num_hidden_layers
    if config.model.gradient_checkpointing:
        activations = 2 * s * b * h * layers + full_layer
    else:
        activations = full_layer * layers
    logits = LOGIT_BYTES * s * b * vocab
    if z == 3 or t.offload:
        working = (min(MAX_LIVE_PARAMETERS, total) + 2 * largest) * d
    elif z >= 1:
        working = min(REDUCE_BUCKET, trainable) * d * (2 if z == 1 else 1)
    else:
        working = 0.0
    tensors = params + grads + optimizer + token_copies + activations + logits + working
    fixed = (CUDA_CONTEXT_GIB + NCCL_GIB) * GIB
    runtime = fixed + FRAGMENTATION * tensors
    steady = tensors + runtime
    init = total * d + fixed  # deepspeed.initialize moves the whole model to the GPU first
    return MemoryPlan(
        name=preset or config.model.base,
        total_params=total,
        trainable_params=trainable,
        world_size=world,
        zero_stage=z,
        gradient_checkpointing=config.model.gradient_checkpointing,
        params_gib=params / GIB,
        grads_gib=grads / GIB,
        optimizer_gib=optimizer / GIB,
        token_copies_gib=token_copies / GIB,
        activations_gib=activations / GIB,
        logits_gib=logits / GIB,
        working_gib=working / GIB,
        runtime_gib=runtime / GIB,
        steady_gib=steady / GIB,
        init_gib=init / GIB,
        total_gib=max(steady, init) / GIB,
        deepspeed_full_finetune_gib=_deepspeed_full(total, largest, z, world) / GIB,
        gpu_memory_gib=gpu_memory_gib,
    )


def _deepspeed_full(total: int, largest: int, stage: int, world: int) -> float:
    """DeepSpeed's estimator of model-state memory per GPU for full fine-tuning."""
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, world, 1, False, False)
        return gpu
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    _, gpu = estimate_zero2_model_states_mem_needs(total, world, 1, cpu_offload=False)
    return gpu


def _setting(p: MemoryPlan) -> str:
    ckpt = "checkpointing" if p.gradient_checkpointing else "no checkpointing"
    return f"{p.world_size} GPUs, ZeRO-{p.zero_stage}, {ckpt}"


def format_plan(p: MemoryPlan) -> str:
    """The plan as aligned text, one term per line."""
    verdict = "fits" if p.fits else "does NOT fit"
    binding = "initialisation" if p.init_gib > p.steady_gib else "steady state"
    rows = [
        ("parameters", p.params_gib, "frozen weights in the training dtype"),
        ("gradients", p.grads_gib, "trainable only"),
        ("optimizer", p.optimizer_gib, "fp32 master + Adam moments, trainable only"),
        ("token copies", p.token_copies_gib, "PEFT merged [V, h] copy + dense gradient"),
        ("activations", p.activations_gib, "decoder layers"),
        ("logits", p.logits_gib, "fp32 upcast + log-softmax at the loss"),
        ("working set", p.working_gib, "reduce bucket / gathered parameters"),
        ("runtime", p.runtime_gib, "CUDA context + NCCL + fragmentation allowance"),
        ("steady state", p.steady_gib, "sum of the above"),
        ("initialisation", p.init_gib, "whole model moved to the GPU by deepspeed.initialize"),
    ]
    return "\n".join(
        [
            f"{p.name}: {p.total_params / 1e9:.2f}B parameters, {p.trainable_params / 1e6:.1f}M "
            f"trainable (LoRA + new token rows); {_setting(p)}",
            *(f"  {label:<15}{gib:8.2f} GiB  {note}" for label, gib, note in rows),
            f"  {'peak':<15}{p.total_gib:8.2f} GiB per GPU ({binding}) -> {verdict} in "
            f"{p.gpu_memory_gib:.0f} GiB ({HEADROOM:.0%} headroom)",
            f"  (DeepSpeed estimate for full fine-tuning model states: "
            f"{p.deepspeed_full_finetune_gib:.2f} GiB per GPU)",
        ]
    )


MARKDOWN_HEADER = (
    "| model | setting | params | trainable | token copies | activations | logits | "
    "working set | runtime | steady | init | peak per GPU |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown_row(p: MemoryPlan) -> str:
    """The plan as one row under ``MARKDOWN_HEADER`` (the README's table)."""
    terms = (
        p.token_copies_gib,
        p.activations_gib,
        p.logits_gib,
        p.working_gib,
        p.runtime_gib,
        p.steady_gib,
        p.init_gib,
    )
    sizes = [f"{p.total_params / 1e9:.2f}B", f"{p.trainable_params / 1e6:.1f}M"]
    cells = [p.name, _setting(p), *sizes, *(f"{g:.1f} GiB" for g in terms)]
    cells.append(f"**{p.total_gib:.1f} GiB** of {p.gpu_memory_gib:.0f}")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="training config YAML")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="use a built-in model size")
    parser.add_argument("--gpu-memory", type=float, default=80, help="GiB per GPU (default 80)")
    parser.add_argument("--gpus", type=int, help="GPUs in total (default: train.num_workers)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--markdown", action="store_true", help="a table row for the README")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        p = plan(config, args.preset, args.gpu_memory, args.gpus or config.train.num_workers)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(1, f"error: {err}\n")
    if args.json:
        print(json.dumps({**asdict(p), "fits": p.fits}, indent=2))
    elif args.markdown:
        print(f"{MARKDOWN_HEADER}\n{markdown_row(p)}")
    else:
        print(format_plan(p))


if __name__ == "__main__":
    main()
