"""Generated responses turned back into a time, a type or a text, or the reason they are
invalid (design §3, §5): an invalid generation is counted, never dropped silently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmtpp.timecodec import ByteTokenCodec
from mmtpp.tokens import TASKS, TokenIds

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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

    def history_types(self, ids: Sequence[int]) -> list[int | None]:
        """The type of each event of a rendered history, in order: a full event's
        ``<|type_k|>``, a compressed event's kept type (``<|similar_event|><|type_k|>``) or
        None (``<|similar_event|>`` alone). What a keep-type rule preserves: the marks."""
        ids = [int(t) for t in ids]
        tid, out, i = self.ids, [], 0
        while i < len(ids):
            if ids[i] == tid.similar_event:
                kept = i + 1 < len(ids) and ids[i + 1] in self._type_of
                out.append(self._type_of[ids[i + 1]] if kept else None)
                i += 2 if kept else 1
            elif ids[i] == tid.type_start:
                out.append(self._type_of.get(ids[i + 1]) if i + 1 < len(ids) else None)
                i += 2
            else:
                i += 1
        return out
