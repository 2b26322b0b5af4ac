"""The DeepSpeed engine as mmtpp configures and steps it (design §6).

DeepSpeed's config is generated from ``train.*`` and ``model.*`` (never kept in a second file
that drifts); ``backward_and_step`` reports whether a micro-batch completed an optimizer step;
``lr_lambda`` is the warm-up + cosine schedule.
"""

from __future__ import annotations

import math
from typing import Any

from mmtpp.config import ModelConfig, TrainConfig

REDUCE_BUCKET = 50_000_000  # elements of DeepSpeed's gradient reduce bucket (ZeRO-1/2)


def deepspeed_config(train: TrainConfig, model: ModelConfig, world_size: int) -> dict[str, Any]:
    """DeepSpeed's config, generated from ours (never kept in a second file)."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage in (1, 2):
        # LoRA trains a few tens of millions of parameters: DeepSpeed's 5e8-element default
        # bucket would hold ~1 GiB for nothing (mmtpp.memory counts this one)
        zero["reduce_bucket_size"] = REDUCE_BUCKET
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if train.zero3_persistence_threshold is not None:
            # parameters below this size stay whole on every rank (DeepSpeed: 1e5 elements);
            # 0 partitions all of them, as a real model's large weights are
            zero["stage3_param_persistence_threshold"] = train.zero3_persistence_threshold
    if train.offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch * train.grad_accum * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": model.dtype == "bfloat16"},
        "fp16": {"enabled": model.dtype == "float16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.offload:
        # our torch AdamW steps the offloaded states on the CPU: with LoRA they are a few
        # million parameters, where DeepSpeedCPUAdam's compiled op would gain little
        cfg["zero_force_ds_cpu_optimizer"] = False
    if train.grad_clip > 0:
        cfg["gradient_clipping"] = train.grad_clip
    return cfg


def backward_and_step(engine, loss) -> bool:
    """Backward and step one micro-batch; True when it completed an optimizer step.

    The boundary is read before ``engine.step()``: DeepSpeed advances its micro-batch count
    in ``step()``, after which ``is_gradient_accumulation_boundary()`` speaks of the next
    micro-batch (with ``grad_accum`` > 1 a step would be counted one micro-batch early).
    """
    boundary = engine.is_gradient_accumulation_boundary()
    engine.backward(loss)
    engine.step()
    return boundary


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak, then cosine decay to 10% of it at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
