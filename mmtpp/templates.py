"""Rendering events as token ids (SPEC §5), stage-1 documents, stage-2 examples, and parsing.

One event renders as::

    <|start_of_event|><|time_start|>B B B B<|time_end|><|type_start|><|type_k|><|type_end|>
    <|text_start|> text <|text_end|><|vision_start|><|image_pad|>×m<|vision_end|><|end_of_event|>

with absent modalities left out; a compressed event is the single token ``<|similar_event|>``.
``EventTokens`` holds a sequence's pieces (gaps, types, image token counts, and the text ids
of the events some window shows in full, tokenized once when first needed: a compressed
event's text is never tokenized); ``Renderer.render`` then writes any window under any
compression mask into one preallocated array with vectorised scatters, no per-event Python
loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmtpp.compression import Direction, similar_mask
from mmtpp.events import EventSequence, ImageRef
from mmtpp.timecodec import ByteTokenCodec
from mmtpp.tokens import TASKS, TokenIds, encode_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
# <|start_of_event|> + time (1+4+1) + type (1+1+1) + <|end_of_event|>
FIXED_EVENT_TOKENS = 11
TEXT_WRAP = 2
IMAGE_WRAP = 2
RESPONSE_LENGTH = {"time": 7, "type": 4}  # incl. the closing <|endoftext|>
# Tokens a time or type prompt leaves for its response: the longer of the two, so that a
# target's time and type prompts show the same history (encoded once at inference).
SHORT_RESPONSE_ROOM = max(RESPONSE_LENGTH.values())

ImageTokenCount = Callable[[ImageRef], int]


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
        self._masks: dict[tuple[float, str], np.ndarray] = {}

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

    def masked_costs(self, mask: np.ndarray, first: int = 0) -> np.ndarray:
        """Tokens of events ``first, first + 1, …`` under a compression ``mask`` over them
        (1 per compressed event); only the events shown in full are tokenized."""
        self.need(first + np.flatnonzero(~mask))
        return np.where(mask, 1, self._costs[first : first + mask.size])

    def mask(self, delta: float, direction: Direction = "backward") -> np.ndarray:
        """The compression mask of the whole sequence (read-only, cached per Δ and direction).

        An event is judged against one neighbour only — its successor in a backward scan,
        its predecessor in a forward one — so the mask of a prefix ``[0, t)`` is this mask's
        first t entries with entry t−1 kept (SPEC §4).
        """
        key = (delta, direction)
        if key not in self._masks:
            mask = similar_mask(self.gaps, delta, direction)
            mask.flags.writeable = False
            self._masks[key] = mask
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


@dataclass(frozen=True)
class Example:
    """A stage-2 training/evaluation example: ``input_ids = prompt + response``.

    ``labels`` is -100 on the prompt. ``history`` is the event window ``[start, target)`` of
    the source sequence; ``image_events`` are the (uncompressed) events whose images appear
    in the prompt, in order.
    """

    seq_id: str
    task: str
    target: int
    start: int
    input_ids: np.ndarray
    prompt_length: int
    compressed_events: int
    image_events: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        labels = self.input_ids.copy()
        labels[: self.prompt_length] = IGNORE_INDEX
        return labels


class Renderer:
    """Turns sequences into token ids for one tokenizer (see module docstring)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, ids: TokenIds):
        self.tokenizer = tokenizer
        self.ids = ids
        self.codec = ByteTokenCodec(ids.byte_ids)

    # --- pieces ---------------------------------------------------------------------------

    def event_tokens(
        self, seqs: Sequence[EventSequence], image_tokens: ImageTokenCount | None = None
    ) -> list[EventTokens]:
        """The token pieces of sequences (texts are tokenized when a window first shows them)."""
        out = []
        for seq in seqs:
            if seq.has_images:
                if image_tokens is None:
                    raise ValueError(f"sequence {seq.seq_id!r} has images: pass image_tokens")
                img = np.array(
                    [0 if ref is None else image_tokens(ref) for ref in seq.image], dtype=np.int64
                )
            else:
                img = np.zeros(len(seq), dtype=np.int64)
            types = seq.type.astype(np.int64)
            out.append(EventTokens(seq.seq_id, seq.gaps, types, seq.text, img, self.encode))
        return out

    def encode(self, texts: list[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts)

    def tokenize_shown(
        self, ets: Sequence[EventTokens], delta: float, directions: Sequence[Direction]
    ) -> None:
        """Tokenize at once the texts that compression at ``delta`` in any of
        ``directions`` shows in full, and each sequence's last one: most of what its windows
        and prompts will show (they tokenize the rest, such as a compressed event that
        opens a window, when they meet it)."""
        events = []
        for et in ets:
            shown = np.zeros(len(et), dtype=bool)
            for direction in set(directions):
                shown |= ~et.mask(delta, direction)
            shown[-1:] = True
            events.append(np.flatnonzero(shown & et.has_text))
        need_texts(ets, events, self.encode)

    # --- rendering ------------------------------------------------------------------------

    def render(
        self, et: EventTokens, start: int, stop: int, compressed: np.ndarray | None = None
    ) -> np.ndarray:
        """Token ids of events ``[start, stop)``; ``compressed`` is a mask over that window."""
        n = stop - start
        mask = np.zeros(n, dtype=bool) if compressed is None else np.asarray(compressed, bool)
        if mask.shape != (n,):
            raise ValueError(f"mask of shape {mask.shape} for a window of {n} events")
        sl = slice(start, stop)
        full = ~mask
        et.need(start + np.flatnonzero(full))
        has_text = et.has_text[sl] & full
        text_len = np.where(has_text, et.text_lengths[sl], 0)
        img = np.where(full, et.image_tokens[sl], 0)
        costs = np.where(
            full,
            FIXED_EVENT_TOKENS
            + np.where(has_text, text_len + TEXT_WRAP, 0)
            + np.where(img > 0, img + IMAGE_WRAP, 0),
            1,
        )
        offsets = np.concatenate([[0], np.cumsum(costs)])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        ids = self.ids
        begin = offsets[:-1]

        out[begin[mask]] = ids.similar_event
        fb = begin[full]
        head = np.empty((fb.size, 9), dtype=np.int64)
        head[:, 0] = ids.start_of_event
        head[:, 1] = ids.time_start
        head[:, 2:6] = self.codec.to_ids(et.gaps[sl][full])
        head[:, 6] = ids.time_end
        head[:, 7] = ids.type_start
        head[:, 8] = ids.type_ids[et.types[sl][full]]
        out[fb[:, None] + np.arange(9)] = head
        out[fb + 9] = ids.type_end
        out[offsets[1:][full] - 1] = ids.end_of_event

        # text: <|text_start|> ids <|text_end|> right after the type
        tb = begin + FIXED_EVENT_TOKENS - 1  # position of <|text_start|>
        out[tb[has_text]] = ids.text_start
        out[tb[has_text] + text_len[has_text] + 1] = ids.text_end
        total_text = int(text_len.sum())
        if total_text:
            lens = text_len[has_text]
            rel = np.arange(total_text) - np.repeat(np.cumsum(lens) - lens, lens)
            shown = (start + np.flatnonzero(has_text)).tolist()
            out[np.repeat(tb[has_text] + 1, lens) + rel] = et.texts_of(shown)
        # image: <|vision_start|> <|image_pad|>×m <|vision_end|> after the text
        has_img = img > 0
        if has_img.any():
            ib = tb + np.where(has_text, text_len + TEXT_WRAP, 0)
            m = img[has_img]
            out[ib[has_img]] = ids.vision_start
            out[ib[has_img] + m + 1] = ids.vision_end
            rel = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
            out[np.repeat(ib[has_img] + 1, m) + rel] = ids.image_pad
        return out

    # --- stage 1 --------------------------------------------------------------------------

    def stage1_windows(
        self, et: EventTokens, delta: float, budget: int, direction: Direction = "forward"
    ) -> list[tuple[int, int, np.ndarray]]:
        """Split a sequence into consecutive windows ``(start, stop, mask)`` whose compressed
        rendering plus a closing ``<|endoftext|>`` fits in ``budget`` tokens.

        Compression runs over the whole sequence (a run is judged on its true neighbours);
        the first event of each window is kept in full so no window opens with a reference
        it does not contain. An event shown in full that does not fit is an error (it
        would open a window of its own).
        """
        n = len(et)
        mask = et.mask(delta, direction)  # cached: tokenize_shown computed it already
        costs = et.masked_costs(mask)
        windows = []
        start = 0
        while start < n:
            first = et.full_cost(start)
            if first + 1 > budget:
                raise ValueError(
                    f"sequence {et.seq_id!r}, event {start}: {first} tokens do not fit in a "
                    f"budget of {budget}; raise the budget or limit text/image size"
                )
            cum = np.cumsum(costs[start:]) - costs[start] + first
            stop = start + int(np.searchsorted(cum, budget - 1, side="right"))
            window_mask = mask[start:stop].copy()
            window_mask[0] = False
            windows.append((start, stop, window_mask))
            start = stop
        return windows

    def stage1_documents(
        self, et: EventTokens, delta: float, budget: int, direction: Direction = "forward"
    ) -> list[tuple[int, int, np.ndarray]]:
        """``(start, stop, ids)`` per window, each ending with ``<|endoftext|>``, ≤ budget."""
        docs = []
        for start, stop, mask in self.stage1_windows(et, delta, budget, direction):
            ids = np.append(self.render(et, start, stop, mask), self.ids.eos)
            docs.append((start, stop, ids))
        return docs

    # --- stage 2 --------------------------------------------------------------------------

    def history_window(
        self,
        et: EventTokens,
        target: int,
        delta: float,
        budget: int,
        max_events: int | None = None,
        direction: Direction = "backward",
    ) -> tuple[int, np.ndarray]:
        """The most recent history ``[start, target)`` whose rendering, compressed in a scan
        in ``direction``, fits in ``budget`` tokens (and holds at most ``max_events``):
        returns ``(start, mask)``.

        The last event before the target is never compressed (SPEC §4) nor the window's
        first event (it has no neighbour inside the window).
        """
        if not 1 <= target <= len(et):
            raise ValueError(f"target {target} outside 1..{len(et)}")
        # every event costs at least one token: no window holds more than `budget` events
        first = max(0, target - max(1, budget))
        mask = et.mask(delta, direction)[first:target].copy()
        mask[-1] = False  # the last event before the target is kept
        costs = et.masked_costs(mask, first)
        start = target - max(1, _fit_from_end(costs, budget))
        if max_events is not None:
            start = max(start, target - max(1, max_events))
        while True:  # the window's first event is shown in full
            cost = int(costs[start - first + 1 :].sum()) + et.full_cost(start)
            if cost <= budget or start == target - 1:
                break
            start += 1
        window = mask[start - first :].copy()
        window[0] = False
        if cost > budget:
            raise ValueError(
                f"sequence {et.seq_id!r}: event {target - 1} alone takes {cost} tokens, more "
                f"than the prompt budget {budget}"
            )
        return start, window

    def prompt(
        self,
        et: EventTokens,
        target: int,
        task: str,
        delta: float,
        budget: int,
        max_events: int | None = None,
        direction: Direction = "backward",
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Prompt ids for predicting event ``target`` (history + task token):
        returns ``(start, mask, ids)``; ``budget`` bounds the prompt length."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        start, mask = self.history_window(et, target, delta, budget - 1, max_events, direction)
        ids = np.append(self.render(et, start, target, mask), self.ids.task_ids[task])
        return start, mask, ids

    def response(self, et: EventTokens, target: int, task: str) -> np.ndarray | None:
        """Response ids for event ``target`` (None when the event has no text for 'text')."""
        ids = self.ids
        if task == "time":
            body = [ids.time_start, *self.codec.to_ids(et.gaps[target]), ids.time_end]
        elif task == "type":
            body = [ids.type_start, int(ids.type_ids[et.types[target]]), ids.type_end]
        elif task == "text":
            if not et.has_text[target]:
                return None
            body = [ids.text_start, *et.text_of(target).tolist(), ids.text_end]
        else:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return np.asarray([*body, ids.eos], dtype=np.int64)

    def example(
        self,
        et: EventTokens,
        target: int,
        task: str,
        delta: float,
        budget: int,
        direction: Direction = "backward",
    ) -> Example | None:
        """A stage-2 example whose prompt + response fit in ``budget`` (None: no response)."""
        return self.examples(et, target, [task], delta, budget, direction).get(task)

    def examples(
        self,
        et: EventTokens,
        target: int,
        tasks: Sequence[str],
        delta: float,
        budget: int,
        direction: Direction = "backward",
    ) -> dict[str, Example]:
        """The stage-2 examples of one target, one per task that has a response.

        The time and type prompts show the same history window (``SHORT_RESPONSE_ROOM``);
        the text prompt's differs when its longer response pushes the window start. Each
        distinct window is rendered once and shared.
        """
        histories: dict[int, np.ndarray] = {}
        out = {}
        for task in tasks:
            resp = self.response(et, target, task)
            if resp is None:
                continue
            if resp.size >= budget:
                raise ValueError(
                    f"sequence {et.seq_id!r}, event {target}: {task} response of {resp.size} "
                    f"tokens does not fit the budget {budget}"
                )
            room = SHORT_RESPONSE_ROOM if task in RESPONSE_LENGTH else resp.size
            start, mask = self.history_window(
                et, target, delta, budget - room - 1, direction=direction
            )
            if start not in histories:
                histories[start] = self.render(et, start, target, mask)
            history = histories[start]
            input_ids = np.empty(history.size + 1 + resp.size, dtype=np.int64)
            input_ids[: history.size] = history
            input_ids[history.size] = self.ids.task_ids[task]
            input_ids[history.size + 1 :] = resp
            kept = np.arange(start, target)[~mask]
            out[task] = Example(
                seq_id=et.seq_id,
                task=task,
                target=target,
                start=start,
                input_ids=input_ids,
                prompt_length=history.size + 1,
                compressed_events=int(mask.sum()),
                image_events=kept[et.image_tokens[kept] > 0],
            )
        return out


def _fit_from_end(costs: np.ndarray, budget: int) -> int:
    return int(np.searchsorted(np.cumsum(costs[::-1]), budget, side="right"))


# --- parsing generated responses --------------------------------------------------------

MALFORMED = "malformed"
NOT_A_TYPE = "not_a_type_token"


@dataclass(frozen=True)
class Parsed:
    """One generated response turned back into a value, or the reason it is invalid."""

    task: str
    value: float | int | str | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.reason is None


def _between(ids: list[int], open_id: int, close_id: int, eos: int) -> list[int] | None:
    """Tokens after a leading ``open_id`` up to ``close_id`` (or eos/end); None if no opener."""
    if not ids or ids[0] != open_id:
        return None
    body = []
    for t in ids[1:]:
        if t in (close_id, eos):
            break
        body.append(t)
    return body


class Parser:
    """Generated token ids → (time, type, text), with invalid outputs reasoned, never hidden."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, ids: TokenIds):
        self.tokenizer = tokenizer
        self.ids = ids
        self.codec = ByteTokenCodec(ids.byte_ids)
        self._type_of = {int(t): k for k, t in enumerate(ids.type_ids)}

    def parse(self, task: str, generated: Sequence[int]) -> Parsed:
        ids = [int(t) for t in generated]
        tid = self.ids
        if task == "time":
            body = _between(ids, tid.time_start, tid.time_end, tid.eos)
            if body is None:
                return Parsed(task, None, MALFORMED)
            value, reason = self.codec.decode_one(body)
            return Parsed(task, value, reason)
        if task == "type":
            body = _between(ids, tid.type_start, tid.type_end, tid.eos)
            if body is None:
                return Parsed(task, None, MALFORMED)
            if len(body) != 1 or body[0] not in self._type_of:
                return Parsed(task, None, NOT_A_TYPE)
            return Parsed(task, self._type_of[body[0]])
        if task == "text":
            body = _between(ids, tid.text_start, tid.text_end, tid.eos)
            if body is None:
                return Parsed(task, None, MALFORMED)
            return Parsed(task, self.tokenizer.decode(body, skip_special_tokens=True).strip())
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
