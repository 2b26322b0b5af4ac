import sys

import pytest
from conftest import make_dataset

from mmtpp.card import ModelCard
from mmtpp.compression import CompressionRule
from mmtpp.config import load_config
from mmtpp.prepared import PreparedData
from mmtpp.recipe import StepHook


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_local):
    from mmtpp.prepare import run_prepare

    tmp = tmp_path_factory.mktemp("train")
    make_dataset(tmp / "ds", num_sequences=24, events=(30, 60))
    cfg = load_config(overrides=["data.budget=384", "data.targets_per_sequence=4"])
    return tmp, run_prepare(cfg, tmp / "ds", tmp / "prepared").output_dir


def train_config(tmp, name, *overrides):
    return load_config(
        overrides=[
            f"output_dir={tmp / name}",
            "data.budget=384",
            "train.cpus_per_worker=0.5",
            "train.log_every=2",
            "train.warmup_steps=2",
            "train.micro_batch=4",
            *overrides,
        ]
    )


@pytest.mark.slow
@pytest.mark.ray
def test_two_stages_on_two_workers_loss_falls_and_merges(prepared):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mmtpp.model import merge
    from mmtpp.train import run_training

    tmp, data = prepared
    cfg = train_config(
        tmp,
        "two_stage",
        "train.stage1.epochs=3",
        "train.stage1.lr=2e-3",
        "train.stage2.epochs=3",
        "train.stage2.lr=2e-3",
    )
    first = run_training(cfg, 1, data)
    losses = [m["loss"] for m in first.metrics if "loss" in m]
    assert losses[-1] < losses[0] - 0.5, losses
    second = run_training(cfg, 2, data)
    val = [m["val_loss"] for m in second.metrics if "val_loss" in m]
    assert len(val) == 3 and val[-1] < val[0], val
    card = ModelCard.read(second.model_dir)
    assert card.stage == 2 and card.rule == CompressionRule("absolute", 0.2)
    assert card.compression == PreparedData(data).manifest().compression  # prompts follow it
    merged = merge(second.model_dir, tmp / "merged")
    Qwen2_5_VLForConditionalGeneration.from_pretrained(merged)


def test_each_epoch_reads_the_rows_in_a_seeded_order(ray_local):
    """The options every worker reads its rows with: one seed, one order; another epoch or
    seed, another order; always every row once."""
    import ray.data

    from mmtpp.recipe import shuffle_options

    def order(seed, epoch, buffer=64):
        overrides = [f"train.seed={seed}", f"train.shuffle_buffer={buffer}"]
        train = load_config(overrides=overrides).train
        it = ray.data.range(200, override_num_blocks=4).iterator()
        batches = it.iter_batches(batch_size=4, **shuffle_options(train, 2, epoch, rank=0))
        return [int(x) for b in batches for x in b["id"]]

    first = order(0, 0)
    assert sorted(first) == list(range(200)) and first != list(range(200))
    assert order(0, 0) == first
    assert order(0, 1) != first and order(1, 0) != first
    assert order(0, 0, buffer=0) == list(range(200))  # 0: the prepared order


class FailOnce(StepHook):
    """Raise once on rank 0 at ``step`` (a marker file remembers it across the restart)."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def after_step(self, recipe):
        from pathlib import Path

        if recipe.rank == 0 and recipe.state["step"] == self.step:
            marker = Path(self.marker)
            if not marker.exists():
                marker.write_text(str(self.step))
                raise RuntimeError(f"injected failure at step {self.step}")


@pytest.mark.slow
@pytest.mark.ray
def test_training_is_reproducible_under_its_seed(prepared):
    """Several shards, shuffled rows: one seed twice gives identical adapters, another seed
    another adapter."""
    import torch
    from safetensors.torch import load_file

    from mmtpp.train import run_training

    tmp, data = prepared
    assert len(list((data / "stage1" / "train").glob("*.parquet"))) > 1
    adapters = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = train_config(
            tmp,
            f"repro_{run}",
            "train.stage1.epochs=1",
            "train.stage1.max_steps=8",
            f"train.seed={seed}",
        )
        model_dir = run_training(cfg, 1, data).model_dir
        adapters.append(load_file(model_dir / "adapter" / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys()
    for name, weight in adapters[0].items():
        assert torch.equal(weight, adapters[1][name]), name
    assert any(not torch.equal(w, adapters[2][k]) for k, w in adapters[0].items())


@pytest.mark.slow
@pytest.mark.ray
def test_zero3_with_checkpointing_resumes_to_the_same_model(prepared):
    """The 7B recipe's own path on two ranks: ZeRO-3 with every parameter partitioned and
    gradient checkpointing trains and saves non-empty adapter tensors; a run that fails at
    step 5 resumes from its step-4 checkpoint (checkpoints every 2 steps, logs every 3: the
    cadence does not depend on logging) and ends with the same model and validation loss."""
    import torch
    from ray import cloudpickle
    from safetensors.torch import load_file

    from mmtpp.train import run_training

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # FailOnce reaches the workers
    tmp, data = prepared
    common = [
        "train.zero_stage=3",
        "train.zero3_persistence_threshold=0",
        "model.gradient_checkpointing=true",
        "train.stage1.max_steps=6",
        "train.checkpoint_every=2",
        "train.log_every=3",
        "train.micro_batch=1",
    ]
    whole = run_training(train_config(tmp, "z3_whole", *common), 1, data)
    cfg = train_config(tmp, "z3_failed", *common, "train.max_failures=1")
    failed = run_training(cfg, 1, data, hooks=[FailOnce(5, str(tmp / "z3_failed.marker"))])
    resumed = [m for m in failed.metrics if "resumed_at_step" in m]
    assert resumed == [{"stage": 1, "resumed_at_step": 4}]
    assert [m["step"] for m in failed.metrics if "loss" in m] == [3, 6]
    adapters = [
        load_file(r.model_dir / "adapter" / "adapter_model.safetensors") for r in (whole, failed)
    ]
    assert adapters[0] and all(w.numel() > 0 for w in adapters[0].values())
    assert any(bool(w.abs().sum() > 0) for k, w in adapters[0].items() if "lora_B" in k)
    for name, weight in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], weight, rtol=1e-5, atol=1e-6)
    val = [next(m["val_loss"] for m in r.metrics if "val_loss" in m) for r in (whole, failed)]
    assert val[1] == pytest.approx(val[0], rel=1e-5)


@pytest.mark.slow
@pytest.mark.ray
def test_zero_stage_1_trains(prepared):
    from mmtpp.train import run_training

    tmp, data = prepared
    cfg = train_config(
        tmp, "zero1", "train.zero_stage=1", "train.stage1.max_steps=3", "train.log_every=1"
    )
    result = run_training(cfg, 1, data)
    assert [m["step"] for m in result.metrics if "loss" in m] == [1, 2, 3]
    assert (result.model_dir / "adapter" / "adapter_model.safetensors").is_file()
