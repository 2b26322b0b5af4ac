"""The model's calls on prompts: batching, generation, and the distributions and
log-probabilities of responses (design §7). ``Predictor`` builds the prompts and reads the
answers; ``Generator`` only talks to the model.

Every call takes rendered ``Prompt`` objects (token ids and the encoded images they refer
to) and left-pads them into one batch. Tasks whose prompts share a history continue from one
key/value cache of it (``generate_shared``); a gap's byte distribution and a type's
distribution are read from one-token continuations of the prompt's cache.

``PromptCache`` keeps the key/value cache of a batch of prompt prefixes between calls: it is
continued token by token (exact quantiles, sampling) and moved to new prefixes by keeping
each row's longest common prefix (multi-step forecasts, ``mmtpp.forecast``), with the rows'
3-D rotary positions passed explicitly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from transformers import DynamicCache

from mmtpp.decoding import DISTRIBUTION_MODES, DecodeOptions
from mmtpp.distribution import ByteGapDistribution
from mmtpp.images import ImageSpec
from mmtpp.model import collate
from mmtpp.parsing import Parsed, Parser
from mmtpp.quantile_descent import Descent, descend_quantiles
from mmtpp.timecodec import NOT_A_BYTE, encode, float32_interval_width
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


def _times_of(dist: ByteGapDistribution, statistic: str) -> list[Parsed]:
    values = {"expected": dist.mean, "median": dist.median}[statistic]()
    return [
        Parsed("time", float(v)) if ok else Parsed("time", None, NOT_A_BYTE)
        for v, ok in zip(values, dist.valid, strict=True)
    ]


@dataclass(frozen=True)
class _CachedRow:
    """What one row of a ``PromptCache`` holds: its prefix's token ids, their rotary
    positions (the first of the three axes; text tokens have the same on all three) and the
    images the prefix shows, in order."""

    tokens: np.ndarray
    positions: np.ndarray
    images: tuple[bytes, ...]


class PromptCache:
    """The key/value cache of B prompt prefixes (one per row), kept between model calls.

    ``set(prefixes)`` makes row r hold prefix r; ``feed(tokens)`` continues every row by a
    few text tokens and returns the logits after them; ``rewind()`` drops what ``feed``
    added; ``select(rows)`` keeps (or repeats) rows.

    On ``set``, a row whose new prefix shares a long enough beginning with the one it holds
    (the same tokens showing the same images) keeps that part of its cache and only the rest
    is fed: when a forecast appends an event, the backward scan may compress the previous
    last event and the window may slide, so the new prefix differs from the old one from
    that event (or from its start) on. All kept rows feed the same number of tokens (a row
    with a shorter new part re-feeds a few of its cached ones), so the batch needs no padding
    between cache and new tokens; a row that would feed more than half its prefix, or images,
    is encoded afresh with the others that are. ``reuse=False`` encodes every row afresh on
    every ``set`` (the reference the reuse is tested against).

    Layout: rows are left-padded, each row's tokens in the last columns, and every call passes
    the rows' rotary positions explicitly: Qwen2.5-VL's 3-D positions of the fresh rows come
    from the model's ``get_rope_index``, and a text token fed later sits one position after
    the token before it. ``stats`` counts tokens encoded afresh, fed, and kept from the cache.
    """

    def __init__(self, generator: Generator, reuse: bool = True):
        self.g = generator
        self.reuse = reuse
        self.rows: list[_CachedRow] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [B, L]: 1 where a column holds a row's token
        self.pending = 0  # tokens fed since the last set(): rewind() removes them
        self._next = np.zeros(0, dtype=np.int64)  # [B] position after each row's prefix
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self):
        return self.g.device

    # --- public calls ---------------------------------------------------------------------

    @torch.no_grad()
    def set(self, prefixes: Sequence[tuple[Sequence[int], Sequence[bytes]]]) -> None:
        """Hold ``prefixes`` (token ids, the images they show), one per row in row order."""
        self.rewind()
        new = [(np.asarray(ids, dtype=np.int64), tuple(images)) for ids, images in prefixes]
        for r, (ids, _) in enumerate(new):
            if ids.size == 0:
                raise ValueError(f"PromptCache: the prefix of row {r} is empty")
        if self.cache is not None and len(new) != len(self.rows):
            raise ValueError(f"PromptCache: {len(new)} prefixes for {len(self.rows)} rows")
        kept = self._plan(new) if self.reuse and self.cache is not None else {}
        fresh = [r for r in range(len(new)) if r not in kept]
        parts = []
        if kept:
            parts.append(self._extend(kept, new))
        if fresh:
            parts.append(self._encode(fresh, new))
        self._merge(parts, len(new))

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Continue every row by the text tokens ``tokens`` [B, T]: the logits [B, V]
        (float32) of the token after them."""
        rows, width = tokens.shape
        if rows != len(self.rows) or self.cache is None:
            raise ValueError(f"PromptCache: {rows} token rows for {len(self.rows)} cached rows")
        positions = (self._next + self.pending)[:, None] + np.arange(width)
        self.mask = F.pad(self.mask, (0, width), value=1)
        logits = self._forward(tokens, self.mask, positions, self.cache)
        self.pending += width
        self.stats["fed_tokens"] += rows * width
        return logits

    def rewind(self) -> None:
        """Drop the tokens fed since the last ``set``."""
        if self.pending and self.cache is not None:
            self.cache.crop(-self.pending)
            self.mask = self.mask[:, : -self.pending]
        self.pending = 0

    def select(self, rows: ArrayLike) -> None:
        """Keep rows ``rows`` (indices into the current rows; repeats allowed), in that order."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            self.rows, self.cache, self.mask, self.pending = [], None, None, 0
            self._next = np.zeros(0, dtype=np.int64)
            return
        index = torch.as_tensor(idx, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.rows = [self.rows[i] for i in idx]
        self._next = self._next[idx]

    # --- planning and encoding ------------------------------------------------------------

    def _common(self, row: _CachedRow, ids: np.ndarray, images: tuple[bytes, ...]) -> int:
        """Length of the longest prefix of ``ids`` this row's cache holds: equal tokens that
        show equal images."""
        old = row.tokens
        m = min(old.size, ids.size)
        diff = np.flatnonzero(old[:m] != ids[:m])
        common = int(diff[0]) if diff.size else m
        for j, (a, b) in enumerate(zip(row.images, images, strict=False)):
            if a != b:  # the same tokens may show another window's images
                starts = np.flatnonzero(ids == self.g.ids.vision_start)
                if j < starts.size:
                    common = min(common, int(starts[j]))
                break
        return common

    def _plan(self, new: list[tuple[np.ndarray, tuple[bytes, ...]]]) -> dict[int, int]:
        """Rows that keep part of their cache → tokens kept. Every kept row feeds the same
        number of tokens, text only, after a text token."""
        image_pad = self.g.ids.image_pad
        suffix = {}
        for r, (ids, images) in enumerate(new):
            common = self._common(self.rows[r], ids, images)
            if common >= 1 and ids.size - common <= ids.size // 2:
                suffix[r] = ids.size - common
        while suffix:
            width = max(suffix.values())
            bad = []
            for r in suffix:
                ids = new[r][0]
                keep = ids.size - width
                if keep < 1 or ids[keep - 1] == image_pad or (ids[keep:] == image_pad).any():
                    bad.append(r)
            if not bad:
                return {r: new[r][0].size - width for r in suffix}
            for r in bad:
                del suffix[r]
        return {}

    def _extend(self, kept: dict[int, int], new) -> tuple:
        """Kept rows: their cached beginnings moved to the right edge of a compact cache, then
        the rest of their prefixes fed in one call."""
        rows = list(kept)
        keep = np.array([kept[r] for r in rows])
        held = np.array([self.rows[r].tokens.size for r in rows])
        length = self.mask.shape[1]
        width = new[rows[0]][0].size - keep[0]
        compact = int(keep.max())
        # new column j of row r reads old column j - shift_r (the row's kept tokens end at
        # the right edge of the compact cache)
        shift = torch.as_tensor(compact - keep - length + held, device=self.device)
        cols = torch.arange(compact, device=self.device)
        index = (cols[None, :] - shift[:, None]).clamp(0, length - 1)
        select = torch.as_tensor(rows, device=self.device)
        cache = DynamicCache(config=self.g.model.config)
        for i, layer in enumerate(self.cache.layers):
            k, v = layer.keys[select], layer.values[select]
            gather = index[:, None, :, None].expand(len(rows), k.shape[1], compact, k.shape[3])
            cache.update(k.gather(2, gather), v.gather(2, gather), i)
        keep_t = torch.as_tensor(keep, device=self.device)
        mask = (cols[None, :] >= (compact - keep_t)[:, None]).long()
        start = np.array([self.rows[r].positions[kept[r] - 1] + 1 for r in rows])
        if width:
            block = torch.as_tensor(np.stack([new[r][0][kept[r] :] for r in rows]))
            mask = F.pad(mask, (0, width), value=1)
            self._forward(block.to(self.device), mask, start[:, None] + np.arange(width), cache)
        out = [
            _CachedRow(
                new[r][0],
                np.concatenate([self.rows[r].positions[: kept[r]], s + np.arange(width)]),
                new[r][1],
            )
            for r, s in zip(rows, start, strict=True)
        ]
        self.stats["reused_tokens"] += int(keep.sum())
        self.stats["fed_tokens"] += len(rows) * int(width)
        self.stats["kept_rows"] += len(rows)
        return rows, cache, mask, out

    def _encode(self, fresh: list[int], new) -> tuple:
        """Fresh rows: one left-padded call with their images and 3-D positions; rows with
        the same prefix (a history's samples at the first step) are encoded once."""
        first_of: dict[tuple, int] = {}
        unique = []
        for r in fresh:
            key = (new[r][0].tobytes(), new[r][1])
            if key not in first_of:
                first_of[key] = len(unique)
                unique.append(r)
        batch = self.g._batch([Prompt(new[r][0].tolist(), list(new[r][1])) for r in unique])
        positions, _ = self.g.model.model.get_rope_index(
            batch["input_ids"],
            batch["mm_token_type_ids"],
            batch.get("image_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
        cache = DynamicCache(config=self.g.model.config)
        self.g.model(**batch, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        self.stats["calls"] += 1
        mask = batch["attention_mask"].long()
        first = positions[0].cpu().numpy()
        held = mask.bool().cpu().numpy()
        self.stats["encoded_tokens"] += int(held.sum())
        self.stats["fresh_rows"] += len(fresh)
        which = [first_of[(new[r][0].tobytes(), new[r][1])] for r in fresh]
        if len(unique) < len(fresh):
            index = torch.as_tensor(which, device=self.device)
            cache.batch_select_indices(index)
            mask = mask[index]
        out = [
            _CachedRow(new[r][0], first[j][held[j]], new[r][1])
            for r, j in zip(fresh, which, strict=True)
        ]
        return fresh, cache, mask, out

    def _merge(self, parts: list[tuple], rows: int) -> None:
        """One cache of every row from the parts (rows, cache, mask, cached rows)."""
        if not parts:
            self.rows, self.cache, self.mask = [], None, None
            self._next = np.zeros(0, dtype=np.int64)
            return
        out: list[_CachedRow | None] = [None] * rows
        for idx, _, _, held in parts:
            for r, row in zip(idx, held, strict=True):
                out[r] = row
        if len(parts) == 1 and parts[0][0] == list(range(rows)):
            self.cache, self.mask = parts[0][1], parts[0][2]
        else:
            length = max(mask.shape[1] for _, _, mask, _ in parts)
            self.mask = torch.zeros((rows, length), dtype=torch.long, device=self.device)
            self.cache = DynamicCache(config=self.g.model.config)
            layers = len(parts[0][1].layers)
            for i in range(layers):
                ref = parts[0][1].layers[i].keys
                shape = (rows, ref.shape[1], length, ref.shape[3])
                keys, values = ref.new_zeros(shape), ref.new_zeros(shape)
                for idx, cache, mask, _ in parts:
                    index = torch.as_tensor(idx, device=self.device)
                    w = mask.shape[1]
                    keys[index, :, length - w :] = cache.layers[i].keys
                    values[index, :, length - w :] = cache.layers[i].values
                    if i == 0:
                        self.mask[index, length - w :] = mask
                self.cache.update(keys, values, i)
        self.rows = out
        self._next = np.array([row.positions[-1] + 1 for row in out], dtype=np.int64)

    def _forward(self, tokens: torch.Tensor, mask: torch.Tensor, positions: np.ndarray, cache):
        """One model call on text tokens [B, T] at ``positions`` [B, T] after ``cache``."""
        position_ids = torch.as_tensor(positions, device=self.device)[None].expand(3, -1, -1)
        out = self.g.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats["calls"] += 1
        return out.logits[:, -1].float()


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
