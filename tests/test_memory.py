from pathlib import Path

import pytest

from mmtpp.config import load_config
from mmtpp.memory import (
    CUDA_CONTEXT_GIB,
    FRAGMENTATION,
    GIB,
    HEADROOM,
    MARKDOWN_HEADER,
    NCCL_GIB,
    markdown_row,
    plan,
)

ROOT = Path(__file__).parent.parent
BF16 = ["model.dtype=bfloat16"]
# the presets keep a quarter of the GPU free: the 10% headroom of `fits` plus 15% because no
# term of the plan has been measured on a GPU yet (docs/memory.md)
PRESET_SHARE = 0.75


@pytest.mark.parametrize(("preset", "billions"), [("3b", 3.75), ("7b", 8.29)])
def test_presets_count_the_published_sizes(preset, billions):
    p = plan(load_config(), preset, gpu_memory_gib=80, world=8)
    assert p.total_params / 1e9 == pytest.approx(billions, abs=0.01)
    assert 0 < p.trainable_params < 0.02 * p.total_params


def test_zero3_partitions_parameters_and_long_context_costs_activations():
    z2 = plan(load_config(overrides=BF16), "7b", 80, 8)
    z3 = plan(load_config(overrides=[*BF16, "train.zero_stage=3"]), "7b", 80, 8)
    assert z3.params_gib == pytest.approx(z2.params_gib / 8)
    ckpt = plan(load_config(overrides=["model.gradient_checkpointing=true"]), "7b", 80, 8)
    assert ckpt.activations_gib < z2.activations_gib
    tiny_gpu = plan(load_config(overrides=BF16), "7b", 8, 1)
    assert not tiny_gpu.fits


def test_activation_terms_follow_the_attention_and_the_logits():
    """The s² score term only with eager attention; layer activations and logits scale with
    the tokens; ZeRO-3's gathered working set and ZeRO-2's reduce bucket are counted."""
    base = [*BF16, "model.gradient_checkpointing=false", "train.micro_batch=1"]
    sdpa = plan(load_config(overrides=base), "3b", 80, 8)
    eager = plan(load_config(overrides=[*base, "model.attn_implementation=eager"]), "3b", 80, 8)
    s, a, layers = 4096, 16, 36
    assert (eager.activations_gib - sdpa.activations_gib) * GIB == pytest.approx(
        5 * a * s * s * layers
    )
    short = plan(load_config(overrides=[*base, "data.budget=1024"]), "3b", 80, 8)
    assert short.activations_gib == pytest.approx(sdpa.activations_gib / 4)
    assert short.logits_gib == pytest.approx(sdpa.logits_gib / 4)
    z3 = plan(load_config(overrides=[*base, "train.zero_stage=3"]), "3b", 80, 8)
    assert z3.working_gib > 1.0 and 0 < sdpa.working_gib < 0.1


def test_logits_cost_12_bytes_per_position_of_a_stage_1_row_whatever_the_stage_2_loss():
    """Stage 1's model loss peaks at 12 B per logit over the whole row; stage 2 computes
    logits at its response positions only, so the stage-2 average does not change the plan."""
    s, vocab, one = 4096, 152064, [*BF16, "train.micro_batch=1"]
    example = plan(load_config(overrides=one), "7b", 80, 8)
    token = plan(load_config(overrides=[*one, "train.loss_average=token"]), "7b", 80, 8)
    assert example.logits_gib * GIB == pytest.approx(12 * s * vocab) == token.logits_gib * GIB


def test_peft_trainable_tokens_cost_a_merged_table_and_its_dense_gradient():
    """PEFT builds the whole [V, h] table in every forward (the head's copy kept for backward)
    and backpropagates a dense [V, h] gradient: two tables, whatever the rows trained."""
    on = plan(load_config(overrides=BF16), "7b", 80, 8)
    off = plan(load_config(overrides=[*BF16, "lora.train_new_tokens=false"]), "7b", 80, 8)
    assert on.token_copies_gib * GIB == pytest.approx(2 * 152064 * 3584 * 2)
    assert off.token_copies_gib == 0
    assert on.trainable_params > off.trainable_params  # the added rows train
    assert on.steady_gib - off.steady_gib > on.token_copies_gib  # plus their fragmentation


def test_runtime_allowance_covers_context_nccl_and_fragmentation():
    p = plan(load_config(overrides=BF16), "3b", 80, 8)
    tensors = (
        p.params_gib
        + p.grads_gib
        + p.optimizer_gib
        + p.token_copies_gib
        + p.activations_gib
        + p.logits_gib
        + p.working_gib
    )
    assert p.runtime_gib == pytest.approx(CUDA_CONTEXT_GIB + NCCL_GIB + FRAGMENTATION * tensors)
    assert p.steady_gib == pytest.approx(tensors + p.runtime_gib)
    assert all(
        term > 0
        for term in (p.token_copies_gib, p.logits_gib, p.runtime_gib, p.init_gib, p.steady_gib)
    )


def test_the_initialisation_peak_holds_the_whole_model_and_can_decide_the_fit():
    """Without zero.Init, deepspeed.initialize moves the whole bf16 model to every GPU before
    ZeRO-3 partitions it: on a small GPU the start-up peak, not the steady state, fails."""
    small = [*BF16, "train.zero_stage=3", "model.gradient_checkpointing=true", "data.budget=512"]
    p = plan(load_config(overrides=small), "7b", 16, 16)
    assert p.init_gib == pytest.approx(p.total_params * 2 / GIB + CUDA_CONTEXT_GIB + NCCL_GIB)
    assert p.steady_gib < (1 - HEADROOM) * 16 < p.init_gib
    assert p.total_gib == p.init_gib and not p.fits


@pytest.mark.parametrize(
    ("preset", "zero_stage", "gpus", "checkpointing"), [("3b", 2, 8, False), ("7b", 2, 8, True)]
)
def test_shipped_gpu_presets_fit_80gb_with_the_stated_headroom(
    preset, zero_stage, gpus, checkpointing
):
    cfg = load_config(ROOT / f"jobs/configs/qwen2_5_vl_{preset}.yaml")
    t = cfg.train
    decided = (t.zero_stage, t.num_workers, cfg.model.gradient_checkpointing, t.offload)
    assert decided == (zero_stage, gpus, checkpointing, False)
    assert gpus % 8 == 0  # whole 8-GPU nodes of cluster/
    assert t.num_workers * t.micro_batch * t.grad_accum == 64  # rows per optimizer step
    p = plan(cfg, preset, 80, t.num_workers)
    assert p.fits and p.total_gib <= PRESET_SHARE * 80
    assert p.steady_gib > p.init_gib  # on 80 GB the start-up peak is not what binds


def test_the_7b_preset_keeps_gradient_checkpointing_because_without_it_the_margin_is_gone():
    cfg = load_config(
        ROOT / "jobs/configs/qwen2_5_vl_7b.yaml", ["model.gradient_checkpointing=false"]
    )
    p = plan(cfg, "7b", 80, cfg.train.num_workers)
    assert p.total_gib > PRESET_SHARE * 80


def test_markdown_row_lines_up_with_the_header():
    p = plan(load_config(overrides=BF16), "3b", 80, 8)
    row = markdown_row(p)
    assert row.count("|") == MARKDOWN_HEADER.splitlines()[0].count("|")
    assert f"{p.total_gib:.1f} GiB" in row
