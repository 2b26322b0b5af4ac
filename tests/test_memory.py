import pytest

from mmtpp.config import load_config
from mmtpp.memory import plan


@pytest.mark.parametrize(("preset", "billions"), [("3b", 3.75), ("7b", 8.29)])
def test_presets_count_the_published_sizes(preset, billions):
    p = plan(load_config(), preset, gpu_memory_gib=80, world=8)
    assert p.total_params / 1e9 == pytest.approx(billions, abs=0.01)
    assert 0 < p.trainable_params < 0.02 * p.total_params


def test_zero3_partitions_parameters_and_long_context_costs_activations():
    z2 = plan(load_config(overrides=["model.dtype=bfloat16"]), "7b", 80, 8)
    z3 = plan(load_config(overrides=["model.dtype=bfloat16", "train.zero_stage=3"]), "7b", 80, 8)
    assert z3.params_gib == pytest.approx(z2.params_gib / 8)
    ckpt = plan(load_config(overrides=["model.gradient_checkpointing=true"]), "7b", 80, 8)
    assert ckpt.activations_gib < z2.activations_gib
    tiny_gpu = plan(load_config(overrides=["model.dtype=bfloat16"]), "7b", 8, 1)
    assert not tiny_gpu.fits


def test_activation_terms_follow_the_attention_and_the_logits():
    """The s² score term only with eager attention; 12 bytes per logit; ZeRO-3's gathered
    working set and ZeRO-2's reduce bucket are counted."""
    from mmtpp.memory import GIB

    base = ["model.dtype=bfloat16", "model.gradient_checkpointing=false", "train.micro_batch=1"]
    sdpa = plan(load_config(overrides=base), "3b", 80, 8)
    eager = plan(load_config(overrides=[*base, "model.attn_implementation=eager"]), "3b", 80, 8)
    s, a, layers = 4096, 16, 36
    assert (eager.activations_gib - sdpa.activations_gib) * GIB == pytest.approx(
        5 * a * s * s * layers
    )
    short = plan(load_config(overrides=[*base, "data.budget=1024"]), "3b", 80, 8)
    # activations scale with the tokens: 4x fewer tokens, 4x less (logits included)
    assert short.activations_gib == pytest.approx(sdpa.activations_gib / 4)
    logits = 12 * s * 151936 / GIB
    assert logits < sdpa.activations_gib
    z3 = plan(load_config(overrides=[*base, "train.zero_stage=3"]), "3b", 80, 8)
    assert z3.working_gib > 1.0 and 0 < sdpa.working_gib < 0.1
