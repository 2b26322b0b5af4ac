"""Experiments: the grid expands as written, finished runs are not redone after an
interruption, and the paired difference of identical variants is exactly zero."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmtpp.experiment import Experiment, report, run_experiment

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def tiny_experiment(tmp_path: Path, seeds: str, variants: str) -> Experiment:
    """An experiment over the tiny CPU config writing under tmp_path/out (YAML flow values)."""
    return Experiment.load(
        write(
            tmp_path,
            f"""
base: {ROOT / "jobs/configs/tiny_cpu.yaml"}
output_dir: {tmp_path / "out"}
seeds: {seeds}
variants: {variants}
""",
        )
    )


def test_the_grid_expands_as_written(tmp_path):
    exp = Experiment.load(
        write(
            tmp_path,
            f"""
base: {ROOT / "jobs/configs/tiny_cpu.yaml"}
output_dir: {tmp_path / "out"}
seeds: [0, 1]
overrides: [train.stage1.epochs=1]
reference: compressed
variants:
  compressed: {{}}
  text_only: {{data.modalities: [time, type, text]}}
grid:
  data.delta: [0, 0.5]
  lora.r: [4]
""",
        )
    )
    assert list(exp.variants) == ["compressed", "text_only", "delta=0,r=4", "delta=0.5,r=4"]
    assert exp.variants["text_only"] == ["data.modalities=[time, type, text]"]
    assert exp.variants["delta=0.5,r=4"] == ["data.delta=0.5", "lora.r=4"]
    assert len(exp.runs()) == 8
    cfg = exp.config("delta=0.5,r=4", 1)
    assert (cfg.data.delta, cfg.lora.r, cfg.seed, cfg.train.stage1.epochs) == (0.5, 4, 1, 1)
    assert cfg.data.seed == cfg.train.seed == cfg.model.seed == 1  # one seed drives all
    assert cfg.output_dir == str(tmp_path / "out" / "delta=0.5,r=4" / "seed1")
    with pytest.raises(ValueError, match="reference 'nope' is not a variant"):
        Experiment.load(
            write(tmp_path, "base: x.yaml\noutput_dir: o\nreference: nope\nvariants: {a: {}}")
        )
    with pytest.raises(ValueError, match="unknown keys"):
        Experiment.load(write(tmp_path, "base: x\noutput_dir: o\nvariant: {}"))


def _fake_targets(rng: np.random.Generator, n: int = 50) -> pd.DataFrame:
    true_gap = rng.exponential(1.0, n)
    return pd.DataFrame(
        {
            "seq_id": [f"s{i // 5}" for i in range(n)],
            "target": [i % 5 + 8 for i in range(n)],
            "pred_gap": true_gap * rng.uniform(0.5, 1.5, n),
            "true_gap": true_gap,
            "pred_type": rng.integers(0, 3, n),
            "true_type": rng.integers(0, 3, n),
            "time_nll": rng.normal(0.0, 1.0, n),
            "type_nll": rng.uniform(0.5, 1.5, n),
            "gap_quantiles": [list(np.sort(rng.exponential(1.0, 5))) for _ in range(n)],
            "crps": rng.uniform(0, 1, n),
        }
    )


def test_an_interrupted_experiment_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    import mmtpp.pipeline

    exp = tiny_experiment(tmp_path, "[0, 1]", "{a: {}, b: {data.delta: 0}}")
    calls = []

    def fake_pipeline(config):
        calls.append((config.output_dir, config.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the experiment during run 3
        report_dir = Path(config.output_dir) / "report"
        report_dir.mkdir(parents=True)
        _fake_targets(np.random.default_rng(config.seed)).to_parquet(report_dir / "targets.parquet")

    monkeypatch.setattr(mmtpp.pipeline, "run_pipeline", fake_pipeline)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp)
    assert len(calls) == 3
    assert report(exp)["seeds"] == [0]  # cut short: the complete seed is reported
    result = run_experiment(exp)  # seed 0 is finished: only seed 1's two runs again
    assert [Path(c[0]).relative_to(exp.output_dir).as_posix() for c in calls[3:]] == [
        "a/seed1",
        "b/seed1",
    ]
    assert set(result["figures"]["time_nll"]) == {"a", "b"} and result["seeds"] == [0, 1]
    assert (exp.output_dir / "experiment.md").read_text().startswith("experiment exp")
    assert (exp.output_dir / "time_nll.png").is_file()


def test_paired_difference_of_identical_variants_is_exactly_zero(tmp_path):
    exp = tiny_experiment(tmp_path, "[3]", "{a: {}, same: {}, other: {data.delta: 0}}")
    frames = {"a": 0, "same": 0, "other": 1}  # 'same' scores the same targets identically
    for variant, data_seed in frames.items():
        folder = exp.output_dir / variant / "seed3" / "report"
        folder.mkdir(parents=True)
        _fake_targets(np.random.default_rng(data_seed)).to_parquet(folder / "targets.parquet")
    result = report(exp)
    for name, per_variant in result["figures"].items():
        diff = per_variant["same"]["vs_reference"]
        assert (diff["estimate"], diff["low"], diff["high"]) == (0.0, 0.0, 0.0), name
        assert (
            per_variant["other"]["vs_reference"]["high"]
            > per_variant["other"]["vs_reference"]["low"]
        )
    assert result["figures"]["time_rmse"]["a"]["value"]["method"] == "percentile bootstrap"


def test_experiments_sharing_an_output_dir_share_identical_runs(tmp_path, monkeypatch):
    import mmtpp.pipeline

    def spec(name, variants, report_dir=""):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"""
base: {ROOT / "jobs/configs/tiny_cpu.yaml"}
output_dir: {tmp_path / "out"}
{report_dir}
variants: {variants}
"""
        )
        return path

    calls = []

    def fake_pipeline(config):
        calls.append(Path(config.output_dir).name + "@" + Path(config.output_dir).parent.name)
        report_dir = Path(config.output_dir) / "report"
        report_dir.mkdir(parents=True)
        _fake_targets(np.random.default_rng(config.seed)).to_parquet(report_dir / "targets.parquet")

    monkeypatch.setattr(mmtpp.pipeline, "run_pipeline", fake_pipeline)
    first = Experiment.load(spec("first", "{a: {}, b: {data.delta: 0}}"))
    run_experiment(first)
    second = Experiment.load(
        spec("second", "{a: {}, c: {data.delta: 0.5}}", f"report_dir: {tmp_path / 'second'}")
    )
    run_experiment(second)
    assert calls == ["seed0@a", "seed0@b", "seed0@c"]  # a: the same run, not run again
    assert (tmp_path / "out" / "experiment.md").read_text().startswith("experiment first")
    assert (tmp_path / "second" / "experiment.md").read_text().startswith("experiment second")


def test_exported_scores_resume_the_experiment_on_another_machine(tmp_path, monkeypatch):
    import mmtpp.pipeline
    from mmtpp.experiment import export_scores, import_scores

    calls = []

    def fake_pipeline(config):
        calls.append(config.output_dir)
        report_dir = Path(config.output_dir) / "report"
        report_dir.mkdir(parents=True)
        frame = _fake_targets(np.random.default_rng(config.seed))
        frame["pred_text"] = "a long generated text that the export leaves out"
        frame.to_parquet(report_dir / "targets.parquet")

    monkeypatch.setattr(mmtpp.pipeline, "run_pipeline", fake_pipeline)
    spec = f"""
base: {ROOT / "jobs/configs/tiny_cpu.yaml"}
output_dir: runs/exp
seeds: [0, 1]
variants: {{a: {{}}, b: {{data.delta: 0}}}}
"""
    for machine in ("first", "second"):
        (tmp_path / machine).mkdir()
    monkeypatch.chdir(tmp_path / "first")
    first = Experiment.load(write(tmp_path, spec))
    first.seeds = [0]  # the first machine runs seed 0 only
    before = run_experiment(first)
    assert export_scores(first, tmp_path / "archive") == [("a", 0), ("b", 0)]
    saved = pd.read_parquet(tmp_path / "archive" / "a" / "seed0" / "report" / "targets.parquet")
    assert "pred_text" not in saved and {"time_nll", "gap_quantiles"} <= set(saved)
    assert (tmp_path / "archive" / "experiment.md").is_file()

    monkeypatch.chdir(tmp_path / "second")
    second = Experiment.load(write(tmp_path, spec))
    assert import_scores(second, tmp_path / "archive") == [("a", 0), ("b", 0)]
    calls.clear()
    after = run_experiment(second)
    assert calls == ["runs/exp/a/seed1", "runs/exp/b/seed1"]  # seed 0 is not redone
    assert after["seeds"] == [0, 1]
    second.seeds = [0]
    assert report(second)["figures"] == before["figures"]  # the same figures from the scores
    with pytest.raises(FileNotFoundError, match="no exported runs"):
        import_scores(second, tmp_path / "nowhere")
    # a run whose saved config is not the current one does not count in a report
    stamp = Path("runs/exp/b/seed0/finished.json")
    stamp.write_text(stamp.read_text().replace('"delta": 0.0', '"delta": 0.3'))
    second.seeds = [0, 1]
    assert report(second)["seeds"] == [1]


def test_several_seeds_report_each_seeds_figure_and_paired_difference(tmp_path):
    from mmtpp.intervals import paired_difference

    exp = tiny_experiment(tmp_path, "[0, 1, 2]", "{a: {}, b: {data.delta: 0}}")
    frames = {}
    for seed in exp.seeds:
        for k, variant in enumerate(exp.variants):
            folder = exp.output_dir / variant / f"seed{seed}" / "report"
            folder.mkdir(parents=True)
            frames[variant, seed] = _fake_targets(np.random.default_rng(10 * seed + k))
            frames[variant, seed].to_parquet(folder / "targets.parquet")
    entry = report(exp)["figures"]["time_nll"]["b"]
    per_seed = [p["vs_reference"]["estimate"] for p in entry["per_seed"]]
    for seed, got in zip(exp.seeds, per_seed, strict=True):
        b, a = frames["b", seed]["time_nll"], frames["a", seed]["time_nll"]
        assert got == pytest.approx(paired_difference(b, a).estimate)
        assert got == pytest.approx(b.mean() - a.mean())
    assert entry["vs_reference"]["estimate"] == pytest.approx(np.mean(per_seed))
    assert [p["value"]["estimate"] for p in entry["per_seed"]] == pytest.approx(
        [frames["b", s]["time_nll"].mean() for s in exp.seeds]
    )
    row = next(
        line
        for line in (exp.output_dir / "experiment.md").read_text().splitlines()
        if line.startswith("| b |") and f"{per_seed[2]:+.4g}" in line
    )
    assert row.count(";") == 2  # three seeds' differences, side by side


@pytest.mark.parametrize(
    "path", sorted((ROOT / "jobs/experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_experiment_builds_a_valid_config_for_every_run(path):
    exp = Experiment.load(path)
    assert exp.reference in exp.variants, f"{path.name}: reference {exp.reference!r} not a variant"
    for variant, seed in exp.runs():
        config = exp.config(variant, seed)
        assert config.seed == seed and Path(config.output_dir).name == f"seed{seed}"
