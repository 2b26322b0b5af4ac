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
