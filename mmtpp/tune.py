"""Ray Tune search over the compression rule (each mode with its own Δ grid), the LoRA rank
and the learning rate (design §8).

Each trial runs the real training loop (``train.run_training``, the function
``jobs/train.py`` runs) inside a Tune function, with ``TuneReportCallback`` forwarding every
epoch's validation loss to an ASHA scheduler that stops weak trials early. Prepared data is
built once per (mode, Δ) before the search (cached by fingerprint), so trials sharing a rule
share it. Tune writes TensorBoard logs per trial; the end of the search prints a table, and
the best configuration is written as a YAML file ``jobs/train.py`` accepts.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

from mmtpp.config import Config, apply_overrides

TRIAL_KEYS = ("data.compression", "data.delta", "lora.r", "train.stage2.lr")


def prepared_dir(search_dir: Path, mode: str, delta: float) -> Path:
    return search_dir / "prepared" / f"{mode}_{delta:g}"


def trial_config(base: dict[str, Any], params: dict[str, Any], trial_dir: str) -> Config:
    data = json.loads(json.dumps(base))
    overrides = [f"{k}={params[k]}" for k in TRIAL_KEYS]
    overrides += [f"output_dir={trial_dir}", "train.log_every=1000000000"]
    return Config.from_dict(apply_overrides(data, overrides))


def sample_trials(
    compression: dict[str, list[float]], ranks: list, lrs: list, num: int, seed: int
) -> list[dict]:
    """``num`` distinct (rule, rank, lr) combinations drawn without replacement (the whole
    grid when ``num`` covers it), in a seeded order; a rule is a mode with one of its Δs."""
    rules = [(mode, d) for mode, deltas in compression.items() for d in deltas]
    grid = [
        dict(zip(TRIAL_KEYS, (mode, d, r, lr), strict=True))
        for (mode, d), r, lr in itertools.product(rules, ranks, lrs)
    ]
    random.Random(seed).shuffle(grid)
    return grid[: num if num > 0 else len(grid)]


def trainable(params: dict[str, Any], base: dict[str, Any], search_dir: str) -> None:
    """One trial: (stage 1, then) stage 2 for ``tune.epochs`` epochs, reporting each epoch."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mmtpp.train import run_training

    # under the search directory, not Tune's node-local trial directory: the trial's Train
    # workers, on any node, write the adapters and metrics the trial then reads
    trial_dir = Path(search_dir) / "trials" / ray.tune.get_context().get_trial_id()
    config = trial_config(base, params, str(trial_dir))
    data = prepared_dir(Path(search_dir), params["data.compression"], params["data.delta"])
    if config.tune.with_stage1:
        run_training(config, 1, data)
    run_training(config, 2, data, callbacks=[TuneReportCallback()])


def _prepare_rules(config: Config, search_dir: Path) -> dict[tuple[str, float], Any]:
    """Prepared data for every rule of the grid: events per stage-2 prompt, by rule."""
    from mmtpp.prepare import run_prepare
    from mmtpp.sources.resolve import resolve_dataset

    root = resolve_dataset(config)
    events = {}
    for mode, deltas in config.tune.compression.items():
        for delta in deltas:
            overrides = [f"data.compression={mode}", f"data.delta={delta}"]
            data = Config.from_dict(apply_overrides(config.to_dict(), overrides))
            manifest = run_prepare(data, root, prepared_dir(search_dir, mode, delta)).manifest
            events[(mode, delta)] = manifest.token_stats.get("stage2", {}).get("mean_events")
    return events


def run_search(
    config: Config, resume: bool = False, callbacks: list | None = None
) -> dict[str, Any]:
    """Run (or resume) the search; writes ``results.md``, ``results.json`` and ``best.yaml``
    to ``<output_dir>/tune`` and returns the best parameters."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    t = config.tune
    search_dir = (Path(config.output_dir) / "tune").resolve()
    name = "search"
    events_per_row = _prepare_rules(config, search_dir)
    base = config.to_dict()
    base["train"]["stage2"]["epochs"] = t.epochs
    points = sample_trials(t.compression, t.ranks, t.lrs, t.num_samples, t.seed)
    space = {key: ray.tune.choice(sorted({p[key] for p in points})) for key in TRIAL_KEYS}
    fn = ray.tune.with_parameters(trainable, base=base, search_dir=str(search_dir))
    resources = ray.tune.with_resources(fn, {"CPU": t.cpus_per_trial})
    path = search_dir / name
    if resume and ray.tune.Tuner.can_restore(str(path)):
        print(f"tune: resuming {path}", flush=True)
        tuner = ray.tune.Tuner.restore(str(path), trainable=resources, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(
            resources,
            param_space=space,
            tune_config=ray.tune.TuneConfig(
                metric=t.metric,
                mode="min",
                num_samples=len(points),
                scheduler=ASHAScheduler(
                    max_t=t.epochs,
                    grace_period=t.grace_period,
                    reduction_factor=t.reduction_factor,
                ),
                # max_concurrent_trials is ignored when a generator is passed: limit it here.
                search_alg=ray.tune.search.BasicVariantGenerator(
                    points_to_evaluate=points, max_concurrent=t.max_concurrent
                ),
            ),
            run_config=ray.tune.RunConfig(
                name=name, storage_path=str(search_dir), callbacks=callbacks
            ),
        )
    grid = tuner.fit()
    rows = []
    for result in grid:
        cfg = result.config or {}
        history = result.metrics_dataframe
        epochs = 0 if history is None else int(history["val_loss"].notna().sum())
        rule = (cfg.get("data.compression"), cfg.get("data.delta"))
        rows.append(
            {
                "trial": result.path.rsplit("/", 1)[-1] if result.path else "?",
                "mode": rule[0],
                "delta": rule[1],
                "rank": cfg.get("lora.r"),
                "lr": cfg.get("train.stage2.lr"),
                "val_loss": (result.metrics or {}).get("val_loss"),
                "epochs": epochs,
                "stopped_early": epochs < t.epochs,
                "events_per_row": events_per_row.get(rule),
                "error": str(result.error) if result.error else None,
            }
        )
    best = grid.get_best_result(metric=t.metric, mode="min", scope="last")
    params = {k: best.config[k] for k in TRIAL_KEYS}
    best_cfg = Config.from_dict(
        apply_overrides(config.to_dict(), [f"{k}={v}" for k, v in params.items()])
    )
    best_cfg.to_yaml(search_dir / "best.yaml")
    table = format_rows(rows)
    (search_dir / "results.md").write_text(table + "\n")
    (search_dir / "results.json").write_text(
        json.dumps({"best": params, "trials": rows}, indent=2, default=str)
    )
    print(table, flush=True)
    print(f"best {params} -> {search_dir / 'best.yaml'}", flush=True)
    print(f"TensorBoard: tensorboard --logdir {path}", flush=True)
    return {"best": params, "trials": rows, "best_yaml": str(search_dir / "best.yaml")}


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| trial | rule | rank | lr | val_loss | epochs | stopped early | events/prompt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["val_loss"] is None, r["val_loss"] or 0)):
        loss = "—" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        ev = "—" if r["events_per_row"] is None else f"{r['events_per_row']:.1f}"
        lines.append(
            f"| {r['trial']} | {r['mode']} Δ={r['delta']} | {r['rank']} | {r['lr']} | {loss} "
            f"| {r['epochs']} | {'yes' if r['stopped_early'] else 'no'} | {ev} |"
        )
    return "\n".join(lines)
