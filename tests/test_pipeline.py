import json
from pathlib import Path

import pandas as pd
import pytest

from mmtpp.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PLOTS = (
    "gap_pred_vs_true.png",
    "type_confusion.png",
    "nll_vs_history.png",
    "pit.png",
    "events_per_budget.png",
)


@pytest.mark.slow
@pytest.mark.ray
def test_pipeline_end_to_end_reports_every_figure_and_skips_finished_steps(
    tmp_path, ray_local, capsys
):
    from mmtpp.pipeline import run_pipeline

    cfg = load_config(
        ROOT / "jobs/configs/tiny_cpu.yaml",
        [
            f"output_dir={tmp_path / 'run'}",
            "data.synth_sequences=30",
            "data.budget=384",
            "train.stage1.max_steps=2",
            "train.stage2.max_steps=2",
            "train.log_every=1",
            "eval.max_per_task=6",
            "eval.max_text_tokens=4",
            "eval.ppl_targets=3",
            "eval.ppl_lengths=[2, 64]",
        ],
    )
    results = run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "stage 1:" in out and "optimizer steps" in out  # the plan, before training
    report = tmp_path / "run" / "report"
    for name in ("results.json", "results.md", "targets.parquet", *PLOTS):
        assert (report / name).stat().st_size > 0, name
    assert json.loads((report / "results.json").read_text())["type"] == results["type"]
    targets = pd.read_parquet(report / "targets.parquet")
    assert len(targets) == results["targets"] == 6  # every target scored, none dropped
    for task in ("time", "type", "text"):  # valid or counted invalid
        invalid = sum(results["invalid"][task].values())
        assert targets[f"{task}_invalid"].notna().sum() == invalid
    acc = results["type"]["accuracy"]
    assert acc["model"]["low"] <= acc["model"]["estimate"] <= acc["model"]["high"]
    assert acc["bayes"] is not None  # synthetic data: the Bayes-optimal predictor
    nll = results["likelihood"]
    assert nll["time"]["bayes"] is not None and nll["type"]["model"] is not None
    curve = results["history_curve"]
    assert curve["lengths"] == [2, 64] and curve["targets"] == 3
    assert curve["compressed"]["events"][1] > curve["uncompressed"]["events"][1]
    assert len(curve["bayes"]["time_nll"]) == 2
    modes = {s["mode"] for s in results["events_per_budget"]}
    assert modes == {"absolute", "relative", "typed"}
    table = (report / "results.md").read_text()
    assert "type accuracy" in table and "90% interval coverage" in table
    # MAE's optimal point is the median: the model's predictive median is scored too
    assert "model_median" in results["time"]["mae"] and "time MAE (model's median)" in table

    capsys.readouterr()
    run_pipeline(cfg)  # a rerun reuses the prepared data, both stages and the predictions
    out = capsys.readouterr().out
    assert "prepare: reusing" in out and "predict: reusing" in out
    assert "stage 1: already trained" in out and "stage 2: already trained" in out

    # figures recomputed from the saved predictions, without predicting
    from mmtpp.evaluate import evaluate

    run = tmp_path / "run"
    (report / "results.json").unlink()
    again = evaluate(
        run / "stage2" / "model", run / "prepared", run / "data", report, cfg.eval, rescore=True
    )
    assert again["type"] == results["type"] and (report / "results.json").is_file()
    with pytest.raises(FileNotFoundError, match="no predictions to rescore"):
        evaluate(
            run / "stage2" / "model", run / "prepared", run / "data", tmp_path / "x", rescore=True
        )

    # EasyTPP's peers on exactly the targets this evaluation scored (jobs/peers.py)
    pytest.importorskip("easy_tpp")
    from mmtpp.peer_compare import compare, format_comparison
    from mmtpp.peer_models import PeerSettings

    fast = PeerSettings(epochs=1, hidden_size=8, thinning_samples=5, thinning_draws=20)
    res = compare(tmp_path / "run" / "prepared", report, ["IntensityFree"], fast)
    assert res["scored"] == 6 and set(res["figures"]) >= {"mmtpp", "IntensityFree"}
    ours = res["figures"]["mmtpp"]["type accuracy"]["estimate"]
    assert ours == pytest.approx(results["type"]["accuracy"]["model"]["estimate"])
    assert "IntensityFree" in res["versus_mmtpp"] and "IntensityFree" in format_comparison(res)
