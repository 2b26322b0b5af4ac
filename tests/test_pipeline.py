import json
from pathlib import Path

import pytest

from mmtpp.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ("gap_pred_vs_true.png", "type_confusion.png", "ppl_vs_history.png",
         "events_per_budget.png")  # fmt: skip


@pytest.mark.slow
@pytest.mark.ray
def test_pipeline_end_to_end_reports_every_figure_and_skips_finished_steps(
    tmp_path, ray_local, capsys
):
    from mmtpp.pipeline import run_pipeline

    cfg = load_config(ROOT / "jobs/configs/tiny_cpu.yaml", [
        f"output_dir={tmp_path / 'run'}", "data.synth_sequences=30", "data.budget=384",
        "train.stage1.max_steps=2", "train.stage2.max_steps=2", "train.log_every=1",
        "eval.max_per_task=6", "eval.max_text_tokens=4", "eval.ppl_targets=3",
        "eval.ppl_lengths=[2, 64]",
    ])  # fmt: skip
    results = run_pipeline(cfg)
    report = tmp_path / "run" / "report"
    for name in ("results.json", "results.md", *PLOTS):
        assert (report / name).stat().st_size > 0, name
    assert json.loads((report / "results.json").read_text())["time"] == results["time"]
    for task in ("time", "type", "text"):  # every target is valid or counted invalid
        invalid = sum(results["invalid"][task].values())
        assert results[task]["valid"] + invalid == results["targets"][task] == 6
    time = results["time"]  # a model trained 2 steps may produce no valid time at all
    assert ("rmse_ratio_to_bayes" in time) == (time["valid"] > 0)
    assert "accuracy_gap_to_bayes" in results["type"]
    nll = results["likelihood"]
    assert set(nll) == {"time_nll", "type_nll"} and nll["time_nll"]["bayes"] is not None
    ppl = {(p["compressed"], p["max_events"]): p for p in results["ppl_by_history"]}
    assert set(ppl) == {(True, 2), (True, 64), (False, 2), (False, 64)}
    assert all(p["ppl"] > 1 for p in ppl.values())
    assert ppl[(True, 64)]["history_events"] > ppl[(False, 64)]["history_events"]
    epb = {s["delta"]: s["events_per_budget"] for s in results["events_per_budget"]}
    assert epb[0.2] > epb[0.0]
    table = (report / "results.md").read_text()
    assert "type accuracy" in table and "perplexity" in table and "events per 384-token" in table

    capsys.readouterr()
    run_pipeline(cfg)  # a rerun reuses the prepared data and both trained stages
    out = capsys.readouterr().out
    assert "prepare: reusing" in out
    assert "stage 1: already trained" in out and "stage 2: already trained" in out
