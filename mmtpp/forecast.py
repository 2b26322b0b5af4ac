"""The model's multi-step forecasts: S sampled continuations of up to K events after each
history, generated one event at a time (scored by ``mmtpp.multistep``; ``Predictor.forecast``).

One step of a continuation:

1. the prompt for the next event is the stage-2 prompt of the sequence extended by the events
   generated so far (``Predictor.prompt_for``: the card's modalities, compression rule and
   scan direction, the window within the budget), so the growing history is compressed and
   windowed exactly as in training;
2. the gap: after the time prompt and ``<|time_start|>``, four byte tokens drawn one by one at
   temperature 1 from the model's distribution;
3. the type: after the type prompt (the same history) and ``<|type_start|>``, one type token;
4. with ``"text"`` in the tasks, the text: after the text prompt (its own, shorter window) and
   ``<|text_start|>``, tokens until ``<|text_end|>`` (at most ``max_text_tokens``); without it
   the generated events have no text. Generated events never have images;
5. the event (last time + gap, type, text) is appended; the continuation stops after ``steps``
   events or at the first event that would fall after ``until``.

**Invalid draws** are counted and redrawn, never hidden: a token that cannot stand where it
was drawn — not a byte token inside a gap (``not_a_byte_token``), a first byte ≥ 128
(``negative``), first byte 127 then a byte ≥ 128 (``not_finite``: inf or NaN), not a type token
(``not_a_type_token``) — is counted for its history and replaced by a draw from the valid
tokens, renormalised. Drawing, then redrawing the invalid ones, samples the model's
distribution conditioned on a valid token at every step: the distribution whose quantiles
``Generator.exact_quantiles`` computes. A text that reaches ``max_text_tokens`` without
``<|text_end|>`` is kept and counted (``text_unterminated``).

**Randomness**: continuation s of history h draws from its own generator, seeded by
(seed_h, s), so it does not depend on the other histories of the call, on ``max_rows`` or on
key/value-cache reuse (up to the float rounding of the logits).

**Cost**: the prompts live in a ``prompt_cache.PromptCache``. Appending an event changes a
prompt from the previous last event on (the backward scan may now compress it) or, when the
window slides, from its start; the cache keeps each row's common prefix and feeds the rest, and
encodes afresh the rows whose window slid. A step costs that update, five one-token calls for
the gap and one for the type, for at most ``max_rows`` continuations per call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike

from mmtpp.distribution import NEGATIVE_FIRST_BYTE, TOP_FIRST_BYTE
from mmtpp.events import EventSequence
from mmtpp.eventtokens import EventTokens
from mmtpp.images import read_bytes
from mmtpp.multistep import NO_TYPE, Continuations
from mmtpp.parsing import NOT_A_TYPE
from mmtpp.prompt_cache import PromptCache
from mmtpp.templates import SHORT_RESPONSE_ROOM
from mmtpp.timecodec import NEGATIVE, NOT_A_BYTE, NOT_FINITE, decode
from mmtpp.tokens import TASKS

if TYPE_CHECKING:
    from mmtpp.predict import Predictor

TEXT_UNTERMINATED = "text_unterminated"
INVALID_DRAWS = (NOT_A_BYTE, NEGATIVE, NOT_FINITE, NOT_A_TYPE, TEXT_UNTERMINATED)
DEFAULT_MAX_ROWS = 64  # continuations per model call


@dataclass(frozen=True)
class Forecast:
    """S sampled continuations after each of H histories.

    ``continuations``: times (absolute) and types, [H, S, K]; ``texts[h][s]``: the texts of
    continuation s of history h (only with ``"text"``); ``invalid``: reason → [H] draws
    refused and redrawn (see the module docstring); ``truncated`` [H]: continuations that
    reached the step limit with ``until`` given (their window may hold more events; 0
    without ``until``); ``stats``: seconds,
    model calls and tokens encoded afresh, fed and kept from the cache.
    """

    continuations: Continuations
    invalid: dict[str, np.ndarray]
    truncated: np.ndarray
    texts: list[list[list[str | None]]] | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def invalid_of(self, h: int) -> dict[str, int]:
        """History h's invalid draws by reason (reasons that occurred only)."""
        return {k: int(v[h]) for k, v in self.invalid.items() if v[h]}


@dataclass
class _History:
    """A history as the model sees it, its images read once and their token counts."""

    seq: EventSequence
    image_tokens: np.ndarray


@dataclass
class _Continuation:
    """One continuation being generated: the events appended to its history."""

    h: int
    s: int
    rng: np.random.Generator
    history: _History
    times: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)

    @property
    def last_time(self) -> float:
        return self.times[-1] if self.times else float(self.history.seq.time[-1])

    def sequence(self) -> EventSequence:
        base = self.history.seq
        n = len(self.times)
        return EventSequence(
            base.seq_id,
            np.concatenate([base.time, self.times]),
            np.concatenate([base.type, np.asarray(self.types, dtype=np.int64)]),
            [*base.text, *self.texts],
            [*base.image, *([None] * n)],
        )

    def uniforms(self, n: int) -> np.ndarray:
        """n draws in (0, 1] (a zero would pick a token of probability 0)."""
        return 1.0 - self.rng.random(n)


class _MemoEncoder:
    """The renderer's text encoder, remembering texts: every sample and step of a history
    shows the same texts again."""

    def __init__(self, encode):
        self.encode = encode
        self.memo: dict[str, list[int]] = {}

    def __call__(self, texts: list[str]) -> list[list[int]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.encode(missing), strict=True))
        return [self.memo[t] for t in texts]


def _draw(logp: np.ndarray, allowed: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One draw per row from candidate tokens with log-probabilities ``logp`` [B, C] (over the
    whole vocabulary: the mass missing from a row is "another token"), redrawn from the
    ``allowed`` [B, C] candidates (renormalised) when the first draw is not allowed.

    ``u`` [B, 2]: uniforms in (0, 1]. Returns the chosen candidate [B] and where the first
    draw was refused [B]: its category (-1: another token, else the refused candidate)."""
    p = np.exp(logp)
    other = np.clip(1.0 - p.sum(axis=1), 0.0, None)
    cum = np.cumsum(np.concatenate([p, other[:, None]], axis=1), axis=1)
    first = (cum < u[:, :1] * cum[:, -1:]).sum(axis=1).clip(0, p.shape[1])
    rows = np.arange(p.shape[0])
    landed = first < p.shape[1]
    ok = landed & allowed[rows, np.minimum(first, p.shape[1] - 1)]
    masked = np.where(allowed, logp, -np.inf)
    q = np.exp(masked - masked.max(axis=1, keepdims=True))
    cum_q = np.cumsum(q, axis=1)
    second = (cum_q < u[:, 1:] * cum_q[:, -1:]).sum(axis=1).clip(0, p.shape[1] - 1)
    choice = np.where(ok, first, second)
    refused = np.where(ok, -2, np.where(landed, first, -1))
    return choice, refused


class ForecastSampler:
    """Samples continuations with a ``Predictor`` (see the module docstring)."""

    def __init__(
        self,
        predictor: Predictor,
        max_rows: int = DEFAULT_MAX_ROWS,
        reuse_cache: bool = True,
        max_text_tokens: int = 48,
    ):
        if max_rows < 1 or max_text_tokens < 1:
            raise ValueError(
                f"forecast: max_rows and max_text_tokens must be >= 1, got {max_rows}, "
                f"{max_text_tokens}"
            )
        self.p = predictor
        self.ids = predictor.ids
        self.max_rows = max_rows
        self.reuse_cache = reuse_cache
        self.max_text_tokens = max_text_tokens
        self.rule = predictor.prompt_rule(True)
        self.encode = _MemoEncoder(predictor.renderer.encode)
        self.byte_ids = torch.as_tensor(self.ids.byte_ids, device=predictor.device)
        self.type_ids = torch.as_tensor(self.ids.type_ids, device=predictor.device)

    # --- the whole call -----------------------------------------------------------------

    def sample(
        self,
        histories: Sequence[EventSequence],
        steps: int,
        until: np.ndarray | None,
        samples: int,
        text: bool,
        seeds: Sequence[int],
        trim: bool = False,
    ) -> Forecast:
        """``samples`` continuations of at most ``steps`` events (and until ``until`` [H],
        None: unbounded in time) after each history; ``seeds`` [H]; ``trim``: drop step
        columns no continuation reached."""
        start_time = time.perf_counter()
        bases = [self._history(seq) for seq in self.p.seen(histories)]
        rows = [
            _Continuation(h, s, np.random.default_rng([int(seeds[h]), s]), base)
            for h, base in enumerate(bases)
            for s in range(samples)
        ]
        invalid = {reason: np.zeros(len(bases), dtype=np.int64) for reason in INVALID_DRAWS}
        truncated = np.zeros(len(bases), dtype=np.int64)
        stats: Counter[str] = Counter()
        ends = np.full(len(bases), np.inf) if until is None else until
        for i in range(0, len(rows), self.max_rows):
            chunk = rows[i : i + self.max_rows]
            stats.update(self._run(chunk, steps, ends, text, invalid, truncated))
        if until is None:
            truncated[:] = 0  # nothing was asked beyond `steps`
        width = max((len(r.times) for r in rows), default=0) if trim else steps
        times = np.full((len(bases), samples, width), np.nan)
        types = np.full((len(bases), samples, width), NO_TYPE, dtype=np.int64)
        for r in rows:
            times[r.h, r.s, : len(r.times)] = r.times
            types[r.h, r.s, : len(r.types)] = r.types
        start = np.array([b.seq.time[-1] for b in bases], dtype=np.float64)
        texts = None
        if text:
            texts = [[[] for _ in range(samples)] for _ in bases]
            for r in rows:
                texts[r.h][r.s] = list(r.texts)
        seconds = time.perf_counter() - start_time
        out_stats = {**{k: float(v) for k, v in stats.items()}, "seconds": seconds}
        return Forecast(Continuations(start, times, types), invalid, truncated, texts, out_stats)

    def _history(self, seq: EventSequence) -> _History:
        """Images read once (the prompts of every step show them again) and counted."""
        p = self.p
        (et,) = p.renderer.event_tokens([seq], p.count_image_tokens)
        images = [
            None if ref is None else read_bytes(ref, p.image_root, p.spec, p.image_root)
            for ref in seq.image
        ]
        seen = EventSequence(seq.seq_id, seq.time, seq.type, list(seq.text), images)
        return _History(seen, et.image_tokens.copy())

    def _event_tokens(self, seq: EventSequence, row: _Continuation) -> EventTokens:
        image_tokens = np.concatenate(
            [row.history.image_tokens, np.zeros(len(row.times), dtype=np.int64)]
        )
        return EventTokens(
            seq.seq_id, seq.gaps, seq.type.astype(np.int64), seq.text, image_tokens, self.encode
        )

    # --- one group of continuations, step by step -----------------------------------------

    def _run(self, rows, steps, until, text, invalid, truncated) -> Counter[str]:
        cache = PromptCache(self.p, reuse=self.reuse_cache)
        text_cache = PromptCache(self.p, reuse=self.reuse_cache) if text else None
        room = self.p.budget - SHORT_RESPONSE_ROOM
        text_room = self.p.budget - (self.max_text_tokens + 3)
        active = list(rows)
        while active:
            seqs = [r.sequence() for r in active]
            ets = [self._event_tokens(seq, r) for seq, r in zip(seqs, active, strict=True)]
            prompts = [
                self.p.prompt_for(seq, et, len(seq), "time", self.rule, room)
                for seq, et in zip(seqs, ets, strict=True)
            ]
            cache.set([(p.input_ids[:-1], p.images) for p in prompts])
            gaps = self._sample_gaps(cache, active, invalid)
            types = self._sample_types(cache, active, invalid)
            texts: list[str | None] = [None] * len(active)
            if text_cache is not None:
                text_prompts = [
                    self.p.prompt_for(seq, et, len(seq), "text", self.rule, text_room)
                    for seq, et in zip(seqs, ets, strict=True)
                ]
                text_cache.set([(p.input_ids[:-1], p.images) for p in text_prompts])
                texts = self._sample_texts(text_cache, active, invalid)
            keep = []
            for i, row in enumerate(active):
                t = row.last_time + float(gaps[i])
                if t > until[row.h]:
                    continue  # the continuation ends before this event
                row.times.append(t)
                row.types.append(int(types[i]))
                row.texts.append(texts[i])
                if len(row.times) < steps:
                    keep.append(i)
                else:
                    truncated[row.h] += 1
            cache.select(keep)
            if text_cache is not None:
                text_cache.select(keep)
            active = [active[i] for i in keep]
        stats = cache.stats + (text_cache.stats if text_cache is not None else Counter())
        return stats

    # --- drawing tokens -------------------------------------------------------------------

    def _candidates(self, logits: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
        """Log-probabilities [B, C] of the candidate tokens ``ids`` over the whole vocabulary."""
        logp = logits[:, ids] - torch.logsumexp(logits, dim=-1, keepdim=True)
        return logp.double().cpu().numpy()

    def _column(self, rows: int, *tokens: int) -> torch.Tensor:
        return torch.tensor([list(tokens)] * rows, device=self.p.device)

    def _uniforms(self, rows: Sequence[_Continuation], n: int) -> np.ndarray:
        return np.stack([r.uniforms(n) for r in rows])

    def _sample_gaps(self, cache: PromptCache, rows, invalid) -> np.ndarray:
        """One gap per row: four bytes after the time task token and ``<|time_start|>``."""
        ids = self.ids
        logits = cache.feed(self._column(len(rows), ids.task_ids["time"], ids.time_start))
        picked = np.zeros((len(rows), 4), dtype=np.uint8)
        byte = np.arange(256)
        h = np.array([r.h for r in rows])
        for depth in range(4):
            allowed = np.ones((len(rows), 256), dtype=bool)
            if depth == 0:
                allowed &= byte < NEGATIVE_FIRST_BYTE
            elif depth == 1:
                allowed &= ~((picked[:, :1] == TOP_FIRST_BYTE) & (byte >= 128))
            choice, refused = _draw(
                self._candidates(logits, self.byte_ids), allowed, self._uniforms(rows, 2)
            )
            reason = {0: NEGATIVE, 1: NOT_FINITE}.get(depth, NOT_A_BYTE)
            np.add.at(invalid[NOT_A_BYTE], h[refused == -1], 1)
            np.add.at(invalid[reason], h[refused >= 0], 1)
            picked[:, depth] = choice
            if depth < 3:
                chosen = torch.as_tensor(choice, device=self.p.device)
                logits = cache.feed(self.byte_ids[chosen][:, None])
        cache.rewind()
        return decode(picked).astype(np.float64)

    def _sample_types(self, cache: PromptCache, rows, invalid) -> np.ndarray:
        """One type per row after the type task token and ``<|type_start|>``."""
        ids = self.ids
        logits = cache.feed(self._column(len(rows), ids.task_ids["type"], ids.type_start))
        logp = self._candidates(logits, self.type_ids)
        choice, refused = _draw(logp, np.ones_like(logp, dtype=bool), self._uniforms(rows, 2))
        np.add.at(invalid[NOT_A_TYPE], np.array([r.h for r in rows])[refused == -1], 1)
        cache.rewind()
        return choice

    def _sample_texts(self, cache: PromptCache, rows, invalid) -> list[str | None]:
        """One text per row: tokens drawn from the whole vocabulary after the text task token
        and ``<|text_start|>`` until ``<|text_end|>`` or ``<|endoftext|>``."""
        ids = self.ids
        logits = cache.feed(self._column(len(rows), ids.task_ids["text"], ids.text_start))
        body: list[list[int]] = [[] for _ in rows]
        open_rows = np.ones(len(rows), dtype=bool)
        for _ in range(self.max_text_tokens + 1):
            probs = torch.softmax(logits, dim=-1)
            cum = probs.cumsum(dim=-1)
            u = torch.as_tensor(self._uniforms(rows, 1), device=cum.device, dtype=cum.dtype)
            drawn = torch.searchsorted(cum, u * cum[:, -1:]).clamp(max=cum.shape[1] - 1)
            drawn = drawn[:, 0].cpu().numpy()
            for i, token in enumerate(drawn):
                if not open_rows[i]:
                    continue
                if token in (ids.text_end, ids.eos):
                    open_rows[i] = False
                else:
                    body[i].append(int(token))
            if not open_rows.any():
                break
            feed = np.where(open_rows, drawn, ids.eos)
            logits = cache.feed(torch.as_tensor(feed, device=self.p.device)[:, None])
        cache.rewind()
        for i in np.flatnonzero(open_rows):
            invalid[TEXT_UNTERMINATED][rows[i].h] += 1
            body[i] = body[i][: self.max_text_tokens]
        texts = self.p.tokenizer.batch_decode(body, skip_special_tokens=True)
        return [t.strip() or None for t in texts]


def check_request(
    histories: Sequence[EventSequence],
    steps: int | None,
    until: float | ArrayLike | None,
    samples: int,
    tasks: Sequence[str],
    num_types: int,
) -> tuple[np.ndarray, bool]:
    """Refuse a forecast request that cannot be served (naming the history and field);
    returns ``until`` per history (None when not given) and whether text is generated."""
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"forecast: unknown tasks {sorted(unknown)}; choose from {TASKS}")
    if not {"time", "type"} <= set(tasks):
        raise ValueError(f"forecast: tasks must include time and type, got {list(tasks)}")
    if steps is None and until is None:
        raise ValueError("forecast: give steps, until, or both")
    if steps is not None and steps < 1:
        raise ValueError(f"forecast: steps must be >= 1, got {steps}")
    if samples < 1:
        raise ValueError(f"forecast: samples must be >= 1, got {samples}")
    ends = np.full(len(histories), np.inf)
    if until is not None:
        ends = np.broadcast_to(np.asarray(until, dtype=np.float64), (len(histories),)).copy()
    for h, seq in enumerate(histories):
        if len(seq) == 0:
            raise ValueError(f"forecast: history {h} ({seq.seq_id}) is empty")
        if np.isnan(ends[h]) or ends[h] < seq.time[-1]:
            raise ValueError(
                f"forecast: until {ends[h]} of history {h} ({seq.seq_id}) is before its last "
                f"event at {seq.time[-1]}"
            )
        if (np.diff(seq.time) < 0).any() or not np.isfinite(seq.time).all():
            raise ValueError(
                f"forecast: history {h} ({seq.seq_id}) has unsorted or non-finite times"
            )
        if len(seq.type) and (seq.type.min() < 0 or seq.type.max() >= num_types):
            raise ValueError(
                f"forecast: history {h} ({seq.seq_id}) has types outside 0..{num_types - 1}"
            )
    return (None if until is None else ends), "text" in tasks
