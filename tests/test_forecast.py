"""Multi-step forecasts of the model: valid continuations, reproducible under a seed, the same
with and without key/value-cache reuse, and invalid draws counted and redrawn."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mmtpp.decoding import DecodeOptions
from mmtpp.events import EventSequence
from mmtpp.forecast import INVALID_DRAWS, _draw, check_request
from mmtpp.predict import Predictor
from mmtpp.prompt_cache import PromptCache


@pytest.fixture(scope="module")
def predictor(trained):
    model_dir, image_root, seqs = trained
    return Predictor(model_dir, image_root=image_root), seqs


def histories(seqs):
    # a short history (its windows keep their start: the cache is reused) and a long one
    # (its window slides as events are appended: rows are re-encoded)
    return [seqs[0].slice(0, 8), seqs[1]]


def test_forecasts_are_valid_continuations(predictor):
    p, seqs = predictor
    hist = histories(seqs)
    fc = p.forecast(hist, steps=3, samples=2, seed=5)
    c = fc.continuations
    assert c.times.shape == (2, 2, 3)
    c.check_types(p.num_types)  # the constructor checked sorted times after the history
    np.testing.assert_array_equal(c.start, [h.time[-1] for h in hist])
    assert (c.lengths == 3).all()  # without `until`, every continuation has K events
    assert set(fc.invalid) == set(INVALID_DRAWS) and (fc.truncated == 0).all()
    assert all(v.shape == (2,) and (v >= 0).all() for v in fc.invalid.values())
    # the untrained model draws non-byte tokens: counted, and the gap redrawn from bytes
    assert fc.invalid["not_a_byte_token"].sum() > 0
    assert np.isfinite(c.times).all()


def test_same_seed_same_forecast_other_seed_other_forecast(predictor):
    p, seqs = predictor
    hist = histories(seqs)
    a = p.forecast(hist, steps=2, samples=2, seed=3).continuations
    b = p.forecast(hist, steps=2, samples=2, seed=3).continuations
    c = p.forecast(hist, steps=2, samples=2, seed=4).continuations
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.types, b.types)
    assert not np.array_equal(a.times, c.times)
    # per-history seeds: a history's continuations do not depend on its batch companions
    alone = p.forecast(hist[1:], steps=2, samples=2, seed=[3]).continuations
    np.testing.assert_array_equal(alone.times[0], a.times[1])
    # nor on the rows per model call
    split = p.forecast(hist, steps=2, samples=2, seed=3, max_rows=1).continuations
    np.testing.assert_array_equal(split.types, a.types)


def test_cache_reuse_gives_the_same_continuations_as_re_encoding(predictor):
    p, seqs = predictor
    hist = histories(seqs)
    reused = p.forecast(hist, steps=4, samples=2, seed=11)
    encoded = p.forecast(hist, steps=4, samples=2, seed=11, reuse_cache=False)
    np.testing.assert_array_equal(reused.continuations.types, encoded.continuations.types)
    np.testing.assert_array_equal(reused.continuations.times, encoded.continuations.times)
    assert reused.stats["reused_tokens"] > 0 and "reused_tokens" not in encoded.stats
    assert reused.stats["encoded_tokens"] < encoded.stats["encoded_tokens"]


def test_until_bounds_the_continuations(predictor):
    p, seqs = predictor
    hist = histories(seqs)
    first = p.forecast(hist, steps=3, samples=2, seed=2).continuations
    # an end between a continuation's first and last events: the later ones are cut
    until = np.nanmedian(first.times[:, :, 1], axis=1)
    fc = p.forecast(hist, steps=3, until=until, samples=2, seed=2)
    c = fc.continuations
    assert np.all(np.isnan(c.times) | (c.times <= until[:, None, None]))
    kept = ~np.isnan(c.times)
    np.testing.assert_array_equal(c.times[kept], first.times[kept])  # the same draws, cut
    assert (c.lengths <= 3).all() and c.lengths.sum() < first.lengths.sum()
    # `until` alone: at most max_steps events, continuations that reach it counted
    open_ended = p.forecast(hist, until=np.inf, samples=1, seed=2, max_steps=2)
    assert open_ended.continuations.steps == 2 and (open_ended.truncated == 1).all()


def test_text_is_generated_when_asked(predictor):
    p, seqs = predictor
    fc = p.forecast(
        seqs[:1], steps=2, samples=2, tasks=("time", "type", "text"), seed=1, max_text_tokens=3
    )
    assert fc.texts is not None and [len(t) for t in fc.texts[0]] == [2, 2]
    assert all(t is None or isinstance(t, str) for s in fc.texts[0] for t in s)
    assert fc.invalid["text_unterminated"].sum() >= 0
    assert p.forecast(seqs[:1], steps=1, samples=1).texts is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({}, "give steps, until"),
        ({"steps": 2, "until": -1.0}, "before its last event"),
        ({"steps": 2, "tasks": ("time",)}, "must include time and type"),
        ({"steps": 2, "tasks": ("time", "type", "colour")}, "unknown tasks"),
        ({"steps": 2, "samples": 0}, "samples must be >= 1"),
    ],
)
def test_bad_requests_are_refused_by_name(kwargs, message):
    seq = EventSequence("s", [0.0, 1.0], [0, 1])
    args = {"steps": None, "until": None, "samples": 2, "tasks": ("time", "type"), **kwargs}
    with pytest.raises(ValueError, match=message):
        check_request([seq], num_types=4, **args)
    with pytest.raises(ValueError, match="is empty"):
        check_request([EventSequence("e", [], [])], 1, None, 1, ("time", "type"), 4)
    with pytest.raises(ValueError, match="types outside"):
        check_request([EventSequence("t", [0.0], [7])], 1, None, 1, ("time", "type"), 4)


@given(
    st.lists(st.floats(-30, 5, allow_subnormal=False), min_size=3, max_size=6),
    st.lists(st.booleans(), min_size=3, max_size=6),
    st.floats(1e-6, 1.0, allow_subnormal=False),
    st.floats(1e-6, 1.0, allow_subnormal=False),
)
def test_a_draw_is_always_a_valid_token(logits, allowed, u1, u2):
    n = min(len(logits), len(allowed))
    logits = np.asarray(logits[:n])
    allowed = np.asarray(allowed[:n])
    allowed[np.argmin(logits)] = True  # at least one valid token, maybe the least likely
    logp = logits - np.log(np.exp(logits).sum() + 0.5)  # a third of the mass elsewhere
    choice, refused = _draw(logp[None], allowed[None], np.array([[u1, u2]]))
    assert allowed[choice[0]]
    assert refused[0] == -2 or (refused[0] == -1) or not allowed[refused[0]]


def test_draws_follow_the_distribution_conditioned_on_a_valid_token():
    """Draw, then redraw the refused: the model's distribution renormalised over the valid
    tokens; the refused share is the invalid mass."""
    p = np.array([0.1, 0.2, 0.3, 0.15])  # 0.25 on other tokens
    allowed = np.array([True, False, True, True])
    n = 200_000
    u = 1.0 - np.random.default_rng(0).random((n, 2))
    choice, refused = _draw(np.log(np.tile(p, (n, 1))), np.tile(allowed, (n, 1)), u)
    freq = np.bincount(choice, minlength=4) / n
    want = np.where(allowed, p, 0) / p[allowed].sum()
    np.testing.assert_allclose(freq, want, atol=0.005)
    assert (refused != -2).mean() == pytest.approx(0.45, abs=0.005)  # 0.2 + 0.25
    assert (refused == -1).mean() == pytest.approx(0.25, abs=0.005)


def test_prompt_cache_reuse_matches_a_fresh_encoding(predictor):
    """Rows moved to new prefixes (an event appended: the previous last event may be
    compressed now; a slid window: encoded afresh) give the logits of a fresh encoding."""
    p, seqs = predictor
    rule, room = p.prompt_rule(True), p.budget - 8
    olds, news = [], []
    for seq in (seqs[0].slice(0, 8), seqs[1], seqs[2].slice(0, 12)):
        longer = EventSequence(
            seq.seq_id,
            np.append(seq.time, seq.time[-1] + [0.1, 0.15]),
            np.append(seq.type, [1, 2]),
            [*seq.text, None, None],
            [*seq.image, None, None],
        )
        for target, out in ((len(seq), olds), (len(longer), news)):
            (et,) = p.renderer.event_tokens([longer], p.count_image_tokens)
            prompt = p.prompt_for(longer, et, target, "type", rule, room)
            out.append((prompt.input_ids[:-1], prompt.images))
    column = torch.tensor([[p.ids.task_ids["type"], p.ids.type_start]] * len(news))
    reused = PromptCache(p)
    reused.set(olds)
    reused.feed(column)  # pending tokens are dropped by the next set
    reused.set(news)
    fresh = PromptCache(p, reuse=False)
    fresh.set(news)
    assert reused.stats["kept_rows"] >= 2 and reused.stats["reused_tokens"] > 0
    close = {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(reused.feed(column), fresh.feed(column), **close)
    # rows can be dropped and repeated between calls
    reused.rewind()
    reused.select([2, 0, 0])
    fresh.rewind()
    fresh.select([2, 0, 0])
    torch.testing.assert_close(reused.feed(column[:3]), fresh.feed(column[:3]), **close)


def test_forecast_prompts_are_the_prompts_of_the_extended_sequence(predictor, monkeypatch):
    """Each step's prompt is ``prompt_for`` on the history extended by the drawn events."""
    p, seqs = predictor
    hist = seqs[0].slice(0, 10)
    fc = p.forecast([hist], steps=3, samples=1, seed=9)
    seen = []
    original = PromptCache.set
    monkeypatch.setattr(
        PromptCache, "set", lambda self, prefixes: seen.append(prefixes) or original(self, prefixes)
    )
    p.forecast([hist], steps=3, samples=1, seed=9)
    c = fc.continuations
    ets_options = DecodeOptions()
    for k, prefixes in enumerate(seen):
        times = np.append(hist.time, c.times[0, 0, :k])
        types = np.append(hist.type, c.types[0, 0, :k])
        extended = EventSequence(
            hist.seq_id, times, types, [*hist.text, *[None] * k], [*hist.image, *[None] * k]
        )
        (want,) = p.prompts([extended], "time", ets_options)
        assert list(prefixes[0][0]) == want.input_ids[:-1]
        assert list(prefixes[0][1]) == want.images
