"""Two-stage LoRA training on Ray Train with DeepSpeed ZeRO (SPEC §6).

``train_loop_per_worker`` is the one training function: ``jobs/train.py`` and the Tune search
both run it through ``run_training``. Stage 1 is next-token prediction on packed, compressed
documents; stage 2 is supervised fine-tuning with the loss on the response only, continuing
the stage-1 adapter. Each worker reads its shard of the prepared Parquet rows through Ray
Data, DeepSpeed is configured from our config (``deepspeed_config``), metrics are reported
every ``log_every`` steps, validation loss every epoch, and checkpoints (DeepSpeed shards +
the PEFT adapter + the data position) go through ``ray.train.report`` so a restarted worker
group resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtpp.config import Config, ModelConfig, TrainConfig

STATE_FILE = "train_state.json"
DATA_CPUS = 0.25  # per Ray Data read task feeding the workers
MODEL_SUBDIR = "model"
DS_TAG = "ds"
REDUCE_BUCKET = 50_000_000  # elements of DeepSpeed's gradient reduce bucket (ZeRO-1/2)


def deepspeed_config(train: TrainConfig, model: ModelConfig, world_size: int) -> dict[str, Any]:
    """DeepSpeed's config, generated from ours (never kept in a second file)."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage in (1, 2):
        # LoRA trains a few tens of millions of parameters: DeepSpeed's 5e8-element default
        # bucket would hold ~1 GiB for nothing (mmtpp.memory counts this one)
        zero["reduce_bucket_size"] = REDUCE_BUCKET
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch * train.grad_accum * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": model.dtype == "bfloat16"},
        "fp16": {"enabled": model.dtype == "float16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.offload:
        # our torch AdamW steps the offloaded states on the CPU: with LoRA they are a few
        # million parameters, where DeepSpeedCPUAdam's compiled op would gain little
        cfg["zero_force_ds_cpu_optimizer"] = False
    if train.grad_clip > 0:
        cfg["gradient_clipping"] = train.grad_clip
    return cfg


def backward_and_step(engine, loss) -> bool:
    """Backward and step one micro-batch; True when it completed an optimizer step.

    The boundary is read before ``engine.step()``: DeepSpeed advances its micro-batch count
    in ``step()``, after which ``is_gradient_accumulation_boundary()`` speaks of the next
    micro-batch (with ``grad_accum`` > 1 a step would be counted one micro-batch early).
    """
    boundary = engine.is_gradient_accumulation_boundary()
    engine.backward(loss)
    engine.step()
    return boundary


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak, then cosine decay to 10% of it at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def stage_dir(config: Config, stage: int) -> Path:
    return Path(config.output_dir) / f"stage{stage}"


# --- the worker ---------------------------------------------------------------------------


def _build_model(config: Config, tokenizer, num_types: int, base_path: str, start_from: str | None):
    """The base with a fresh LoRA adapter, or continuing the adapter in ``start_from``
    (the driver decides; a worker that cannot see that directory fails rather than quietly
    training a fresh adapter: ``output_dir`` must be on storage every node mounts)."""
    from mmtpp.model import add_lora, added_token_ids, load_adapter, load_base

    model = load_base(base_path, config.model, tokenizer)
    if start_from is not None:
        if not Path(start_from).is_dir():
            raise FileNotFoundError(
                f"{start_from}: the stage-1 adapter is not visible on this node; output_dir "
                "must be on storage every node mounts"
            )
        return load_adapter(model, Path(start_from) / "adapter", trainable=True)
    return add_lora(model, config.lora, added_token_ids(tokenizer, num_types))


def _save_model(engine, tokenizer, out: Path, meta: dict, zero_stage: int, rank: int) -> None:
    """Rank 0 writes the PEFT adapter; under ZeRO-3 the trainable shards are gathered first."""
    import deepspeed

    from mmtpp.model import save_trained

    trainable = [p for p in engine.module.parameters() if p.requires_grad]
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            if rank == 0:
                save_trained(engine.module, tokenizer, out, meta)
    elif rank == 0:
        save_trained(engine.module, tokenizer, out, meta)


def example_mean_loss(logits, labels):
    """Next-token cross-entropy averaged over each row's labelled tokens, then over rows.

    Every stage-2 example then weighs the same whatever its response length: averaged over
    tokens instead, a type response (one informative token in four) would get a few percent
    of the gradient next to text responses of dozens of tokens, and type prediction would
    not be learnt.
    """
    import torch.nn.functional as F

    from mmtpp.templates import IGNORE_INDEX

    targets = labels[:, 1:]
    ce = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
        reduction="none",
    )  # fmt: skip
    mask = targets != IGNORE_INDEX
    per_row = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_row[mask.any(1)].mean()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` holds the config as a plain dict and the stage."""
    config = Config.from_dict(loop_config["config"])
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if config.train.use_gpu else "cpu")
    import deepspeed
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist

    from mmtpp.images import ImageSpec
    from mmtpp.model import collate, image_processor, with_blank_image
    from mmtpp.tokens import load_tokenizer

    torch.set_flush_denormal(True)
    stage: int = loop_config["stage"]
    prepared = Path(loop_config["prepared_dir"])
    settings = config.train.stage1 if stage == 1 else config.train.stage2
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config.train.seed + rank)

    tokenizer = load_tokenizer(prepared / "tokenizer")
    manifest = json.loads((prepared / "manifest.json").read_text())
    num_types = manifest["num_types"]
    model = _build_model(config, tokenizer, num_types, loop_config["base_path"],
                         loop_config.get("start_from"))  # fmt: skip
    spec = ImageSpec(config.data.image_min_pixels, config.data.image_max_pixels)
    processor = image_processor(spec)
    image_token_id = model.config.image_token_id
    pad_id = tokenizer.eos_token_id

    rows = loop_config["rows_per_worker"]
    per_epoch = max(1, rows // (config.train.micro_batch * config.train.grad_accum))
    total = per_epoch * settings.epochs
    if settings.max_steps:
        total = min(total, settings.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.train.warmup_steps, total)
    )
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(config.train, config.model, world),
    )

    state = {"epoch": 0, "step": 0, "micro_in_epoch": 0}
    log_file = stage_dir(config, stage) / "metrics.jsonl"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt:
            loaded, _ = engine.load_checkpoint(ckpt, tag=DS_TAG, load_module_strict=False)
            if loaded is None:  # DeepSpeed returns None rather than raising
                raise FileNotFoundError(f"{ckpt}: no DeepSpeed checkpoint '{DS_TAG}' to resume")
            state = json.loads((Path(ckpt) / STATE_FILE).read_text())
        if rank == 0:
            print(f"[stage {stage}] resumed at step {state['step']} (epoch {state['epoch']})")
            with log_file.open("a") as f:
                f.write(json.dumps({"stage": stage, "resumed_at_step": state["step"]}) + "\n")
    if rank == 0 and checkpoint is None:  # a fresh run; a resumed one appends
        log_file.unlink(missing_ok=True)
        (stage_dir(config, stage) / "injected_failure").unlink(missing_ok=True)

    meta = {
        "model": vars(config.model),
        "base_path": loop_config["base_path"],
        "num_types": num_types,
        "type_names": manifest["type_names"],
        "delta": config.data.delta,
        "stage2_direction": config.data.stage2_direction,
        "budget": config.data.budget,
        "stage": stage,
        "image_min_pixels": spec.min_pixels,
        "image_max_pixels": spec.max_pixels,
    }

    def log(metrics: dict[str, Any]) -> None:
        if rank == 0:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("a") as f:
                f.write(json.dumps(metrics) + "\n")

    def save_and_report(metrics: dict[str, Any]) -> None:
        log(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            # the frozen base is reloaded from model.base: the checkpoint holds what trains
            engine.save_checkpoint(tmp, tag=DS_TAG, exclude_frozen_parameters=True)
            _save_model(engine, tokenizer, Path(tmp) / MODEL_SUBDIR, meta,
                        config.train.zero_stage, rank)  # fmt: skip
            if rank == 0:
                (Path(tmp) / STATE_FILE).write_text(json.dumps(state))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def batch_of(rows: list[dict]) -> dict[str, torch.Tensor]:
        inputs = collate(rows, processor, pad_id, image_token_id, spec)
        if config.train.zero_stage == 3 and "pixel_values" not in inputs:
            # ZeRO-3 gathers the partitioned vision tower in its forward: a rank whose batch
            # had no image would skip it while the others wait there (a hang)
            inputs = with_blank_image(inputs, processor, spec, pad_id, image_token_id)
        return {k: v.to(engine.device) for k, v in inputs.items()}  # the GPU, if any

    def mean_across(value: float, count: float) -> float:
        # on the engine's device: NCCL reduces only CUDA tensors
        t = torch.tensor([value, count], dtype=torch.float64, device=engine.device)
        if dist.is_initialized():
            dist.all_reduce(t)
        return float(t[0] / max(t[1], 1.0))

    def validate() -> float | None:
        shard = ray.train.get_dataset_shard("val")
        if shard is None:
            return None
        engine.eval()
        total_loss, n = 0.0, 0.0
        with torch.no_grad():
            for batch in shard.iter_batches(batch_size=config.train.micro_batch,
                                            batch_format="pyarrow"):  # fmt: skip
                inputs = batch_of(batch.to_pylist())
                tokens = float((inputs["labels"][:, 1:] != -100).sum())
                total_loss += float(engine(**inputs).loss) * tokens
                n += tokens
        engine.train()
        return mean_across(total_loss, n)

    engine.train()
    per_example = stage == 2 and config.train.loss_average == "example"
    done = False
    window_loss, window_tokens, window_start = [], 0, time.perf_counter()
    while state["epoch"] < settings.epochs and not done:
        shard = ray.train.get_dataset_shard("train")
        skip = state["micro_in_epoch"]
        for micro, batch in enumerate(
            shard.iter_batches(
                batch_size=config.train.micro_batch,
                batch_format="pyarrow",
                local_shuffle_buffer_size=None,
            )
        ):
            if micro < skip:
                continue  # resume at the same data position within the epoch
            inputs = batch_of(batch.to_pylist())
            if per_example:
                labels = inputs.pop("labels")
                loss = example_mean_loss(engine(**inputs).logits, labels)
            else:
                loss = engine(**inputs).loss
            stepped = backward_and_step(engine, loss)
            window_loss.append(loss.item())
            window_tokens += int(inputs["attention_mask"].sum())
            state["micro_in_epoch"] = micro + 1
            if not stepped:
                continue
            state["step"] += 1
            step = state["step"]
            if config.train.fail_at_step == step and rank == 0:
                marker = stage_dir(config, stage) / "injected_failure"
                if not marker.exists():  # once per run directory, not after the restart
                    marker.write_text(str(step))
                    raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")
            last = settings.max_steps and step >= settings.max_steps
            if step % config.train.log_every == 0 or last:
                elapsed = time.perf_counter() - window_start
                metrics = {
                    "stage": stage,
                    "step": step,
                    "optimizer_steps": engine.global_steps,  # DeepSpeed's count: equals step
                    "epoch": state["epoch"],
                    "loss": float(np.mean(window_loss)),
                    "lr": float(scheduler.get_last_lr()[0]),
                    "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                }
                if rank == 0:
                    print(
                        f"[stage {stage}] step {step}/{total} loss {metrics['loss']:.4f} "
                        f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tok/s/worker",
                        flush=True,
                    )
                window_loss, window_tokens, window_start = [], 0, time.perf_counter()
                if config.train.checkpoint_every and step % config.train.checkpoint_every == 0:
                    save_and_report(metrics)
                else:
                    log(metrics)
                    ray.train.report(metrics)
            if last:
                done = True
                break
        if not done:
            state["epoch"] += 1
            state["micro_in_epoch"] = 0
        val = validate()
        metrics = {"stage": stage, "step": state["step"], "epoch": state["epoch"],
                   "val_loss": val if val is not None else float("nan"), "final": True}  # fmt: skip
        if rank == 0:
            print(f"[stage {stage}] epoch {state['epoch']} val_loss {val}", flush=True)
        save_and_report(metrics)


# --- the driver ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    stage: int
    model_dir: Path
    metrics: list[dict[str, Any]]
    checkpoint_path: str | None


def _rows(prepared: Path, stage: int, split: str) -> int:
    import pyarrow.parquet as pq

    files = sorted((prepared / f"stage{stage}" / split).glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def stage_fingerprint(config: Config, stage: int, prepared_fp: str) -> str:
    """What training a stage depends on: the prepared data, the model, LoRA and training
    settings and, for stage 2, the stage-1 adapter it continues from."""
    parts: dict[str, Any] = {
        "prepared": prepared_fp,
        "model": vars(config.model),
        "lora": vars(config.lora),
        "train": config.to_dict()["train"],
        "stage": stage,
    }
    if stage == 2:
        adapter = stage_dir(config, 1) / MODEL_SUBDIR
        h = hashlib.sha256()
        for f in sorted(adapter.rglob("*")) if adapter.is_dir() else []:
            if f.is_file():
                h.update(f.relative_to(adapter).as_posix().encode() + f.read_bytes())
        parts["stage1"] = h.hexdigest() if adapter.is_dir() else None
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
            files, columns=["input_ids", "prompt_length", "images"],
            ray_remote_args={"num_cpus": DATA_CPUS},
        )  # fmt: skip
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


def run_training(
    config: Config, stage: int, prepared_dir: str | Path, callbacks: list | None = None
) -> TrainResult:
    """Train one stage on the connected Ray cluster; the final adapter lands in
    ``<output_dir>/stage<N>/model``."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from mmtpp.model import materialize_base
    from mmtpp.tokens import load_tokenizer

    prepared = Path(prepared_dir).resolve()
    output = Path(config.output_dir).resolve()
    # Workers run in their own directories: give them absolute paths.
    config = dataclasses.replace(config, output_dir=str(output))
    start_from = None
    if stage == 2:
        if (stage_dir(config, 1) / MODEL_SUBDIR).is_dir():
            start_from = str(stage_dir(config, 1) / MODEL_SUBDIR)
        else:
            print("stage 2: no stage-1 adapter found, starting from a fresh adapter", flush=True)
    base = materialize_base(config.model, load_tokenizer(prepared / "tokenizer"), output / "base")
    datasets = {}
    for split in ("train", "val"):
        files = sorted(str(p) for p in (prepared / f"stage{stage}" / split).glob("*.parquet"))
        if files:
            datasets[split] = _read_shards(files)
    if "train" not in datasets:
        raise FileNotFoundError(f"{prepared}/stage{stage}/train: no prepared rows; run prepare")
    rows = _rows(prepared, stage, "train") // config.train.num_workers
    t = config.train
    total_cpus = ray.cluster_resources().get("CPU", 0)
    if total_cpus - t.num_workers * t.cpus_per_worker < DATA_CPUS:
        print(
            f"warning: train.num_workers={t.num_workers} x train.cpus_per_worker="
            f"{t.cpus_per_worker} leaves no CPU of the cluster's {total_cpus:g} for the Ray Data "
            "readers that feed them: training waits until the cluster grows; on a single "
            "machine lower train.cpus_per_worker (e.g. 0.5)",
            flush=True,
        )
    storage = t.storage_path or str(output / "ray_results")
    manifest = json.loads((prepared / "manifest.json").read_text())
    fingerprint = stage_fingerprint(config, stage, manifest["fingerprint"])
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "stage": stage,
            "prepared_dir": str(prepared),
            "base_path": str(base),
            "rows_per_worker": rows,
            "start_from": start_from,
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
    result = trainer.fit()
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
