"""Two-stage LoRA training on Ray Train with DeepSpeed ZeRO: the driver (design §6).

``run_training`` trains one stage on the connected Ray cluster: it materialises the base
checkpoint, hands each worker its shard of the prepared Parquet rows through Ray Data (order
preserved, so runs are reproducible) and runs ``recipe.train_loop_per_worker`` in a
``TorchTrainer`` named after the stage's fingerprint (a crashed run resumes from its last
checkpoint; a run on other inputs starts fresh). ``jobs/train.py``, the pipeline and the Tune
trials all call it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtpp.config import Config
from mmtpp.prepared import PreparedData
from mmtpp.recipe import MODEL_SUBDIR, StepHook, stage_dir, train_loop_per_worker

if TYPE_CHECKING:
    from ray.train import Result

DATA_CPUS = 0.25  # per Ray Data read task feeding the workers
# what training settings do not change the model a stage ends with
OPERATIONAL_KEYS = ("log_every", "checkpoint_every", "max_failures", "storage_path")


@dataclass
class TrainResult:
    stage: int
    model_dir: Path
    metrics: list[dict[str, Any]]
    checkpoint_path: str | None


def _tree_hash(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def stage_fingerprint(config: Config, stage: int, prepared_fp: str) -> str:
    """What training a stage reads, and nothing else: the prepared data (whose fingerprint
    covers the data settings and the code), the model and LoRA settings, the training
    settings shared by both stages and the stage's own (not the other stage's, nor the
    operational ones: logging, checkpoint cadence, restarts, storage) and, for stage 2, the
    stage-1 adapter it continues from. So changing a stage-2 setting reuses stage 1."""
    train = config.to_dict()["train"]
    own = train.pop(f"stage{stage}")
    for key in ("stage1", "stage2", *OPERATIONAL_KEYS):
        train.pop(key, None)
    train["seed"] = config.train.seed  # resolved: the top-level seed when derived
    parts: dict[str, Any] = {
        "prepared": prepared_fp,
        "model": config.model.model_dump(mode="json"),
        "lora": config.lora.model_dump(mode="json"),
        "train": train,
        "stage_settings": own,
        "stage": stage,
    }
    if stage == 2:
        parts["stage1"] = _tree_hash(stage_dir(config, 1) / MODEL_SUBDIR)
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_shards(files: list[str]):
    """The shards as a Ray dataset whose every task takes ``DATA_CPUS``.

    Ray Data's default Parquet reader lists files in a separate task that asks for a whole
    CPU (not configurable); next to the workers (and a Tune trial) on a small machine that
    CPU is never free and training waits forever. The file-list reader has no such task.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    listing_reader, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(
            files,
            columns=["input_ids", "prompt_length", "images", "doc_lengths"],
            ray_remote_args={"num_cpus": DATA_CPUS},
        )
    finally:
        ctx.use_datasource_v2 = listing_reader


def _ordered_ingest():
    """Ray Train's ingest with Ray Data's order preserved: the shards of a dataset of several
    files then reach each worker in the same order on every run (without it, which rows a
    worker gets depended on which read finished first — measured), so training is
    reproducible and a resumed epoch skips exactly the batches it had done."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


def _stage1_adapter(config: Config, stage: int) -> str | None:
    """The stage-1 adapter stage 2 continues from (None: stage 1, or none trained)."""
    if stage != 2:
        return None
    if (stage_dir(config, 1) / MODEL_SUBDIR).is_dir():
        return str(stage_dir(config, 1) / MODEL_SUBDIR)
    print("stage 2: no stage-1 adapter found, starting from a fresh adapter", flush=True)
    return None


def _stage_datasets(prepared: PreparedData, kind: str) -> dict[str, Any]:
    """The stage's train (required) and val (when prepared) shards as Ray datasets."""
    datasets = {}
    for split in ("train", "val"):
        files = [str(p) for p in prepared.files(kind, split)]
        if files:
            datasets[split] = _read_shards(files)
    if "train" not in datasets:
        raise FileNotFoundError(f"{prepared.shard_dir(kind, 'train')}: no prepared rows")
    return datasets


def _warn_if_readers_starve(num_workers: int, cpus_per_worker: float) -> None:
    """Warn when the workers take every CPU of the cluster: the Ray Data readers feeding
    them (``DATA_CPUS`` each) would never be scheduled."""
    import ray

    total_cpus = ray.cluster_resources().get("CPU", 0)
    if total_cpus - num_workers * cpus_per_worker < DATA_CPUS:
        print(
            f"warning: train.num_workers={num_workers} x train.cpus_per_worker="
            f"{cpus_per_worker} leaves no CPU of the cluster's {total_cpus:g} for the Ray Data "
            "readers that feed them: training waits until the cluster grows; on a single "
            "machine lower train.cpus_per_worker (e.g. 0.5)",
            flush=True,
        )


def _collect(config: Config, stage: int, result: Result) -> TrainResult:
    """Copy the final checkpoint's adapter to ``<output_dir>/stage<N>/model`` and read the
    stage's metrics log."""
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage}: training ended without a checkpoint ({result.error})")
    target = stage_dir(config, stage) / MODEL_SUBDIR
    with result.checkpoint.as_directory() as ckpt:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(ckpt) / MODEL_SUBDIR, target)
    log_file = stage_dir(config, stage) / "metrics.jsonl"
    metrics = [json.loads(line) for line in log_file.read_text().splitlines()]
    return TrainResult(stage, target, metrics, result.checkpoint.path)


def run_training(
    config: Config,
    stage: int,
    prepared_dir: str | Path,
    callbacks: list | None = None,
    hooks: list[StepHook] | None = None,
) -> TrainResult:
    """Train one stage on the connected Ray cluster; the final adapter lands in
    ``<output_dir>/stage<N>/model``. ``callbacks`` go to Ray Train (e.g. Tune's reporter),
    ``hooks`` run on every worker after each optimizer step."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from mmtpp.model import materialize_base
    from mmtpp.tokens import load_tokenizer

    prepared = PreparedData(Path(prepared_dir).resolve())
    manifest = prepared.manifest()  # a clear error on data of another format
    output = Path(config.output_dir).resolve()
    # Workers run in their own directories: give them absolute paths.
    config = config.with_output_dir(output)
    start_from = _stage1_adapter(config, stage)
    base = materialize_base(config.model, load_tokenizer(prepared.tokenizer_dir), output / "base")
    kind = f"stage{stage}"
    datasets = _stage_datasets(prepared, kind)
    rows = prepared.num_rows(kind, "train") // config.train.num_workers
    t = config.train
    _warn_if_readers_starve(t.num_workers, t.cpus_per_worker)
    storage = t.storage_path or str(output / "ray_results")
    fingerprint = stage_fingerprint(config, stage, manifest.fingerprint)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "stage": stage,
            "prepared_dir": str(prepared.root),
            "base_path": str(base),
            "rows_per_worker": rows,
            "start_from": start_from,
            "hooks": list(hooks or []),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            # One run name per fingerprint: Ray Train resumes a run of the same name from its
            # last checkpoint (after a crash), which must never be a run on other inputs.
            name=f"{output.name}-stage{stage}-{fingerprint}",
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=_ordered_ingest(),
    )
    return _collect(config, stage, trainer.fit())
