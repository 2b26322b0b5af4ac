import numpy as np
import pytest
import torch
from conftest import NUM_TYPES, card_for, make_dataset
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
from mmtpp.shards import PrepareContext, process_table
from mmtpp.tokens import build_tokenizer, extend_tokenizer, load_tokenizer

torch.set_flush_denormal(True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    _, seqs = make_dataset(tmp / "ds", num_sequences=3, events=(20, 30))
    cfg = load_config(overrides=["data.budget=256", "data.targets_per_sequence=2"])
    build_tokenizer(tmp / "tok", ["storm north delay taxi"] * 50, NUM_TYPES)
    ctx = PrepareContext(cfg.data, str(tmp / "tok"), NUM_TYPES, str(tmp / "ds"))
    rows = process_table(sequences_to_table(seqs), ctx).to_pylist()
    tokenizer = load_tokenizer(tmp / "tok")
    base = materialize_base(cfg.model, tokenizer, tmp / "base")
    return tmp, cfg, tokenizer, base, rows


def batch_of(rows, tokenizer, model):
    spec = ImageSpec()
    return collate(
        rows, image_processor(spec), tokenizer.eos_token_id, model.config.image_token_id, spec
    )


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
    save_trained(peft, tokenizer, tmp / "trained", card_for(cfg, base))
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


def test_lora_on_the_tiny_base_can_fit_every_response_token(setup):
    # A zeroed <|endoftext|> row (Qwen2's padding_idx) or 0.02-scale tied embeddings cap the
    # logit of every frozen token row: its loss would stay above ~4 nats whatever LoRA does.
    _tmp, cfg, tokenizer, base, rows = setup
    torch.manual_seed(0)
    peft = add_lora(
        load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, NUM_TYPES)
    )
    examples = [r for r in rows if r["kind"] == "stage2" and r["task"] == "time"][:2]
    batch = batch_of(examples, tokenizer, peft)
    labels = batch.pop("labels")
    opt = torch.optim.Adam([p for p in peft.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(30):
        logits = peft(**batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
        )
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    per_token = loss[labels[:, 1:] != -100]
    assert (labels[:, 1:] == tokenizer.eos_token_id).sum() == len(examples)
    assert per_token.max() < 0.5, per_token


def test_tiny_base_is_rebuilt_when_its_recipe_changes(setup, tmp_path):
    _, cfg, tokenizer, _, _ = setup
    path = materialize_base(cfg.model, tokenizer, tmp_path / "base")
    stamp = (path / "config.json").stat().st_mtime_ns
    assert materialize_base(cfg.model, tokenizer, path) == path
    assert (path / "config.json").stat().st_mtime_ns == stamp  # same recipe: reused
    cfg.model.seed += 1
    try:
        materialize_base(cfg.model, tokenizer, path)
    finally:
        cfg.model.seed -= 1
    assert (path / "config.json").stat().st_mtime_ns != stamp


def test_a_blank_image_changes_neither_loss_nor_logits(setup):
    """ZeRO-3 runs the vision tower on every batch (train.py): the blank image it adds to a
    batch without images must leave the loss and every real position's logits alone."""
    from mmtpp.losses import response_loss
    from mmtpp.model import with_blank_image

    _tmp, cfg, tokenizer, base, rows = setup
    torch.manual_seed(0)
    model = add_lora(
        load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, NUM_TYPES)
    ).eval()
    plain = [r for r in rows if not r["images"]][:3]
    assert len(plain) == 3
    batch = batch_of(plain, tokenizer, model)
    spec = ImageSpec()
    blank = with_blank_image(
        batch, image_processor(spec), spec, tokenizer.eos_token_id, model.config.image_token_id
    )
    assert "pixel_values" in blank and blank["input_ids"].shape[1] > batch["input_ids"].shape[1]
    with torch.no_grad():
        a, b = model(**batch), model(**blank)
    width = batch["input_ids"].shape[1]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(b.logits[:, :width][real], a.logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        response_loss(b.logits, blank["labels"]), response_loss(a.logits, batch["labels"])
    )


def _image_runs(ids, image_token_id):
    is_image = torch.as_tensor(ids) == image_token_id
    return int((is_image[1:] & ~is_image[:-1]).sum()) + int(is_image[0])


def test_packed_documents_read_exactly_as_alone(setup, tmp_path):
    """A stage-1 row packs several documents; in training each must attend only to itself,
    with its own positions (images included), so its logits equal the document alone."""
    from mmtpp.model import document_lengths, training_inputs

    tmp, cfg, tokenizer, base, _ = setup
    _, seqs = make_dataset(tmp_path / "short", num_sequences=8, events=(4, 9), seed=3)
    ctx = PrepareContext(cfg.data, str(tmp / "tok"), NUM_TYPES, str(tmp_path / "short"))
    rows = process_table(sequences_to_table(seqs), ctx).to_pylist()
    torch.manual_seed(0)
    model = add_lora(
        load_base(base, cfg.model, tokenizer), cfg.lora, added_token_ids(tokenizer, NUM_TYPES)
    ).eval()
    image_id = model.config.image_token_id
    packed = [r for r in rows if r["kind"] == "stage1" and len(r["doc_lengths"] or []) >= 2]
    assert packed, "the fixture should pack several windows into one row"
    row = max(packed, key=lambda r: len(r["images"] or []))
    lengths = row["doc_lengths"]
    assert row["images"], "the packed row should hold images"
    batch = batch_of([row, packed[0]], tokenizer, model)
    inputs = training_inputs(model, batch, document_lengths([row, packed[0]]))
    assert "attention_mask" not in inputs and inputs["position_ids"].shape[0] == 4
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    start, used = 0, 0
    for length in lengths:
        ids = row["input_ids"][start : start + length]
        n = _image_runs(ids, image_id)
        alone = {"input_ids": ids, "images": row["images"][used : used + n]}
        used += n
        with torch.no_grad():
            want = model(**batch_of([alone], tokenizer, model)).logits[0]
        torch.testing.assert_close(logits[start : start + length], want, atol=1e-4, rtol=1e-4)
        start += length
    assert used == len(row["images"])
    # ... and the packed loss is the sum of the documents' losses (the next document's first
    # token is not a target of the previous one's last)
    labels = batch["labels"][0]
    assert (labels[torch.as_tensor(np.cumsum(lengths)[:-1])] == -100).all()


def test_rows_of_added_tokens_are_the_same_on_every_load(setup, qwen_tokenizer_dir, tmp_path):
    """A checkpoint whose tokenizer mmtpp extends: the ids it adds (and the rows a resize
    appends) get one fixed value — the mean of the checkpoint's rows — on every load."""
    _, cfg, _, _, _ = setup
    plain = load_tokenizer(qwen_tokenizer_dir)
    base = materialize_base(cfg.model, plain, tmp_path / "qwen_like")  # the "checkpoint"
    known = len(plain)
    extended = load_tokenizer(qwen_tokenizer_dir)
    extend_tokenizer(extended, NUM_TYPES)
    first, second = (load_base(base, cfg.model, extended) for _ in range(2))
    rows = first.get_input_embeddings().weight
    assert rows.shape[0] > len(extended) > known  # resized, and ids were added
    torch.testing.assert_close(rows, second.get_input_embeddings().weight, rtol=0, atol=0)
    mean = rows[:known].mean(0)
    torch.testing.assert_close(rows[known:], mean.expand(rows.shape[0] - known, -1))
