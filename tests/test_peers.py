"""EasyTPP peers: scores add up to EasyTPP's own loss, outputs in the dataset's unit, targets
scored in the order given; the numerical integrals against the Hawkes closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmtpp.events import DatasetInfo, EventSequence, write_dataset
from mmtpp.hawkes import HawkesParams, predict_next, simulate
from mmtpp.intensity_integrals import compensator_nodes, gap_grid, gap_summary, marginal_types
from mmtpp.peer_models import PEER_NAMES, PeerSettings, fit_peer
from mmtpp.peers import SCORE_KEYS, run_peers, score_targets, split_targets

HAWKES = HawkesParams(mu=[0.4, 0.3], alpha=[[0.4, 0.2], [0.1, 0.5]], beta=3.0)
# tiny models and few draws: these tests check bookkeeping, not model quality
FAST = PeerSettings(
    epochs=2,
    hidden_size=8,
    batch_size=4,
    integral_samples=10,
    mixture_components=2,
    thinning_samples=4,
    thinning_draws=40,
    grid_points=64,
)


def _hawkes_events(num: int, length: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [simulate(HAWKES, rng, num_events=length) for _ in range(num)]


# --- numerical integrals (no EasyTPP needed) ---------------------------------------------


def test_settings_name_the_bad_field():
    with pytest.raises(ValueError, match=r"peers\.epochs"):
        PeerSettings(epochs=0)
    with pytest.raises(ValueError, match=r"peers\.hidden_size must be even"):
        PeerSettings(hidden_size=7)
    with pytest.raises(ValueError, match=r"peers\.lr"):
        PeerSettings(lr=float("nan"))
    with pytest.raises(ValueError, match=r"peers\.batch_size"):
        PeerSettings(batch_size=2.5)


@pytest.mark.parametrize("rate", [1e-2, 1.0, 30.0, 3e3])
def test_compensator_nodes_integrate_a_decay_spike(rate):
    u, w = compensator_nodes()
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all((u > 0) & (u < 1))
    tau = 2.0
    approx = tau * (np.exp(-rate * tau * u) @ w)
    assert approx == pytest.approx(-math.expm1(-rate * tau) / rate, rel=1e-9)


def test_marginal_types_match_the_hawkes_closed_form():
    """P(type), conditional mean and median from intensities on the grid vs the exact
    hypergeometric forms of ``hawkes.predict_next``, for quiet and bursty histories."""
    mu, _, beta = HAWKES.arrays()
    excitation = np.array([[0.0, 0.0], [2.0, 0.1], [30.0, 5.0], [0.01, 300.0]])
    grid = gap_grid(PeerSettings().grid_points, PeerSettings().grid_horizon / mu.sum())
    lam = mu[None, None, :] + excitation[:, None, :] * np.exp(-beta * grid)[None, :, None]
    probs, big_lam, tail = marginal_types(grid, lam)
    mean, median = gap_summary(grid, big_lam)
    true_mean, true_median, true_probs = predict_next(HAWKES, excitation)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(probs, true_probs, atol=5e-5)
    np.testing.assert_allclose(mean, true_mean, rtol=1e-4)
    np.testing.assert_allclose(median, true_median, rtol=1e-4)
    assert np.all(tail < 1e-100)


def test_marginal_types_give_the_tail_to_the_last_intensities():
    """A defective density (the intensity dies out) keeps its mass beyond the grid apart."""
    grid = gap_grid(64, 1.0)
    lam = np.stack([np.full(64, 0.2), np.full(64, 0.6)], axis=-1)[None]  # Λ(1) = 0.8
    probs, _, tail = marginal_types(grid, lam)
    assert tail[0] == pytest.approx(math.exp(-0.8))
    np.testing.assert_allclose(probs[0], [0.25, 0.75], atol=1e-12)
    _, median = gap_summary(grid, np.array([[0.0] * 64]))
    assert np.isnan(median[0])  # Λ never reaches ln 2


def test_intensity_free_bins_are_exact_in_the_tails():
    """IntensityFree's bin probability against quadrature of its density, in both tails
    (where EasyTPP's clamped survival function would call the bin empty) and for a tie."""
    import torch
    from scipy.integrate import quad
    from scipy.stats import norm

    from mmtpp.peer_models import intensity_free_bin_log_prob

    locs, log_scales = torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, -2.0]])
    logits = torch.tensor([[0.3, -0.3]])
    mean, std = 0.2, 1.5
    w = torch.softmax(logits, -1)[0].numpy()

    def density(t):  # log τ = mean + std·y, y ~ Σ w N(loc, scale)
        y = (np.log(t) - mean) / std
        comps = norm.pdf(y, locs[0].numpy(), np.exp(log_scales[0].numpy()))
        return float((w * comps).sum()) / (std * t)

    bins = np.array([[8.0, 8.1], [1e5, 1.1e5], [2.0, 2.2], [1e-3, 1.1e-3], [0.0, 0.05]])
    got = intensity_free_bin_log_prob(
        locs.expand(5, 2), log_scales.expand(5, 2), logits.expand(5, 2), (mean, std), bins
    )
    for (lo, hi), value in zip(bins, got, strict=True):
        mass, _ = quad(density, max(lo, 1e-300), hi, epsabs=0, epsrel=1e-10, limit=200)
        assert value == pytest.approx(math.log(mass), rel=1e-6, abs=1e-6), (lo, hi)


# --- EasyTPP models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def easy_tpp():
    return pytest.importorskip("easy_tpp")


@pytest.fixture(scope="module")
def events():
    return _hawkes_events(6, 40)


def _all_targets(times: np.ndarray, seq_id: str) -> list[tuple[str, int]]:
    return [(seq_id, i) for i in range(1, len(times))]


@pytest.mark.parametrize("name", PEER_NAMES)
def test_scores_add_up_to_easytpp_loss(easy_tpp, events, name):
    """Σ over every event of one sequence of the per-target joint NLL = EasyTPP's loss on it,
    the loss integrating on a fine grid; the two halves recombine exactly."""
    import torch

    from mmtpp.peer_models import event_tokenizer, pad_batch, window_features

    peer = fit_peer(name, events[:4], events[4:5], 2, FAST)
    times, types = events[5][0][:20], events[5][1][:20]
    scores = score_targets(peer, {"s": (times, types)}, _all_targets(times, "s"))
    for key in SCORE_KEYS:
        assert np.all(np.isfinite(scores[key])), key
    np.testing.assert_allclose(
        scores["joint_nll"], scores["time_nll"] + scores["type_nll_given_time"], rtol=1e-12
    )
    total = scores["type_probs"].sum(axis=1)
    if name == "IntensityFree":  # its mark softmax also covers EasyTPP's padding type
        assert np.all(total <= 1.0)
    else:
        np.testing.assert_allclose(total, 1.0, atol=1e-9)
    assert np.all(scores["integration_error"] <= 1e-5)
    peer.model.loss_integral_num_sample_per_step = 20_000
    features = window_features(times, types, 0, len(times), peer.time_scale)
    batch = pad_batch(event_tokenizer(2), [features])
    with torch.no_grad():
        loss, n = peer.model.loglike_loss(**batch)
    assert n == len(times) - 1
    ours = scores["joint_nll"].sum() - n * math.log(peer.time_scale)
    assert ours == pytest.approx(float(loss), rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("name", ["THP", "IntensityFree"])
def test_outputs_are_in_the_dataset_unit(easy_tpp, events, name):
    """The same data in a unit 8 times finer: the model sees identical inputs (EasyTPP's
    rescaling by the mean gap), so densities must drop by log 8 and gaps grow 8-fold — which
    fails if the rescaling is not undone."""
    c = 8.0
    scaled = [(t * c, k) for t, k in events]
    results = []
    for data in (events, scaled):
        peer = fit_peer(name, data[:4], data[4:5], 2, FAST)
        times, types = data[5]
        results.append(score_targets(peer, {"s": (times, types)}, _all_targets(times, "s")))
    base, fine = results
    np.testing.assert_allclose(fine["time_nll"], base["time_nll"] + math.log(c), atol=1e-9)
    np.testing.assert_allclose(fine["joint_nll"], base["joint_nll"] + math.log(c), atol=1e-9)
    for key in ("type_nll_given_time", "type_nll_marginal"):
        np.testing.assert_allclose(fine[key], base[key], atol=1e-12)
    for key in ("pred_gap", "mean_gap", "median_gap"):
        np.testing.assert_allclose(fine[key], base[key] * c, rtol=1e-9)
    np.testing.assert_array_equal(fine["pred_type"], base["pred_type"])


@pytest.mark.parametrize("name", ["THP", "IntensityFree"])
def test_a_fine_bin_holds_density_times_width(easy_tpp, events, name):
    """−log P(bin) → time NLL − log r as the resolution r shrinks (both kinds of peer: the
    intensity integral and the closed-form survival); coarse bins hold more mass."""
    peer = fit_peer(name, events[:4], events[4:5], 2, FAST)
    times, types = events[5][0][:15], events[5][1][:15]
    targets = _all_targets(times, "s")
    fine = score_targets(peer, {"s": (times, types)}, targets, resolution=1e-5)
    density = fine["time_nll"] - math.log(1e-5)
    np.testing.assert_allclose(fine["time_nll_binned"], density, atol=5e-3)
    coarse = score_targets(peer, {"s": (times, types)}, targets, resolution=0.5)
    assert np.all(coarse["time_nll_binned"] < fine["time_nll_binned"])
    assert "time_nll_binned" not in score_targets(peer, {"s": (times, types)}, targets[:2])


def test_poisson_time_nll_in_the_dataset_unit(easy_tpp):
    """Poisson events at 40 per unit: the exact time NLL is 1 − log 40 ≈ −2.69 nats, the
    median gap ln 2 / 40."""
    rng = np.random.default_rng(1)
    rate = 40.0
    data = [(np.cumsum(rng.exponential(1 / rate, 200)), rng.integers(0, 2, 200)) for _ in range(12)]
    settings = PeerSettings(epochs=15, hidden_size=8, mixture_components=2, thinning_samples=4)
    peer = fit_peer("IntensityFree", data[:10], data[10:11], 2, settings)
    times, types = data[11]
    scores = score_targets(peer, {"p": (times, types)}, _all_targets(times, "p"))
    assert scores["time_nll"].mean() == pytest.approx(1 - math.log(rate), abs=0.15)
    assert np.median(scores["median_gap"]) == pytest.approx(math.log(2) / rate, rel=0.25)


def test_targets_are_scored_in_the_order_given(easy_tpp, events):
    settings = PeerSettings(**{**FAST.__dict__, "max_len": 12})
    peer = fit_peer("NHP", events[:4], events[4:5], 2, settings)
    seqs = {"a": events[4], "b": events[5]}
    targets = [("b", 30), ("a", 3), ("b", 2), ("a", 39), ("b", 11), ("a", 12), ("b", 2)]
    scores = score_targets(peer, seqs, targets)
    for key in (*SCORE_KEYS, "type_probs"):
        assert len(scores[key]) == len(targets), key
        assert np.all(np.isfinite(scores[key])), key
    assert scores["pred_type"].dtype == np.int64
    # the same target twice: the same likelihoods
    assert scores["joint_nll"][2] == scores["joint_nll"][6]
    # the likelihoods do not depend on the order or the company of the targets
    order = [4, 0, 6, 2, 5, 1, 3]
    again = score_targets(peer, seqs, [targets[j] for j in order])
    for key in ("time_nll", "type_nll_given_time", "type_nll_marginal", "mean_gap"):
        np.testing.assert_allclose(again[key], scores[key][order], rtol=1e-6, atol=1e-9)
    # beyond max_len a target sees the 11 events before it, as if the sequence began there
    t, k = events[5]
    alone = score_targets(peer, {"c": (t[19:], k[19:])}, [("c", 11)])
    assert alone["joint_nll"][0] == pytest.approx(scores["joint_nll"][0], rel=1e-6)


def test_bad_targets_are_named(easy_tpp, events):
    peer = fit_peer("IntensityFree", events[:2], [], 2, FAST)
    seqs = {"a": events[3]}
    with pytest.raises(ValueError, match="target 1: event index 0 of sequence 'a'"):
        score_targets(peer, seqs, [("a", 5), ("a", 0)])
    with pytest.raises(ValueError, match=r"must lie in \[1, 40\)"):
        score_targets(peer, seqs, [("a", 40)])
    with pytest.raises(KeyError, match="unknown sequence 'z'"):
        score_targets(peer, seqs, [("z", 5)])
    with pytest.raises(ValueError, match=r"train\[1\]: types must lie in \[0, 2\)"):
        fit_peer("THP", [events[0], (events[1][0], events[1][1] + 5)], [], 2, FAST)
    with pytest.raises(ValueError, match="unknown peer 'AttNHP'"):
        fit_peer("AttNHP", events[:2], [], 2, FAST)


def test_one_seed_gives_one_result(easy_tpp, events):
    targets = _all_targets(events[5][0], "s")
    runs = [
        score_targets(fit_peer("THP", events[:4], events[4:5], 2, FAST), {"s": events[5]}, targets)
        for _ in range(2)
    ]
    for key in (*SCORE_KEYS, "type_probs"):
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_run_peers_trains_on_the_split_and_scores_the_targets(easy_tpp, tmp_path):
    seqs = [
        EventSequence(seq_id=f"q{j}", time=t, type=k)
        for j, (t, k) in enumerate(_hawkes_events(20, 30, seed=3))
    ]
    write_dataset(tmp_path, DatasetInfo(name="h", type_names=["a", "b"], time_unit="h"), seqs)
    targets = split_targets(tmp_path, [0.6, 0.2, 0.2], 0, 3, 5, 0)
    assert targets and all(5 <= i < 30 for _, i in targets)
    assert len({q for q, _ in targets}) == len(targets) // 3
    out = run_peers(tmp_path, [0.6, 0.2, 0.2], 0, targets, ["IntensityFree"], FAST)
    assert out["time_unit"] == "h" and out["targets"] == targets
    by_id = {s.seq_id: s for s in seqs}
    np.testing.assert_allclose(
        out["true_gap"], [by_id[q].time[i] - by_id[q].time[i - 1] for q, i in targets]
    )
    result = out["peers"]["IntensityFree"]
    assert result["epochs_run"] == 2 and result["val_nll"] is not None
    summary = result["summary"]
    assert summary["targets"] == len(targets)
    assert summary["joint_nll"] == pytest.approx(np.mean(result["scores"]["joint_nll"]))
    assert 0.0 <= summary["accuracy"] <= 1.0


def test_the_comparison_table_is_paired_on_the_targets_every_row_has():
    from mmtpp.peer_compare import table

    rng = np.random.default_rng(0)
    n = 400
    truth = {"gap": rng.exponential(1.0, n), "type": rng.integers(0, 3, n).astype(float)}

    def row(noise):
        return {
            "time_nll": rng.normal(1.0, 0.5, n) + noise,
            "type_nll": rng.normal(1.0, 0.1, n),
            "pred_gap": truth["gap"] + rng.normal(0.0, 0.3, n),
            "pred_type": truth["type"].copy(),
        }

    ours = row(0.0)
    ours["time_nll"][:10] = np.nan  # e.g. zero gaps: no density
    peer = {k: v.copy() for k, v in ours.items()}
    peer["time_nll"] = np.where(np.isnan(ours["time_nll"]), np.nan, ours["time_nll"] + 0.25)
    baseline = row(2.0) | {"pred_type": np.full(n, np.nan)}  # no type prediction
    res = table({"mmtpp": ours, "peer": peer, "baseline": baseline}, truth)
    assert res["targets"]["time NLL"] == n - 10 and res["targets"]["type NLL"] == n
    assert "type accuracy" not in res["figures"]["baseline"]
    diff = res["versus_mmtpp"]["peer"]
    assert diff["time NLL"]["estimate"] == pytest.approx(0.25)
    assert diff["time NLL"]["high"] - diff["time NLL"]["low"] < 1e-9  # a constant shift
    assert diff["type NLL"] == {**diff["type NLL"], "estimate": 0.0, "low": 0.0, "high": 0.0}
    rmse = res["figures"]["mmtpp"]["gap RMSE"]["estimate"]
    assert rmse == pytest.approx(np.sqrt(np.mean((ours["pred_gap"] - truth["gap"]) ** 2)))
    assert res["figures"]["mmtpp"]["type accuracy"]["estimate"] == 1.0
    assert "time NLL of the bin" not in res["targets"]  # no row has it: no column

    # data recorded to a resolution: the bin NLL where the rows have it (ties included)
    ours["binned"] = rng.normal(3.0, 0.5, n)
    peer["binned"] = ours["binned"] - 0.5
    res = table({"mmtpp": ours, "peer": peer, "baseline": baseline}, truth)
    assert res["targets"]["time NLL of the bin"] == n
    assert res["versus_mmtpp"]["peer"]["time NLL of the bin"]["estimate"] == pytest.approx(-0.5)
    assert "time NLL of the bin" not in res["figures"]["baseline"]
