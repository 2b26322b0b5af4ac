"""Offline prediction: the same predictions as the in-process Predictor, errors reported per
target, and reruns byte-identical (the Ray Data job)."""

import json

import numpy as np
import pytest

from mmtpp.decoding import DecodeOptions
from mmtpp.events import EventSequence
from mmtpp.scoring import QUANTILE_LEVELS, PredictionRequest, score_sequences


@pytest.fixture(scope="module")
def predictor(trained):
    from mmtpp.predict import Predictor

    model_dir, image_root, seqs = trained
    return Predictor(model_dir, image_root=image_root), seqs


def test_scores_equal_the_in_process_predictor_on_the_same_targets(predictor, trained):
    p, seqs = predictor
    options = DecodeOptions(time_mode="greedy", max_text_tokens=4)
    request = PredictionRequest(str(trained[0]), options, history_lengths=(2, 64))
    targets = [[10, 15, len(seqs[0])], [12]]
    table = score_sequences(p, seqs[:2], targets, request).to_pylist()
    assert [(r["seq_id"], r["target"]) for r in table] == [
        (seqs[0].seq_id, 10),
        (seqs[0].seq_id, 15),
        (seqs[0].seq_id, len(seqs[0])),
        (seqs[1].seq_id, 12),
    ]
    histories = [seqs[0].slice(0, 10), seqs[0].slice(0, 15), seqs[0], seqs[1].slice(0, 12)]
    direct = p.predict(histories, ["time", "type", "text"], options)
    for row, want in zip(table, direct, strict=True):
        assert row["error"] is None
        assert (row["pred_gap"], row["pred_type"], row["pred_text"]) == (
            want.time,
            want.type,
            want.text,
        )
        assert row["time_invalid"] == want.invalid.get("time")
        assert row["history_events"] == want.history_events
        assert len(row["gap_quantiles"]) == len(QUANTILE_LEVELS)
        assert len(row["type_probs"]) == p.num_types
    known, after_end = table[0], table[2]
    assert known["true_type"] == seqs[0].type[10] and np.isfinite(known["type_nll"])
    assert known["type_nll"] == pytest.approx(-np.log(known["type_probs"][known["true_type"]]))
    assert after_end["true_gap"] is None and after_end["time_nll"] is None  # nothing to score
    assert len(known["curve_time_nll"]) == 4 and known["curve_events"][0] == 2
    assert known["time_nll_binned"] is None  # continuous times: no bins


def test_data_recorded_to_a_resolution_get_the_bin_nll(predictor, trained):
    p, seqs = predictor
    request = PredictionRequest(
        str(trained[0]), DecodeOptions(), ("time", "type"), time_resolution=0.5
    )
    rows = score_sequences(p, seqs[:1], [[10, 12, len(seqs[0])]], request).to_pylist()
    want = p.binned_time_nll(
        p.prompts([seqs[0].slice(0, 10), seqs[0].slice(0, 12)], "time", DecodeOptions()),
        [seqs[0].gaps[10], seqs[0].gaps[12]],
        0.5,
    )
    np.testing.assert_allclose([r["time_nll_binned"] for r in rows[:2]], want, rtol=1e-6)
    assert rows[2]["time_nll_binned"] is None  # after the end: no truth


def test_forecasts_of_chosen_targets_and_nulls_elsewhere(predictor, trained):
    from mmtpp.scoring import forecast_seed

    p, seqs = predictor
    request = PredictionRequest(
        str(trained[0]),
        DecodeOptions(max_text_tokens=2),
        tasks=("time", "type"),
        forecast_steps=3,
        forecast_samples=2,
        forecast_targets=frozenset({(seqs[0].seq_id, 10)}),
        batch_size=4,
    )
    table = score_sequences(p, seqs[:1], [[10, 12]], request).to_pylist()
    chosen, other = table
    assert other["forecast_times"] is None and other["forecast_invalid"] is None
    assert [len(x) for x in chosen["forecast_times"]] == [3, 3]
    want = p.forecast(
        [seqs[0].slice(0, 10)], steps=3, samples=2, seed=forecast_seed(0, seqs[0].seq_id, 10)
    )
    np.testing.assert_array_equal(chosen["forecast_times"], want.continuations.times[0])
    np.testing.assert_array_equal(chosen["forecast_types"], want.continuations.types[0])
    assert json.loads(chosen["forecast_invalid"]) == want.invalid_of(0)
    # the median of the model's distribution as the point prediction
    median = PredictionRequest(str(trained[0]), DecodeOptions(time_mode="median"), ("time",))
    (row,) = score_sequences(p, seqs[:1], [[10]], median).to_pylist()
    assert row["pred_gap"] == row["gap_quantiles"][2]  # the 0.5 level


def test_a_target_that_does_not_fit_gets_an_error_row(predictor, trained):
    p, seqs = predictor
    huge = seqs[0].slice(0, 12)
    huge.text = [*huge.text[:-1], " ".join(["storm"] * 3000)]  # the last event alone: too long
    request = PredictionRequest(str(trained[0]), DecodeOptions(max_text_tokens=2))
    table = score_sequences(p, [huge, seqs[1]], [[12], [8]], request).to_pylist()
    assert "do not fit" in table[0]["error"] or "takes" in table[0]["error"]
    assert table[0]["pred_gap"] is None and table[1]["error"] is None


@pytest.mark.ray
def test_the_ray_job_is_deterministic_reusable_and_reports_bad_sequences(
    ray_local, trained, tmp_path
):
    from mmtpp.events import read_info, write_dataset
    from mmtpp.offline import predict_dataset, read_predictions
    from mmtpp.validation import read_sequences

    model_dir, image_root, _ = trained
    seqs = read_sequences(image_root)
    bad = EventSequence("bad", [0.0, 2.0, 1.0], [0, 1, 1])  # unsorted: fails validation
    write_dataset(tmp_path / "ds", read_info(image_root), [*seqs, bad], rows_per_file=2)
    request = PredictionRequest(str(model_dir), DecodeOptions(max_text_tokens=2), batch_size=4)
    targets = {seqs[0].seq_id: [8, 9], seqs[3].seq_id: [10], "bad": [2]}
    first = predict_dataset(request, tmp_path / "ds", tmp_path / "a", targets, actors=2)
    rows = read_predictions(first.output_dir).to_pylist()
    assert sorted((r["seq_id"], r["target"]) for r in rows) == sorted(
        (s, t) for s, ts in targets.items() for t in ts
    )  # every target once: scored or an error row, never dropped
    (bad_row,) = [r for r in rows if r["seq_id"] == "bad"]
    assert bad_row["error"].startswith("invalid: time")
    assert first.manifest["errors"] == {"invalid": 1} and first.manifest["targets"] == 4
    assert predict_dataset(request, tmp_path / "ds", tmp_path / "a", targets).reused
    second = predict_dataset(request, tmp_path / "ds", tmp_path / "b", targets, actors=1)
    parts = sorted(f.name for f in first.output_dir.glob("part-*.parquet"))
    assert parts == sorted(f.name for f in second.output_dir.glob("part-*.parquet"))
    for name in parts:
        assert (first.output_dir / name).read_bytes() == (second.output_dir / name).read_bytes()
    # without targets: the event after each sequence's end
    after = predict_dataset(request, tmp_path / "ds", tmp_path / "c")
    ends = {r["seq_id"]: r["target"] for r in read_predictions(after.output_dir).to_pylist()}
    assert ends == {**{s.seq_id: len(s) for s in seqs}, "bad": 3}


def test_units_cut_a_row_group_at_batch_multiples_and_leave_the_scores_unchanged(
    predictor, trained, tmp_path
):
    from mmtpp.events import read_info, write_dataset
    from mmtpp.offline import _units

    p, seqs = predictor
    _, image_root, _ = trained
    three = seqs[:3]
    write_dataset(tmp_path / "ds", read_info(image_root), three, rows_per_file=10)  # 1 group
    ids = [s.seq_id for s in three]
    targets = {ids[0]: [8, 9, 10], ids[1]: [8, 9], ids[2]: [9, 10, 11]}
    units = _units(tmp_path / "ds", targets, 4)
    assert [(u["seq_ids"], u["targets"]) for u in units] == [
        ([ids[0], ids[1]], [[8, 9, 10], [8]]),
        ([ids[1], ids[2]], [[9], [9, 10, 11]]),
    ]  # a sequence may span two units; every target once, in order
    request = PredictionRequest("unused", DecodeOptions(), tasks=("time", "type"), batch_size=2)
    whole = score_sequences(p, three, [targets[i] for i in ids], request).to_pylist()
    by_seq = {s.seq_id: s for s in three}
    cut = [
        row
        for u in units
        for row in score_sequences(
            p, [by_seq[i] for i in u["seq_ids"]], u["targets"], request
        ).to_pylist()
    ]
    assert cut == whole  # the same batches, so the same scores
