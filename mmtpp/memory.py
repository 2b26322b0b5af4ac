"""Per-GPU memory plan for a training config, before launching it.

Parameters are counted exactly by building the model on the ``meta`` device (no memory, no
weights) from the checkpoint's ``config.json`` or a built-in preset of Qwen2.5-VL-3B/7B.
Model states follow ZeRO's partitioning (Rajbhandari et al. 2020) with LoRA in mind: frozen
weights in the training dtype, and only the trainable parameters (adapters + new token rows)
carry fp32 master weights, gradients and Adam moments. DeepSpeed's own estimator is printed
next to it for full fine-tuning. Activations follow Korthikanti et al. (2022), adapted to
Qwen2.5-VL: per layer and token (16-bit) ``11h`` for attention, ``4h`` for the two RMSNorms,
``2h + 8I`` for the SwiGLU MLP (I its width), ``3·(6h + I)`` for LoRA dropout's kept copies
and masks on the seven adapted linears, plus ``5·a·s`` for the score matrix only with eager
attention (SDPA and flash attention never store it). With gradient checkpointing each layer
keeps its 16-bit input and one layer is recomputed in full at a time. The logits cost
``12·s·b·V`` bytes (16-bit logits, their fp32 upcast in the loss, and the gradients; 8.3 of
those bytes measured kept for backward). The working set adds the gradient reduce bucket
(ZeRO-1/2) or the gathered parameters (ZeRO-3: ``stage3_max_live_parameters`` plus the
largest layer, the embedding, gathered again for its trainable new rows).

    python -m mmtpp.memory --config jobs/configs/qwen2_5_vl_7b.yaml --preset 7b --gpu-memory 80
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mmtpp.config import Config, load_config
from mmtpp.train import REDUCE_BUCKET  # what train.deepspeed_config gives DeepSpeed

GIB = 1024**3
_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
           "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112}  # fmt: skip
PRESETS = {
    "3b": {
        "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
                        "num_hidden_layers": 36, "num_attention_heads": 16,
                        "num_key_value_heads": 2},
        "vision_config": {**_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "7b": {
        "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                        "num_hidden_layers": 28, "num_attention_heads": 28,
                        "num_key_value_heads": 4},
        "vision_config": {**_VISION, "out_hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}  # fmt: skip
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MAX_LIVE_PARAMETERS = 1_000_000_000  # elements: DeepSpeed's stage3_max_live_parameters


@dataclass
class MemoryPlan:
    name: str
    total_params: int
    trainable_params: int
    world_size: int
    zero_stage: int
    params_gib: float
    grads_gib: float
    optimizer_gib: float
    activations_gib: float
    working_gib: float  # reduce bucket (ZeRO-1/2) or gathered parameters (ZeRO-3)
    total_gib: float
    deepspeed_full_finetune_gib: float
    gpu_memory_gib: float

    @property
    def fits(self) -> bool:
        return self.total_gib <= 0.9 * self.gpu_memory_gib


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
    new_rows = 9 + 256 + 3 + 64  # structure, bytes, tasks, up to 64 event types
    trainable += new_rows * hidden * (1 if model_config.tie_word_embeddings else 2)
    return total, trainable, largest


def _matches(pattern: str, name: str) -> bool:
    import re

    return re.fullmatch(pattern, name) is not None


def plan(config: Config, preset: str | None, gpu_memory_gib: float, world: int) -> MemoryPlan:
    mc = _model_config(config, preset)
    total, trainable, largest = count_parameters(mc, config)
    t = config.train
    dtype_bytes = BYTES[config.model.dtype]
    z = t.zero_stage
    params = total * dtype_bytes / (world if z == 3 else 1)
    grads = trainable * dtype_bytes / (world if z >= 2 else 1)
    optimizer = trainable * 12 / (world if z >= 1 else 1)  # fp32 master + Adam m, v
    if t.offload:
        params, optimizer = 0.0, 0.0  # on the CPU; the GPU holds the gathered working set
    text = mc.text_config
    s, b, h, a = config.data.budget, t.micro_batch, text.hidden_size, text.num_attention_heads
    width = text.intermediate_size
    per_token = 11 * h + 4 * h + (2 * h + 8 * width) + 3 * (6 * h + width)
    if config.model.attn_implementation == "eager":
        per_token += 5 * a * s
    full_layer = s * b * per_token
    layers = text.num_hidden_layers
    if config.model.gradient_checkpointing:
        activations = 2 * s * b * h * layers + full_layer
    else:
        activations = full_layer * layers
    activations += 12 * s * b * text.vocab_size  # logits
    if z == 3 or t.offload:
        working = (min(MAX_LIVE_PARAMETERS, total) + 2 * largest) * dtype_bytes
    elif z >= 1:
        working = min(REDUCE_BUCKET, trainable) * dtype_bytes * (2 if z == 1 else 1)
    else:
        working = 0.0
    ds_full = _deepspeed_full(total, largest, z, world)
    total_bytes = params + grads + optimizer + activations + working
    return MemoryPlan(
        name=preset or config.model.base,
        total_params=total,
        trainable_params=trainable,
        world_size=world,
        zero_stage=z,
        params_gib=params / GIB,
        grads_gib=grads / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=activations / GIB,
        working_gib=working / GIB,
        total_gib=total_bytes / GIB,
        deepspeed_full_finetune_gib=ds_full / GIB,
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


def format_plan(p: MemoryPlan) -> str:
    verdict = "fits" if p.fits else "does NOT fit"
    return "\n".join(
        [
            f"{p.name}: {p.total_params / 1e9:.2f}B parameters, {p.trainable_params / 1e6:.1f}M "
            f"trainable (LoRA + new token rows); ZeRO-{p.zero_stage} over {p.world_size} GPUs",
            f"  parameters   {p.params_gib:8.2f} GiB",
            f"  gradients    {p.grads_gib:8.2f} GiB",
            f"  optimizer    {p.optimizer_gib:8.2f} GiB",
            f"  activations  {p.activations_gib:8.2f} GiB",
            f"  working set  {p.working_gib:8.2f} GiB  (reduce bucket / gathered parameters)",
            f"  total        {p.total_gib:8.2f} GiB per GPU -> {verdict} in "
            f"{p.gpu_memory_gib:.0f} GiB (10% headroom)",
            f"  (DeepSpeed estimate for full fine-tuning model states: "
            f"{p.deepspeed_full_finetune_gib:.2f} GiB per GPU)",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="training config YAML")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="use a built-in model size")
    parser.add_argument("--gpu-memory", type=float, default=80, help="GiB per GPU (default 80)")
    parser.add_argument("--gpus", type=int, help="GPUs in total (default: train.num_workers)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        p = plan(config, args.preset, args.gpu_memory, args.gpus or config.train.num_workers)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(1, f"error: {err}\n")
    print(json.dumps({**asdict(p), "fits": p.fits}, indent=2) if args.json else format_plan(p))


if __name__ == "__main__":
    main()
