"""Rendering events as token ids (design §5): windows, stage-1 documents, stage-2 examples.

One event renders as::

    <|start_of_event|><|time_start|>B B B B<|time_end|><|type_start|><|type_k|><|type_end|>
    <|text_start|> text <|text_end|><|vision_start|><|image_pad|>×m<|vision_end|><|end_of_event|>

with absent modalities left out; a compressed event is ``<|similar_event|>`` (followed by its
``<|type_k|>`` when the rule keeps types). ``Renderer.render`` writes any window of a
sequence's ``EventTokens`` under any compression mask into one preallocated array with
vectorised scatters, no per-event Python loop; parsing generated responses is
``mmtpp.parsing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmtpp.compression import CompressionRule, Direction
from mmtpp.events import EventSequence, ImageRef
from mmtpp.eventtokens import FIXED_EVENT_TOKENS, IMAGE_WRAP, TEXT_WRAP, EventTokens, need_texts
from mmtpp.timecodec import ByteTokenCodec
from mmtpp.tokens import TASKS, TokenIds, encode_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
RESPONSE_LENGTH = {"time": 7, "type": 4}  # incl. the closing <|endoftext|>
# Tokens a time or type prompt leaves for its response: the longer of the two, so that a
# target's time and type prompts show the same history (encoded once at inference).
SHORT_RESPONSE_ROOM = max(RESPONSE_LENGTH.values())

ImageTokenCount = Callable[[ImageRef], int]


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
        self, ets: Sequence[EventTokens], rule: CompressionRule, directions: Sequence[Direction]
    ) -> None:
        """Tokenize at once the texts that compression under ``rule`` in any of
        ``directions`` shows in full, and each sequence's last one: most of what its windows
        and prompts will show (they tokenize the rest, such as a compressed event that
        opens a window, when they meet it)."""
        events = []
        for et in ets:
            shown = np.zeros(len(et), dtype=bool)
            for direction in sorted(set(directions)):
                shown |= ~et.mask(rule, direction)
            shown[-1:] = True
            events.append(np.flatnonzero(shown & et.has_text))
        need_texts(ets, events, self.encode)

    # --- rendering ------------------------------------------------------------------------

    def render(
        self,
        et: EventTokens,
        start: int,
        stop: int,
        compressed: np.ndarray | None = None,
        keep_type: bool = False,
    ) -> np.ndarray:
        """Token ids of events ``[start, stop)``; ``compressed`` is a mask over that window.
        A compressed event is ``<|similar_event|>``, followed by its ``<|type_k|>`` with
        ``keep_type`` (design §4)."""
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
            1 + int(keep_type),
        )
        offsets = np.concatenate([[0], np.cumsum(costs)])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        ids = self.ids
        begin = offsets[:-1]

        out[begin[mask]] = ids.similar_event
        if keep_type:
            out[begin[mask] + 1] = ids.type_ids[et.types[sl][mask]]
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
        self,
        et: EventTokens,
        rule: CompressionRule,
        budget: int,
        direction: Direction = "forward",
    ) -> list[tuple[int, int, np.ndarray]]:
        """Split a sequence into consecutive windows ``(start, stop, mask)`` whose compressed
        rendering plus a closing ``<|endoftext|>`` fits in ``budget`` tokens.

        Compression runs over the whole sequence (a run is judged on its true neighbours);
        the first event of each window is kept in full so no window opens with a reference
        it does not contain. An event shown in full that does not fit is an error (it
        would open a window of its own).
        """
        n = len(et)
        mask = et.mask(rule, direction)  # cached: tokenize_shown computed it already
        costs = et.masked_costs(mask, 0, rule.compressed_tokens)
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
        self,
        et: EventTokens,
        rule: CompressionRule,
        budget: int,
        direction: Direction = "forward",
    ) -> list[tuple[int, int, np.ndarray]]:
        """``(start, stop, ids)`` per window, each ending with ``<|endoftext|>``, ≤ budget."""
        docs = []
        for start, stop, mask in self.stage1_windows(et, rule, budget, direction):
            ids = np.append(self.render(et, start, stop, mask, rule.keep_type), self.ids.eos)
            docs.append((start, stop, ids))
        return docs

    # --- stage 2 --------------------------------------------------------------------------

    def history_window(
        self,
        et: EventTokens,
        target: int,
        rule: CompressionRule,
        budget: int,
        max_events: int | None = None,
        direction: Direction = "backward",
    ) -> tuple[int, np.ndarray]:
        """The most recent history ``[start, target)`` whose rendering, compressed under
        ``rule`` in a scan in ``direction``, fits in ``budget`` tokens (and holds at most
        ``max_events``): returns ``(start, mask)``.

        The last event before the target is never compressed (design §4) nor the window's
        first event (it has no neighbour inside the window).
        """
        if not 1 <= target <= len(et):
            raise ValueError(f"target {target} outside 1..{len(et)}")
        # every event costs at least one token: no window holds more than `budget` events
        first = max(0, target - max(1, budget))
        mask = et.mask(rule, direction)[first:target].copy()
        mask[-1] = False  # the last event before the target is kept
        costs = et.masked_costs(mask, first, rule.compressed_tokens)
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
        rule: CompressionRule,
        budget: int,
        max_events: int | None = None,
        direction: Direction = "backward",
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Prompt ids for predicting event ``target`` (history + task token):
        returns ``(start, mask, ids)``; ``budget`` bounds the prompt length."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        start, mask = self.history_window(et, target, rule, budget - 1, max_events, direction)
        ids = np.append(
            self.render(et, start, target, mask, rule.keep_type), self.ids.task_ids[task]
        )
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
        rule: CompressionRule,
        budget: int,
        direction: Direction = "backward",
    ) -> Example | None:
        """A stage-2 example whose prompt + response fit in ``budget`` (None: no response)."""
        return self.examples(et, target, [task], rule, budget, direction).get(task)

    def examples(
        self,
        et: EventTokens,
        target: int,
        tasks: Sequence[str],
        rule: CompressionRule,
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
                et, target, rule, budget - room - 1, direction=direction
            )
            if start not in histories:
                histories[start] = self.render(et, start, target, mask, rule.keep_type)
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
