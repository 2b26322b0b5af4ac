"""Every shipped YAML parses into the typed config (GPU configs included: correct on paper)."""

from pathlib import Path

import pytest
import yaml

from mmtpp.config import describe, load_config

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.output_dir
    assert path.read_text().startswith("#")  # opens with how to launch it


def test_gpu_configs_use_bf16_and_zero_stages():
    three = load_config(ROOT / "jobs/configs/qwen2_5_vl_3b.yaml")
    seven = load_config(ROOT / "jobs/configs/qwen2_5_vl_7b.yaml")
    assert (three.train.zero_stage, three.model.dtype, three.train.use_gpu) == (2, "bfloat16", True)
    assert (seven.train.zero_stage, seven.model.dtype) == (3, "bfloat16")


@pytest.mark.parametrize("path", sorted((ROOT / "cluster").glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_files_are_yaml(path):
    assert yaml.safe_load(path.read_text())


def test_overrides_and_unknown_keys(tmp_path):
    cfg = load_config(overrides=["data.delta=0.5", "train.stage1.lr=3e-4", "lora.r=8"])
    assert (cfg.data.delta, cfg.train.stage1.lr, cfg.lora.r) == (0.5, 3e-4, 8)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['data.detla'\]"):
        load_config(overrides=["data.detla=0.5"])
    with pytest.raises(ValueError, match="must be int"):
        load_config(overrides=["lora.r=big"])
    with pytest.raises(ValueError, match=r"data\.split"):
        load_config(overrides=["data.split=[0.5, 0.5, 0.5]"])
    path = tmp_path / "c.yaml"
    load_config(overrides=["lora.r=4"]).to_yaml(path)
    assert load_config(path).lora.r == 4
    assert any(line.strip().startswith("data.delta=0.2") for line in describe())
