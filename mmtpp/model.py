"""The Qwen2.5-VL model with LoRA adapters: build, extend, batch, save, reload, merge (design §5–6).

The tiny model and a real 3B/7B checkpoint take the same path: the tiny one is built from the
config, saved once as a Qwen2.5-VL checkpoint directory (``materialize_base``), and from then
on loaded exactly like a real checkpoint (``load_base``). Embedding tables grow to hold the
tokenizer's added tokens and never shrink; the added tokens' rows are trained through PEFT's
trainable tokens (which keeps tied input/output embeddings tied), LoRA adapts the language
model's linear layers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mmtpp.card import ModelCard
from mmtpp.config import LoraSettings, ModelConfig
from mmtpp.images import ImageSpec, open_image
from mmtpp.templates import IGNORE_INDEX
from mmtpp.tokens import (
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    load_tokenizer,
    mmtpp_tokens,
)

ADAPTER_DIR = "adapter"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width), as Qwen2.5-VL does."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config of the tiny size, with the tokenizer's vocabulary and ids."""
    vocab = tokenizer.get_vocab()
    padded_vocab = 64 * math.ceil(len(tokenizer) / 64)
    head_dim = cfg.hidden_size // cfg.num_heads
    eos = tokenizer.eos_token_id
    text = {
        "vocab_size": padded_vocab,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": _mrope_section(head_dim),
        },
        # Weights ~ N(0, 1/hidden): at the default 0.02, with tied embeddings, a token row
        # LoRA does not train (text, <|endoftext|>) can never get a logit above ~2.5
        # (|row| x |normed hidden|), so such a token could never be predicted confidently.
        "initializer_range": cfg.hidden_size**-0.5,
        "bos_token_id": eos,
        "eos_token_id": eos,
        # No padding row: Qwen2's embedding would zero the pad (= eos) row, and with tied
        # embeddings and that row frozen under LoRA, the eos logit would be stuck at 0 and
        # every response's closing <|endoftext|> unlearnable. Padding is masked anyway.
        "pad_token_id": None,
    }
    vision = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "intermediate_size": 2 * cfg.vision_hidden_size,
        "num_heads": max(1, cfg.vision_hidden_size // 16),
        "out_hidden_size": cfg.hidden_size,
        "fullatt_block_indexes": [cfg.vision_depth - 1],
        "window_size": 112,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=vocab[IMAGE_PAD],
        video_token_id=vocab[VIDEO_PAD],
        vision_start_token_id=vocab[VISION_START],
        vision_end_token_id=vocab[VISION_END],
        tie_word_embeddings=cfg.tie_embeddings,
    )


def image_processor(spec: ImageSpec) -> Qwen2VLImageProcessorPil:
    """Qwen2.5-VL's image processor with the sizes the token counts were computed for."""
    return Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)


TINY_RECIPE = "mmtpp_tiny_recipe.json"  # what a tiny base was built from


def materialize_base(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path
) -> Path:
    """The base checkpoint directory: ``cfg.base`` for a real model; for 'tiny', a random
    model built once from ``cfg.seed`` and saved to ``out_dir`` (reused when present)."""
    if cfg.base != "tiny":
        if not (Path(cfg.base) / "config.json").is_file():
            raise FileNotFoundError(
                f"model.base={cfg.base!r} is neither 'tiny' nor a local checkpoint directory "
                "with a config.json (weights are never downloaded)"
            )
        return Path(cfg.base)
    out = Path(out_dir)
    config = tiny_config(cfg, tokenizer)
    recipe = json.dumps({"seed": cfg.seed, "config": config.to_diff_dict()}, sort_keys=True)
    built = out / TINY_RECIPE
    if (out / "config.json").is_file() and built.is_file() and built.read_text() == recipe:
        return out  # built before from the same recipe
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TINY_RECIPE).write_text(recipe)
    return out


def load_base(
    path: str | Path, cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase
) -> Qwen2_5_VLForConditionalGeneration:
    """Load a Qwen2.5-VL checkpoint from a local directory and make room for the tokenizer's
    tokens (the table grows to a multiple of 64 and never shrinks)."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path),
        dtype=DTYPES[cfg.dtype],
        attn_implementation=cfg.attn_implementation,
        local_files_only=True,
    )
    vocab = tokenizer.get_vocab()
    if model.config.image_token_id != vocab[IMAGE_PAD]:
        raise ValueError(
            f"tokenizer and checkpoint {path} disagree on <|image_pad|> "
            f"({vocab[IMAGE_PAD]} vs {model.config.image_token_id}): prepare the data with "
            f"data.tokenizer={path}"
        )
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        # mean_resizing would draw the new rows at random on every load: set below instead
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    init_untrained_rows(model, _checkpoint_vocab_size(path) or rows)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def _checkpoint_vocab_size(path: str | Path) -> int | None:
    """Tokens of the checkpoint's own tokenizer (None without ``tokenizer.json``): ids from
    there on were added by mmtpp, whatever rows the checkpoint's (padded) table holds."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file)).get_vocab_size(with_added_tokens=True)


@torch.no_grad()
def init_untrained_rows(model, known: int) -> None:
    """Give every embedding row from ``known`` on — ids mmtpp added (in a real checkpoint
    they land in its never-trained padding rows) and rows a resize appended — the mean of
    the ``known`` rows the checkpoint's tokenizer covers, in the input table and (when
    untied) the output one: a fixed value, so training, evaluation, Serve and ``merge`` see
    the same rows on every load."""
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)
    for weight in weights:
        if weight.shape[0] > known:
            weight[known:] = weight[:known].float().mean(0).to(weight.dtype)


def added_token_ids(tokenizer: PreTrainedTokenizerBase, num_types: int) -> list[int]:
    vocab = tokenizer.get_vocab()
    return sorted(int(vocab[t]) for t in mmtpp_tokens(num_types))


def lora_config(lora: LoraSettings, token_ids: list[int], tied: bool):
    from peft import LoraConfig

    # Adapters only on the language model: a plain name list would also wrap the vision MLP.
    targets = rf".*language_model.*\.({'|'.join(lora.target_modules)})"
    tokens: dict[str, list[int]] | None = None
    if lora.train_new_tokens:
        # With tied embeddings PEFT ties lm_head to the embed_tokens adapter itself.
        tokens = (
            {"embed_tokens": token_ids}
            if tied
            else {
                "embed_tokens": token_ids,
                "lm_head": token_ids,
            }
        )
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
    )


def add_lora(model, lora: LoraSettings, token_ids: list[int]):
    from peft import get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return get_peft_model(model, lora_config(lora, token_ids, tied))


def load_adapter(model, adapter_dir: str | Path, trainable: bool):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def save_trained(peft_model, tokenizer, out_dir: str | Path, card: ModelCard) -> Path:
    """Adapter + tokenizer + the model card (what is needed to rebuild model and prompts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out / ADAPTER_DIR)
    tokenizer.save_pretrained(out)
    card.write(out)
    return out


def load_trained(model_dir: str | Path, trainable: bool = False):
    """A saved adapter directory → (PeftModel, tokenizer, ModelCard)."""
    card = ModelCard.read(model_dir)  # a clear error for a card of another version
    tokenizer = load_tokenizer(model_dir)
    model = load_base(card.base_path, card.model, tokenizer)
    return load_adapter(model, Path(model_dir) / ADAPTER_DIR, trainable), tokenizer, card


def merge(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold the adapter (and trained token rows) into a standalone checkpoint that plain
    ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` loads."""
    peft_model, tokenizer, _ = load_trained(model_dir)
    merged = peft_model.merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- batches ------------------------------------------------------------------------------


def collate(
    rows: list[dict[str, Any]],
    processor: Qwen2VLImageProcessorPil,
    pad_id: int,
    image_token_id: int,
    spec: ImageSpec,
) -> dict[str, torch.Tensor]:
    """Prepared rows → model inputs (right-padded).

    Stage-2 rows (``prompt_length`` set) get a loss only on the response; stage-1 rows on
    every token except image placeholders, padding and the first token of each packed
    document after the first (nothing inside that document precedes it). Images are decoded
    and processed in the order their ``<|image_pad|>`` runs appear, so ``pixel_values`` line
    up.
    """
    lengths = [len(r["input_ids"]) for r in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    images = []
    for i, row in enumerate(rows):
        seq = torch.as_tensor(np.asarray(row["input_ids"], dtype=np.int64))
        ids[i, : seq.numel()] = seq
        attention[i, : seq.numel()] = 1
        lab = seq.clone()
        prompt = row.get("prompt_length")
        if prompt:
            lab[:prompt] = IGNORE_INDEX
        # a packed document's first token is not predicted from the one before it
        starts = np.cumsum(row.get("doc_lengths") or [0])[:-1]
        lab[torch.as_tensor(starts, dtype=torch.long)] = IGNORE_INDEX
        lab[seq == image_token_id] = IGNORE_INDEX
        labels[i, : seq.numel()] = lab
        images.extend(open_image(bytes(b), spec) for b in row.get("images") or [])
    batch = {
        "input_ids": ids,
        "attention_mask": attention,
        "labels": labels,
        "mm_token_type_ids": (ids == image_token_id).int(),
    }
    if images:
        out = processor(images=images, return_tensors="pt")
        grid = out["image_grid_thw"]
        expected = int((ids == image_token_id).sum())
        if int(grid.prod(dim=1).sum()) // 4 != expected:
            raise ValueError(
                f"{expected} image tokens in the batch but the processor made "
                f"{int(grid.prod(dim=1).sum()) // 4}: prepared with other image sizes?"
            )
        batch["pixel_values"] = out["pixel_values"]
        batch["image_grid_thw"] = grid
    return batch


def with_blank_image(
    batch: dict[str, torch.Tensor],
    processor: Qwen2VLImageProcessorPil,
    spec: ImageSpec,
    pad_id: int,
    image_token_id: int,
) -> dict[str, torch.Tensor]:
    """A batch without images with one blank image added where it changes nothing: its
    ``<|image_pad|>`` tokens are appended after every row's tokens, unattended (attention
    mask 0) and unlabelled, so the loss and every real position's logits stay the same while
    the vision tower runs (ZeRO-3 needs every rank to run it, see train.py)."""
    from PIL import Image

    side = spec.factor * 2
    out = processor(images=[Image.new("RGB", (side, side))], return_tensors="pt")
    n = int(out["image_grid_thw"].prod()) // spec.merge_size**2
    rows = batch["input_ids"].shape[0]
    extra_ids = torch.full((rows, n), pad_id, dtype=torch.long)
    extra_ids[0] = image_token_id
    return {
        "input_ids": torch.cat([batch["input_ids"], extra_ids], 1),
        "attention_mask": F.pad(batch["attention_mask"], (0, n), value=0),
        "labels": F.pad(batch["labels"], (0, n), value=IGNORE_INDEX),
        "mm_token_type_ids": torch.cat(
            [batch["mm_token_type_ids"], (extra_ids == image_token_id).int()], 1
        ),
        "pixel_values": out["pixel_values"],
        "image_grid_thw": out["image_grid_thw"],
    }


def document_lengths(rows: list[dict[str, Any]]) -> list[list[int]]:
    """The documents packed in each prepared row: a stage-1 row's ``doc_lengths``, one
    document for any other row."""
    return [list(r.get("doc_lengths") or [len(r["input_ids"])]) for r in rows]


def packed_position_ids(model, batch: dict[str, torch.Tensor], documents: list[list[int]]):
    """Position ids ``[4, B, S]`` that restart at every packed document: row 0 the text
    positions, rows 1–3 the 3-D multimodal rotary positions, computed per document by the
    model's own rope index (its images included).

    Given these and no 2-D attention mask, transformers builds a block-diagonal causal mask
    (and FlashAttention-2 takes its varlen path), so a document attends only to itself and
    reads exactly as it would alone (design §6). A row's last document takes the padding
    (and ZeRO-3's blank image) after it: causal attention never lets a real token see them.
    """
    core = next(m for m in model.modules() if hasattr(m, "get_rope_index"))
    ids, types = batch["input_ids"], batch["mm_token_type_ids"]
    grids = batch.get("image_grid_thw")
    rows, width = ids.shape
    out = torch.empty((4, rows, width), dtype=torch.long, device=ids.device)
    used = 0  # images are processed in the order their <|image_pad|> runs appear
    for r, lengths in enumerate(documents):
        bounds = np.cumsum([0, *lengths])
        bounds[-1] = width
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            kind = types[r, a:b]
            images = int((kind[1:] > kind[:-1]).sum()) + int(kind[0] > 0)
            out[0, r, a:b] = torch.arange(b - a, device=ids.device)
            if images == 0:
                out[1:, r, a:b] = out[0, r, a:b]
                continue
            grid = grids[used : used + images]
            used += images
            positions, _ = core.get_rope_index(ids[r : r + 1, a:b], kind[None], image_grid_thw=grid)
            out[1:, r, a:b] = positions[:, 0]
    return out


def training_inputs(model, batch: dict[str, torch.Tensor], documents: list[list[int]]) -> dict:
    """A collated batch as training feeds it: packed position ids instead of the 2-D
    attention mask (documents apart, see ``packed_position_ids``) and no key/value cache
    (a cache would also switch the packed mask off)."""
    out: dict[str, Any] = {k: v for k, v in batch.items() if k != "attention_mask"}
    out["position_ids"] = packed_position_ids(model, batch, documents)
    out["use_cache"] = False
    return out
