import json
import shutil

import numpy as np
import pytest
import torch

from mmtpp.compression import similar_mask
from mmtpp.decoding import DecodeOptions
from mmtpp.model import (
    collate,
)
from mmtpp.predict import Predictor
from mmtpp.templates import SHORT_RESPONSE_ROOM
from mmtpp.timecodec import encode
from mmtpp.tokens import load_tokenizer


@pytest.fixture(scope="module")
def predictor(trained):
    model_dir, image_root, seqs = trained
    return Predictor(model_dir, image_root=image_root), seqs


def test_untrained_model_predictions_are_parsed_or_counted_invalid(predictor):
    p, seqs = predictor
    preds = p.predict(seqs, options=DecodeOptions(max_text_tokens=8))
    assert len(preds) == len(seqs)
    for pred in preds:
        for task in ("time", "type", "text"):
            value = getattr(pred, task)
            # an untrained model mostly produces garbage: never dropped, always a reason
            assert (value is None) == (task in pred.invalid)
        assert 0 < pred.history_events <= 40 and pred.prompt_tokens <= 512


def test_predict_equals_generation_from_the_same_prompts(predictor):
    p, seqs = predictor
    options = DecodeOptions(max_text_tokens=4)
    direct = p.predict(seqs[:2], tasks=["type"], options=options)
    prompts = p.prompts(seqs[:2], "type", options)
    again = p.predict_prompts(prompts, ["type"], options)
    assert [(a.type, a.invalid) for a in direct] == [(b.type, b.invalid) for b in again]


def test_bfloat16_inference_follows_the_float32_model(trained, predictor):
    p32, seqs = predictor
    model_dir, image_root, _ = trained
    p16 = Predictor(model_dir, image_root=image_root, dtype="bfloat16")
    assert (p32.dtype, p16.dtype) == ("float32", "bfloat16")
    assert {t.dtype for t in p16.model.parameters()} == {torch.bfloat16}
    # images included: the pixel values reach the vision tower in its dtype
    prompts = p32.prompts(seqs[:3], "type", DecodeOptions())
    assert any(prompt.images for prompt in prompts)
    responses = [[p32.ids.type_start, int(p32.ids.type_ids[k])] for k in range(3)]
    lp32 = p32.response_log_probs(prompts, responses)
    lp16 = p16.response_log_probs(prompts, responses)
    for a, b in zip(lp32, lp16, strict=True):
        np.testing.assert_allclose(b, a, atol=0.1)  # bf16 keeps ~3 significant digits
    preds = p16.predict(seqs[:3], ["time", "type"], DecodeOptions(time_mode="expected"))
    assert all((x.type is None) == ("type" in x.invalid) for x in preds)
    with pytest.raises(ValueError, match="dtype must be one of"):
        Predictor(model_dir, dtype="float16")


def test_prompts_follow_the_training_scan_direction(trained, predictor, tmp_path):
    backward, seqs = predictor
    model_dir, image_root, _ = trained
    shutil.copytree(model_dir, tmp_path / "model")
    meta_file = tmp_path / "model" / "mmtpp_model.json"
    card = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**card, "stage2_direction": "forward"}))
    forward = Predictor(tmp_path / "model", image_root=image_root)
    assert (backward.direction, forward.direction) == ("backward", "forward")
    for p in (backward, forward):
        for seq, prompt in zip(seqs, p.prompts(seqs, "type", DecodeOptions()), strict=True):
            start = len(seq) - prompt.history_events
            mask = similar_mask(seq.gaps, p.rule.delta, p.direction)[start:]
            mask[[0, -1]] = False
            assert prompt.compressed_events == mask.sum()


def test_time_sampling_and_uncompressed_history(predictor):
    p, seqs = predictor
    mean = p.predict(seqs[:2], ["time"], DecodeOptions(time_mode="sample_mean", samples=3))
    assert all((x.time is None) == ("time" in x.invalid) for x in mean)
    full = p.prompts(seqs[:1], "time", DecodeOptions(compress=False))[0]
    comp = p.prompts(seqs[:1], "time", DecodeOptions())[0]
    assert full.compressed_events == 0 < comp.compressed_events
    assert comp.history_events > full.history_events  # more history in the same budget


def test_response_log_probs_are_the_full_forward_pass_at_the_response(predictor):
    p, seqs = predictor
    prompts = p.prompts(seqs[:3], "time", DecodeOptions())
    responses = [
        [p.ids.time_start, *p.ids.byte_ids[[1, 2, 3, 4]].tolist()],
        [p.ids.eos],
        [p.ids.type_start, int(p.ids.type_ids[0]), p.ids.type_end],
    ]
    got = p.response_log_probs(prompts, responses)
    for prompt, response, lp in zip(prompts, responses, got, strict=True):
        row = {"input_ids": [*prompt.input_ids, *response], "images": prompt.images}
        batch = collate([row], p.processor, p.ids.eos, p.ids.image_pad, p.spec)
        batch.pop("labels")
        with torch.no_grad():
            logits = p.model(**batch).logits[0]  # one row: no padding, every position
        full = torch.log_softmax(logits.float(), -1)
        n = len(prompt.input_ids)
        want = [full[n - 1 + j, t].item() for j, t in enumerate(response)]
        assert lp.shape == (len(response),)
        np.testing.assert_allclose(lp, want, atol=1e-4)


def test_prompt_for_bounds_the_history(predictor):
    p, seqs = predictor
    seq = seqs[0]
    et = p.renderer.event_tokens([seq], p.count_image_tokens)[0]
    short = p.prompt_for(seq, et, len(seq) - 1, "type", p.prompt_rule(False), 500, max_events=3)
    assert short.history_events == 3 and short.compressed_events == 0
    assert p.prompt_for(seq, et, len(seq) - 1, "type", p.prompt_rule(False), 500).history_events > 3


def test_tasks_sharing_a_history_encode_it_once_with_the_same_predictions(predictor, monkeypatch):
    p, seqs = predictor
    options = DecodeOptions(time_mode="greedy", max_text_tokens=6)
    time_prompts, type_prompts = (p.prompts(seqs, t, options) for t in ("time", "type"))
    assert [a.input_ids[:-1] for a in time_prompts] == [b.input_ids[:-1] for b in type_prompts]
    assert any(a.images for a in time_prompts)  # the shared encoding carries images
    alone = {t: p.predict(seqs, [t], options) for t in ("time", "type", "text")}
    calls = []
    shared = p.generate_shared
    monkeypatch.setattr(
        p, "generate_shared", lambda by_task, o: calls.append(list(by_task)) or shared(by_task, o)
    )
    together = p.predict(seqs, ["time", "type", "text"], options)
    assert calls and set(calls[0]) >= {"time", "type"}
    for task, preds in alone.items():
        assert [getattr(x, task) for x in together] == [getattr(x, task) for x in preds]
        assert [x.invalid.get(task) for x in together] == [x.invalid.get(task) for x in preds]


def test_byte_distributions_are_the_teacher_forced_probabilities(predictor):
    p, seqs = predictor
    prompts = p.prompts(seqs[:3], "time", DecodeOptions())
    first, p_first, p_second = p.byte_distributions(prompts, top=4)
    assert first.shape == (3, 4) and p_second.shape == (3, 4, 256)
    assert (np.diff(p_first, axis=1) <= 0).all()  # the most probable first bytes, in order
    for row, prompt in enumerate(prompts):
        for j in (0, 3):
            b1 = int(first[row, j])
            for b2 in (0, 77, 255):
                response = [p.ids.time_start, int(p.ids.byte_ids[b1]), int(p.ids.byte_ids[b2])]
                lp = p.response_log_probs([prompt], [response])[0]
                assert np.exp(lp[1]) == pytest.approx(p_first[row, j], rel=1e-3, abs=1e-7)
                assert np.exp(lp[2]) == pytest.approx(p_second[row, j, b2], rel=1e-3, abs=1e-7)


def test_expected_time_weighs_values_by_byte_probabilities(predictor, monkeypatch):
    p, _ = predictor
    first = np.array([[63, 64, 0xBF], [0x7F, 63, 64]])  # 1.x, 2.x, negative | inf/nan, ...
    p_first = np.array([[0.5, 0.3, 0.1], [0.6, 0.0, 0.0]])  # the rest: non-byte tokens
    p_second = np.zeros((2, 3, 256))
    p_second[0, 0, 0x80] = p_second[0, 1, 0x00] = p_second[0, 2, 0x80] = 1.0
    p_second[1, 0, 0x80] = 1.0  # 0x7F80.... is +inf or NaN: no weight
    monkeypatch.setattr(p, "byte_distributions", lambda prompts: (first, p_first, p_second))
    got = p.expected_times([None, None])
    # 1.0 and 2.0, 5:3 (the unknown last two bytes at mid-range: × (1 + 2^-8)); the negative
    # gap is left out
    assert got[0].value == pytest.approx((0.5 * 1.0 + 0.3 * 2.0) / 0.8 * (1 + 2**-8), rel=1e-6)
    assert not got[1].valid and got[1].reason == "not_a_byte_token"


def test_expected_time_ignores_a_far_exponent(predictor, monkeypatch):
    p, _ = predictor
    # 0x42 (32..128), 0x41, 0x43 form one run; 0x66 (~1e23) is a stray far exponent whose
    # 1% would otherwise make the mean ~1e21
    first = np.array([[0x42, 0x41, 0x66, 0x43]])
    p_first = np.array([[0.5, 0.3, 0.01, 0.19]])
    p_second = np.zeros((1, 4, 256))
    p_second[0, :, 0x00] = 1.0
    monkeypatch.setattr(p, "byte_distributions", lambda prompts: (first, p_first, p_second))
    (got,) = p.expected_times([None])
    values = [32.0, 8.0, 128.0]  # 0x42000000, 0x41000000, 0x43000000
    mean = (0.5 * values[0] + 0.3 * values[1] + 0.19 * values[2]) / 0.99 * (1 + 2**-8)
    assert got.value == pytest.approx(mean, rel=1e-6)


def worked_example():
    """docs/forecasts.md's example: first byte 0x3F (0.5: [1, 2) then second byte 0x80 with
    0.9, 0x81 with 0.1), 0x40 (0.3: [2, 2.015625)), a negative 0xBF (0.1), 0.1 elsewhere."""
    first = np.array([[0x3F, 0x40, 0xBF]])
    p_first = np.array([[0.5, 0.3, 0.1]])
    p_second = np.zeros((1, 3, 256))
    p_second[0, 0, 0x80], p_second[0, 0, 0x81] = 0.9, 0.1
    p_second[0, 1, 0x00] = p_second[0, 2, 0x00] = 1.0
    return first, p_first, p_second


def test_gap_quantiles_of_a_known_byte_distribution_are_exact(predictor, monkeypatch):
    p, seqs = predictor
    monkeypatch.setattr(p, "byte_distributions", lambda prompts: worked_example())
    # cells [1, 1.0078125) 0.5625, [1.0078125, 1.015625) 0.0625, [2, 2.015625) 0.375 after
    # renormalising; quantiles interpolate linearly inside a cell
    want = [
        1 + 0.05 / 0.5625 * 2**-7,
        1 + 0.25 / 0.5625 * 2**-7,
        1 + 0.5 / 0.5625 * 2**-7,
        2 + (0.75 - 0.625) / 0.375 * 2**-6,
        2 + (0.95 - 0.625) / 0.375 * 2**-6,
    ]
    np.testing.assert_allclose(p.gap_quantiles(seqs[:1])[0], want, rtol=1e-12)
    intervals = p.gap_intervals(seqs[:1], (0.5, 0.9))
    np.testing.assert_allclose([intervals[0.5][0][0], intervals[0.5][1][0]], want[1::2])
    np.testing.assert_allclose([intervals[0.9][0][0], intervals[0.9][1][0]], want[0::4])
    (median,) = p.predict(seqs[:1], ["time"], DecodeOptions(time_mode="median"))
    assert median.time == pytest.approx(want[2], rel=1e-12)  # deterministic: no sampling
    with pytest.raises(ValueError, match="coverage"):
        p.gap_intervals(seqs[:1], (1.0,))


def _by_forward_passes(p, prompts, per: int):
    """``next_byte_probs`` by definition: for row r, a full forward pass of prompt r // per,
    ``<|time_start|>`` and the row's bytes so far."""

    def next_byte_probs(prefixes):
        out = []
        for row, prefix in enumerate(prefixes):
            prompt = prompts[row // per]
            ids = [*prompt.input_ids, p.ids.time_start, *p.ids.byte_ids[prefix].tolist()]
            batch = collate(
                [{"input_ids": ids, "images": prompt.images}],
                p.processor,
                p.ids.eos,
                p.ids.image_pad,
                p.spec,
            )
            batch.pop("labels")
            with torch.no_grad():
                logits = p.model(**batch).logits[0, -1].float()
            out.append(torch.softmax(logits, -1)[p.ids.byte_ids].double().numpy())
        return np.stack(out)

    return next_byte_probs


def test_exact_quantiles_descend_the_byte_tree_with_the_cache(predictor):
    """The cached descent equals a descent whose every step is a full forward pass of the
    prompt, ``<|time_start|>`` and the bytes chosen so far (the definition)."""
    from mmtpp.quantile_descent import descend_quantiles

    p, seqs = predictor
    prompts = p.prompts(seqs[:2], "time", DecodeOptions())
    levels = [0.1, 0.5, 0.9]
    want = descend_quantiles(_by_forward_passes(p, prompts, len(levels)), levels, len(prompts))
    got = p.exact_quantiles(prompts, levels, max_rows=4)  # 1 prompt x 3 levels per call
    # the same path down the tree: a float rounding of the probabilities (~1e-6) can move
    # the last byte of a level that falls near a byte's edge, no more
    np.testing.assert_array_equal(encode(got.quantiles)[..., :2], encode(want.quantiles)[..., :2])
    np.testing.assert_allclose(got.quantiles, want.quantiles, rtol=1e-4)
    np.testing.assert_allclose(got.excluded, want.excluded, atol=1e-5)
    q = got.quantiles
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    exact = p.gap_quantiles(seqs[:2], levels, exact=True)
    cells = p.gap_quantiles(seqs[:2], levels)
    assert exact.shape == cells.shape == (2, 3) and (np.diff(exact, axis=1) >= 0).all()


def test_target_prompts_match_preparation_and_drop_compression(predictor):
    """The prompts offline prediction builds for a target (``prompt_for`` at the card's rule)
    are the prepared test prompts for time and type; at Δ = 0 (``compress=False``) the same
    targets have uncompressed histories within the budget."""
    p, seqs = predictor
    ets = p.renderer.event_tokens(seqs, p.count_image_tokens)
    compressed = 0
    for seq, et in zip(seqs, ets, strict=True):  # as prepare builds the test rows
        for target in (len(seq) // 2, len(seq) - 1):
            examples = p.renderer.examples(
                et, target, ["time", "type"], p.rule, p.budget, p.direction
            )
            for task, ex in examples.items():
                room = p.budget - SHORT_RESPONSE_ROOM
                prompt = p.prompt_for(seq, et, target, task, p.rule, room)
                assert prompt.input_ids == ex.input_ids[: ex.prompt_length].tolist()
                assert prompt.compressed_events == ex.compressed_events
                compressed += ex.compressed_events
                plain = p.prompt_for(seq, et, target, task, p.prompt_rule(False), room)
                assert plain.compressed_events == 0 and len(plain.input_ids) <= room
                assert plain.input_ids[-1] == prompt.input_ids[-1]
    assert compressed > 0  # the ablation changes prompts


def test_invalid_time_samples_are_counted_not_dropped_silently(predictor, monkeypatch):
    from mmtpp.parsing import Parsed

    p, seqs = predictor
    drawn = [
        [Parsed("time", None, "not_finite")] * 3 + [Parsed("time", 2.0), Parsed("time", 4.0)],
        [Parsed("time", None, "negative")] * 5,
    ]
    monkeypatch.setattr(p, "generate", lambda prompts, task, options: drawn[: len(prompts)])
    prompts = p.prompts(seqs[:2], "time", DecodeOptions())
    options = DecodeOptions(time_mode="sample_mean", samples=5)
    mean, none = p.predict_prompts(prompts, ["time"], options)
    assert (mean.time, mean.invalid, mean.invalid_samples) == (3.0, {}, {"time": {"not_finite": 3}})
    assert none.time is None and none.invalid == {"time": "negative"}
    assert none.invalid_samples == {"time": {"negative": 5}}


QWEN_INSTRUCT_GENERATION = {  # as Qwen2.5-VL-Instruct checkpoints ship it (ids re-mapped)
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_k": 1,
    "top_p": 0.001,
    "no_repeat_ngram_size": 2,
}


def test_a_checkpoint_generation_config_does_not_leak_into_decoding(trained, tmp_path):
    """Greedy decoding is the argmax at every step, with no repetition penalty, whatever
    generation settings the base checkpoint ships."""
    model_dir, image_root, seqs = trained
    meta = json.loads((model_dir / "mmtpp_model.json").read_text())
    base = tmp_path / "instruct_base"
    shutil.copytree(meta["base_path"], base)
    tok = load_tokenizer(model_dir)
    settings = {
        **QWEN_INSTRUCT_GENERATION,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.eos_token_id,
        "bos_token_id": tok.eos_token_id,
    }
    (base / "generation_config.json").write_text(json.dumps(settings))
    instruct = tmp_path / "model"
    shutil.copytree(model_dir, instruct)
    (instruct / "mmtpp_model.json").write_text(json.dumps({**meta, "base_path": str(base)}))
    p = Predictor(instruct, image_root=image_root)
    g = p.model.generation_config
    assert g.repetition_penalty in (None, 1.0) and not g.no_repeat_ngram_size and not g.do_sample
    options = DecodeOptions(max_text_tokens=12)
    prompts = p.prompts(seqs[:2], "text", options)
    generated = p._generate(p._batch(prompts), "text", options)
    for prompt, out in zip(prompts, generated, strict=True):
        ids = list(prompt.input_ids)
        for token in out:  # every generated token is the argmax after the ones before it
            if token == p.ids.eos:
                break
            rows = collate(
                [{"input_ids": ids, "images": prompt.images}],
                p.processor,
                p.ids.eos,
                p.ids.image_pad,
                p.spec,
            )
            rows.pop("labels")
            with torch.no_grad():
                logits = p.model(**rows).logits[0, -1]
            assert token == int(logits.argmax()), (token, int(logits.argmax()))
            ids.append(token)


def test_prompts_follow_the_cards_calibrated_rule(trained, predictor, tmp_path):
    """An adapter prepared with compression=auto records its calibrated relative Δ in its
    card; the Predictor (and so Serve, which builds one per replica) compresses with it."""
    from mmtpp.compression import CompressionRule, mask

    configured, seqs = predictor
    model_dir, image_root, _ = trained
    shutil.copytree(model_dir, tmp_path / "model")
    meta_file = tmp_path / "model" / "mmtpp_model.json"
    card = json.loads(meta_file.read_text())
    calibrated = {"mode": "relative", "delta": 0.7, "keep_type": False, "calibrated_to": "gain=2"}
    meta_file.write_text(json.dumps({**card, "compression": calibrated}))
    auto = Predictor(tmp_path / "model", image_root=image_root)
    assert auto.rule == CompressionRule("relative", 0.7)
    differ = 0
    for seq, ours, theirs in zip(
        seqs,
        auto.prompts(seqs, "type", DecodeOptions()),
        configured.prompts(seqs, "type", DecodeOptions()),
        strict=True,
    ):
        start = len(seq) - ours.history_events
        expected = mask(auto.rule, seq.gaps, seq.type, auto.direction)[start:]
        expected[[0, -1]] = False
        assert ours.compressed_events == expected.sum()
        differ += ours.input_ids != theirs.input_ids
    assert differ == len(seqs)  # another Δ, another prompt: the card's rule is what counts


def test_interval_probability_reads_the_byte_tree_with_the_cache(predictor):
    """The cached interval mass equals the one read by full forward passes; a one-value
    interval is that value's teacher-forced probability (what the time NLL charges); the whole
    line holds the valid first bytes' mass; adjacent intervals add up; a tie's bin is [0, r/2)."""
    from mmtpp.quantile_descent import interval_mass

    p, seqs = predictor
    prompts = p.prompts(seqs[:2], "time", DecodeOptions())
    lo, hi = np.array([0.5, 0.0]), np.array([2.0, 1e-3])
    forward = _by_forward_passes(p, prompts, 2)
    want = interval_mass(forward, lo, hi)
    got = p.interval_probability(prompts, lo, hi, max_rows=2)  # one prompt per call
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
    value = np.array([1.25, 0.0625], dtype=np.float32)
    above = np.nextafter(value, np.float32(np.inf))
    one = p.interval_probability(prompts, value, above)
    responses = [[p.ids.time_start, *p.ids.byte_ids[row].tolist()] for row in encode(value)]
    teacher = np.exp([lp[1:5].sum() for lp in p.response_log_probs(prompts, responses)])
    np.testing.assert_allclose(one, teacher, rtol=1e-4)
    # [0, 3.4e38): every first byte below 127 whole, and part of 127 (whose subtree also
    # holds larger values and inf/NaN); mass on other tokens is in no bin
    whole = p.interval_probability(prompts, [0.0, 0.0], [3.4e38, 3.4e38])
    first = forward(np.zeros((4, 0), dtype=np.uint8))[0::2]
    assert (first[:, :127].sum(axis=1) <= whole + 1e-6).all()
    assert (whole <= first[:, :128].sum(axis=1) + 1e-6).all() and (whole < 1).all()
    a, b, c = np.full(2, 0.3), np.full(2, 0.7), np.full(2, 1.9)
    parts = p.interval_probability(prompts, a, b) + p.interval_probability(prompts, b, c)
    # up to what the split at b charges: mass on invalid tokens below b's own path
    np.testing.assert_allclose(p.interval_probability(prompts, a, c), parts, rtol=2e-3)
    tie = p.binned_time_nll(prompts, [0.0, 0.0], 0.5)
    np.testing.assert_allclose(tie, -np.log(p.interval_probability(prompts, [0, 0], [0.25, 0.25])))
