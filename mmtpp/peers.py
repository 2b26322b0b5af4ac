"""Neural TPP peers from EasyTPP, trained on mmtpp's split and scored on its targets (issue 21).

The peers are EasyTPP's own model classes (``easy_tpp.model``: THP, NHP, IntensityFree, SAHP,
RMTPP, S2P2), its event tokenizer (padding and attention masks), its log-likelihood loss for
training and its intensity functions and one-step predictor for scoring. They read times and
types only (no text, no image). Install with ``pip install -e '.[peers]'`` (``easy-tpp``).

Time unit. EasyTPP's ``rescale_time`` option divides every time by the mean training gap;
the peers train in that unit (every sequence window shifted to start at 0, as EasyTPP's
``time_since_start``), and every output is converted back to the dataset's unit: a density
p(τ) in the model's unit is p(τ / s) / s in the dataset's, so time NLLs gain log s, and gaps
are multiplied by s. The figures are then comparable with mmtpp's and the true process's.

What a target is: ``(seq_id, i)`` with i ≥ 1, the event to predict from events < i of that
sequence (the first event of a sequence is never predicted: EasyTPP's models have no
start-of-sequence state). For a target the intensity models give λ_k(τ) after the last
history event, and

    time NLL             = −log λ(τ) + Λ(τ)              λ = Σ_k λ_k, Λ(τ) = ∫_0^τ λ(s) ds
    type NLL given time  = −log λ_k(τ) / λ(τ)            (k the true type)
    joint NLL            = −log λ_k(τ) + Λ(τ)            = time + type given time
    type NLL (marginal)  = −log P(k),  P(k) = ∫_0^∞ λ_k(s)·exp(−Λ(s)) ds

which is exactly EasyTPP's loss term of that event split in two. The marginal is the type
distribution before the gap is known — what mmtpp's type prompt predicts. Λ(τ) is a
composite Gauss–Legendre rule on geometric panels of [0, τ] (exact to float32 rounding on
the true Hawkes intensity, see the tests); P(k), the conditional mean and median gap come from
a fixed geometric grid of ``grid_points`` offsets up to ``grid_horizon`` mean gaps: the mass
between grid points goes to the types in proportion to their intensities there, and the mass
beyond the grid (``tail_mass``, reported) in proportion to the intensities at its end.
IntensityFree is a log-normal mixture density with marks independent of the gap, so its time
NLL and survival are exact and its two type NLLs coincide.

The gap EasyTPP predicts (``pred_gap``) and its predicted type (``pred_type``) come from the
model's own ``predict_one_step_at_every_event``: for the intensity models, EasyTPP's thinning
sampler (the mean of ``thinning_samples`` accepted draws; a draw that finds no acceptance in
``thinning_draws`` proposals returns ``dtime_max``), for IntensityFree the mean of as many
draws from its mixture; the type is the argmax of the intensity ratios averaged over those
draws (IntensityFree: of its mark distribution). ``mean_gap`` and ``median_gap`` are the
deterministic conditional mean (∫ exp(−Λ), truncated at the grid's end) and median
(Λ = ln 2) of the same density: the optimal RMSE and MAE predictors under the model.

Long sequences: a window holds at most ``max_len`` events. Training cuts a longer sequence
into windows of ``max_len`` events that overlap by one (a window's first event is history
only). Scoring runs a sequence once for all its targets below ``max_len``; a target i ≥
``max_len`` is scored from the ``max_len − 1`` events before it (older history is not seen).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmtpp.events import read_info, split_of
from mmtpp.intensity_integrals import (
    bin_log_probability,
    compensator,
    gap_grid,
    gap_summary,
    next_event_integrals,
)
from mmtpp.peer_models import (
    PEER_NAMES,
    Events,
    Peer,
    PeerSettings,
    check_events,
    check_peer_name,
    event_tokenizer,
    fit_peer,
    intensity_free_bin_log_prob,
    pad_batch,
    window_features,
)
from mmtpp.progress import say
from mmtpp.shards import sample_targets
from mmtpp.timecodec import resolution_bins
from mmtpp.validation import read_sequences

SCORE_KEYS = (
    "time_nll",
    "type_nll_given_time",
    "type_nll_marginal",
    "joint_nll",
    "pred_gap",
    "pred_type",
    "mean_gap",
    "median_gap",
    "tail_mass",
    "integration_error",
)


_CHUNK = 4096  # offsets per model call (THP and SAHP evaluate every history position)


# --- scoring -----------------------------------------------------------------------------


@dataclass
class _Window:
    seq_id: str
    start: int
    stop: int
    rows: list[tuple[int, int]]  # (output row, target position inside the window)


def _score_windows(
    sequences: dict[str, Events], targets: Sequence[tuple[str, int]], max_len: int
) -> list[_Window]:
    """The windows one pass of the model reads all targets from: per sequence the events up
    to its last target below ``max_len``, and one window per target beyond."""
    by_seq: dict[str, list[tuple[int, int]]] = {}
    for row, (seq_id, i) in enumerate(targets):
        if seq_id not in sequences:
            raise KeyError(f"target {row}: unknown sequence {seq_id!r}")
        n = len(sequences[seq_id][0])
        if not (isinstance(i, int | np.integer) and 1 <= i < n):
            raise ValueError(
                f"target {row}: event index {i!r} of sequence {seq_id!r} must lie in [1, {n})"
            )
        by_seq.setdefault(seq_id, []).append((row, int(i)))
    windows = []
    for seq_id, rows in by_seq.items():
        head = [(r, i) for r, i in rows if i < max_len]
        if head:
            windows.append(_Window(seq_id, 0, max(i for _, i in head) + 1, head))
        for r, i in rows:
            if i >= max_len:  # the most recent max_len − 1 events before the target
                windows.append(_Window(seq_id, i - max_len + 1, i + 1, [(r, max_len - 1)]))
    return windows


def _intensity_after(peer: Peer, tokenizer: Any, events: Events, start: int, i: int):
    """λ_k(s) + ε [G, K] after event i − 1 of ``events`` from events [start, i), through the
    model's own ``compute_intensities_at_sample_times`` (ε: EasyTPP's loss adds it to every
    λ_k, so the scores decompose that loss exactly)."""
    import torch

    # a one-event history runs with the target appended (EasyTPP's NHP needs two events;
    # the target cannot change the causal state before it) and reads position 0
    last_only = i - start >= 2
    stop = i if last_only else i + 1
    batch = pad_batch(tokenizer, [window_features(*events, start, stop, peer.time_scale)])
    model, n = peer.model, stop - start

    def intensity(offsets: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for a in range(0, offsets.size, _CHUNK):
                s = torch.tensor(offsets[a : a + _CHUNK], dtype=torch.float32)
                lam = model.compute_intensities_at_sample_times(
                    batch["time_seqs"],
                    batch["time_delta_seqs"],
                    batch["type_seqs"],
                    s.expand(1, n, s.numel()),
                    compute_last_step_only=last_only,
                )
                out.append(lam[0, -1] if last_only else lam[0, 0])
        return torch.cat(out).double().numpy() + model.eps

    return intensity


def _intensity_scores(
    peer: Peer, sequences: dict[str, Events], targets, out: dict, bins: np.ndarray | None
) -> None:
    """Fill ``out`` for an intensity model, target by target (see ``next_event_integrals``);
    with ``bins`` [m, 2] (model unit) also each target's bin probability, from Λ(lo) and
    ∫_lo^hi λ."""
    tokenizer = event_tokenizer(peer.num_types)
    s = peer.settings
    grid = gap_grid(s.grid_points, s.grid_horizon)
    for r, (seq_id, i) in enumerate(targets):
        times, types = sequences[seq_id]
        start = max(0, i - s.max_len + 1)
        intensity = _intensity_after(peer, tokenizer, (times, types), start, i)
        # the gap exactly as the model's input holds it (float32 of the rescaled times' step)
        rescaled = (times[i - 1 : i + 1] - times[start]) / peer.time_scale
        tau = float(np.float32(rescaled[1] - rescaled[0]))
        res = next_event_integrals(intensity, tau, grid)
        k, lam = int(types[i]), res["at_gap"]
        out["time_nll"][r] = -math.log(lam.sum()) + res["compensator"]
        out["type_nll_given_time"][r] = -math.log(lam[k] / lam.sum())
        out["type_nll_marginal"][r] = -math.log(max(res["probs"][k], 1e-300))
        out["type_probs"][r] = res["probs"]
        for key in ("mean_gap", "median_gap", "tail_mass", "integration_error"):
            out[key][r] = res[key]
        if bins is not None:
            lo, hi = bins[r]
            before = compensator(intensity, 0.0, lo)[0] if lo > 0 else 0.0
            out["time_nll_binned"][r] = -bin_log_probability(
                -before, compensator(intensity, lo, hi)[0]
            )


def _intensity_free_scores(
    peer: Peer, sequences: dict[str, Events], targets, out: dict, bins: np.ndarray | None
) -> None:
    """Fill ``out`` for IntensityFree: its mixture density, exactly as its loss builds it (the
    tests check the sum against ``loglike_loss``), one model pass per window; with ``bins``
    also each target's bin probability (``peer_models.intensity_free_bin_log_prob``)."""
    import torch
    from easy_tpp.model.intensity_free import LogNormalMixtureDistribution, clamp_preserve_gradients

    model, s = peer.model, peer.settings
    tokenizer = event_tokenizer(peer.num_types)
    grid = gap_grid(s.grid_points, s.grid_horizon)
    windows = _score_windows(sequences, targets, s.max_len)
    for a in range(0, len(windows), s.batch_size):
        chunk = windows[a : a + s.batch_size]
        batch = pad_batch(
            tokenizer,
            [
                window_features(*sequences[w.seq_id], w.start, w.stop, peer.time_scale)
                for w in chunk
            ],
        )
        with torch.no_grad():
            context = model.forward(batch["time_delta_seqs"], batch["type_seqs"])  # [B, N, H]
            rows = [(r, b, p) for b, win in enumerate(chunk) for r, p in win.rows]
            ctx = context[[b for _, b, _ in rows], [p - 1 for _, _, p in rows]]  # [m, H]
            c = model.num_mix_components
            raw = model.linear(ctx)[:, None, :]  # one position per row
            dist = LogNormalMixtureDistribution(
                locs=raw[..., :c],
                log_scales=clamp_preserve_gradients(raw[..., c : 2 * c], -5.0, 3.0),
                log_weights=torch.log_softmax(raw[..., 2 * c :], dim=-1),
                mean_log_inter_time=model.mean_log_inter_time,
                std_log_inter_time=model.std_log_inter_time,
            )
            tau = batch["time_delta_seqs"][[b for _, b, _ in rows], [p for _, _, p in rows]]
            log_p = dist.log_prob(tau.clamp(min=1e-5)[:, None])[:, 0]  # clamp: as its loss
            log_s = dist.log_survival_function(torch.tensor(grid[1:], dtype=ctx.dtype)[None])
            marks = torch.log_softmax(model.mark_linear(ctx), dim=-1)  # K + 1 (pad included)
            if bins is not None:
                log_bin = intensity_free_bin_log_prob(
                    raw[:, 0, :c],
                    clamp_preserve_gradients(raw[:, 0, c : 2 * c], -5.0, 3.0),
                    raw[:, 0, 2 * c :],
                    (model.mean_log_inter_time, model.std_log_inter_time),
                    bins[[r for r, _, _ in rows]],
                )
        big_lam = np.concatenate([np.zeros((len(rows), 1)), -log_s.double().numpy()], axis=1)
        mean, median = gap_summary(grid, big_lam)
        marks_np = marks.double().numpy()
        for j, (r, _, _) in enumerate(rows):
            k = int(sequences[targets[r][0]][1][targets[r][1]])
            out["time_nll"][r] = -float(log_p[j])
            out["type_nll_given_time"][r] = out["type_nll_marginal"][r] = -marks_np[j, k]
            out["type_probs"][r] = np.exp(marks_np[j, : peer.num_types])
            out["mean_gap"][r], out["median_gap"][r] = mean[j], median[j]
            out["tail_mass"][r] = math.exp(-big_lam[j, -1])
            out["integration_error"][r] = 0.0  # closed forms; the mean's grid: see docs
            if bins is not None:
                out["time_nll_binned"][r] = -log_bin[j]


def score_targets(
    peer: Peer,
    sequences: dict[str, Events],
    targets: Sequence[tuple[str, int]],
    resolution: float | None = None,
) -> dict[str, np.ndarray]:
    """Score ``targets`` ((seq_id, i): event i predicted from events < i) in the order given.

    Returns arrays [len(targets)] for every key of ``SCORE_KEYS`` (NLLs in nats, gaps in the
    dataset's unit, see the module docstring) and ``type_probs`` [len(targets), K] (the
    marginal P(type)). Likelihoods are deterministic; the thinning draws restart from the
    peer's seed on every call, and its one-step prediction reads every target of a sequence
    from one pass. With the data's time ``resolution`` (dataset unit) also
    ``time_nll_binned``: −log P(the true gap's bin), ``timecodec.resolution_bins``.
    """
    import torch

    windows = _score_windows(sequences, targets, peer.settings.max_len)
    for seq_id in {w.seq_id for w in windows}:
        check_events([sequences[seq_id]], peer.num_types, f"sequences[{seq_id!r}]")
    targets = [(q, int(i)) for q, i in targets]
    m = len(targets)
    out = {key: np.full(m, np.nan) for key in SCORE_KEYS}
    out["type_probs"] = np.full((m, peer.num_types), np.nan)
    bins = None
    if resolution:
        gaps = np.array([sequences[q][0][i] - sequences[q][0][i - 1] for q, i in targets])
        bins = resolution_bins(gaps, resolution) / peer.time_scale
        out["time_nll_binned"] = np.full(m, np.nan)
    torch.set_flush_denormal(True)
    peer.model.eval()
    score = _intensity_free_scores if peer.name == "IntensityFree" else _intensity_scores
    score(peer, sequences, targets, out, bins)
    # model unit → dataset unit: a density gains log s, a gap is multiplied by s
    out["time_nll"] += math.log(peer.time_scale)
    out["mean_gap"] *= peer.time_scale
    out["median_gap"] *= peer.time_scale
    out["joint_nll"] = out["time_nll"] + out["type_nll_given_time"]
    # EasyTPP's one-step prediction, one window at a time (thinning holds
    # [events, samples, proposals] tensors per window)
    tokenizer = event_tokenizer(peer.num_types)
    torch.manual_seed(peer.settings.seed)
    with torch.no_grad():
        for win in windows:
            feats = window_features(*sequences[win.seq_id], win.start, win.stop, peer.time_scale)
            gap, kind = peer.model.predict_one_step_at_every_event(**pad_batch(tokenizer, [feats]))
            for r, p in win.rows:
                out["pred_gap"][r] = float(gap[0, p - 1]) * peer.time_scale
                out["pred_type"][r] = int(kind[0, p - 1])
    out["pred_type"] = out["pred_type"].astype(np.int64)
    return out


# --- metrics and the whole run -----------------------------------------------------------


def summarize(scores: dict[str, np.ndarray], true_gap: np.ndarray, true_type: np.ndarray) -> dict:
    """Means over targets (time and joint NLL leave zero gaps out, as mmtpp's evaluation:
    a tie has no density), gap RMSE / MAE, type accuracy."""
    gap = np.asarray(true_gap, np.float64)
    kind = np.asarray(true_type)
    tied = gap <= 0

    def err(pred: np.ndarray) -> tuple[float, float]:
        ok = np.isfinite(pred)
        d = pred[ok] - gap[ok]
        return float(np.sqrt(np.mean(d**2))), float(np.mean(np.abs(d)))

    rmse, mae = err(scores["pred_gap"])
    rmse_mean, _ = err(scores["mean_gap"])
    _, mae_median = err(scores["median_gap"])
    return {
        "targets": int(gap.size),
        "zero_gaps_excluded": int(tied.sum()),
        "time_nll": float(np.mean(scores["time_nll"][~tied])),
        "type_nll_given_time": float(np.mean(scores["type_nll_given_time"])),
        "type_nll_marginal": float(np.mean(scores["type_nll_marginal"])),
        "joint_nll": float(np.mean(scores["joint_nll"][~tied])),
        "rmse": rmse,
        "mae": mae,
        "rmse_mean_gap": rmse_mean,
        "mae_median_gap": mae_median,
        "accuracy": float(np.mean(scores["pred_type"] == kind)),
        "accuracy_marginal": float(np.mean(scores["type_probs"].argmax(axis=1) == kind)),
        "max_tail_mass": float(np.max(scores["tail_mass"])),
    }


def split_targets(
    dataset_root: str | Path,
    split_fractions: Sequence[float],
    split_seed: int,
    count: int,
    min_history: int,
    target_seed: int,
    split: str = "test",
    exclude: Collection[str] = (),
) -> list[tuple[str, int]]:
    """The targets mmtpp's preparation samples on ``split`` (``shards.sample_targets`` per
    sequence of that split, sequences in dataset order)."""
    seqs = [s for s in read_sequences(dataset_root) if s.seq_id not in exclude]
    names = split_of([s.seq_id for s in seqs], list(split_fractions), split_seed)
    return [
        (s.seq_id, int(i))
        for s, name in zip(seqs, names, strict=True)
        if name == split
        for i in sample_targets(len(s), count, min_history, target_seed, s.seq_id)
    ]


def run_peers(
    dataset_root: str | Path,
    split_fractions: Sequence[float],
    split_seed: int,
    targets: Sequence[tuple[str, int]],
    names: Sequence[str] = PEER_NAMES,
    settings: PeerSettings | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Train each peer of ``names`` on the dataset's training split (``events.split_of``, the
    preparation's hash split; val for early stopping) and score ``targets``.

    ``exclude``: sequence ids left out (e.g. the ones preparation quarantined). Returns
    ``{"dataset", "time_unit", "targets", "true_gap", "true_type", "peers": {name: {"scores",
    "summary", "train_seconds", "score_seconds", "epochs_run", "best_epoch", "val_nll",
    "time_scale"}}}``.
    """
    settings = settings or PeerSettings()
    for name in names:
        check_peer_name(name)
    info = read_info(dataset_root)
    seqs = [s for s in read_sequences(dataset_root) if s.seq_id not in exclude]
    split = split_of([s.seq_id for s in seqs], list(split_fractions), split_seed)
    by_split: dict[str, list[Events]] = {"train": [], "val": [], "test": []}
    for s, name in zip(seqs, split, strict=True):
        by_split[name].append((s.time, s.type))
    sequences = {s.seq_id: (s.time, s.type) for s in seqs}
    missing = [t for t in targets if t[0] not in sequences]
    if missing:
        raise KeyError(f"{dataset_root}: targets name unknown sequences, e.g. {missing[0]}")
    true_gap = np.array([sequences[q][0][i] - sequences[q][0][i - 1] for q, i in targets])
    true_type = np.array([sequences[q][1][i] for q, i in targets], dtype=np.int64)
    out: dict[str, Any] = {
        "dataset": info.name,
        "time_unit": info.time_unit,
        "targets": [(q, int(i)) for q, i in targets],
        "true_gap": true_gap,
        "true_type": true_type,
        "peers": {},
    }
    for name in names:
        say(f"peer {name}: training on {len(by_split['train'])} sequences")
        peer = fit_peer(name, by_split["train"], by_split["val"], info.num_types, settings, say)
        say(f"peer {name}: scoring {len(targets)} targets")
        start = time.perf_counter()
        scores = score_targets(peer, sequences, targets, info.time_resolution)
        out["peers"][name] = {
            "score_seconds": time.perf_counter() - start,
            "scores": scores,
            "summary": summarize(scores, true_gap, true_type),
            "train_seconds": peer.train_seconds,
            "epochs_run": peer.epochs_run,
            "best_epoch": peer.best_epoch,
            "val_nll": peer.val_nll,
            "time_scale": peer.time_scale,
        }
    return out
