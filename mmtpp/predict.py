"""Next-event prediction from a trained adapter: the one code path evaluation and Serve share.

A history (an ``EventSequence``) is rendered exactly as in training — backward-compressed (or
not, ``compress=False``) to fit the budget, then a task token — and the model generates the
response, which ``templates.Parser`` turns into a value or an invalid reason that is counted.
The time can be decoded greedily, or as the mean or median of ``samples`` sampled byte
sequences (the conditional mean minimises RMSE, the median MAE).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from mmtpp.decoding import DecodeOptions
from mmtpp.events import EventSequence
from mmtpp.images import ImageSpec, read_bytes
from mmtpp.model import collate, image_processor, load_trained
from mmtpp.stats import image_token_counter
from mmtpp.templates import (
    RESPONSE_LENGTH,
    SHORT_RESPONSE_ROOM,
    EventTokens,
    Parsed,
    Parser,
    Renderer,
)
from mmtpp.timecodec import NOT_A_BYTE, decode
from mmtpp.tokens import TASKS, TokenIds

INFERENCE_DTYPES = ("float32", "bfloat16")
EXPECTED_TOP_BYTES = 8  # first-byte (sign + exponent) candidates of time_mode "expected"


@dataclass
class Prompt:
    """Token ids of a prompt and the encoded images it refers to, in order."""

    input_ids: list[int]
    images: list[bytes]
    history_events: int = 0
    compressed_events: int = 0


@dataclass
class Prediction:
    time: float | None = None
    type: int | None = None
    text: str | None = None
    invalid: dict[str, str] = field(default_factory=dict)  # task -> reason
    # sampled time (mean/median): task -> reason -> samples that were invalid and left out
    # of the mean/median (the prediction is invalid only when every sample is)
    invalid_samples: dict[str, dict[str, int]] = field(default_factory=dict)
    history_events: int = 0
    compressed_events: int = 0
    prompt_tokens: int = 0


class Predictor:
    """A trained model directory (``<output_dir>/stage2/model``) ready to predict.

    ``dtype`` (``"float32"``, ``"bfloat16"``) overrides the dtype the model was trained in:
    on a CPU with bf16 instructions, batched prefill runs ~1.5x faster in bfloat16 while one
    history at a time does not (measured in benchmarks/bench_serve.py's setting).
    """

    def __init__(
        self,
        model_dir: str | Path,
        image_root: str | Path | None = None,
        dtype: str | None = None,
        device: str | None = None,
    ):
        torch.set_flush_denormal(True)
        peft_model, self.tokenizer, self.meta = load_trained(model_dir)
        self.model = peft_model.merge_and_unload().eval()  # same outputs, faster inference
        # Decoding settings are mmtpp's, never the checkpoint's: Qwen2.5-VL-Instruct ships
        # sampling settings and repetition_penalty=1.05, which would penalise every byte and
        # structure token already in the history. ``generate`` is given each setting below.
        eos = self.tokenizer.eos_token_id
        self.model.generation_config = GenerationConfig(
            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos
        )
        # default: the GPU when this process has one (a Serve replica or task given one)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if dtype is not None:
            if dtype not in INFERENCE_DTYPES:
                raise ValueError(f"dtype must be one of {INFERENCE_DTYPES}, got {dtype!r}")
            self.model.to(getattr(torch, dtype))
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.num_types = int(self.meta["num_types"])
        self.ids = TokenIds.from_tokenizer(self.tokenizer, self.num_types)
        self.renderer = Renderer(self.tokenizer, self.ids)
        self.parser = Parser(self.tokenizer, self.ids)
        self.spec = ImageSpec(self.meta["image_min_pixels"], self.meta["image_max_pixels"])
        self.processor = image_processor(self.spec)
        self.count_image_tokens = image_token_counter(image_root, self.spec)
        self.image_root = image_root
        self.delta = float(self.meta["delta"])
        self.direction = self.meta.get("stage2_direction", "backward")  # of the prompts
        self.budget = int(self.meta["budget"])

    # --- prompts ------------------------------------------------------------------------

    def prompts(
        self,
        histories: Sequence[EventSequence],
        task: str,
        options: DecodeOptions,
        ets: Sequence[EventTokens] | None = None,
    ) -> list[Prompt]:
        """Prompts that ask for the event after each history (``ets``: their tokens, if
        already computed)."""
        if ets is None:
            ets = self.renderer.event_tokens(histories, self.count_image_tokens)
        reserve = SHORT_RESPONSE_ROOM if task in RESPONSE_LENGTH else options.response_length(task)
        room = self.budget - reserve
        delta = self.delta if options.compress else 0.0
        return [
            self.prompt_for(seq, et, len(et), task, delta, room)
            for seq, et in zip(histories, ets, strict=True)
        ]

    def prompt_for(
        self,
        seq: EventSequence,
        et: EventTokens,
        target: int,
        task: str,
        delta: float,
        room: int,
        max_events: int | None = None,
    ) -> Prompt:
        """The prompt for event ``target`` of ``seq`` (``et`` its tokens) from at most
        ``max_events`` of its history, compressed with ``delta``, in ``room`` tokens."""
        start, mask, ids = self.renderer.prompt(
            et, target, task, delta, room, max_events, self.direction
        )
        kept = np.arange(start, target)[~mask]
        images = [
            read_bytes(seq.image[i], self.image_root, self.spec)
            for i in kept
            if et.image_tokens[i] > 0
        ]
        return Prompt(ids.tolist(), images, target - start, int(mask.sum()))

    # --- generation -----------------------------------------------------------------------

    def _column(self, rows: int, token: int) -> torch.Tensor:
        return torch.full((rows, 1), token, device=self.device)

    def _batch(self, prompts: Sequence[Prompt], drop_last: bool = False):
        """Left-padded model inputs for prompts (without their last token if ``drop_last``)."""
        rows = [
            {"input_ids": p.input_ids[:-1] if drop_last else p.input_ids, "images": p.images}
            for p in prompts
        ]
        batch = collate(rows, self.processor, self.ids.eos, self.ids.image_pad, self.spec)
        batch = _left_pad(batch)
        batch.pop("labels")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _generate(self, batch: dict, task: str, options: DecodeOptions, **kwargs) -> list:
        """Generated token ids after the batch's prompts (``num_return_sequences`` per row)."""
        sample = task == "time" and options.sampled_time
        out = self.model.generate(
            **batch,
            max_new_tokens=options.response_length(task),
            do_sample=sample,
            temperature=options.temperature if sample else None,
            top_p=None,
            top_k=None,
            num_return_sequences=options.samples if sample else 1,
            pad_token_id=self.ids.eos,
            eos_token_id=self.ids.eos,
            **kwargs,
        )
        return out[:, batch["input_ids"].shape[1] :].tolist()

    def _one_step(self, batch: dict, **kwargs):
        """One greedy token after the batch's inputs, as a generate output (``.cache``)."""
        return self.model.generate(
            **batch, max_new_tokens=1, do_sample=False, top_p=None, top_k=None,
            pad_token_id=self.ids.eos, return_dict_in_generate=True, **kwargs,
        )  # fmt: skip

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Prompt], task: str, options: DecodeOptions
    ) -> list[list[Parsed]]:
        """Generate and parse responses: one Parsed per sample for each prompt."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "time" and options.time_mode == "expected":
            return [[p] for p in self.expected_times(prompts)]
        n = options.samples if task == "time" and options.time_mode != "greedy" else 1
        parsed = [
            self.parser.parse(task, g) for g in self._generate(self._batch(prompts), task, options)
        ]
        return [parsed[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.no_grad()
    def generate_shared(
        self, prompts_by_task: dict[str, Sequence[Prompt]], options: DecodeOptions
    ) -> dict[str, list[list[Parsed]]]:
        """Greedy responses for tasks whose prompts share their history (they differ only in
        the final task token): the history is encoded once, and every task continues from
        its key/value cache, which is cut back to the history after each task."""
        tasks = list(prompts_by_task)
        first = prompts_by_task[tasks[0]]
        batch = self._batch(first, drop_last=True)
        # A one-token generation encodes the history, images included, and sets the
        # model's multimodal position offsets that the continuations rely on.
        cache = self._one_step(batch).cache
        history = cache.get_seq_length()
        rows = len(first)
        out = {}
        for task in tasks:
            cont = _append(batch, self._column(rows, self.ids.task_ids[task]))
            generated = self._generate(cont, task, options, cache=cache)
            cache.crop(history - cache.get_seq_length())
            out[task] = [[self.parser.parse(task, g)] for g in generated]
        return out

    @torch.no_grad()
    def byte_distributions(
        self, prompts: Sequence[Prompt], top: int = EXPECTED_TOP_BYTES
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's distribution of a gap's first two bytes after ``<|time_start|>``.

        Returns ``first`` [B, top] (the most probable first bytes: sign and exponent),
        ``p_first`` [B, top] and ``p_second`` [B, top, 256] (second byte given each first
        one): probabilities over the whole vocabulary, so what is missing from a row's sum
        went to non-byte tokens. Two one-token continuations of the prompts' cache.
        """
        batch = self._batch(prompts)
        rows = len(prompts)
        byte_ids = torch.as_tensor(self.ids.byte_ids, device=self.device)
        batch.update(_append(batch, self._column(rows, self.ids.time_start)))
        out = self._one_step(batch, output_logits=True)
        p1 = torch.softmax(out.logits[0].float(), -1)[:, byte_ids]  # [B, 256]
        p_first, first = p1.topk(top, dim=1)
        # Continue every (prompt, first byte) pair from the same cache, rows repeated.
        cache = out.cache
        cache.batch_repeat_interleave(top)
        model = self.model.model
        model.rope_deltas = model.rope_deltas.repeat_interleave(top, 0)
        repeated = {key: t.repeat_interleave(top, 0) for key, t in batch.items()
                    if key in ("input_ids", "attention_mask", "mm_token_type_ids")}  # fmt: skip
        cont = _append(repeated, byte_ids[first.reshape(-1, 1)])
        out = self._one_step(cont, output_logits=True, cache=cache)
        p2 = torch.softmax(out.logits[0].float(), -1)[:, byte_ids].reshape(rows, top, 256)
        return first.cpu().numpy(), p_first.cpu().numpy(), p2.cpu().numpy()

    def expected_times(self, prompts: Sequence[Prompt]) -> list[Parsed]:
        """The conditional mean gap under the model (what minimises RMSE), deterministic.

        The first two bytes fix a float32 to within 1/128 of its value: the mean is taken
        over all second bytes of the first bytes that form one unbroken run of byte values
        (one step = a factor 4 in magnitude) with the most probable usable one, among the
        ``EXPECTED_TOP_BYTES`` most probable; the last two bytes sit at the middle of their
        range. Non-byte tokens, negative and non-finite values get no weight. The run keeps
        a weak model's stray probability on a far exponent out of the mean: on NYC flights
        2e-4 on a first byte worth ~1e23 made the mean ~1e20 when the top 8 were all used.
        """
        first, p_first, p_second = self.byte_distributions(prompts)
        rows, top = first.shape
        grid = np.zeros((rows, top, 256, 4), dtype=np.uint8)
        grid[..., 0] = first[:, :, None]
        grid[..., 1] = np.arange(256)
        grid[..., 2] = 0x80
        values = decode(grid).astype(np.float64)
        weight = p_first[:, :, None] * p_second
        weight[~np.isfinite(values) | (values < 0)] = 0.0
        weight *= _one_run(first, weight.sum(axis=2) > 0)[:, :, None]
        values[weight == 0] = 0.0
        total = weight.sum(axis=(1, 2))
        out = []
        for row in range(rows):
            if total[row] <= 0:
                out.append(Parsed("time", None, NOT_A_BYTE))
            else:
                mean = float((weight[row] * values[row]).sum() / total[row])
                out.append(Parsed("time", mean))
        return out

    @torch.no_grad()
    def response_log_probs(
        self, prompts: Sequence[Prompt], responses: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Teacher-forced log-probabilities (nats) of each response token after its prompt.

        Rows are left-padded so every response ends at the last position; only the logits
        of the response positions are computed (``logits_to_keep``), so a large vocabulary
        costs memory per response token, not per prompt token.
        """
        rows = [
            {"input_ids": [*p.input_ids, *r], "images": p.images}
            for p, r in zip(prompts, responses, strict=True)
        ]
        batch = collate(rows, self.processor, self.ids.eos, self.ids.image_pad, self.spec)
        batch = _left_pad(batch)
        batch.pop("labels")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        ids = batch["input_ids"]
        keep = max(len(r) for r in responses) + 1
        logits = self.model(**batch, logits_to_keep=keep).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts the last keep-1
        out = []
        for row, r in enumerate(responses):
            n = len(r)
            targets = ids[row, ids.shape[1] - n :]
            picked = log_probs[row, keep - 1 - n :].gather(1, targets[:, None])[:, 0]
            out.append(picked.cpu().numpy().astype(np.float64))
        return out

    def predict_prompts(
        self,
        prompts: Sequence[Prompt],
        tasks: Sequence[str],
        options: DecodeOptions,
        prompts_by_task: dict[str, Sequence[Prompt]] | None = None,
    ) -> list[Prediction]:
        """Predictions for prepared prompts (``prompts_by_task`` when they differ per task).

        Greedy tasks whose prompts share the history of every row are answered from one
        encoding of that history (``generate_shared``); the others each from their own.
        """
        by_task = {task: (prompts_by_task or {}).get(task, prompts) for task in tasks}
        preds = [
            Prediction(
                history_events=p.history_events,
                compressed_events=p.compressed_events,
                prompt_tokens=len(p.input_ids),
            )
            for p in prompts
        ]
        groups: list[list[str]] = []  # greedy tasks with the same histories
        for task in tasks:
            if task == "time" and options.time_mode != "greedy":
                continue
            group = next((g for g in groups if _same_history(by_task[g[0]], by_task[task])), None)
            if group is None:
                groups.append([task])
            else:
                group.append(task)
        responses: dict[str, list[list[Parsed]]] = {}
        for group in groups:
            if len(group) > 1:
                responses.update(self.generate_shared({t: by_task[t] for t in group}, options))
        for task in tasks:
            if task not in responses:
                responses[task] = self.generate(by_task[task], task, options)
            for pred, samples in zip(preds, responses[task], strict=True):
                value, reason = _aggregate(task, samples, options)
                if reason is not None:
                    pred.invalid[task] = reason
                if len(samples) > 1:
                    dropped = Counter(s.reason for s in samples if not s.valid)
                    if dropped:
                        pred.invalid_samples[task] = dict(dropped)
                setattr(pred, task, value)
        return preds

    def predict(
        self,
        histories: Sequence[EventSequence],
        tasks: Sequence[str] = TASKS,
        options: DecodeOptions | None = None,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """The next event after each history, for the requested tasks."""
        options = options or DecodeOptions()
        out: list[Prediction] = []
        for i in range(0, len(histories), batch_size):
            chunk = histories[i : i + batch_size]
            ets = self.renderer.event_tokens(chunk, self.count_image_tokens)
            delta = self.delta if options.compress else 0.0
            self.renderer.tokenize_shown(ets, delta, [self.direction])
            by_task = {task: self.prompts(chunk, task, options, ets) for task in tasks}
            out.extend(self.predict_prompts(by_task[tasks[0]], tasks, options, by_task))
        return out


def _append(batch: dict[str, torch.Tensor], column: torch.Tensor) -> dict:
    """The text inputs of a batch with one more attended text token per row (``column``,
    [rows, 1]). Images are left out: a continuation of a cache never re-encodes them."""
    return {
        "input_ids": torch.cat([batch["input_ids"], column], 1),
        "attention_mask": F.pad(batch["attention_mask"], (0, 1), value=1),
        "mm_token_type_ids": F.pad(batch["mm_token_type_ids"], (0, 1), value=0),
    }


def _one_run(first: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """[B, top] mask of the first bytes (``first``, most probable first) that lie in one
    unbroken run of byte values around the most probable ``usable`` one."""
    keep = np.zeros(first.shape, dtype=bool)
    for row in range(first.shape[0]):
        candidates = first[row][usable[row]]
        if candidates.size == 0:
            continue
        present = set(candidates.tolist())
        low = high = int(candidates[0])
        while low - 1 in present:
            low -= 1
        while high + 1 in present:
            high += 1
        keep[row] = usable[row] & (first[row] >= low) & (first[row] <= high)
    return keep


def _same_history(a: Sequence[Prompt], b: Sequence[Prompt]) -> bool:
    """Whether, row by row, two tasks' prompts differ at most in their final (task) token."""
    return all(
        x.input_ids[:-1] == y.input_ids[:-1] and x.images == y.images
        for x, y in zip(a, b, strict=True)
    )


def _left_pad(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate pads on the right (training); generation continues the last token, so move
    the padding to the left."""
    mask = batch["attention_mask"]
    lengths = mask.sum(dim=1)
    width = mask.shape[1]
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels"):
        t = batch[key]
        shifted = torch.empty_like(t)
        for row, n in enumerate(lengths.tolist()):
            pad = t[row, n:]
            shifted[row] = torch.cat([pad, t[row, :n]]) if n < width else t[row]
        batch[key] = shifted
    return batch


def _aggregate(task: str, samples: list[Parsed], options: DecodeOptions):
    valid = [s.value for s in samples if s.valid]
    if not valid:
        reason = Counter(s.reason for s in samples).most_common(1)[0][0]
        return None, reason
    if task == "time" and len(samples) > 1:
        values = np.asarray(valid, dtype=float)
        return float(values.mean() if options.time_mode == "mean" else np.median(values)), None
    return valid[0], None
