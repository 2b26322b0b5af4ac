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
    assert (seven.train.zero_stage, seven.model.dtype) == (2, "bfloat16")


@pytest.mark.parametrize("path", sorted((ROOT / "cluster").glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_files_are_yaml(path):
    assert yaml.safe_load(path.read_text())


def test_overrides_and_unknown_keys(tmp_path):
    cfg = load_config(overrides=["data.delta=0.5", "train.stage1.lr=3e-4", "lora.r=8"])
    assert (cfg.data.delta, cfg.train.stage1.lr, cfg.lora.r) == (0.5, 3e-4, 8)
    with pytest.raises(ValueError, match=r"unknown config key 'data.detla'; valid keys here"):
        load_config(overrides=["data.detla=0.5"])
    with pytest.raises(ValueError, match=r"lora.r: Input should be a valid integer.*'big'"):
        load_config(overrides=["lora.r=big"])
    with pytest.raises(ValueError, match=r"data\.split"):
        load_config(overrides=["data.split=[0.5, 0.5, 0.5]"])
    path = tmp_path / "c.yaml"
    load_config(overrides=["lora.r=4"]).to_yaml(path)
    assert load_config(path).lora.r == 4
    assert any(line.strip().startswith("data.delta=0.2") for line in describe())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.delta=nan", "data.delta: Input should be a finite number"),
        ("train.stage2.lr=.inf", "train.stage2.lr: Input should be a finite number"),
        ("eval.batch_size=0", "eval.batch_size: Input should be greater than or equal to 1"),
        ("eval.samples=0", "eval.samples: Input should be greater than or equal to 1"),
        ("eval.ppl_lengths=[4, 0]", "eval.ppl_lengths must be >= 1"),
        ("eval.time_mode=mode", "eval.time_mode: Input should be 'greedy', 'expected'"),
        ("train.log_every=0", "train.log_every: Input should be greater than or equal to 1"),
        ("train.stage1.epochs=0", "train.stage1.epochs: Input should be greater than or equal"),
        ("train.cpus_per_worker=0", "train.cpus_per_worker: Input should be greater than 0"),
        ("model.num_heads=0", "model.num_heads: Input should be greater than or equal to 1"),
        ("model.num_kv_heads=3", "model.num_kv_heads .3. must divide model.num_heads .4."),
        ("data.targets_per_sequence=-1", "data.targets_per_sequence: Input should be greater"),
        ("data.image_max_pixels=100", "data.image_max_pixels must be >= data.image_min_pixels"),
        ("tune.reduction_factor=1", "tune.reduction_factor: Input should be greater than or"),
        ("train.zero_stage=4", "train.zero_stage: Input should be 0, 1, 2 or 3"),
    ],
)
def test_values_that_would_fail_later_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[override])


def test_help_prints_defaults_as_they_are_typed_back():
    lines = {line.split("=")[0].strip(): line for line in describe()}
    assert "data.tokenizer=null " in lines["data.tokenizer"]
    assert "model.tie_embeddings=true " in lines["model.tie_embeddings"]
    assert "data.split=[0.8, 0.1, 0.1] " in lines["data.split"]
    for line in describe():  # every printed default, typed back, gives the default
        key, _, rest = line.strip().partition("=")
        value = rest.split("  ")[0]
        assert load_config(overrides=[f"{key}={value}"]).to_dict() == load_config().to_dict()
    # "None" as a Python user types it means null where null is allowed
    assert load_config(overrides=["train.storage_path=None"]).train.storage_path is None


def test_one_seed_drives_every_section_unless_a_section_sets_its_own():
    cfg = load_config(overrides=["seed=7"])
    assert (cfg.data.seed, cfg.model.seed, cfg.train.seed) == (7, 7, 7)
    cfg = load_config(overrides=["seed=7", "train.seed=1"])
    assert (cfg.data.seed, cfg.train.seed) == (7, 1)
    # a dumped config keeps derived seeds derived: another seed given to it propagates
    data = load_config(overrides=["seed=7"]).to_dict()
    assert data["data"]["seed"] is None
    data["seed"] = 9
    assert load_config(overrides=[f"seed={9}"]).to_dict() == data
