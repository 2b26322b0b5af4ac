import itertools

import numpy as np
import pytest
from conftest import NUM_TYPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmtpp.compression import CompressionRule, similar_mask
from mmtpp.events import EventSequence
from mmtpp.parsing import MALFORMED, NOT_A_TYPE, Parser
from mmtpp.templates import IGNORE_INDEX, SHORT_RESPONSE_ROOM, Renderer
from mmtpp.timecodec import WRONG_LENGTH, encode
from mmtpp.tokens import TokenIds, extend_tokenizer, load_tokenizer

IMAGE_TOKENS = 3


def R(delta: float, mode: str = "absolute", keep_type: bool = False) -> CompressionRule:
    return CompressionRule(mode, delta, keep_type)


def renderer_for(tokenizer):
    return Renderer(tokenizer, TokenIds.from_tokenizer(tokenizer, NUM_TYPES))


def reference_event(seq, i, gap, tokenizer) -> str:
    """design §5's template, written out as a string, one event at a time."""
    parts = ["<|start_of_event|><|time_start|>"]
    parts += [f"<|byte_{b}|>" for b in encode(gap)]
    parts += [f"<|time_end|><|type_start|><|type_{seq.type[i]}|><|type_end|>"]
    if seq.text[i] is not None:
        ids = tokenizer(seq.text[i], add_special_tokens=False)["input_ids"]
        parts += ["<|text_start|>", *tokenizer.convert_ids_to_tokens(ids), "<|text_end|>"]
    if seq.image[i] is not None:
        parts += ["<|vision_start|>", "<|image_pad|>" * IMAGE_TOKENS, "<|vision_end|>"]
    parts.append("<|end_of_event|>")
    return "".join(parts)


@st.composite
def sequences(draw, max_events=12):
    n = draw(st.integers(1, max_events))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.1, 0.15, 1.0, 2.5]), min_size=n, max_size=n))
    words = st.sampled_from(["storm", "north", "taxi 12", "delay", "é ü", "  "])
    return EventSequence(
        "s",
        np.cumsum(gaps),
        draw(st.lists(st.integers(0, NUM_TYPES - 1), min_size=n, max_size=n)),
        draw(st.lists(st.one_of(st.none(), words), min_size=n, max_size=n)),
        draw(st.lists(st.one_of(st.none(), st.just(b"png")), min_size=n, max_size=n)),
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences(), st.data())
def test_render_matches_the_template(tiny_tokenizer, seq, data):
    r = renderer_for(tiny_tokenizer)
    et = r.event_tokens([seq], lambda ref: IMAGE_TOKENS)[0]
    n = len(seq)
    start = data.draw(st.integers(0, n - 1))
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n - start, max_size=n - start)))
    ids = r.render(et, start, n, mask)
    expected = "".join(
        "<|similar_event|>" if mask[k] else reference_event(seq, i, seq.gaps[i], tiny_tokenizer)
        for k, i in enumerate(range(start, n))
    )
    assert "".join(tiny_tokenizer.convert_ids_to_tokens(ids.tolist())) == expected
    assert ids.size == np.where(mask, 1, et.costs()[start:]).sum()


def test_render_with_real_qwen_ids(qwen_tokenizer_dir):
    tok = load_tokenizer(qwen_tokenizer_dir)
    extend_tokenizer(tok, NUM_TYPES)
    r = renderer_for(tok)
    seq = EventSequence("q", [0.0, 1.0], [1, 3], ["hello world", None], [None, b"png"])
    ids = r.render(r.event_tokens([seq], lambda ref: 2)[0], 0, 2)
    assert ids[11:13].tolist() == [14990, 1879]  # "hello world" in Qwen's BPE
    assert (ids == 151655).sum() == 2  # <|image_pad|>
    text = "".join(tok.convert_ids_to_tokens(ids.tolist()))
    assert text.count("<|start_of_event|>") == 2 and "<|type_3|>" in text


def long_sequence(n=200, seed=0):
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.7, 0.1, rng.exponential(3.0, n))
    texts = [None if rng.random() < 0.3 else "storm north delay" for _ in range(n)]
    images = [b"png" if rng.random() < 0.5 else None for _ in range(n)]
    return EventSequence("long", np.cumsum(gaps), rng.integers(0, NUM_TYPES, n), texts, images)


@pytest.mark.parametrize(("delta", "budget"), [(0.0, 300), (0.2, 300), (0.2, 64)])
def test_stage1_documents_cover_the_sequence_within_budget(tiny_tokenizer, delta, budget):
    r = renderer_for(tiny_tokenizer)
    seq = long_sequence()
    et = r.event_tokens([seq], lambda ref: IMAGE_TOKENS)[0]
    docs = r.stage1_documents(et, R(delta), budget)
    assert docs[0][0] == 0 and docs[-1][1] == len(seq)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(docs))
    forward = similar_mask(et.gaps, delta, "forward")
    for start, stop, ids in docs:
        assert ids.size <= budget and ids[-1] == r.ids.eos
        assert ids[0] == r.ids.start_of_event  # a window never opens compressed
        assert (ids == r.ids.similar_event).sum() == forward[start + 1 : stop].sum()
    if delta == 0.2 and budget == 300:
        assert len(docs) < len(r.stage1_documents(et, R(0.0), budget))


def test_stage1_refuses_an_event_larger_than_the_budget(tiny_tokenizer):
    r = renderer_for(tiny_tokenizer)
    et = r.event_tokens([long_sequence(5)], lambda ref: 50)[0]
    with pytest.raises(ValueError, match="do not fit in a budget of 40"):
        r.stage1_windows(et, R(0.2), 40)


@pytest.mark.parametrize("task", ["time", "type", "text"])
@pytest.mark.parametrize("delta", [0.0, 0.2])
def test_stage2_examples(tiny_tokenizer, task, delta):
    r = renderer_for(tiny_tokenizer)
    parser = Parser(tiny_tokenizer, r.ids)
    seq = long_sequence()
    et = r.event_tokens([seq], lambda ref: IMAGE_TOKENS)[0]
    budget = 256
    for target in (1, 7, 150, 199):
        ex = r.example(et, target, task, R(delta), budget)
        if task == "text" and seq.text[target] is None:
            assert ex is None
            continue
        assert ex.input_ids.size <= budget and ex.target == target
        assert (ex.labels[: ex.prompt_length] == IGNORE_INDEX).all()
        assert ex.input_ids[ex.prompt_length - 1] == r.ids.task_ids[task]
        # the history ends right before the target, its last event is intact
        _, mask, prompt = r.prompt(
            et, target, task, R(delta), budget - ex.labels.size + ex.prompt_length
        )
        assert not mask[-1] and not mask[0]
        assert prompt[-2] == r.ids.end_of_event
        expected = {
            "time": np.float32(seq.gaps[target]),
            "type": seq.type[target],
            "text": seq.text[target],
        }[task]
        parsed = parser.parse(task, ex.input_ids[ex.prompt_length :])
        assert parsed.valid and parsed.value == expected
        # without compression the window is the longest that fits: one more event would not
        # (time and type prompts leave room for the longer of their two responses)
        if delta == 0 and ex.start > 0:
            longer = r.render(et, ex.start - 1, target)
            response = ex.input_ids.size - ex.prompt_length
            room = SHORT_RESPONSE_ROOM if task in ("time", "type") else response
            assert longer.size + 1 + room > budget


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_only_texts_shown_in_full_are_tokenized(tiny_tokenizer, direction):
    r = renderer_for(tiny_tokenizer)
    base = long_sequence()
    texts = [None if t is None else f"{t} {i}" for i, t in enumerate(base.text)]  # distinct
    seq = EventSequence("long", base.time, base.type, texts, base.image)
    lazy, eager = r.event_tokens([seq, seq], lambda ref: IMAGE_TOKENS)
    eager.costs()  # every text tokenized up front
    docs = [r.stage1_documents(et, R(0.2), 128, direction) for et in (lazy, eager)]
    # the texts tokenized are exactly those the documents show
    shown = sum(int((ids == r.ids.text_start).sum()) for *_, ids in docs[0])
    tokenized = (lazy.text_lengths >= 0) & lazy.has_text
    assert tokenized.sum() == shown < lazy.has_text.sum()
    outputs = []
    for et, et_docs in zip((lazy, eager), docs, strict=True):
        examples = [r.examples(et, t, ["time", "text"], R(0.2), 128) for t in range(1, 200, 3)]
        outputs.append(
            [ids.tolist() for *_, ids in et_docs]
            + [ex.input_ids.tolist() for exs in examples for ex in exs.values()]
        )
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("delta", [0.0, 0.2])
def test_time_and_type_prompts_of_a_target_show_the_same_history(tiny_tokenizer, delta):
    r = renderer_for(tiny_tokenizer)
    et = r.event_tokens([long_sequence()], lambda ref: IMAGE_TOKENS)[0]
    for target in range(1, 200, 7):
        ex = r.examples(et, target, ["time", "type"], R(delta), 256)
        time, type_ = ex["time"], ex["type"]
        assert time.start == type_.start and time.prompt_length == type_.prompt_length
        assert (
            time.input_ids[: time.prompt_length - 1] == type_.input_ids[: type_.prompt_length - 1]
        ).all()


def test_backward_compression_keeps_the_most_recent_event(tiny_tokenizer):
    r = renderer_for(tiny_tokenizer)
    seq = EventSequence("run", np.cumsum([0, 1, 1, 1, 1, 1]), [0, 1, 2, 3, 0, 1])
    et = r.event_tokens([seq])[0]
    start, mask = r.history_window(et, 6, R(0.2), 1000)
    assert start == 0 and mask.tolist() == [False, True, True, True, True, False]
    start, mask = r.history_window(et, 6, R(0.2), 11 + 11 + 1)
    # the window opens with a full event: 11 + 1 + 11 = 23 tokens
    assert start == 3 and mask.tolist() == [False, True, False]
    # a forward scan keeps the first event of the run instead
    start, mask = r.history_window(et, 6, R(0.2), 1000, direction="forward")
    assert start == 0 and mask.tolist() == [False, False, True, True, True, False]
    start, mask = r.history_window(et, 6, R(0.2), 1000, max_events=4)  # at most 4 events
    assert start == 2 and mask.tolist() == [False, True, True, False]
    start, mask = r.history_window(et, 6, R(0.2), 11 + 11 + 1, max_events=4)  # the budget binds
    assert start == 3


def test_parser_counts_invalid_outputs(tiny_tokenizer):
    r = renderer_for(tiny_tokenizer)
    p = Parser(tiny_tokenizer, r.ids)
    ids = r.ids
    b = ids.byte_ids
    assert p.parse("time", [ids.time_start, *b[[63, 128, 0]], ids.time_end]).reason == WRONG_LENGTH
    assert p.parse("time", [b[63], b[128], b[0], b[0]]).reason == MALFORMED
    assert p.parse("time", [ids.time_start, *b[[63, 128, 0, 0]], ids.eos]).value == 1.0
    assert p.parse("type", [ids.type_start, b[0], ids.type_end]).reason == NOT_A_TYPE
    assert p.parse("type", [ids.type_start, ids.type_ids[2]]).value == 2
    assert p.parse("text", [ids.eos]).reason == MALFORMED
    assert p.parse("text", []).reason == MALFORMED


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequences(max_events=20), st.sampled_from(["absolute", "relative", "typed"]))
def test_every_rule_renders_through_the_templates_and_keep_type_keeps_the_marks(
    tiny_tokenizer, seq, mode
):
    """Windows, prompts and documents follow the rule's mask; with keep_type a compressed
    event is ``<|similar_event|><|type_k|>`` (two tokens) and the parser reads every
    event's type back from the rendered history."""
    from mmtpp.compression import mask

    r = renderer_for(tiny_tokenizer)
    parser = Parser(tiny_tokenizer, r.ids)
    et = r.event_tokens([seq], lambda ref: IMAGE_TOKENS)[0]
    for keep in (False, True):
        rule = R(0.5, mode, keep)
        m = mask(rule, seq.gaps, seq.type, "forward")
        np.testing.assert_array_equal(et.mask(rule, "forward"), m)
        ids = r.render(et, 0, len(seq), m, keep_type=keep)
        assert ids.size == np.where(m, 1 + keep, et.costs()).sum()
        types = parser.history_types(ids)
        want = [None if (c and not keep) else int(k) for c, k in zip(m, seq.type, strict=True)]
        assert types == want
        for _, _, doc in r.stage1_documents(et, rule, 400):
            assert doc.size <= 400
