"""Experiments: several variants of one config, each over several seeds, reported with 95%
intervals and paired differences to a reference variant (design §7; ``jobs/experiment.py``).

An experiment file (``jobs/experiments/*.yaml``) names a base config, overrides for every
run, the seeds, and the variants — named override sets and/or a grid of keys whose values
are crossed. Every (variant, seed) runs the whole pipeline (``pipeline.run_pipeline``) in its
own directory, one after the other: each run already fills the cluster with its own Ray Data
and Ray Train work, prepared data and trained stages are reused by fingerprint, and a run
whose report exists for the same config is skipped — so an interrupted experiment resumes
where it stopped. The report pairs each variant with the reference on the same targets
(same seed: same split and targets), per figure of ``metrics.FIGURES``: the mean over seeds
with its t-interval (bootstrap over targets with one seed), and the paired difference.

A finished run's evidence is small — its config stamp and its targets' scores — and
``export_scores`` / ``import_scores`` carry it between machines and sessions without the
checkpoints: a report can be rebuilt from it, and an experiment resumed elsewhere adds seeds
or variants next to the imported runs instead of redoing them.
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mmtpp.config import Config, load_config
from mmtpp.intervals import over_seeds, paired_over_seeds
from mmtpp.metrics import FIGURES, figure_values

FINISHED = "finished.json"
# the targets' columns an exported run keeps: every figure of metrics.FIGURES, the scalar
# scores of the baselines and the Bayes-optimal predictor on the same targets, and the
# prompt's size and compression (~180 kB for 1,000 targets)
SCORE_COLUMNS = (
    *("seq_id", "target", "history_events", "compressed_events", "prompt_tokens"),
    *("pred_gap", "true_gap", "pred_type", "true_type", "time_nll", "type_nll", "crps"),
    *("time_nll_binned", "gap_quantiles", "last_gap", "last_type"),
    *("poisson_time_nll", "poisson_time_nll_binned", "freq_type_nll", "poisson_crps"),
    *("bayes_mean", "bayes_median", "bayes_type", "bayes_time_nll", "bayes_type_nll"),
)


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    name: str
    base: Path
    output_dir: Path
    seeds: list[int]
    variants: dict[str, list[str]]  # name -> overrides
    reference: str
    overrides: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=lambda: list(FIGURES))
    # where experiment.json/.md and the plots go (default: output_dir). Experiments that
    # share an output_dir share their identical runs (same variant name, same config: the
    # run is finished already) and keep their reports apart with their own report_dir.
    report_dir: Path | None = None

    @property
    def report_path(self) -> Path:
        return self.report_dir or self.output_dir

    @classmethod
    def load(cls, path: str | Path, extra: list[str] | None = None) -> Experiment:
        path = Path(path)
        spec = yaml.safe_load(path.read_text()) or {}
        known = {
            "base",
            "output_dir",
            "seeds",
            "variants",
            "grid",
            "reference",
            "overrides",
            "figures",
            "report_dir",
        }
        if unknown := set(spec) - known:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
        for key in ("base", "output_dir"):
            if key not in spec:
                raise ValueError(f"{path}: '{key}' is required")
        variants = expand(spec.get("variants") or {}, spec.get("grid") or {})
        if not variants:
            raise ValueError(f"{path}: no variants (give 'variants' and/or 'grid')")
        reference = spec.get("reference") or next(iter(variants))
        if reference not in variants:
            raise ValueError(f"{path}: reference {reference!r} is not a variant: {list(variants)}")
        figures = spec.get("figures") or list(FIGURES)
        if unknown := set(figures) - set(FIGURES):
            raise ValueError(f"{path}: unknown figures {sorted(unknown)}; valid: {list(FIGURES)}")
        base = Path(spec["base"])
        return cls(
            name=path.stem,
            base=base if base.is_absolute() else Path.cwd() / base,
            output_dir=Path(spec["output_dir"]),
            seeds=[int(s) for s in spec.get("seeds", [0])],
            variants=variants,
            reference=reference,
            overrides=[*spec.get("overrides", []), *(extra or [])],
            figures=figures,
            report_dir=Path(spec["report_dir"]) if spec.get("report_dir") else None,
        )

    def config(self, variant: str, seed: int) -> Config:
        """The full config of one run: base ← overrides ← variant ← seed and directory."""
        out = self.output_dir / variant / f"seed{seed}"
        overrides = [*self.overrides, *self.variants[variant], f"seed={seed}", f"output_dir={out}"]
        return load_config(self.base, overrides)

    def runs(self) -> list[tuple[str, int]]:
        """Seed by seed: every variant of a seed before the next seed, so an experiment cut
        short still has complete seeds to report."""
        return [(v, s) for s in self.seeds for v in self.variants]


def _override(key: str, value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return f"{key}={text.removesuffix(chr(10) + '...' + chr(10)).strip()}"


def expand(variants: dict[str, dict[str, Any]], grid: dict[str, list[Any]]) -> dict[str, list[str]]:
    """Named variants (each a mapping of keys to values) and the grid's crossed values
    (each combination a variant named ``key=value,…``) as override lists, in file order."""
    out: dict[str, list[str]] = {}
    for name, values in variants.items():
        out[str(name)] = [_override(k, v) for k, v in (values or {}).items()]
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else []:
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, combo, strict=True))
        out[name] = [_override(k, v) for k, v in zip(keys, combo, strict=True)]
    return out


def run_experiment(exp: Experiment) -> dict[str, Any]:
    """Run every (variant, seed) not finished yet, then write the report."""
    from mmtpp.pipeline import run_pipeline

    for i, (variant, seed) in enumerate(exp.runs(), start=1):
        config = exp.config(variant, seed)
        done = Path(config.output_dir) / FINISHED
        stamp = _stamp(config)
        if done.is_file() and done.read_text() == stamp:
            print(f"experiment: {variant} seed {seed} already finished, skipping", flush=True)
            continue
        print(f"experiment: run {i}/{len(exp.runs())}: {variant} seed {seed}", flush=True)
        run_pipeline(config)
        done.write_text(stamp)
    return report(exp)


def _stamp(config: Config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def _run_dir(exp: Experiment, variant: str, seed: int) -> Path:
    return exp.output_dir / variant / f"seed{seed}"


def _targets_path(exp: Experiment, variant: str, seed: int) -> Path:
    return _run_dir(exp, variant, seed) / "report" / "targets.parquet"


def export_scores(exp: Experiment, dest: str | Path) -> list[tuple[str, int]]:
    """Copy each finished run's stamp and its targets' ``SCORE_COLUMNS`` to
    ``dest/<variant>/seed<k>/`` (the report's files beside them); returns the runs copied."""
    dest, copied = Path(dest), []
    for variant, seed in exp.runs():
        stamp = _run_dir(exp, variant, seed) / FINISHED
        if not (stamp.is_file() and _done(exp, variant, seed)):
            continue
        out = dest / variant / f"seed{seed}"
        (out / "report").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stamp, out / FINISHED)
        frame = pd.read_parquet(_targets_path(exp, variant, seed))
        keep = [c for c in SCORE_COLUMNS if c in frame.columns]
        frame[keep].to_parquet(out / "report" / "targets.parquet", index=False)
        copied.append((variant, seed))
    for name in ("experiment.json", "experiment.md"):
        if (exp.report_path / name).is_file():
            shutil.copyfile(exp.report_path / name, dest / name)
    return copied


def import_scores(exp: Experiment, src: str | Path) -> list[tuple[str, int]]:
    """Put the runs exported to ``src`` into the experiment's output_dir, each where no
    finished run is yet; returns the runs imported. A run is skipped later only if its stamp
    equals the config this code builds for it (otherwise it runs again)."""
    src, imported = Path(src), []
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no exported runs here")
    for variant, seed in exp.runs():
        saved = src / variant / f"seed{seed}"
        run = _run_dir(exp, variant, seed)
        if not (saved / FINISHED).is_file() or (run / FINISHED).is_file():
            continue
        (run / "report").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved / "report" / "targets.parquet", _targets_path(exp, variant, seed))
        shutil.copyfile(saved / FINISHED, run / FINISHED)
        imported.append((variant, seed))
    return imported


def _done(exp: Experiment, variant: str, seed: int) -> bool:
    """The run has scored targets, and its stamp (when it has one) is the config this code
    builds for it: scores of another config (e.g. imported from before a change) do not
    count."""
    if not _targets_path(exp, variant, seed).is_file():
        return False
    stamp = _run_dir(exp, variant, seed) / FINISHED
    return not stamp.is_file() or stamp.read_text() == _stamp(exp.config(variant, seed))


def _targets(exp: Experiment, variant: str, seed: int) -> pd.DataFrame:
    path = _targets_path(exp, variant, seed)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run {variant} seed {seed} has no evaluation yet")
    return pd.read_parquet(path).set_index(["seq_id", "target"]).sort_index()


def report(exp: Experiment) -> dict[str, Any]:
    """Per variant and figure: the figure over seeds with its interval, and the paired
    difference to the reference (on the targets both variants scored), over the seeds whose
    every variant is evaluated (an experiment cut short reports its complete seeds)."""
    seeds = [s for s in exp.seeds if all(_done(exp, v, s) for v in exp.variants)]
    if not seeds:
        raise FileNotFoundError(
            f"{exp.output_dir}: no seed has every variant evaluated yet (a run whose saved "
            "config differs from the current one does not count)"
        )
    frames = {(v, s): _targets(exp, v, s) for s in seeds for v in exp.variants}
    table: dict[str, Any] = {}
    for name in exp.figures:
        fig = FIGURES[name]
        if not any(fig.rows(frame).any() for frame in frames.values()):
            continue  # a figure these runs do not have (e.g. bins on continuous times)
        table[name] = {}
        for variant in exp.variants:
            per_seed = [figure_values(name, frames[(variant, s)])[1] for s in seeds]
            entry: dict[str, Any] = {"value": _interval(over_seeds, per_seed, stat=fig.stat)}
            a, b = [], []
            if variant != exp.reference:
                for s in seeds:
                    mine, ref = frames[(variant, s)], frames[(exp.reference, s)]
                    shared = mine.index.intersection(ref.index)
                    rows = fig.rows(mine.loc[shared]) & fig.rows(ref.loc[shared])
                    a.append(fig.values(mine.loc[shared][rows]))
                    b.append(fig.values(ref.loc[shared][rows]))
                entry["vs_reference"] = _interval(paired_over_seeds, a, b, stat=fig.stat)
            if len(seeds) > 1:  # each seed on its own targets, so a reader sees the spread
                entry["per_seed"] = [
                    {
                        "seed": s,
                        "value": _interval(over_seeds, per_seed[i : i + 1], stat=fig.stat),
                        "vs_reference": _interval(
                            paired_over_seeds, a[i : i + 1], b[i : i + 1], stat=fig.stat
                        ),
                    }
                    for i, s in enumerate(seeds)
                ]
            table[name][variant] = entry
    result = {
        "experiment": exp.name,
        "reference": exp.reference,
        "seeds": seeds,
        "seeds_planned": exp.seeds,
        "variants": exp.variants,
        "figures": table,
    }
    out = exp.report_path
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "experiment.md").write_text(format_report(result) + "\n")
    plot_report(result, out)
    return result


def _interval(fn, *args, **kwargs) -> dict[str, Any] | None:
    try:
        return fn(*args, **kwargs).to_dict()
    except ValueError:  # fewer than two targets or seeds
        return None


def _cell(ci: dict[str, Any] | None, sign: bool = False) -> str:
    if ci is None:
        return "—"
    fmt = "+.4g" if sign else ".4g"
    return f"{ci['estimate']:{fmt}} [{ci['low']:.4g}, {ci['high']:.4g}]"


def format_report(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    several = len(seeds) > 1
    how = "t-interval over seeds" if several else "bootstrap over targets"
    lines = [
        f"experiment {result['experiment']}: seeds {seeds}; 95% intervals ({how}); "
        f"differences paired on the same targets against '{result['reference']}'",
        "",
    ]
    head = ["variant", "value", "− reference"]
    if several:
        head = ["variant", "value", "per seed", "− reference", "per seed"]
        lines += [
            "Per seed: each seed's figure, and its paired difference with the bootstrap interval "
            "over that seed's targets.",
            "",
        ]
    for name, per_variant in result["figures"].items():
        fig = FIGURES[name]
        better = "lower" if fig.lower_is_better else "higher"
        lines += [
            f"**{fig.label}** ({better} is better)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for variant, entry in per_variant.items():
            is_ref = variant == result["reference"]
            value = _cell(entry["value"])
            diff = "reference" if is_ref else _cell(entry.get("vs_reference"), True)
            cells = [variant, value, diff]
            if several:
                seeds_value = " / ".join(_estimate(p["value"]) for p in entry["per_seed"])
                seeds_diff = "; ".join(_cell(p["vs_reference"], True) for p in entry["per_seed"])
                cells = [variant, value, seeds_value, diff, "" if is_ref else seeds_diff]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _estimate(ci: dict[str, Any] | None) -> str:
    return "—" if ci is None else f"{ci['estimate']:.4g}"


def plot_report(result: dict[str, Any], out: Path) -> None:
    """One plot per figure: each variant's value and its paired difference, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, per_variant in result["figures"].items():
        variants = list(per_variant)
        fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(variants) + 2))
        for ax, key, title in (
            (axes[0], "value", FIGURES[name].label),
            (axes[1], "vs_reference", f"− {result['reference']}"),
        ):
            for y, v in enumerate(variants):
                ci = per_variant[v].get(key)
                if ci:
                    ax.errorbar(
                        ci["estimate"],
                        y,
                        xerr=[[ci["estimate"] - ci["low"]], [ci["high"] - ci["estimate"]]],
                        fmt="o",
                        capsize=3,
                    )
            ax.set_yticks(range(len(variants)), variants)
            ax.set_title(title)
        axes[1].axvline(0, color="k", lw=1)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
