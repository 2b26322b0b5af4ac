"""The model's calls on prompts: batching, generation, and the distributions and
log-probabilities of responses (design §7). ``Predictor`` builds the prompts and reads the
answers; ``Generator`` only talks to the model.

Every call takes rendered ``Prompt`` objects (token ids and the encoded images they refer
to) and left-pads them into one batch. Tasks whose prompts share a history continue from one
key/value cache of it (``generate_shared``); a gap's byte distribution and a type's
distribution are read from one-token continuations of the prompt's cache. Exact quantiles
continue one ``prompt_cache.PromptCache`` of the prompts byte by byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from mmtpp.decoding import DISTRIBUTION_MODES, DecodeOptions
from mmtpp.distribution import ByteGapDistribution
from mmtpp.images import ImageSpec
from mmtpp.model import collate
from mmtpp.parsing import Parsed, Parser
from mmtpp.prompt_cache import PromptCache
from mmtpp.quantile_descent import Descent, descend_quantiles, interval_mass
from mmtpp.timecodec import NOT_A_BYTE, encode, float32_interval_width, resolution_bins
from mmtpp.tokens import TASKS, TokenIds

EXPECTED_TOP_BYTES = 8  # first-byte (sign + exponent) candidates of a gap's distribution


@dataclass
class Prompt:
    """Token ids of a prompt and the encoded images it refers to, in order."""

    input_ids: list[int]
    images: list[bytes]
    history_events: int = 0
    compressed_events: int = 0


class Generator:
    """A loaded model with its token ids, parser and image processor (see module docstring)."""

    def __init__(self, model, ids: TokenIds, parser: Parser, processor, spec: ImageSpec, device):
        self.model = model
        self.ids = ids
        self.parser = parser
        self.processor = processor
        self.spec = spec
        self.device = device

    # --- generation -----------------------------------------------------------------------

    def _column(self, rows: int, token: int) -> torch.Tensor:
        return torch.full((rows, 1), token, device=self.device)

    def model_inputs(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Left-padded model inputs on the device for rows ``{"input_ids": [...], "images":
        [...]}`` (each row's tokens in the last columns, so generation continues them)."""
        batch = collate(rows, self.processor, self.ids.eos, self.ids.image_pad, self.spec)
        batch = _left_pad(batch)
        batch.pop("labels")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _batch(self, prompts: Sequence[Prompt], drop_last: bool = False):
        """Left-padded model inputs for prompts (without their last token if ``drop_last``)."""
        rows = [
            {"input_ids": p.input_ids[:-1] if drop_last else p.input_ids, "images": p.images}
            for p in prompts
        ]
        return self.model_inputs(rows)

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
            **batch,
            max_new_tokens=1,
            do_sample=False,
            top_p=None,
            top_k=None,
            pad_token_id=self.ids.eos,
            return_dict_in_generate=True,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Prompt], task: str, options: DecodeOptions
    ) -> list[list[Parsed]]:
        """Generate and parse responses: one Parsed per sample for each prompt."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "time" and options.time_mode in DISTRIBUTION_MODES:
            return [[p] for p in self.distribution_times(prompts, options.time_mode)]
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
        repeated = {
            key: t.repeat_interleave(top, 0)
            for key, t in batch.items()
            if key in ("input_ids", "attention_mask", "mm_token_type_ids")
        }
        cont = _append(repeated, byte_ids[first.reshape(-1, 1)])
        out = self._one_step(cont, output_logits=True, cache=cache)
        p2 = torch.softmax(out.logits[0].float(), -1)[:, byte_ids].reshape(rows, top, 256)
        return first.cpu().numpy(), p_first.cpu().numpy(), p2.cpu().numpy()

    def expected_times(self, prompts: Sequence[Prompt]) -> list[Parsed]:
        """The conditional mean gap under the model (what minimises RMSE), deterministic:
        the mean of ``distribution.ByteGapDistribution`` over the gap's first two bytes (a
        weak model's stray mass on a far exponent kept out by its guard)."""
        return _times_of(ByteGapDistribution(*self.byte_distributions(prompts)), "expected")

    def distribution_times(self, prompts: Sequence[Prompt], statistic: str) -> list[Parsed]:
        """A deterministic gap per prompt from the model's distribution: its mean
        (``"expected"``, minimises RMSE) or median (``"median"``, minimises MAE; at the
        two-byte resolution, within 1/128 of the value)."""
        return _times_of(ByteGapDistribution(*self.byte_distributions(prompts)), statistic)

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
        batch = self.model_inputs(rows)
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

    # --- predictive distributions ---------------------------------------------------------

    @torch.no_grad()
    def gap_distribution(self, prompts: Sequence[Prompt]) -> ByteGapDistribution:
        """The model's distribution of the next gap after time prompts (CDF, quantiles,
        intervals, mean; resolution: the gap's first two bytes, see ``distribution``)."""
        return ByteGapDistribution(*self.byte_distributions(prompts))

    @torch.no_grad()
    def exact_quantiles(
        self,
        prompts: Sequence[Prompt],
        levels: ArrayLike,
        allowed_first: np.ndarray | None = None,
        max_rows: int = 64,
    ) -> Descent:
        """Quantiles of the next gap at float32 resolution (``quantile_descent.descend_quantiles``)
        after time prompts: each prompt is encoded once, its cache repeated once per level,
        and the four bytes are read in four one-token steps of B·L rows (at most ``max_rows``
        rows per call). ``allowed_first`` [B, 256]: the first bytes to keep (pass
        ``gap_distribution(prompts).first_byte_support()`` for the two-byte distribution's
        guard). Quantiles of the distribution a sampler draws when it redraws invalid tokens
        (non-byte, negative, inf/NaN) at every step, as ``forecast`` does."""
        alpha = np.asarray(levels, dtype=np.float64).reshape(-1)
        per_call = max(1, max_rows // max(1, alpha.size))
        parts = []
        for i in range(0, len(prompts), per_call):
            chunk = prompts[i : i + per_call]
            allowed = None if allowed_first is None else np.asarray(allowed_first)[i : i + per_call]
            probs = self._next_byte_probs(chunk, alpha.size)
            parts.append(descend_quantiles(probs, alpha, len(chunk), allowed))
        if not parts:
            return Descent(np.empty((0, alpha.size)), np.empty((0, alpha.size, 4)))
        quantiles = np.concatenate([d.quantiles for d in parts])
        return Descent(quantiles, np.concatenate([d.excluded for d in parts]))

    def _next_byte_probs(self, prompts: Sequence[Prompt], per: int):
        """The ``next_byte_probs`` callable of ``descend_quantiles`` for ``prompts``, backed by
        one ``PromptCache``: depth 0 reads the byte after ``<|time_start|>``, then the cache
        rows are repeated ``per`` times and each call feeds the prefixes' last column."""
        cache = PromptCache(self)
        cache.set([(p.input_ids, p.images) for p in prompts])
        byte_ids = torch.as_tensor(self.ids.byte_ids, device=self.device)

        def next_byte_probs(prefixes: np.ndarray) -> np.ndarray:
            if prefixes.shape[1] == 0:
                logits = cache.feed(self._column(len(prompts), self.ids.time_start))
                cache.select(np.repeat(np.arange(len(prompts)), per))
                logits = logits.repeat_interleave(per, 0)
            else:
                last = torch.as_tensor(prefixes[:, -1].astype(np.int64), device=self.device)
                logits = cache.feed(byte_ids[last][:, None])
            return torch.softmax(logits, -1)[:, byte_ids].double().cpu().numpy()

        return next_byte_probs

    @torch.no_grad()
    def type_probabilities(self, prompts: Sequence[Prompt]) -> np.ndarray:
        """``[B, K]``: the probability of each type token after a type prompt's
        ``<|type_start|>`` (over the whole vocabulary: a row sums to less than 1 by the mass
        the model puts on other tokens)."""
        batch = self._batch(prompts)
        batch.update(_append(batch, self._column(len(prompts), self.ids.type_start)))
        out = self._one_step(batch, output_logits=True)
        type_ids = torch.as_tensor(self.ids.type_ids, device=self.device)
        return torch.softmax(out.logits[0].float(), -1)[:, type_ids].cpu().numpy()

    def time_nll(self, prompts: Sequence[Prompt], gaps: np.ndarray) -> np.ndarray:
        """Teacher-forced NLL of the true next gaps in nats (a density, design §7): minus the
        log-probability of their four byte tokens, plus the log-width of the float32 cell
        that holds each gap. NaN for a zero gap (a tie: its cell is degenerate)."""
        gaps = np.asarray(gaps, dtype=np.float64)
        byte_ids = self.ids.byte_ids[encode(gaps)]  # [B, 4]
        responses = [[self.ids.time_start, *row.tolist()] for row in byte_ids]
        lp = self.response_log_probs(prompts, responses)
        nll = -np.array([x[1:5].sum() for x in lp]) + np.log(float32_interval_width(gaps))
        return np.where(gaps > 0, nll, np.nan)

    @torch.no_grad()
    def interval_probability(
        self, prompts: Sequence[Prompt], lo: ArrayLike, hi: ArrayLike, max_rows: int = 64
    ) -> np.ndarray:
        """[B] the model's probability that the next gap's float32 lies in [lo, hi) (0 ≤ lo ≤ hi,
        [B] each): ``quantile_descent.interval_mass`` with one cache row per edge, in four
        one-token steps of at most ``max_rows`` rows per call."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        per_call = max(1, max_rows // 2)
        parts = [
            interval_mass(
                self._next_byte_probs(prompts[i : i + per_call], 2),
                lo[i : i + per_call],
                hi[i : i + per_call],
            )
            for i in range(0, len(prompts), per_call)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def binned_time_nll(
        self, prompts: Sequence[Prompt], gaps: ArrayLike, resolution: float
    ) -> np.ndarray:
        """−log P(bin) in nats for the true gaps' bins on a time grid of step ``resolution``
        (``timecodec.resolution_bins``; design §7): the likelihood to compare with any other
        model's on data recorded to that resolution. Ties have a bin ([0, r/2)) too."""
        bins = resolution_bins(gaps, resolution)
        mass = self.interval_probability(prompts, bins[:, 0], bins[:, 1])
        return -np.log(np.maximum(mass, 1e-300))


def _times_of(dist: ByteGapDistribution, statistic: str) -> list[Parsed]:
    values = {"expected": dist.mean, "median": dist.median}[statistic]()
    return [
        Parsed("time", float(v)) if ok else Parsed("time", None, NOT_A_BYTE)
        for v, ok in zip(values, dist.valid, strict=True)
    ]


def _append(batch: dict[str, torch.Tensor], column: torch.Tensor) -> dict:
    """The text inputs of a batch with one more attended text token per row (``column``,
    [rows, 1]). Images are left out: a continuation of a cache never re-encodes them."""
    return {
        "input_ids": torch.cat([batch["input_ids"], column], 1),
        "attention_mask": F.pad(batch["attention_mask"], (0, 1), value=1),
        "mm_token_type_ids": F.pad(batch["mm_token_type_ids"], (0, 1), value=0),
    }


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
