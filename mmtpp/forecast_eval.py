"""Multi-step evaluation: the model's sampled continuations against what happened, beside the
baselines and, on synthetic data, the true process (design §7; no Ray).

A forecast target (sequence, i) is a history — the sequence's first i events — and its truth,
the events after it. Every forecaster draws S continuations of K events after the history
(``multistep.Continuations``):

- ``mmtpp``: the model's (``Predictor.forecast``, from offline prediction's forecast columns);
- ``poisson``: a Poisson process at the training mean gap, types at the training frequencies;
- ``repeat_last``: the history's last gap and type, repeated;
- ``true_process`` (synthetic data): the generator's own process continued from the same
  history (``Oracle.continuations``): what a perfect model would draw.

Figures, each with a 95% bootstrap interval over targets (``mmtpp.multistep``):

- per step k = 1..K: the MAE of the k-th event's time (the point forecast is the median over
  samples) and the accuracy of its type (the most frequent type over samples);
- the optimal-transport distance (OTD) between each continuation of K events and the next K
  true events (as HYPRO scores its forecasts), averaged over samples, with deletion/insertion
  cost C (default: the training mean gap, so an event off by more than two typical gaps
  counts as missed). With a ``horizon``, both sides are cut to the window [t_last, t_last +
  horizon] instead; but a window on bursty data holds more true events than K on average
  (test targets sit in bursts more often than not: they are sampled per event), which charges
  C per true event no K-event forecast can reach, so the default has no window;
- the paired difference mmtpp − forecaster on the same targets (negative: mmtpp is better);
- with a window, the events each forecaster puts in it, beside the truth's: read OTD with
  this count and the per-step errors.

``evaluate_forecasts`` returns all of it as a JSON-able dict; ``forecast_table`` and
``plot_forecasts`` turn it into markdown and figures.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.baseline_forecasts import poisson_forecast, repeat_last_forecast
from mmtpp.baselines import Reference
from mmtpp.events import EventSequence
from mmtpp.intervals import Interval, paired_difference
from mmtpp.metrics import with_interval
from mmtpp.multistep import (
    NO_TYPE,
    Continuations,
    HorizonErrors,
    horizon_errors,
    otd_scores,
    truth_after,
)
from mmtpp.oracle import Oracle

FORECASTERS = ("mmtpp", "poisson", "repeat_last", "true_process")
LABELS = {
    "mmtpp": "mmtpp",
    "poisson": "Poisson",
    "repeat_last": "repeat last",
    "true_process": "true process",
}


def padded(forecast: Continuations, steps: int) -> Continuations:
    """``forecast`` with exactly ``steps`` step columns (cut, or padded with no event)."""
    k = forecast.steps
    if k >= steps:
        return Continuations(
            forecast.start, forecast.times[:, :, :steps], forecast.types[:, :, :steps]
        )
    pad = ((0, 0), (0, 0), (0, steps - k))
    return Continuations(
        forecast.start,
        np.pad(forecast.times, pad, constant_values=np.nan),
        np.pad(forecast.types, pad, constant_values=NO_TYPE),
    )


def model_forecasts(
    frame: pd.DataFrame, sequences: Mapping[str, EventSequence], steps: int
) -> tuple[list[tuple[str, int]], Continuations, dict[str, int]]:
    """The targets that carry a forecast in ``frame`` (offline prediction's rows), the model's
    continuations after them ([H, S, steps]) and its invalid draws by reason, summed."""
    rows = frame[frame["forecast_times"].notna()]
    targets = [(str(s), int(t)) for s, t in zip(rows["seq_id"], rows["target"], strict=True)]
    start = [sequences[s].time[t - 1] for s, t in targets]
    events = [
        [list(zip(ts, ks, strict=True)) for ts, ks in zip(times, types, strict=True)]
        for times, types in zip(rows["forecast_times"], rows["forecast_types"], strict=True)
    ]
    invalid: Counter[str] = Counter()
    for text in rows["forecast_invalid"]:
        invalid.update(json.loads(text or "{}"))
    return targets, padded(Continuations.from_events(start, events), steps), dict(invalid)


def oracle_forecast(
    oracle: Oracle, histories: Sequence[EventSequence], steps: int, samples: int, seed: int
) -> Continuations:
    """``samples`` continuations of the true process after each history (target h draws
    from its own generator, seeded by (seed, h))."""
    times = np.full((len(histories), samples, steps), np.nan)
    types = np.full(times.shape, NO_TYPE, dtype=np.int64)
    for h, seq in enumerate(histories):
        drawn = oracle.continuations(
            seq.time, seq.type, np.random.default_rng([seed, h]), samples, steps=steps
        )
        k = min(drawn.times.shape[1], steps)
        times[h, :, :k] = drawn.times[:, :k]
        types[h, :, :k] = drawn.types[:, :k]
    start = np.array([seq.time[-1] for seq in histories], dtype=np.float64)
    return Continuations(start, times, types)


def reference_forecasts(
    histories: Sequence[EventSequence],
    reference: Reference,
    oracle: Oracle | None,
    steps: int,
    samples: int,
    seed: int = 0,
) -> dict[str, Continuations]:
    """The baselines' (and, given an oracle, the true process's) continuations."""
    out = {
        "poisson": poisson_forecast(
            histories, steps, samples, reference.mean_gap, reference.type_freq, seed
        ),
        "repeat_last": repeat_last_forecast(histories, steps, samples, reference.mean_gap),
    }
    if oracle is not None:
        out["true_process"] = oracle_forecast(oracle, histories, steps, samples, seed)
    return out


def _interval(values: np.ndarray, other: np.ndarray, seed: int) -> dict[str, Any] | None:
    """Paired mean difference values − other over the rows where both are scored."""
    both = ~np.isnan(values) & ~np.isnan(other)
    if both.sum() < 2:
        return None
    return paired_difference(values[both], other[both], seed=seed).to_dict()


def _in_window(forecast: Continuations, ends: np.ndarray) -> np.ndarray:
    """[H] events per continuation at or before ``ends`` [H], averaged over samples."""
    with np.errstate(invalid="ignore"):
        inside = forecast.times <= ends[:, None, None]  # NaN padding compares False
    return inside.sum(axis=2).mean(axis=1).astype(np.float64)


def score_forecasts(
    forecasts: Mapping[str, Continuations],
    sequences: Sequence[EventSequence],
    cuts: Sequence[int],
    cost: float,
    horizon: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-step errors, OTD and paired differences against ``mmtpp`` (when present) of each
    forecaster's continuations after the histories ``sequences[h][:cuts[h]]`` (``horizon``
    inf: OTD on the next K events, no window)."""
    steps = max(f.steps for f in forecasts.values())
    truth = truth_after(sequences, cuts, steps)
    if np.isfinite(horizon):
        longest = max(len(s) for s in sequences)
        ends = truth.start + horizon
        window_truth = truth_after(sequences, cuts, longest, until=ends)
    else:
        ends, window_truth = np.full(len(cuts), np.inf), truth
    errors: dict[str, HorizonErrors] = {}
    out: dict[str, Any] = {
        "truth_window_events": with_interval(_in_window(window_truth, ends), seed=seed),
        "forecasters": {},
        "paired": {},
    }
    otd_means = {}
    for name, forecast in forecasts.items():
        errors[name] = horizon_errors(forecast, truth)
        scores = otd_scores(forecast, window_truth, horizon, cost)
        otd_means[name] = scores.mean
        out["forecasters"][name] = {
            "per_step": errors[name].summary(seed),
            "otd": scores.summary(seed),
            # OTD charges C per true event a forecast leaves out of the window: read it with
            # how many events the forecast puts there
            "window_events": with_interval(_in_window(forecast, ends), seed=seed),
        }
    if "mmtpp" in forecasts:
        model = errors["mmtpp"]
        for name in forecasts:
            if name == "mmtpp":
                continue
            other = errors[name]
            out["paired"][name] = {
                "otd": _interval(otd_means["mmtpp"], otd_means[name], seed),
                "mae": [
                    _interval(model.abs_error[:, k], other.abs_error[:, k], seed)
                    for k in range(steps)
                ],
                "type_accuracy": [
                    _interval(model.correct[:, k], other.correct[:, k], seed) for k in range(steps)
                ],
            }
    return out


def evaluate_forecasts(
    frame: pd.DataFrame,
    sequences: Mapping[str, EventSequence],
    reference: Reference,
    oracle: Oracle | None,
    steps: int,
    cost: float | None = None,
    horizon: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Multi-step figures of the forecast targets in ``frame`` (offline prediction's rows
    with forecast columns; ``sequences``: seq_id → full sequence, as the model saw it):
    mmtpp against the baselines and the true process (see the module docstring). Empty
    when no row has a forecast."""
    if "forecast_times" not in frame or not frame["forecast_times"].notna().any():
        return {}
    targets, model, invalid = model_forecasts(frame, sequences, steps)
    seqs = [sequences[s] for s, _ in targets]
    cuts = [t for _, t in targets]
    histories = [seq.slice(0, cut) for seq, cut in zip(seqs, cuts, strict=True)]
    cost = reference.mean_gap if cost is None else float(cost)
    horizon = np.inf if horizon is None else float(horizon)
    forecasts = {
        "mmtpp": model,
        **reference_forecasts(histories, reference, oracle, steps, model.samples, seed),
    }
    out = {
        "targets": len(targets),
        "steps": steps,
        "samples": model.samples,
        "otd_cost": cost,
        "horizon": horizon if np.isfinite(horizon) else None,  # None: the next K events
        "invalid_draws": invalid,
        **score_forecasts(forecasts, seqs, cuts, cost, horizon, seed),
    }
    return out


# --- report -------------------------------------------------------------------------------


def _ci(value: dict[str, Any] | None) -> str:
    return "—" if value is None else str(Interval(**value))


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def forecast_table(r: dict[str, Any]) -> str:
    """Markdown: OTD and the first/last step's MAE and type accuracy of every forecaster,
    then the paired differences mmtpp − forecaster (negative: mmtpp better)."""
    if not r:
        return ""
    steps = r["steps"]
    shown = sorted({1, (steps + 1) // 2, steps})
    windowed = r["horizon"] is not None
    window = f"on a window of {r['horizon']:.4g}" if windowed else f"on the next {steps} events"
    counts = [f"events in window (truth {_ci(r['truth_window_events'])})"] if windowed else []
    lines = [
        f"multi-step forecasts: {r['targets']} targets, {r['samples']} sampled continuations "
        f"of {steps} events each; OTD {window} with "
        f"deletion/insertion cost {r['otd_cost']:.4g}; 95% intervals over targets. Invalid "
        f"draws of the model (redrawn): {r['invalid_draws'] or 'none'}.",
        "",
        _row(
            [
                "forecaster",
                "OTD",
                *counts,
                *(f"MAE k={k}" for k in shown),
                *(f"type acc. k={k}" for k in shown),
            ]
        ),
        _row(["---"] * (2 + len(counts) + 2 * len(shown))),
    ]
    for name, f in r["forecasters"].items():
        per = f["per_step"]
        lines.append(
            _row(
                [
                    LABELS.get(name, name),
                    _ci(f["otd"]["otd"]),
                    *([_ci(f["window_events"])] if windowed else []),
                    *(_ci(per[k - 1]["mae"]) for k in shown),
                    *(_ci(per[k - 1]["type_accuracy"]) for k in shown),
                ]
            )
        )
    if r["paired"]:
        lines += [
            "",
            "mmtpp − forecaster, paired on the same targets:",
            "",
            _row(["versus", "OTD", *(f"MAE k={k}" for k in shown)]),
            _row(["---"] * (2 + len(shown))),
        ]
        for name, p in r["paired"].items():
            lines.append(
                _row(
                    [LABELS.get(name, name), _ci(p["otd"]), *(_ci(p["mae"][k - 1]) for k in shown)]
                )
            )
    return "\n".join(lines)


def _error_bars(points: Sequence[dict[str, Any] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Estimates [n] and error bars [2, n] of intervals (NaN and 0 where missing)."""
    est = np.array([p["estimate"] if p else np.nan for p in points])
    err = np.array(
        [[p["estimate"] - p["low"], p["high"] - p["estimate"]] if p else [0, 0] for p in points]
    ).T
    return est, err.reshape(2, -1)


def plot_forecasts(r: dict[str, Any], out: str | Path) -> list[Path]:
    """``forecast_horizon.png`` (MAE and type accuracy of the k-th event, k = 1..K, with
    their intervals) and ``forecast_otd.png`` (OTD per forecaster); returns the paths."""
    if not r:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    steps = np.arange(1, r["steps"] + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, label in (
        (axes[0], "mae", "MAE of the k-th event time"),
        (axes[1], "type_accuracy", "type accuracy of the k-th event"),
    ):
        for j, (name, f) in enumerate(r["forecasters"].items()):
            pts = [s[key] for s in f["per_step"]]
            est = np.array([p["estimate"] if p else np.nan for p in pts])
            err = np.array(
                [
                    [p["estimate"] - p["low"], p["high"] - p["estimate"]] if p else [0, 0]
                    for p in pts
                ]
            ).T
            ax.errorbar(
                steps + 0.08 * (j - 1.5),
                est,
                yerr=err,
                fmt="o-",
                capsize=2,
                label=LABELS.get(name, name),
            )
        ax.set(xlabel="step k", ylabel=label)
        if key == "mae":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("multi-step forecasts (95% intervals over targets)")
    fig.tight_layout()
    horizon_png = out / "forecast_horizon.png"
    fig.savefig(horizon_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(r["forecasters"])
    est, err = _error_bars([r["forecasters"][n]["otd"]["otd"] for n in names])
    ax.bar([LABELS.get(n, n) for n in names], est, yerr=err, capsize=4, color="0.6")
    ax.set(
        ylabel=f"OTD (cost {r['otd_cost']:.3g}, "
        + (
            f"window {r['horizon']:.3g})"
            if r["horizon"] is not None
            else f"next {r['steps']} events)"
        ),
        title="optimal-transport distance to the truth",
    )
    fig.tight_layout()
    otd_png = out / "forecast_otd.png"
    fig.savefig(otd_png, dpi=120)
    plt.close(fig)
    return [horizon_png, otd_png]
