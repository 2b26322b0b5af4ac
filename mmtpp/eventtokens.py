"""A sequence's events as token pieces, its texts tokenized only when a window shows them.

``EventTokens`` holds what rendering needs (gaps, types, image token counts, the text ids of
the events some window shows in full) and caches each compression mask; ``need_texts``
tokenizes many sequences' missing texts in one call. ``templates.Renderer`` writes windows
of these pieces as token ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmtpp import compression
from mmtpp.compression import CompressionRule, Direction

# <|start_of_event|> + time (1+4+1) + type (1+1+1) + <|end_of_event|>
FIXED_EVENT_TOKENS = 11
TEXT_WRAP = 2
IMAGE_WRAP = 2


class EventTokens:
    """A sequence's events as token pieces, its texts tokenized when first shown.

    ``gaps`` are the true inter-event times (τ_0 = 0), ``types`` the type ids, ``texts`` the
    texts (None: no text, ``has_text`` False), ``image_tokens[i]`` the number of
    ``<|image_pad|>`` tokens (0 = no image). A compressed event renders as one
    ``<|similar_event|>``, so an event's text is tokenized only when a window shows the
    event in full or needs its length (``need``); ``Renderer.tokenize_shown`` does the bulk
    of a batch in one call beforehand.
    """

    def __init__(
        self,
        seq_id: str,
        gaps: np.ndarray,
        types: np.ndarray,
        texts: Sequence[str | None],
        image_tokens: np.ndarray,
        encode: Callable[[list[str]], list[list[int]]],
    ):
        n = int(gaps.size)
        self.seq_id = seq_id
        self.gaps = gaps
        self.types = types
        self.texts = texts
        self.image_tokens = image_tokens
        self.has_text = np.fromiter((t is not None for t in texts), dtype=bool, count=n)
        self._encode = encode
        self._text_ids: list[np.ndarray | None] = [None] * n
        self._lengths = np.where(self.has_text, -1, 0)  # text tokens; -1: not tokenized yet
        # tokens of each event rendered in full, text included once it is tokenized
        self._costs = FIXED_EVENT_TOKENS + np.where(image_tokens > 0, image_tokens + IMAGE_WRAP, 0)
        self._masks: dict[tuple[CompressionRule, str], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.gaps.size)

    @property
    def text_lengths(self) -> np.ndarray:
        """Text tokens per event (read-only); -1 where the text is not tokenized yet."""
        view = self._lengths.view()
        view.flags.writeable = False
        return view

    def need(self, events: np.ndarray | Sequence[int]) -> None:
        """Tokenize the texts of ``events`` that are not tokenized yet, in one call."""
        events = np.asarray(events, dtype=np.int64)
        if (self._lengths[events] < 0).any():
            need_texts([self], [events], self._encode)

    def full_cost(self, i: int) -> int:
        """Tokens of event ``i`` rendered in full."""
        if self._lengths[i] < 0:
            need_texts([self], [[i]], self._encode)
        return int(self._costs[i])

    def costs(self) -> np.ndarray:
        """Tokens per event rendered in full ``[n]`` (read-only; tokenizes every text)."""
        self.need(np.arange(len(self)))
        view = self._costs.view()
        view.flags.writeable = False
        return view

    def masked_costs(
        self, compressed: np.ndarray, first: int = 0, compressed_tokens: int = 1
    ) -> np.ndarray:
        """Tokens of events ``first, first + 1, …`` under a compression mask over them
        (``compressed_tokens`` per compressed event); only the events shown in full are
        tokenized."""
        self.need(first + np.flatnonzero(~compressed))
        return np.where(compressed, compressed_tokens, self._costs[first : first + compressed.size])

    def mask(self, rule: CompressionRule, direction: Direction = "backward") -> np.ndarray:
        """The compression mask of the whole sequence (read-only, cached per rule and
        direction).

        An event is judged against one neighbour only — its successor in a backward scan,
        its predecessor in a forward one — so the mask of a prefix ``[0, t)`` is this mask's
        first t entries with entry t−1 kept (design §4).
        """
        key = (rule, direction)
        if key not in self._masks:
            m = compression.mask(rule, self.gaps, self.types, direction)
            m.flags.writeable = False
            self._masks[key] = m
        return self._masks[key]

    def text_of(self, i: int) -> np.ndarray:
        return self.texts_of([i])

    def texts_of(self, events: Sequence[int]) -> np.ndarray:
        """The text ids of ``events``, one after the other."""
        self.need(events)
        pieces = [self._text_ids[i] for i in events if self.has_text[i]]
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)

    def _fill(self, events: list[int], encoded: list[list[int]]) -> None:
        for i, ids in zip(events, encoded, strict=True):
            self._text_ids[i] = np.asarray(ids, dtype=np.int64)
            self._lengths[i] = len(ids)
            self._costs[i] += len(ids) + TEXT_WRAP


def need_texts(
    ets: Sequence[EventTokens],
    events: Sequence[np.ndarray | Sequence[int]],
    encode: Callable[[list[str]], list[list[int]]],
) -> None:
    """Tokenize the texts of ``events[k]`` of ``ets[k]`` not tokenized yet, in one call
    (a call costs ~5 µs on top of ~7 µs per text)."""
    todo = []
    for et, ev in zip(ets, events, strict=True):
        ev = np.asarray(ev, dtype=np.int64)
        todo.append(np.unique(ev[et._lengths[ev] < 0]).tolist())
    texts = [et.texts[i] for et, idx in zip(ets, todo, strict=True) for i in idx]
    if not texts:
        return
    encoded = encode(texts)
    done = 0
    for et, idx in zip(ets, todo, strict=True):
        et._fill(idx, encoded[done : done + len(idx)])
        done += len(idx)
