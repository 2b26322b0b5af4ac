import json
import os
import signal
from pathlib import Path

import pytest
from conftest import make_dataset
from ray.tune import Callback

from mmtpp.config import load_config
from mmtpp.tune import format_rows, run_search, sample_trials, trial_config


def test_trial_config_applies_the_sampled_parameters(tmp_path):
    base = load_config().to_dict()
    params = {
        "data.compression": "relative",
        "data.delta": 0.5,
        "lora.r": 4,
        "train.stage2.lr": 0.003,
    }
    cfg = trial_config(base, params, str(tmp_path / "t"))
    assert (cfg.data.compression, cfg.data.delta, cfg.lora.r) == ("relative", 0.5, 4)
    assert cfg.train.stage2.lr == 0.003
    assert cfg.output_dir == str(tmp_path / "t")


def test_trials_are_distinct_seeded_combinations_of_rules_in_their_own_units():
    grid = {"absolute": [0.0, 0.2], "relative": [0.5]}
    trials = sample_trials(grid, [4, 8], [1e-4, 3e-3], 10, seed=1)
    assert len(trials) == 10 == len({tuple(t.values()) for t in trials})
    assert trials == sample_trials(grid, [4, 8], [1e-4, 3e-3], 10, seed=1)
    assert sample_trials(grid, [4, 8], [1e-4, 3e-3], 10, seed=2) != trials
    rules = {
        (t["data.compression"], t["data.delta"]) for t in sample_trials(grid, [4], [1e-4], 0, 0)
    }
    assert rules == {("absolute", 0.0), ("absolute", 0.2), ("relative", 0.5)}  # 0 = all
    assert len(sample_trials({"absolute": [0.0]}, [4, 8], [1e-4], 9, seed=0)) == 2


def test_results_table():
    rows = [
        {
            "trial": "a",
            "mode": "relative",
            "delta": 0.2,
            "rank": 8,
            "lr": 1e-3,
            "val_loss": 1.5,
            "epochs": 1,
            "stopped_early": True,
            "events_per_row": 40.0,
        }
    ]
    assert "| a | relative Δ=0.2 | 8 | 0.001 | 1.5000 | 1 | yes | 40.0 |" in format_rows(rows)


class InterruptAfterFirstTrial(Callback):
    """Sends SIGINT to the driver when a trial completes, as a user pressing Ctrl-C would,
    once (Tuner.restore brings the callback back with the run's state)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def search(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("tune")
    make_dataset(tmp / "ds", num_sequences=16, events=(20, 40))
    cfg = load_config(
        overrides=[
            f"output_dir={tmp / 'run'}",
            f"data.source={tmp / 'ds'}",
            "data.budget=256",
            "data.targets_per_sequence=2",
            "data.tasks=[type]",
            "train.cpus_per_worker=0.5",
            "train.micro_batch=8",
            "tune.compression={absolute: [0.0, 0.2]}",
            "tune.ranks=[4, 8]",
            "tune.lrs=[1e-4, 3e-3]",
            "tune.num_samples=4",
            "tune.epochs=3",
            "tune.grace_period=1",
            "tune.reduction_factor=2",
        ]
    )
    interrupted = run_search(cfg, callbacks=[InterruptAfterFirstTrial(tmp / "interrupted")])
    resumed = run_search(cfg, resume=True)
    return cfg, interrupted, resumed


@pytest.mark.slow
@pytest.mark.ray
def test_an_interrupted_search_resumes_without_redoing_finished_trials(search):
    _, interrupted, resumed = search
    finished = {t["trial"]: t for t in interrupted["trials"] if t["val_loss"] is not None}
    assert 1 <= len(finished) < 4
    assert len(resumed["trials"]) == 4 and not any(t["error"] for t in resumed["trials"])
    again = {t["trial"]: t for t in resumed["trials"]}
    for trial, row in finished.items():  # restored, not rerun
        assert again[trial]["val_loss"] == row["val_loss"]


@pytest.mark.slow
@pytest.mark.ray
def test_search_stops_early_and_writes_a_usable_best_config(search):
    cfg, _, result = search
    assert any(t["stopped_early"] for t in result["trials"])
    best = load_config(result["best_yaml"])
    assert best.data.delta in (0.0, 0.2) and best.lora.r in (4, 8)
    saved = json.loads((Path(cfg.output_dir) / "tune" / "results.json").read_text())
    assert saved["best"] == result["best"]


@pytest.mark.slow
@pytest.mark.ray
def test_training_from_the_best_config(search):
    from mmtpp.prepare import prepare_from_config
    from mmtpp.train import run_training

    cfg, _, result = search
    overrides = [
        f"output_dir={cfg.output_dir}/best",
        "train.stage2.max_steps=2",
        "train.log_every=1",
    ]
    best = load_config(result["best_yaml"], overrides)
    out = run_training(best, 2, prepare_from_config(best).output_dir)
    assert [m["step"] for m in out.metrics if "loss" in m] == [1, 2]
