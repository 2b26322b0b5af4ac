import pytest
import torch
from conftest import NUM_TYPES, make_dataset
from transformers import Qwen2_5_VLForConditionalGeneration

from mmtpp.config import load_config
from mmtpp.events import sequences_to_table
from mmtpp.images import ImageSpec
from mmtpp.model import (
    add_lora,
    added_token_ids,
    collate,
    image_processor,
    load_base,
    load_trained,
    materialize_base,
    merge,
    save_trained,
)
from mmtpp.prepare import PrepareContext, build_tokenizer, process_table
from mmtpp.tokens import extend_tokenizer, load_tokenizer

torch.set_flush_denormal(True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    _, seqs = make_dataset(tmp / "ds", num_sequences=3, events=(20, 30))
    cfg = load_config(overrides=["data.budget=256", "data.targets_per_sequence=2"])
    build_tokenizer(cfg.data, ["storm north delay taxi"] * 50, NUM_TYPES, tmp / "tok")
    ctx = PrepareContext(cfg.data, str(tmp / "tok"), NUM_TYPES, str(tmp / "ds"))
    rows = process_table(sequences_to_table(seqs), ctx).to_pylist()
    tokenizer = load_tokenizer(tmp / "tok")
    base = materialize_base(cfg.model, tokenizer, tmp / "base")
    return tmp, cfg, tokenizer, base, rows


def batch_of(rows, tokenizer, model):
    spec = ImageSpec()
    return collate(rows, image_processor(spec), tokenizer.eos_token_id,
                   model.config.image_token_id, spec)  # fmt: skip


def test_lora_trains_adapters_and_new_token_rows_only(setup):
    _tmp, cfg, tokenizer, base, rows = setup
    model = load_base(base, cfg.model, tokenizer)
    assert model.get_input_embeddings().num_embeddings % 64 == 0
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    peft = add_lora(model, cfg.lora, added_token_ids(tokenizer, NUM_TYPES))
    names = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any("token_adapter" in n for n in names)
    assert not any("visual" in n for n in names)
    with_images = [r for r in rows if r["images"]][:2]
    batch = batch_of(with_images + [r for r in rows if r["kind"] == "stage2"][:2], tokenizer, peft)
    assert "pixel_values" in batch
    out = peft(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_save_reload_merge_round_trip(setup):
    tmp, cfg, tokenizer, base, rows = setup
    model = load_base(base, cfg.model, tokenizer)
    peft = add_lora(model, cfg.lora, added_token_ids(tokenizer, NUM_TYPES))
    # perturb trained parts so the comparison is meaningful
    with torch.no_grad():
        for _n, p in peft.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    peft.eval()
    batch = batch_of([r for r in rows if r["kind"] == "stage2"][:2], tokenizer, peft)
    want = peft(**batch).logits
    meta = {"model": vars(cfg.model), "base_path": str(base), "num_types": NUM_TYPES}
    save_trained(peft, tokenizer, tmp / "trained", meta)
    reloaded, _tok2, _ = load_trained(tmp / "trained")
    reloaded.eval()
    torch.testing.assert_close(reloaded(**batch).logits, want, atol=1e-4, rtol=1e-4)
    merge(tmp / "trained", tmp / "merged")
    plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp / "merged").eval()
    torch.testing.assert_close(plain(**batch).logits, want, atol=1e-4, rtol=1e-4)


def test_qwen_checkpoint_dir_with_real_ids(setup, qwen_tokenizer_dir, tmp_path):
    _, cfg, _, _, _ = setup
    tok = load_tokenizer(qwen_tokenizer_dir)
    extend_tokenizer(tok, NUM_TYPES)
    path = materialize_base(cfg.model, tok, tmp_path / "qwen_like")
    model = load_base(path, cfg.model, tok)
    assert model.config.image_token_id == 151655
    assert model.get_input_embeddings().num_embeddings >= len(tok) > 151657
