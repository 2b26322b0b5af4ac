"""One training stage on one Ray Train worker, as a small recipe (design §6).

``StageRecipe`` reads in steps: ``setup`` (tokenizer, model with its LoRA adapter, DeepSpeed
engine), ``resume`` (Ray Train's last checkpoint: engine states, data position, random
state), ``train_epoch``, ``validate`` and ``save_checkpoint``; ``run`` strings them together
and ``train_loop_per_worker`` is Ray Train's entry point. Stage 1 is next-token prediction on
packed, compressed documents (each attending only to itself); stage 2 is supervised
fine-tuning with the loss on the response only, continuing the stage-1 adapter. Rows are
read in a seeded order per epoch; step hooks (``StepHook``) let tests inject faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mmtpp.card import ModelCard
from mmtpp.config import Config, TrainConfig
from mmtpp.engine import backward_and_step, deepspeed_config, lr_lambda
from mmtpp.losses import next_token_mask, response_loss
from mmtpp.prepared import PreparedData
from mmtpp.progress import quiet_train_worker, say

STATE_FILE = "train_state.json"
MODEL_SUBDIR = "model"
DS_TAG = "ds"


def stage_dir(config: Config, stage: int) -> Path:
    return Path(config.output_dir) / f"stage{stage}"


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


def shuffle_options(train: TrainConfig, stage: int, epoch: int, rank: int) -> dict[str, Any]:
    """How one worker reads its training rows in one epoch (``iter_batches`` arguments): in
    a buffer of ``train.shuffle_buffer`` rows shuffled with a seed fixed by ``train.seed``
    (two runs read the same order) and different for every epoch, stage and worker, so a
    sequence's stage-2 rows no longer arrive back to back."""
    if not train.shuffle_buffer:
        return {}
    key = f"order:{train.seed}:{stage}:{epoch}:{rank}".encode()
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")
    return {"local_shuffle_buffer_size": train.shuffle_buffer, "local_shuffle_seed": seed}


class StepHook:
    """Called on every worker after each optimizer step (``recipe.state['step']`` is the step
    just taken). Tests use it to inject faults; a hook must be picklable (it crosses the Ray
    boundary)."""

    def after_step(self, recipe: StageRecipe) -> None:
        raise NotImplementedError


class StageRecipe:
    """One training stage on one Ray Train worker, in readable steps: ``setup`` (tokenizer,
    model, DeepSpeed engine), ``resume`` (from Ray Train's last checkpoint), ``train_epoch``,
    ``validate`` and ``save_checkpoint``; ``run`` strings them together.

    ``job`` holds plain values (it crosses the Ray boundary): the config as a dict, the
    stage, the prepared directory, the base checkpoint, the rows each worker reads, the
    stage-1 adapter to continue (stage 2) and the step hooks.
    """

    def __init__(self, job: dict[str, Any]):
        self.config = Config.from_dict(job["config"])
        self.stage: int = job["stage"]
        self.job = job
        self.settings = self.config.train.stage1 if self.stage == 1 else self.config.train.stage2
        self.hooks: list[StepHook] = list(job.get("hooks") or [])
        self.state = {"epoch": 0, "step": 0, "micro_in_epoch": 0}
        self.log_file = stage_dir(self.config, self.stage) / "metrics.jsonl"

    # --- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        import deepspeed
        import ray.train
        import torch

        from mmtpp.images import ImageSpec
        from mmtpp.model import image_processor
        from mmtpp.tokens import load_tokenizer

        torch.set_flush_denormal(True)
        quiet_train_worker()
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        t = self.config.train
        torch.manual_seed(t.seed + self.rank)
        prepared = PreparedData(self.job["prepared_dir"])
        self.tokenizer = load_tokenizer(prepared.tokenizer_dir)
        self.manifest = prepared.manifest()
        model = _build_model(
            self.config,
            self.tokenizer,
            self.manifest.num_types,
            self.job["base_path"],
            self.job.get("start_from"),
        )
        self.spec = ImageSpec(self.config.data.image_min_pixels, self.config.data.image_max_pixels)
        self.processor = image_processor(self.spec)
        self.image_token_id = model.config.image_token_id
        per_epoch = max(1, self.job["rows_per_worker"] // (t.micro_batch * t.grad_accum))
        self.total = per_epoch * self.settings.epochs
        if self.settings.max_steps:
            self.total = min(self.total, self.settings.max_steps)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.settings.lr, weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(t.warmup_steps, self.total)
        )
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(t, self.config.model, self.world),
        )

    def resume(self) -> None:
        """Continue from Ray Train's last checkpoint (after a worker-group restart): the
        engine's states, the data position and each worker's random state; a fresh run
        starts a new metrics log instead."""
        import ray.train
        import torch

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            if self.rank == 0:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file.unlink(missing_ok=True)
            return
        with checkpoint.as_directory() as ckpt:
            loaded, _ = self.engine.load_checkpoint(ckpt, tag=DS_TAG, load_module_strict=False)
            if loaded is None:  # DeepSpeed returns None rather than raising
                raise FileNotFoundError(f"{ckpt}: no DeepSpeed checkpoint '{DS_TAG}' to resume")
            self.state = json.loads((Path(ckpt) / STATE_FILE).read_text())
            rng = Path(ckpt) / f"rng_rank{self.rank}.pt"
            if rng.is_file():
                torch.set_rng_state(torch.load(rng))
        if self.rank == 0:
            say(
                f"[stage {self.stage}] resumed at step {self.state['step']} "
                f"(epoch {self.state['epoch']})"
            )
            self.log({"stage": self.stage, "resumed_at_step": self.state["step"]})

    # --- one batch ------------------------------------------------------------------------

    def batch(self, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        """Model inputs for prepared rows (packed documents kept apart, see
        ``model.packed_position_ids``) and their count of real tokens."""
        from mmtpp.model import collate, document_lengths, training_inputs, with_blank_image

        pad = self.tokenizer.eos_token_id
        inputs = collate(rows, self.processor, pad, self.image_token_id, self.spec)
        if self.config.train.zero_stage == 3 and "pixel_values" not in inputs:
            # ZeRO-3 gathers the partitioned vision tower in its forward: a rank whose batch
            # had no image would skip it while the others wait there (a hang)
            inputs = with_blank_image(inputs, self.processor, self.spec, pad, self.image_token_id)
        tokens = int(inputs["attention_mask"].sum())
        inputs = training_inputs(self.engine.module, inputs, document_lengths(rows))
        device = self.engine.device  # the GPU, if any
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}, tokens

    def loss(self, inputs: dict[str, Any], average: str | None = None):
        """Stage 1: the model's next-token loss on every labelled token. Stage 2: the loss on
        the response tokens (``response_loss``), with logits computed only where it reads
        them — for 7B the full ``[B, S, V]`` stage-2 logits would take ~8 GiB."""
        if self.stage == 1:
            return self.engine(**inputs).loss
        labels = inputs["labels"]
        rest = {k: v for k, v in inputs.items() if k != "labels"}
        logits = self.engine(**rest, logits_to_keep=next_token_mask(labels)).logits
        return response_loss(logits, labels, average or self.config.train.loss_average)

    def _rows(self, split: str, epoch: int):
        import ray.train

        shard = ray.train.get_dataset_shard(split)
        if shard is None:
            return None
        shuffle = {}
        if split == "train":
            shuffle = shuffle_options(self.config.train, self.stage, epoch, self.rank)
        batches = shard.iter_batches(
            batch_size=self.config.train.micro_batch, batch_format="pyarrow", **shuffle
        )
        return (b.to_pylist() for b in batches)

    # --- epochs ---------------------------------------------------------------------------

    def train_epoch(self) -> bool:
        """Train on this worker's shard for the rest of the current epoch (a resumed epoch
        skips the micro-batches it had done); True when ``max_steps`` is reached."""
        import numpy as np
        import ray.train

        t = self.config.train
        skip = self.state["micro_in_epoch"]
        window_loss: list[float] = []
        window_tokens, window_start = 0, time.perf_counter()
        for micro, rows in enumerate(self._rows("train", self.state["epoch"])):
            if micro < skip:
                continue  # the same rows in the same order as before the restart
            inputs, tokens = self.batch(rows)
            loss = self.loss(inputs)
            stepped = backward_and_step(self.engine, loss)
            window_loss.append(loss.item())
            window_tokens += tokens
            self.state["micro_in_epoch"] = micro + 1
            if not stepped:
                continue
            self.state["step"] += 1
            step = self.state["step"]
            for hook in self.hooks:
                hook.after_step(self)
            last = bool(self.settings.max_steps) and step >= self.settings.max_steps
            metrics: dict[str, Any] = {
                "stage": self.stage,
                "step": step,
                "epoch": self.state["epoch"],
            }
            logged = step % t.log_every == 0 or last
            if logged:
                elapsed = time.perf_counter() - window_start
                metrics.update(
                    optimizer_steps=self.engine.global_steps,  # DeepSpeed's count: equals step
                    loss=float(np.mean(window_loss)),
                    lr=float(self.scheduler.get_last_lr()[0]),
                    tokens_per_s=window_tokens / max(elapsed, 1e-9),
                )
                self._progress(metrics)
                window_loss, window_tokens, window_start = [], 0, time.perf_counter()
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                self.save_checkpoint({**metrics, "checkpoint": True})
            elif logged:
                self.log(metrics)
                ray.train.report(metrics)
            if last:
                return True
        return False

    def _progress(self, metrics: dict[str, Any]) -> None:
        """A progress line with the ETA, about twenty per stage whatever ``log_every`` (the
        metrics log keeps every logged step)."""
        step = metrics["step"]
        log_every = self.config.train.log_every
        every = log_every * max(1, math.ceil(self.total / 20 / log_every))
        if self.rank != 0 or (step % every and step != self.total):
            return
        done = step - self.first_step
        eta = (time.perf_counter() - self.started) / max(done, 1) * (self.total - step)
        say(
            f"[stage {self.stage}] step {step}/{self.total} loss {metrics['loss']:.4f} "
            f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:.0f} tok/s/worker "
            f"ETA {_duration(eta)}"
        )

    def validate(self) -> float | None:
        """Mean token loss on the validation rows, across all workers."""
        import torch
        import torch.distributed as dist

        rows = self._rows("val", self.state["epoch"])
        if rows is None:
            return None
        self.engine.eval()
        total, n = 0.0, 0.0
        with torch.no_grad():
            for batch_rows in rows:
                inputs, _ = self.batch(batch_rows)
                tokens = float((inputs["labels"][:, 1:] != -100).sum())
                total += float(self.loss(inputs, average="token")) * tokens
                n += tokens
        self.engine.train()
        # on the engine's device: NCCL reduces only CUDA tensors
        sums = torch.tensor([total, n], dtype=torch.float64, device=self.engine.device)
        if dist.is_initialized():
            dist.all_reduce(sums)
        return float(sums[0] / max(float(sums[1]), 1.0))

    # --- checkpoints ----------------------------------------------------------------------

    def card(self) -> ModelCard:
        """What the saved model records so that prediction rebuilds it and its prompts."""
        m, d = self.manifest, self.config.data
        return ModelCard(
            stage=self.stage,
            base_path=self.job["base_path"],
            model=self.config.model,
            num_types=m.num_types,
            type_names=m.type_names,
            budget=m.budget,
            compression=m.compression,
            stage1_direction=d.stage1_direction,
            stage2_direction=d.stage2_direction,
            modalities=m.modalities,
            tasks=list(d.tasks),
            image_min_pixels=self.spec.min_pixels,
            image_max_pixels=self.spec.max_pixels,
            prepared_fingerprint=m.fingerprint,
        )

    def log(self, metrics: dict[str, Any]) -> None:
        if self.rank == 0:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("a") as f:
                f.write(json.dumps(metrics) + "\n")

    def save_checkpoint(self, metrics: dict[str, Any]) -> None:
        """Every rank saves its DeepSpeed shard and random state, rank 0 the PEFT adapter and
        the data position; Ray Train merges them into one checkpoint (without the frozen
        base, which is reloaded from ``model.base``)."""
        import deepspeed
        import ray.train
        import torch

        from mmtpp.model import save_trained

        self.log(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            self.engine.save_checkpoint(tmp, tag=DS_TAG, exclude_frozen_parameters=True)
            torch.save(torch.get_rng_state(), Path(tmp) / f"rng_rank{self.rank}.pt")
            trainable = [p for p in self.engine.module.parameters() if p.requires_grad]
            gather = (
                deepspeed.zero.GatheredParameters(trainable, modifier_rank=None)
                if self.config.train.zero_stage == 3
                else contextlib.nullcontext()
            )
            with gather:  # ZeRO-3: the adapter's shards gathered for rank 0 to write
                if self.rank == 0:
                    save_trained(
                        self.engine.module, self.tokenizer, Path(tmp) / MODEL_SUBDIR, self.card()
                    )
            if self.rank == 0:
                (Path(tmp) / STATE_FILE).write_text(json.dumps(self.state))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    # --- the whole stage ------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        self.resume()
        self.engine.train()
        self.started, self.first_step = time.perf_counter(), self.state["step"]
        done = False
        while self.state["epoch"] < self.settings.epochs and not done:
            done = self.train_epoch()
            if not done:
                self.state["epoch"] += 1
                self.state["micro_in_epoch"] = 0
            val = self.validate()
            if self.rank == 0:
                say(f"[stage {self.stage}] epoch {self.state['epoch']} val_loss {val}")
            self.save_checkpoint(
                {
                    "stage": self.stage,
                    "step": self.state["step"],
                    "epoch": self.state["epoch"],
                    "val_loss": val if val is not None else float("nan"),
                    "final": True,
                }
            )


def train_loop_per_worker(job: dict[str, Any]) -> None:
    """Ray Train entry point: one ``StageRecipe`` per worker."""
    config = job["config"]
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if config["train"]["use_gpu"] else "cpu")
    StageRecipe(job).run()


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
