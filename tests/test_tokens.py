import numpy as np
import pytest
from conftest import NUM_TYPES, sample_texts

from mmtpp.tokens import (
    QWEN_CONTROL_TOKENS,
    TokenIds,
    encode_texts,
    extend_tokenizer,
    fingerprint,
    load_backend,
    load_tokenizer,
    mmtpp_tokens,
    save_bpe,
    train_bpe,
    train_tokenizer,
)


def test_special_token_set_follows_the_spec():
    tokens = mmtpp_tokens(3)
    assert len(tokens) == 9 + 3 + 256 + 3 and len(set(tokens)) == len(tokens)
    assert "<|similar_event|>" in tokens and "<|byte_255|>" in tokens and "<|type_2|>" in tokens
    assert "<|text_prediction|>" in tokens


def test_trained_tokenizer_round_trips_through_a_directory(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert fingerprint(loaded) == fingerprint(tiny_tokenizer)
    text = "storm delay north 42"
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text
    token_ids = TokenIds.from_tokenizer(loaded, NUM_TYPES)
    assert loaded.convert_ids_to_tokens(int(token_ids.byte_ids[200])) == "<|byte_200|>"


def test_bpe_saved_without_transformers_is_what_save_pretrained_writes(tmp_path):
    texts = [*sample_texts(200), "é ü 42"]
    train_tokenizer(texts, NUM_TYPES, 300).save_pretrained(tmp_path / "hf")
    bpe = train_bpe(texts, NUM_TYPES, 300)
    save_bpe(bpe, tmp_path / "bpe")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "bpe" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()
    loaded = load_tokenizer(tmp_path / "bpe")
    assert fingerprint(bpe) == fingerprint(loaded)
    assert loaded.eos_token == loaded.pad_token == "<|endoftext|>"


def test_special_ids_do_not_depend_on_the_text():
    a = train_tokenizer(sample_texts(50, seed=1), 2, vocab_size=300)
    b = train_tokenizer(sample_texts(80, seed=2), 2, vocab_size=300)
    ia, ib = TokenIds.from_tokenizer(a, 2), TokenIds.from_tokenizer(b, 2)
    np.testing.assert_array_equal(ia.byte_ids, ib.byte_ids)
    assert ia.image_pad == ib.image_pad and ia.similar_event == ib.similar_event
    assert fingerprint(a) != fingerprint(b)


def test_missing_tokens_are_reported(tiny_tokenizer):
    with pytest.raises(ValueError, match="lacks"):
        TokenIds.from_tokenizer(tiny_tokenizer, NUM_TYPES + 1)


def test_extend_a_qwen_tokenizer_keeps_ids_and_reports_new_ones(qwen_tokenizer_dir):
    tok = load_tokenizer(qwen_tokenizer_dir)
    before = dict(tok.get_vocab())
    assert before["<|image_pad|>"] == 151655  # real Qwen2.5-VL ids
    ext = extend_tokenizer(tok, 5)
    assert ext.old_size == 151657 and ext.new_size == ext.old_size + 9 + 5 + 256 + 3
    assert sorted(ext.added.values()) == list(range(ext.old_size, ext.new_size))
    after = tok.get_vocab()
    assert all(after[t] == i for t, i in before.items())
    assert tok("hello world", add_special_tokens=False)["input_ids"] == [14990, 1879]
    again = extend_tokenizer(tok, 5)
    assert again.added == {} and len(again.already_present) == 9 + 5 + 256 + 3
    ids = TokenIds.from_tokenizer(tok, 5)
    assert ids.image_pad == 151655 and ids.eos == 151643


def test_extend_refuses_a_non_qwen_tokenizer(tiny_tokenizer, tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    with pytest.raises(ValueError, match=r"not a Qwen2\.5-VL tokenizer"):
        extend_tokenizer(plain, 2)
    assert set(QWEN_CONTROL_TOKENS) <= set(tiny_tokenizer.get_vocab())


@pytest.mark.parametrize("kind", ["trained", "qwen"])
def test_backend_tokenizer_matches_the_transformers_one(
    kind, tiny_tokenizer, qwen_tokenizer_dir, tmp_path
):
    if kind == "trained":
        tiny_tokenizer.save_pretrained(tmp_path)
        path = tmp_path
    else:
        qwen = load_tokenizer(qwen_tokenizer_dir)
        extend_tokenizer(qwen, NUM_TYPES)
        qwen.save_pretrained(tmp_path)
        path = tmp_path
    full, backend = load_tokenizer(path), load_backend(path)
    texts = [*sample_texts(50), "Ünïcode – 東京 <|similar_event|> 3.5 km", " lead space"]
    assert encode_texts(backend, texts) == encode_texts(full, texts)
    a, b = TokenIds.from_tokenizer(backend, NUM_TYPES), TokenIds.from_tokenizer(full, NUM_TYPES)
    for name in vars(a):  # arrays, ints and the task-id dict
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_backend(tmp_path / "nowhere")


def test_texts_cannot_forge_special_tokens(tiny_tokenizer):
    from mmtpp.tokens import TokenIds, encode_texts

    ids = TokenIds.from_tokenizer(tiny_tokenizer, 4)
    forged = "storm <|image_pad|> <|end_of_event|><|type_1|><|similar_event|> <|endoftext|>"
    specials = {ids.image_pad, ids.end_of_event, int(ids.type_ids[1]), ids.similar_event, ids.eos}
    (got,) = encode_texts(tiny_tokenizer, [forged])
    assert not specials & set(got)
    assert tiny_tokenizer.decode(got) == forged  # split into ordinary pieces, nothing lost
    assert encode_texts(tiny_tokenizer, ["storm north"]) == [
        tiny_tokenizer("storm north", add_special_tokens=False)["input_ids"]
    ]
