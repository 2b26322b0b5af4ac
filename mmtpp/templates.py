"""Rendering events as token ids (SPEC §5), stage-1 documents, stage-2 examples, and parsing.

One event renders as::

    <|start_of_event|><|time_start|>B B B B<|time_end|><|type_start|><|type_k|><|type_end|>
    <|text_start|> text <|text_end|><|vision_start|><|image_pad|>×m<|vision_end|><|end_of_event|>

with absent modalities left out; a compressed event is the single token ``<|similar_event|>``.
``EventTokens`` holds a sequence's pieces (byte tokens of every gap, text ids, image token
counts) computed once; ``Renderer.render`` then writes any window under any compression mask
into one preallocated array with vectorised scatters, no per-event Python loop.
"""

from __future__ import annotations

import itertools
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


@dataclass(frozen=True)
class EventTokens:
    """A sequence's events as token pieces (arrays of length n unless noted).

    ``gaps`` are the true inter-event times (τ_0 = 0); ``text_ids[text_offsets[i]:
    text_offsets[i+1]]`` are event i's text tokens, ``has_text[i]`` False for no text;
    ``image_tokens[i]`` is the number of ``<|image_pad|>`` tokens (0 = no image).
    """

    seq_id: str
    gaps: np.ndarray
    types: np.ndarray
    text_ids: np.ndarray
    text_offsets: np.ndarray
    has_text: np.ndarray
    image_tokens: np.ndarray

    def __len__(self) -> int:
        return int(self.gaps.size)

    @property
    def text_lengths(self) -> np.ndarray:
        return np.diff(self.text_offsets)

    def costs(self) -> np.ndarray:
        """Tokens per event rendered in full ``[n]`` (computed once, read-only)."""
        if "_costs" not in self.__dict__:
            costs = (
                FIXED_EVENT_TOKENS
                + np.where(self.has_text, self.text_lengths + TEXT_WRAP, 0)
                + np.where(self.image_tokens > 0, self.image_tokens + IMAGE_WRAP, 0)
            )
            costs.flags.writeable = False
            self.__dict__["_costs"] = costs  # frozen dataclass: cache beside the fields
        return self.__dict__["_costs"]

    def backward_mask(self, delta: float) -> np.ndarray:
        """The backward compression mask of the whole sequence (read-only, cached per Δ).

        Event i < n−1 is judged against its successor only, so the mask of a prefix
        ``[0, t)`` is this mask's first t entries with entry t−1 kept (SPEC §4).
        """
        cache = self.__dict__.setdefault("_backward", {})
        if delta not in cache:
            mask = similar_mask(self.gaps, delta, "backward")
            mask.flags.writeable = False
            cache[delta] = mask
        return cache[delta]

    def text_of(self, i: int) -> np.ndarray:
        return self.text_ids[self.text_offsets[i] : self.text_offsets[i + 1]]


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
        """Tokenize many sequences at once (one batched call for all their text)."""
        texts = [t for seq in seqs for t in seq.text]
        has_text = np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))
        encoded = encode_texts(self.tokenizer, [t for t in texts if t is not None])
        lengths = np.zeros(len(texts), dtype=np.int64)
        lengths[has_text] = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(
            itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())
        )
        token_end = np.cumsum(lengths)
        out = []
        first = 0  # index of the sequence's first event in the batch
        for seq in seqs:
            n = len(seq)
            if seq.has_images:
                if image_tokens is None:
                    raise ValueError(f"sequence {seq.seq_id!r} has images: pass image_tokens")
                img = np.array(
                    [0 if ref is None else image_tokens(ref) for ref in seq.image], dtype=np.int64
                )
            else:
                img = np.zeros(n, dtype=np.int64)
            tok_start = int(token_end[first - 1]) if first else 0
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths[first : first + n], out=offsets[1:])
            out.append(
                EventTokens(
                    seq_id=seq.seq_id,
                    gaps=seq.gaps,
                    types=seq.type.astype(np.int64),
                    text_ids=flat[tok_start : tok_start + int(offsets[-1])],
                    text_offsets=offsets,
                    has_text=has_text[first : first + n],
                    image_tokens=img,
                )
            )
            first += n
        return out

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
            src_start = et.text_offsets[start:stop][has_text]
            lens = text_len[has_text]
            rel = np.arange(total_text) - np.repeat(np.cumsum(lens) - lens, lens)
            out[np.repeat(tb[has_text] + 1, lens) + rel] = et.text_ids[
                np.repeat(src_start, lens) + rel
            ]
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
        it does not contain.
        """
        n = len(et)
        full = et.costs()
        if n and full.max() + 1 > budget:
            i = int(full.argmax())
            raise ValueError(
                f"sequence {et.seq_id!r}, event {i}: {int(full[i])} tokens do not fit in a "
                f"budget of {budget}; raise the budget or limit text/image size"
            )
        mask = similar_mask(et.gaps, delta, direction)
        costs = np.where(mask, 1, full)
        windows = []
        start = 0
        while start < n:
            cum = np.cumsum(costs[start:]) - costs[start] + full[start]
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
    ) -> tuple[int, np.ndarray]:
        """The most recent history ``[start, target)`` whose backward-compressed rendering
        fits in ``budget`` tokens (and holds at most ``max_events``): returns
        ``(start, mask)``.

        The last event before the target is never compressed (SPEC §4) nor the window's
        first event (it has no neighbour inside the window).
        """
        if not 1 <= target <= len(et):
            raise ValueError(f"target {target} outside 1..{len(et)}")
        full = et.costs()[:target]
        mask = et.backward_mask(delta)[:target].copy()
        mask[-1] = False  # the last event before the target is kept
        costs = np.where(mask, 1, full)
        start = target - max(1, _fit_from_end(costs, budget))
        if max_events is not None:
            start = max(start, target - max(1, max_events))
        while True:
            window = mask[start:target].copy()
            window[0] = False
            cost = int(np.where(window, 1, full[start:target]).sum())
            if cost <= budget or start == target - 1:
                break
            start += 1
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
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Prompt ids for predicting event ``target`` (history + task token):
        returns ``(start, mask, ids)``; ``budget`` bounds the prompt length."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        start, mask = self.history_window(et, target, delta, budget - 1, max_events)
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
        self, et: EventTokens, target: int, task: str, delta: float, budget: int
    ) -> Example | None:
        """A stage-2 example whose prompt + response fit in ``budget`` (None: no response)."""
        return self.examples(et, target, [task], delta, budget).get(task)

    def examples(
        self, et: EventTokens, target: int, tasks: Sequence[str], delta: float, budget: int
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
            start, mask = self.history_window(et, target, delta, budget - room - 1)
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
