"""The special tokens of design §5 and the tokenizers that carry them.

Two ways to get a tokenizer:

- ``train_tokenizer``: a small byte-level BPE trained offline on the dataset's text (the tiny
  model's vocabulary), with Qwen2.5-VL's own control and vision tokens and ours added;
- ``extend_tokenizer``: a real Qwen2.5-VL tokenizer loaded from a local directory, with our
  tokens appended (existing ids never change, nothing is removed).

``TokenIds`` resolves every id the renderer and the parser need, once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

if TYPE_CHECKING:  # transformers is imported where a function needs it: data workers don't
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Qwen2.5-VL's own tokens that we rely on (ids come from the tokenizer, never hard-coded).
EOS = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
QWEN_CONTROL_TOKENS = (EOS, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

START_OF_EVENT, END_OF_EVENT = "<|start_of_event|>", "<|end_of_event|>"
TIME_START, TIME_END = "<|time_start|>", "<|time_end|>"
TYPE_START, TYPE_END = "<|type_start|>", "<|type_end|>"
TEXT_START, TEXT_END = "<|text_start|>", "<|text_end|>"
SIMILAR_EVENT = "<|similar_event|>"
STRUCTURE_TOKENS = (
    START_OF_EVENT,
    END_OF_EVENT,
    TIME_START,
    TIME_END,
    TYPE_START,
    TYPE_END,
    TEXT_START,
    TEXT_END,
    SIMILAR_EVENT,
)
TASKS = ("time", "type", "text")
TASK_TOKENS = {task: f"<|{task}_prediction|>" for task in TASKS}


def type_token(k: int) -> str:
    return f"<|type_{k}|>"


def byte_token(b: int) -> str:
    return f"<|byte_{b}|>"


def mmtpp_tokens(num_types: int) -> list[str]:
    """Every token mmtpp adds to a tokenizer, in a fixed order (design §5)."""
    if num_types < 1:
        raise ValueError(f"num_types must be >= 1, got {num_types}")
    return [
        *STRUCTURE_TOKENS,
        *(type_token(k) for k in range(num_types)),
        *(byte_token(b) for b in range(256)),
        *TASK_TOKENS.values(),
    ]


@dataclass(frozen=True)
class TokenIds:
    """Ids of every special token, resolved once from a tokenizer."""

    start_of_event: int
    end_of_event: int
    time_start: int
    time_end: int
    type_start: int
    type_end: int
    text_start: int
    text_end: int
    similar_event: int
    type_ids: np.ndarray  # [num_types]
    byte_ids: np.ndarray  # [256]
    task_ids: dict[str, int]
    vision_start: int
    vision_end: int
    image_pad: int
    eos: int

    @property
    def num_types(self) -> int:
        return int(self.type_ids.size)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase | Tokenizer, num_types: int
    ) -> TokenIds:
        vocab = tokenizer.get_vocab()
        missing = [t for t in (*QWEN_CONTROL_TOKENS, *mmtpp_tokens(num_types)) if t not in vocab]
        if missing:
            raise ValueError(
                f"tokenizer lacks {len(missing)} required tokens (e.g. {missing[:3]}); build it "
                "with mmtpp.tokens.train_tokenizer or extend_tokenizer"
            )

        def one(token: str) -> int:
            return int(vocab[token])

        return cls(
            start_of_event=one(START_OF_EVENT),
            end_of_event=one(END_OF_EVENT),
            time_start=one(TIME_START),
            time_end=one(TIME_END),
            type_start=one(TYPE_START),
            type_end=one(TYPE_END),
            text_start=one(TEXT_START),
            text_end=one(TEXT_END),
            similar_event=one(SIMILAR_EVENT),
            type_ids=np.array([one(type_token(k)) for k in range(num_types)], dtype=np.int64),
            byte_ids=np.array([one(byte_token(b)) for b in range(256)], dtype=np.int64),
            task_ids={task: one(tok) for task, tok in TASK_TOKENS.items()},
            vision_start=one(VISION_START),
            vision_end=one(VISION_END),
            image_pad=one(IMAGE_PAD),
            eos=one(EOS),
        )


def _added(token: str):
    from tokenizers import AddedToken

    return AddedToken(token, special=True, normalized=False)


def train_bpe(texts: Iterable[str], num_types: int, vocab_size: int = 2048) -> Tokenizer:
    """Train a byte-level BPE (Qwen's pre-tokenisation) on ``texts`` with every special
    token, as a ``tokenizers`` object (no transformers import).

    Specials come first in a fixed order, so for a given ``num_types`` their ids do not depend
    on the text.
    """
    specials = [*QWEN_CONTROL_TOKENS, *mmtpp_tokens(num_types)]
    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return bpe


# What ``save_pretrained`` writes beside tokenizer.json for ``train_tokenizer``'s tokenizer
# (transformers 5); ``save_bpe`` writes the same without importing transformers.
TRAINED_TOKENIZER_CONFIG = {
    "backend": "tokenizers",
    "eos_token": EOS,
    "extra_special_tokens": [],
    "model_max_length": 1 << 20,
    "pad_token": EOS,
    "tokenizer_class": "TokenizersBackend",
}


def train_tokenizer(
    texts: Iterable[str], num_types: int, vocab_size: int = 2048
) -> PreTrainedTokenizerFast:
    """``train_bpe`` as a transformers tokenizer; it saves as a standard Hugging Face
    tokenizer directory."""
    bpe = train_bpe(texts, num_types, vocab_size)
    from transformers import PreTrainedTokenizerFast

    config = TRAINED_TOKENIZER_CONFIG
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=config["eos_token"],
        pad_token=config["pad_token"],
        model_max_length=config["model_max_length"],
        extra_special_tokens={},
    )


def save_bpe(bpe: Tokenizer, out_dir: str | Path) -> None:
    """Save a ``train_bpe`` tokenizer as ``train_tokenizer(...).save_pretrained`` would."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe.save(str(out / "tokenizer.json"))
    text = json.dumps(TRAINED_TOKENIZER_CONFIG, indent=2, sort_keys=True, ensure_ascii=False)
    (out / "tokenizer_config.json").write_text(text + "\n")


@dataclass(frozen=True)
class Extension:
    """What ``extend_tokenizer`` did: the ids of the tokens it added, and the new length."""

    added: dict[str, int]
    already_present: list[str]
    old_size: int
    new_size: int


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, num_types: int) -> Extension:
    """Add mmtpp's tokens to an existing (e.g. Qwen2.5-VL) tokenizer, in place.

    Existing tokens keep their ids; tokens already present are reused. Qwen2.5-VL's control
    and vision tokens must already be there (they define the image interface).
    """
    vocab = tokenizer.get_vocab()
    missing_qwen = [t for t in QWEN_CONTROL_TOKENS if t not in vocab]
    if missing_qwen:
        raise ValueError(f"not a Qwen2.5-VL tokenizer: missing {missing_qwen}")
    wanted = mmtpp_tokens(num_types)
    present = [t for t in wanted if t in vocab]
    new = [t for t in wanted if t not in vocab]
    old_size = len(tokenizer)
    if new:
        tokenizer.add_tokens([_added(t) for t in new], special_tokens=True)
    vocab = tokenizer.get_vocab()
    return Extension(
        added={t: int(vocab[t]) for t in new},
        already_present=present,
        old_size=old_size,
        new_size=len(tokenizer),
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory (never from a hub)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def load_backend(path: str | Path) -> Tokenizer:
    """The ``tokenizers`` tokenizer of a directory saved by ``save_pretrained``: the same ids
    as ``load_tokenizer(path)`` for encoding and the vocabulary, without importing
    transformers (data-preparation workers start seconds faster)."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (not a fast-tokenizer directory)")
    return Tokenizer.from_file(str(file))


def fingerprint(tokenizer: PreTrainedTokenizerBase | Tokenizer) -> str:
    """A short hash of the vocabulary (incl. added tokens): cached outputs depend on it."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def encode_texts(
    tokenizer: PreTrainedTokenizerBase | Tokenizer, texts: list[str]
) -> list[list[int]]:
    """Token ids of many texts at once, without special tokens (fast path of ``tokenizers``:
    no character offsets are computed). A text is plain text: a ``<|image_pad|>`` or
    ``<|end_of_event|>`` written in it is split into ordinary tokens, never matched as the
    special token (a user's text cannot forge events, types or image slots)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    backend.encode_special_tokens = True
    return [enc.ids for enc in backend.encode_batch_fast(texts, add_special_tokens=False)]


def build_tokenizer(
    out_dir: str | Path,
    texts: list[str],
    num_types: int,
    base: str | Path | None = None,
    vocab_size: int = 2048,
) -> str:
    """Save a run's tokenizer to ``out_dir`` and return its fingerprint: a local tokenizer
    (e.g. Qwen2.5-VL's, ``base``) extended with mmtpp's tokens, or without one a tiny BPE
    trained on ``texts`` (with ``tokenizers`` alone: no transformers import, ~0.6 s)."""
    if base:
        tokenizer = load_tokenizer(base)
        extend_tokenizer(tokenizer, num_types)
        tokenizer.save_pretrained(out_dir)
        return fingerprint(tokenizer)
    bpe = train_bpe(texts, num_types, vocab_size)
    save_bpe(bpe, out_dir)
    return fingerprint(bpe)
