import numpy as np
import pytest

from mmtpp.evaluate import accuracy, bleu, captured, format_table, macro_f1, mae, rmse, rouge_l


def test_metrics_against_hand_computed_values():
    assert rmse([1.0, 3.0], [2.0, 1.0]) == pytest.approx(np.sqrt((1 + 4) / 2))
    assert mae([1.0, 3.0], [2.0, 1.0]) == pytest.approx(1.5)
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    # class 0: tp1 fp0 fn0 -> 1; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp1 fp1 fn0 -> 2/3
    assert macro_f1([0, 1, 2, 2], [0, 1, 1, 2], 3) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # an invalid prediction (-1) counts as wrong for every class
    assert macro_f1([-1, 1], [0, 1], 2) == pytest.approx((0 + 1) / 2)
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    # LCS("a b c d", "a c d e") = 3 -> P = R = 3/4
    assert rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(0.75)
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # every n-gram matches; 4 words for a 5-word reference: brevity penalty e^(1 - 5/4)
    assert bleu(["a b c d"], ["a b c d e"]) == pytest.approx(np.exp(1 - 5 / 4))
    assert captured(model=5.0, baseline=6.0, optimal=4.0) == 0.5
    assert captured(1.0, 2.0, 2.0) is None
    assert captured(3.0, 2.03, 2.024) is None  # a 0.3% gap: no meaningful fraction


def test_table_shows_every_figure():
    results = {
        "targets": {"time": 10, "type": 10},
        "invalid": {"time": {"not_finite": 1}, "type": {}},
        "time": {"model": {"rmse": 2.0, "mae": 1.0}, "mean_gap": {"rmse": 3.0, "mae": 1.5},
                 "last_gap": {"rmse": 4.0, "mae": 2.0}, "bayes": {"rmse": 1.8, "mae": 0.9},
                 "rmse_captured": 0.83, "mae_captured": 0.83, "rmse_ratio_to_bayes": 1.11},
        "type": {"model": {"accuracy": 0.5, "macro_f1": 0.4},
                 "majority": {"accuracy": 0.25, "macro_f1": 0.1},
                 "last_type": {"accuracy": 0.52, "macro_f1": 0.45},
                 "bayes": {"accuracy": 0.55, "macro_f1": 0.5}, "accuracy_gap_to_bayes": 0.05,
                 "accuracy_captured": 0.83},
    }  # fmt: skip
    table = format_table(results)
    assert "| time RMSE | 2.0000 | mean gap 3.0000, last gap 4.0000 | 1.8000 | 83% |" in table
    assert "| type accuracy | 0.5000 | majority 0.2500, last type 0.5200 | 0.5500 | 83% |" in table
    assert "time: 1/10" in table and "= 1.110" in table and "5.0 points" in table
    results["invalid_samples"] = {"time": {"not_finite": 3, "negative": 1}, "drawn": 80}
    assert "left out of the mean/median: 4/80 (negative 1, not_finite 3)" in format_table(results)


def test_table_when_no_time_prediction_is_valid():
    results = {"targets": {"time": 4}, "invalid": {"time": {"malformed": 4}},
               "time": {"valid": 0, "total": 4}}  # fmt: skip
    table = format_table(results)
    assert "no valid prediction of 4" in table and "time: 4/4" in table


def test_type_scores_include_the_last_type_baseline():
    from mmtpp.evaluate import _score
    from mmtpp.predict import Prediction

    rows = [{"true_type": t, "seq_id": "s", "target": i + 1} for i, t in enumerate([0, 1, 1, 2])]
    preds = [Prediction(type=1), Prediction(type=1), Prediction(invalid={"type": "malformed"}),
             Prediction(type=2)]  # fmt: skip
    previous = np.array([0, 0, 1, 1])  # the type of the event before each target
    res = _score("type", rows, preds, 0.0, 0.0, 1, {}, 3, {}, previous)
    assert res["model"]["accuracy"] == 0.5  # 1 and 2 right; the invalid one counts wrong
    assert res["majority"]["accuracy"] == 0.5 and res["last_type"]["accuracy"] == 0.5
    assert res["valid"] == 3


def test_baselines_ignore_the_sequences_preparation_quarantined(tmp_path):
    import json

    from mmtpp.evaluate import _quarantined, _reference
    from mmtpp.events import DatasetInfo, EventSequence, write_dataset

    def seq(seq_id, times, types):
        n = len(times)
        return EventSequence(seq_id, np.asarray(times, float), np.asarray(types, np.int32),
                             [None] * n, [None] * n)  # fmt: skip

    good = [seq(f"g{i}", [0.0, 1.0, 3.0, 6.0], [1, 1, 0, 1]) for i in range(6)]
    bad = seq("bad", [0.0, float("nan"), 5.0], [-1, 0, 0])  # NaN time, negative type
    write_dataset(tmp_path / "ds", DatasetInfo("t", ["a", "b"]), [*good, bad])
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "quarantine.json").write_text(json.dumps([{"seq_id": "bad"}]))
    quarantined = _quarantined(tmp_path / "prep")
    assert quarantined == {"bad"} and _quarantined(tmp_path) == set()
    split = [1.0, 0.0, 0.0]  # every sequence in train
    _, sequences, mean_gap, median_gap, majority, _, type_freq = _reference(
        tmp_path / "ds", split, 0, {}, quarantined
    )
    assert "bad" not in sequences and len(sequences) == 6
    assert (mean_gap, median_gap, majority) == (2.0, 2.0, 1)
    np.testing.assert_allclose(type_freq, [7 / 26, 19 / 26])  # 6 + 18 of 24, add-one
    with pytest.raises(ValueError):  # what the bad sequence did before: bincount of -1
        _reference(tmp_path / "ds", split, 0, {})


def test_likelihoods_report_baseline_true_process_and_ties_apart():
    from types import SimpleNamespace

    from mmtpp.evaluate import likelihoods
    from mmtpp.timecodec import float32_interval_width

    class Fixed:  # every response token at log-prob -1
        def response_log_probs(self, prompts, responses):
            return [np.full(len(r), -1.0) for r in responses]

    def row(task, gap, typ, target):
        return {"seq_id": "s", "target": target, "input_ids": [1, 2, 3, 4, 5, 6, 7],
                "prompt_length": 2, "images": [], "true_gap": gap, "true_type": typ}  # fmt: skip

    rows = {"time": [row("time", 1.5, 0, 1), row("time", 0.0, 0, 2)],
            "type": [row("type", 1.5, 1, 1), row("type", 0.0, 0, 2)]}  # fmt: skip
    bayes = {"s": SimpleNamespace(nll_time=np.array([0.7, 0.1]), nll_type=np.array([0.5, 0.9]))}
    out = likelihoods(Fixed(), rows, bayes, 8, baseline=(2.0, np.array([0.25, 0.75])))
    t, y = out["time_nll"], out["type_nll"]
    model_time = 4.0 + np.log(float32_interval_width([1.5])[0])  # 4 byte tokens
    assert t["targets"] == 1 and t["zero_gaps_excluded"] == 1  # the tie is left out
    assert t["model"] == pytest.approx(model_time)
    assert t["baseline"] == pytest.approx(np.log(2.0) + 1.5 / 2.0) and t["bayes"] == 0.7
    assert t["captured"] == pytest.approx((t["baseline"] - model_time) / (t["baseline"] - 0.7))
    assert y["targets"] == 2 and y["model"] == pytest.approx(1.0)
    assert y["baseline"] == pytest.approx(-(np.log(0.75) + np.log(0.25)) / 2)
    assert y["bayes"] == pytest.approx(0.7)
