"""An evaluation's report: the results table (every figure with its 95% interval), the
events that fit in the budget per compression rule, and the plots (design §7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.forecast_eval import forecast_table, plot_forecasts
from mmtpp.stats import grid_rules, rule_stats


def card_renderer(inputs):
    """The model's card, a renderer with its tokenizer, and an image-token counter for the
    dataset: prompts exactly as the model sees them, without loading the model."""
    from mmtpp.card import ModelCard
    from mmtpp.images import ImageSpec, image_token_counter
    from mmtpp.templates import Renderer
    from mmtpp.tokens import TokenIds, load_backend

    card = ModelCard.read(inputs.model_dir)
    tokenizer = load_backend(inputs.model_dir)
    renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, card.num_types))
    spec = ImageSpec(card.image_min_pixels, card.image_max_pixels)
    counter = image_token_counter(inputs.dataset_root, spec, inputs.dataset_root)
    return card, renderer, counter


def events_per_budget(inputs, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Events that fit in the model's budget on the test sequences under every compression
    rule (each mode on its grid of Δ) and the model's own, tokenized as the model sees them."""
    card, renderer, counter = card_renderer(inputs)
    seq_ids = dict.fromkeys(s for s, _ in context["targets"])
    tokens = renderer.event_tokens([context["sequences"][s] for s in seq_ids], counter)
    rules = list(dict.fromkeys([*grid_rules(keep_type=card.rule.keep_type), card.rule]))
    return [s.to_dict() for s in rule_stats(tokens, rules, card.budget)]


def _ci(value: dict | None, spec: str = ".4g") -> str:
    if value is None:
        return "—"
    return f"{value['estimate']:{spec}} [{value['low']:{spec}}, {value['high']:{spec}}]"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_table(r: dict[str, Any]) -> str:
    """The results as markdown: figure [95% interval] over the test targets."""
    lines = [
        f"{r['dataset']}: {r['targets']} test targets scored "
        f"({r['errors']['count']} could not be; time unit {r['time_unit']}); 95% bootstrap "
        "intervals over targets in brackets.",
        "",
        _row(["figure", "mmtpp", "baselines", "Bayes-optimal", "captured"]),
        _row(["---"] * 5),
    ]
    lines += _time_rows(r["time"])
    lines += _type_rows(r["type"])
    lines += _likelihood_rows(r["likelihood"])
    if "text" in r:
        lines.append(_row(["text ROUGE-L", _ci(r["text"]["rouge_l"]), "", "", ""]))
        lines.append(_row(["text BLEU (corpus)", f"{r['text']['bleu']:.4g}", "", "", ""]))
    lines += _calibration_table(r["calibration"])
    inv = ", ".join(f"{task}: {sum(c.values())}" for task, c in r["invalid"].items())
    lines.append(
        f"\ninvalid generations (counted, left out of the time errors): {inv}; "
        f"zero gaps left out of the time NLL: {r['likelihood']['time'].get('zero_gaps_excluded')}"
    )
    curve = r.get("history_curve") or {}
    if curve:
        lines += _curve_table(curve)
    ev = r.get("image_evidence")
    if ev:
        lines.append(_image_evidence_line(ev))
    epb = r.get("events_per_budget") or []
    if epb:
        lines.append(f"\nevents per {epb[0]['budget']}-token budget on the test sequences:")
        lines.append(
            ", ".join(f"{s['mode']} Δ={s['delta']:g}: {s['events_per_budget']:.1f}" for s in epb)
        )
    if r.get("forecast"):
        lines += ["", forecast_table(r["forecast"])]
    return "\n".join(lines)


def _figure_row(label: str, figure: dict[str, Any], baselines: str, captured: str) -> str:
    """One row of the results table: the model's figure, the baselines' (already written
    out), the Bayes-optimal one and the share of the attainable gain captured."""
    return _row([label, _ci(figure["model"]), baselines, _ci(figure.get("bayes")), captured])


def _time_rows(t: dict[str, Any]) -> list[str]:
    """RMSE and MAE of the next gap (none when no time was predicted)."""
    if "rmse" not in t:
        return []
    rmse, mae = t["rmse"], t["mae"]
    return [
        _figure_row(
            "time RMSE",
            rmse,
            f"mean gap {_ci(rmse['mean_gap'])}; last gap {_ci(rmse['last_gap'])}",
            _ci(t.get("rmse_captured"), ".0%"),
        ),
        _figure_row(
            "time MAE",
            mae,
            f"median gap {_ci(mae['median_gap'])}; last gap {_ci(mae['last_gap'])}",
            _ci(t.get("mae_captured"), ".0%"),
        ),
        *_median_mae_row(t),
    ]


def _median_mae_row(t: dict[str, Any]) -> list[str]:
    """The MAE of the model's predictive median (MAE's optimal point; the decoded gap above is
    the mean, RMSE's), when the predictions hold gap quantiles."""
    mae = t["mae"]
    if "model_median" not in mae:
        return []
    label = "time MAE (model's median)"
    figure = {"model": mae["model_median"], "bayes": mae.get("bayes")}
    return [_figure_row(label, figure, "as above", _ci(t.get("mae_median_captured"), ".0%"))]


def _type_rows(y: dict[str, Any]) -> list[str]:
    """Accuracy and macro-F1 of the next type."""
    acc, f1 = y["accuracy"], y["macro_f1"]
    return [
        _figure_row(
            "type accuracy",
            acc,
            f"majority {_ci(acc['majority'])}; last type {_ci(acc['last_type'])}",
            _ci(y.get("accuracy_captured"), ".0%"),
        ),
        _figure_row(
            "type macro-F1",
            f1,
            f"majority {_ci(f1['majority'])}; last type {_ci(f1['last_type'])}",
            "",
        ),
    ]


def _likelihood_rows(nll: dict[str, Any]) -> list[str]:
    """Time, type and joint negative log-likelihoods against their baselines."""
    lines = []
    for task, label, base in (
        ("time", "time NLL (nats/event)", "Poisson"),
        ("type", "type NLL (nats)", "type frequencies"),
    ):
        n = nll[task]
        baseline = f"{base} {_ci(n['baseline'])}"
        lines.append(_figure_row(label, n, baseline, _ci(n.get("captured"), ".0%")))
    j = nll["joint"]
    lines.append(_figure_row("time + type NLL", j, _ci(j["baseline"]), ""))
    if "time_binned" in nll:  # data recorded to a resolution: the probability of the gap's bin
        b = nll["time_binned"]
        label = "time NLL of the gap's bin (ties included)"
        lines.append(_figure_row(label, b, f"Poisson {_ci(b['baseline'])}", ""))
    return lines


def _calibration_table(cal: dict[str, Any]) -> list[str]:
    """One column per calibrated distribution: interval coverage, CRPS, PIT histogram."""
    lines = ["", _row(["calibration", *cal]), _row(["---"] * (len(cal) + 1))]
    for key, label in (
        ("coverage_50", "50% interval coverage"),
        ("coverage_90", "90% interval coverage"),
        ("crps", "CRPS"),
    ):
        lines.append(_row([label, *(_ci(c.get(key)) for c in cal.values())]))
    lines.append(
        _row(
            [
                "PIT histogram (10 bins)",
                *(" ".join(map(str, c["pit_histogram"])) for c in cal.values()),
            ]
        )
    )
    return lines


def _image_evidence_line(ev: dict[str, Any]) -> str:
    """How many test prompts show an image that carries information about the target."""
    line = (
        f"\nimage evidence ({ev['process']}): {ev['with_evidence']} of {ev['targets']} "
        "test targets' prompts show "
    )
    if ev["process"] == "regime":
        return line + "an image of the regime in force at the target"
    return line + (
        "an image of an event of the previous event's type (its background hints "
        f"the favourite next type; {ev['showing_the_true_favourite']} show the "
        "true favourite)"
    )


def _curve_table(curve: dict[str, Any]) -> list[str]:
    lengths = curve["lengths"]
    lines = [
        f"\ntime NLL with at most L history events ({curve['targets']} targets):",
        _row(["L", *map(str, lengths)]),
        _row(["---"] * (len(lengths) + 1)),
    ]
    for name in ("compressed", "uncompressed", "bayes"):
        if name in curve:
            cells = [_ci(v, ".3f") for v in curve[name]["time_nll"]]
            lines.append(_row([name, *cells]))
    lines += [
        "",
        "type NLL with at most L history events:",
        _row(["L", *map(str, lengths)]),
        _row(["---"] * (len(lengths) + 1)),
    ]
    for name in ("compressed", "uncompressed", "bayes"):
        if name in curve:
            lines.append(_row([name, *(_ci(v, ".3f") for v in curve[name]["type_nll"])]))
    return lines


def plot(results: dict[str, Any], frame: pd.DataFrame, type_names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _gap_plot(plt, frame, out)
    _type_plot(plt, frame, type_names, out)
    if results.get("history_curve"):
        _curve_plot(plt, results["history_curve"], out)
    _pit_plot(plt, results["calibration"], out)
    if results.get("events_per_budget"):
        _budget_plot(plt, results["events_per_budget"], out)
    if results.get("forecast"):
        plot_forecasts(results["forecast"], out)


def _gap_plot(plt, frame: pd.DataFrame, out: Path) -> None:
    v = frame[frame["pred_gap"].notna()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    true = np.maximum(v["true_gap"].to_numpy(float), 1e-4)
    pred = np.maximum(v["pred_gap"].to_numpy(float), 1e-4)
    if len(v):
        q = np.maximum(np.stack(v["gap_quantiles"].to_numpy()), 1e-4)
        ax.vlines(true, q[:, 0], q[:, 4], color="0.8", lw=0.5, label="90% interval")
    ax.scatter(true, pred, s=6, alpha=0.5, label="prediction")
    hi = max(float(np.max(true, initial=1e-3)), float(np.max(pred, initial=1e-3)))
    ax.plot([1e-4, hi], [1e-4, hi], "k--", lw=1)
    if not len(v):
        ax.text(0.5, 0.5, "no valid time prediction", transform=ax.transAxes, ha="center")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="true gap",
        ylabel="predicted gap",
        title="next-event gap",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gap_pred_vs_true.png", dpi=120)
    plt.close(fig)


def _type_plot(plt, frame: pd.DataFrame, type_names: list[str], out: Path) -> None:
    k = len(type_names)
    matrix = np.zeros((k, k + 1), dtype=int)  # last column: invalid
    for t, p in zip(
        frame["true_type"].astype(int), frame["pred_type"].fillna(-1).astype(int), strict=True
    ):
        matrix[t, p if p >= 0 else k] += 1
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k + 1), [*type_names, "invalid"], rotation=45)
    ax.set_yticks(range(k), type_names)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="next-event type")
    fig.tight_layout()
    fig.savefig(out / "type_confusion.png", dpi=120)
    plt.close(fig)


def _curve_plot(plt, curve: dict[str, Any], out: Path) -> None:
    lengths = curve["lengths"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, label in (
        (axes[0], "time_nll", "time NLL (nats)"),
        (axes[1], "type_nll", "type NLL (nats)"),
    ):
        for name, style in (("compressed", "o-"), ("uncompressed", "s-"), ("bayes", "k--")):
            if name not in curve:
                continue
            pts = curve[name][key]
            est = [p["estimate"] if p else np.nan for p in pts]
            err = [
                [p["estimate"] - p["low"] if p else 0 for p in pts],
                [p["high"] - p["estimate"] if p else 0 for p in pts],
            ]
            ax.errorbar(lengths, est, yerr=err, fmt=style, capsize=2, label=name)
        ax.set(xscale="log", xlabel="history events (at most)", ylabel=label)
        ax.legend(fontsize=7)
    fig.suptitle("value of history: model vs Bayes-optimal (95% intervals)")
    fig.tight_layout()
    fig.savefig(out / "nll_vs_history.png", dpi=120)
    plt.close(fig)


def _pit_plot(plt, calibration: dict[str, Any], out: Path) -> None:
    fig, axes = plt.subplots(1, len(calibration), figsize=(3.2 * len(calibration), 3))
    for ax, (name, c) in zip(np.atleast_1d(axes), calibration.items(), strict=True):
        counts = np.asarray(c["pit_histogram"], dtype=float)
        ax.bar(np.arange(10) / 10 + 0.05, counts / max(counts.sum(), 1), width=0.1)
        ax.axhline(0.1, color="k", ls="--", lw=1)
        ax.set(title=f"{name} PIT", xlabel="F(true gap)", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(out / "pit.png", dpi=120)
    plt.close(fig)


def _budget_plot(plt, stats: list[dict[str, Any]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for mode in ("absolute", "relative", "typed"):
        pts = sorted((s["delta"], s["events_per_budget"]) for s in stats if s["mode"] == mode)
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=mode)
    ax.axhline(
        stats[0]["events_per_budget_uncompressed"], color="k", ls="--", lw=1, label="uncompressed"
    )
    ax.set(
        xscale="symlog",
        xlabel="Δ (each mode in its units)",
        ylabel=f"events in {stats[0]['budget']} tokens",
        title="events per budget (test sequences)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "events_per_budget.png", dpi=120)
    plt.close(fig)
