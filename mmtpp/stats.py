"""Token statistics of a dataset, per Δ: what adaptive compression buys (SPEC §4).

Events are tokenized exactly as the templates render them (text through the tokenizer,
images at Qwen2.5-VL's token count after its resize), then ``compression_stats`` counts, for
every Δ, the tokens per event, the compression ratio and the events that fit in the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from mmtpp.compression import CompressionStats, compression_stats
from mmtpp.events import EventSequence, ImageRef, read_info, read_sequences
from mmtpp.images import ImageSpec, image_size
from mmtpp.templates import EventTokens, Renderer
from mmtpp.tokens import TokenIds, train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_DELTAS = (0.0, 0.05, 0.1, 0.2, 0.5)


def image_token_counter(root: str | Path | None, spec: ImageSpec) -> Callable[[ImageRef], int]:
    """A function image ref → ``<|image_pad|>`` count; sizes are read from headers, cached."""

    @lru_cache(maxsize=65536)
    def by_size(height: int, width: int) -> int:
        return spec.token_count(height, width)

    def count(ref: ImageRef) -> int:
        return by_size(*image_size(ref, root, spec))

    return count


def tokenizer_for_sequences(
    sequences: Iterable[EventSequence], num_types: int, vocab_size: int = 2048
) -> PreTrainedTokenizerBase:
    """The tiny model's tokenizer: a BPE trained on the sequences' text (see ``tokens``)."""
    texts = (t for seq in sequences for t in seq.text if t)
    return train_tokenizer(texts, num_types, vocab_size)


def event_tokens_for(
    sequences: Sequence[EventSequence],
    tokenizer: PreTrainedTokenizerBase,
    num_types: int,
    image_root: str | Path | None,
    spec: ImageSpec | None = None,
    batch: int = 256,
) -> list[EventTokens]:
    renderer = Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, num_types))
    counter = image_token_counter(image_root, spec or ImageSpec())
    out: list[EventTokens] = []
    for i in range(0, len(sequences), batch):
        out.extend(renderer.event_tokens(sequences[i : i + batch], counter))
    return out


def dataset_stats(
    root: str | Path,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    budget: int = 4096,
    tokenizer: PreTrainedTokenizerBase | None = None,
    spec: ImageSpec | None = None,
) -> list[CompressionStats]:
    """Compression statistics of the dataset at ``root`` for each Δ (backward scan, the view
    of a fine-tuning prompt that predicts the event after the last one)."""
    info = read_info(root)
    sequences = read_sequences(root)
    if tokenizer is None:
        tokenizer = tokenizer_for_sequences(sequences, info.num_types)
    tokens = event_tokens_for(sequences, tokenizer, info.num_types, root, spec)
    pairs = [(et.gaps, et.costs()) for et in tokens]
    return [compression_stats(pairs, delta, budget) for delta in deltas]
