import numpy as np
import pandas as pd
import pytest

from mmtpp.metrics import (
    FIGURES,
    accuracy,
    bleu,
    captured_of_means,
    captured_with_interval,
    f1_counts,
    macro_f1,
    macro_f1_of_means,
    mae,
    rmse,
    rouge_l_scores,
    summarize,
    with_interval,
)


def test_metrics_against_hand_computed_values():
    assert rmse([1.0, 3.0], [2.0, 1.0]) == pytest.approx(np.sqrt((1 + 4) / 2))
    assert mae([1.0, 3.0], [2.0, 1.0]) == pytest.approx(1.5)
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    # class 0: tp1 fp0 fn0 -> 1; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp1 fp1 fn0 -> 2/3
    assert macro_f1([0, 1, 2, 2], [0, 1, 1, 2], 3) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # an invalid prediction (-1) counts as wrong for every class
    assert macro_f1([-1, 1], [0, 1], 2) == pytest.approx((0 + 1) / 2)
    assert rouge_l_scores(["the cat sat"], ["the cat sat"]) == pytest.approx([1.0])
    # LCS("a b c d", "a c d e") = 3 -> P = R = 3/4
    assert rouge_l_scores(["a b c d"], ["a c d e"]) == pytest.approx([0.75])
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # every n-gram matches; 4 words for a 5-word reference: brevity penalty e^(1 - 5/4)
    assert bleu(["a b c d"], ["a b c d e"]) == pytest.approx(np.exp(1 - 5 / 4))
    assert captured_of_means(np.array([5.0, 6.0, 4.0])) == 0.5


def test_a_captured_fraction_needs_a_baseline_clearly_worse_than_the_optimum():
    rng = np.random.default_rng(0)
    best = rng.exponential(1.0, 2000)
    model = best + rng.exponential(0.5, 2000)
    worse = best + rng.exponential(1.0, 2000)
    res = captured_with_interval(np.stack([model, worse, best], 1))
    assert res is not None and res["low"] < 0.5 < res["high"]  # (1 - 0.5) / 1
    # a baseline as good as the optimum up to noise (e.g. the median gap under MAE): no fraction
    level = best + rng.normal(0.0, 0.01, 2000)
    assert captured_with_interval(np.stack([model, level, best], 1)) is None
    close = best + np.abs(rng.normal(0.0, 0.001, 2000))  # clearly worse, by 0.1%: no fraction
    assert captured_with_interval(np.stack([model, close, best], 1)) is None
    squared = np.stack([model, worse, best], 1) ** 2
    assert captured_with_interval(squared, root=True) is not None


def test_macro_f1_from_per_target_counts_has_an_interval():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 400)
    pred = np.where(rng.random(400) < 0.6, true, rng.integers(-1, 4, 400))
    counts = f1_counts(pred, true, 4)
    assert macro_f1_of_means(counts.mean(axis=0)) == pytest.approx(macro_f1(pred, true, 4))
    ci = with_interval(counts, macro_f1_of_means)
    assert ci["low"] < ci["estimate"] < ci["high"]
    assert with_interval(np.ones(1)) is None  # one target: no interval


def test_model_figures_read_the_per_target_table():
    frame = pd.DataFrame(
        {
            "pred_gap": [1.0, 2.0, None, 4.0],
            "true_gap": [1.5, 2.0, 3.0, 3.0],
            "pred_type": [0, 1, None, 2],
            "true_type": [0, 0, 1, 2],
            "time_nll": [0.5, np.nan, 1.0, 2.0],  # a tie's NaN is left out
            "type_nll": [0.1, 0.2, 0.3, 0.4],
            "gap_quantiles": [[0.5, 1.0, 1.5, 2.0, 2.5]] * 4,
            "crps": [0.1, 0.2, 0.3, 0.4],
        }
    )
    out = summarize(frame)
    assert out["time_rmse"]["estimate"] == pytest.approx(np.sqrt((0.25 + 0 + 1) / 3))
    assert out["time_rmse"]["targets"] == 3  # the invalid time is counted apart
    assert out["type_accuracy"]["estimate"] == 0.5 and out["type_accuracy"]["targets"] == 4
    assert out["time_nll"]["estimate"] == pytest.approx(3.5 / 3)
    assert out["joint_nll"]["estimate"] == pytest.approx((0.6 + 1.3 + 2.4) / 3)
    assert out["coverage_90"]["estimate"] == 0.5  # 1.5 and 2.0 inside [0.5, 2.5]
    assert set(out) == set(FIGURES)


def test_the_bin_likelihood_counts_ties_and_reaches_the_report():
    """On data recorded to a resolution the evaluation adds −log P(bin) beside the density
    NLL, on every target with a value (ties too), and the report shows it with Poisson's."""
    from mmtpp.evaluate import _likelihood
    from mmtpp.report import _likelihood_rows

    rng = np.random.default_rng(0)
    n = 50
    frame = pd.DataFrame(
        {
            "time_nll": np.r_[np.full(5, np.nan), rng.normal(1.0, 0.3, n - 5)],  # 5 ties
            "poisson_time_nll": rng.normal(2.0, 0.3, n),
            "type_nll": rng.uniform(0.5, 1.5, n),
            "freq_type_nll": rng.uniform(1.0, 1.5, n),
            "time_nll_binned": rng.normal(4.0, 0.3, n),
            "poisson_time_nll_binned": rng.normal(5.0, 0.3, n),
        }
    )
    nll = _likelihood(frame, bayes=False)
    assert nll["time"]["targets"] == n - 5 and nll["time_binned"]["targets"] == n
    assert nll["time_binned"]["model"]["estimate"] == pytest.approx(frame["time_nll_binned"].mean())
    rows = _likelihood_rows(nll)
    assert len(rows) == 4 and rows[-1].startswith("| time NLL of the gap's bin")
    without = _likelihood(frame.drop(columns=["time_nll_binned"]), bayes=False)
    assert "time_binned" not in without and len(_likelihood_rows(without)) == 3
