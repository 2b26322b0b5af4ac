"""A key/value cache of a batch of prompt prefixes that lives between model calls.

Sampling a continuation byte by byte (exact quantiles, ``Generator.exact_quantiles``) or
event by event (multi-step forecasts, ``mmtpp.forecast``) asks the model for one next token
after many prompts that grow by a few tokens per step. Encoding every prompt afresh each
step would cost the whole prompt (images included) per token; ``PromptCache`` keeps each
row's cache, continues it by the new tokens, and when a row's prefix changes (an appended
event re-renders the previous one, the window slides) keeps their longest common prefix and
feeds only the rest. Rows are left-padded and Qwen2.5-VL's 3-D rotary positions are passed
explicitly, so a continued row sees the same positions as one encoded afresh.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from transformers import DynamicCache

if TYPE_CHECKING:  # the generator hands the cache its model; no import at run time
    from mmtpp.generation import Generator


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
        batch = self.g.model_inputs(
            [{"input_ids": new[r][0].tolist(), "images": list(new[r][1])} for r in unique]
        )
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
