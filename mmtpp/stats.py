"""Token statistics of a dataset under each compression rule: what compression buys
(design §4; ``mmtpp data stats`` and the evaluation's events-per-budget figure).

Events are tokenized exactly as the templates render them (text through the tokenizer,
images at Qwen2.5-VL's token count after its resize), then ``compression_stats`` counts, for
every rule on a grid of Δ — each mode in its own units — the tokens per event, the
compression ratio, the compressed fraction and the events that fit in the budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmtpp.compression import CompressionRule
from mmtpp.compression_stats import CompressionStats, compression_stats
from mmtpp.events import EventSequence, read_info
from mmtpp.eventtokens import EventTokens
from mmtpp.images import ImageSpec, image_token_counter
from mmtpp.templates import Renderer
from mmtpp.tokens import TokenIds, train_tokenizer
from mmtpp.validation import read_sequences

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Δ grids, each in its mode's units: absolute in the data's time unit, relative and typed in
# log-gap units (gaps within a factor e^Δ)
MODE_GRIDS: dict[str, tuple[float, ...]] = {
    "absolute": (0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
    "relative": (0.1, 0.2, 0.5, 1.0, 2.0),
    "typed": (0.1, 0.2, 0.5, 1.0, 2.0),
}


def grid_rules(
    grids: dict[str, Sequence[float]] = MODE_GRIDS, keep_type: bool = False
) -> list[CompressionRule]:
    """Δ = 0 (no compression) first, then every mode's grid."""
    rules = [CompressionRule("absolute", 0.0)]
    for mode, deltas in grids.items():
        rules += [CompressionRule(mode, d, keep_type) for d in deltas if d > 0]  # type: ignore[arg-type]
    return rules


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


def rule_stats(
    tokens: Sequence[EventTokens], rules: Sequence[CompressionRule], budget: int
) -> list[CompressionStats]:
    """Compression statistics of tokenized sequences under each rule (backward scan, the
    view of a fine-tuning prompt that predicts the event after the last one)."""
    triples = [(et.gaps, et.costs(), et.types) for et in tokens]
    return [compression_stats(triples, rule, budget) for rule in rules]


def dataset_stats(
    root: str | Path,
    rules: Sequence[CompressionRule] | None = None,
    budget: int = 4096,
    tokenizer: PreTrainedTokenizerBase | None = None,
    spec: ImageSpec | None = None,
) -> list[CompressionStats]:
    """Compression statistics of the dataset at ``root`` under each rule (default: every
    mode's grid, ``grid_rules``)."""
    info = read_info(root)
    sequences = read_sequences(root)
    if tokenizer is None:
        tokenizer = tokenizer_for_sequences(sequences, info.num_types)
    tokens = event_tokens_for(sequences, tokenizer, info.num_types, root, spec)
    return rule_stats(tokens, rules or grid_rules(), budget)
