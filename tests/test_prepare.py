import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_dataset

from mmtpp.compression import similar_mask
from mmtpp.config import load_config
from mmtpp.events import sequences_to_table, split_of
from mmtpp.parsing import Parser
from mmtpp.problems import ValidationError
from mmtpp.shards import OUTPUT_SCHEMA, PrepareContext, process_table, sample_targets
from mmtpp.tokens import TokenIds, build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    info, seqs = make_dataset(root)
    return root, info, seqs


def context(root, tmp_path, **overrides):
    cfg = load_config(overrides=[f"data.{k}={v}" for k, v in overrides.items()])
    texts = ["storm north taxi delay minutes"] * 20
    build_tokenizer(tmp_path / "tok", texts, 4)
    return PrepareContext(cfg.data, str(tmp_path / "tok"), 4, str(root))


def test_split_is_stable_and_disjoint():
    ids = [f"seq-{i}" for i in range(2000)]
    a = split_of(ids, [0.8, 0.1, 0.1], 0)
    b = split_of(list(reversed(ids)), [0.8, 0.1, 0.1], 0)
    assert a == list(reversed(b))  # per id, not per position
    counts = {s: a.count(s) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 1600) < 100 and counts["val"] > 120 and counts["test"] > 120
    assert split_of(ids[:100], [0.8, 0.1, 0.1], 1) != a[:100]


def test_targets_are_seeded_per_sequence():
    t = sample_targets(100, 10, 8, 0, "x")
    assert t.size == 10 and t.min() >= 8 and np.all(np.diff(t) > 0)
    np.testing.assert_array_equal(t, sample_targets(100, 10, 8, 0, "x"))
    assert sample_targets(5, 10, 8, 0, "x").size == 0
    assert sample_targets(20, 0, 8, 0, "x").tolist() == list(range(8, 20))


def test_process_table_outputs(dataset, tmp_path):
    root, _, seqs = dataset
    ctx = context(root, tmp_path, budget=512, targets_per_sequence=4, eval_targets_per_sequence=4)
    out = process_table(sequences_to_table(seqs), ctx)
    assert out.schema.equals(OUTPUT_SCHEMA)
    rows = out.to_pylist()
    stage1 = [r for r in rows if r["kind"] == "stage1"]
    stage2 = [r for r in rows if r["kind"] == "stage2"]
    assert all(r["num_tokens"] <= 512 and len(r["input_ids"]) == r["num_tokens"] for r in stage1)
    assert all(sum(r["doc_lengths"]) == r["num_tokens"] for r in stage1)
    # every event of every sequence lands in exactly one stage-1 document
    assert sum(r["events"] for r in stage1) == sum(len(s) for s in seqs)
    # images travel with the rows: one encoded image per <|vision_start|>
    tok = load_tokenizer(tmp_path / "tok")
    ids = TokenIds.from_tokenizer(tok, 4)
    for r in stage1 + stage2:
        assert r["input_ids"].count(ids.vision_start) == len(r["images"])
    parser = Parser(tok, ids)
    by_id = {s.seq_id: s for s in seqs}
    for r in stage2:
        seq = by_id[r["seq_id"]]
        assert r["num_tokens"] <= 512
        assert r["input_ids"][r["prompt_length"] - 1] == ids.task_ids[r["task"]]
        # the target is exactly the event after the prompt's history
        assert r["true_gap"] == pytest.approx(seq.time[r["target"]] - seq.time[r["target"] - 1])
        assert r["true_type"] == seq.type[r["target"]]
        parsed = parser.parse(r["task"], r["input_ids"][r["prompt_length"] :])
        want = {"time": np.float32(r["true_gap"]), "type": r["true_type"], "text": r["true_text"]}
        assert parsed.value == want[r["task"]]
        assert r["start"] + r["events"] == r["target"]


def test_stage2_direction_sets_the_prompt_compression(dataset, tmp_path):
    root, _, seqs = dataset
    table = sequences_to_table(seqs)
    prompts = {}
    for direction in ("backward", "forward"):
        ctx = context(root, tmp_path / direction, budget=512, stage2_direction=direction)
        out = process_table(table, ctx).to_pylist()
        prompts[direction] = {
            (r["seq_id"], r["target"], r["task"]): r for r in out if r["kind"] == "stage2"
        }
        for r in prompts[direction].values():
            seq = next(s for s in seqs if s.seq_id == r["seq_id"])
            mask = similar_mask(seq.gaps, ctx.data.delta, direction)[r["start"] : r["target"]]
            mask[[0, -1]] = False  # the window's first and last events are kept
            assert r["compressed_events"] == mask.sum()
    assert prompts["backward"].keys() == prompts["forward"].keys()
    assert any(
        prompts["backward"][k]["input_ids"] != prompts["forward"][k]["input_ids"]
        for k in prompts["forward"]
    )


def test_strict_fails_naming_the_sequence_and_quarantine_keeps_count(dataset, tmp_path):
    root, _, seqs = dataset
    bad = seqs[0].slice(0, 10)
    bad.time = bad.time[::-1].copy()
    table = pa.concat_tables([sequences_to_table([bad]), sequences_to_table(seqs[1:3])])
    with pytest.raises(ValidationError, match="sequence 's000', event 1, field 'time'"):
        process_table(table, context(root, tmp_path))
    out = process_table(table, context(root, tmp_path, validation="quarantine"))
    q = [r for r in out.to_pylist() if r["kind"] == "quarantine"]
    assert [r["seq_id"] for r in q] == ["s000"]
    assert json.loads(q[0]["problems"])["problems"][0]["reason"] == "unsorted"


@pytest.mark.ray
def test_run_prepare_end_to_end(ray_local, dataset, tmp_path):
    from mmtpp.prepare import run_prepare

    root, _, seqs = dataset
    cfg = load_config(overrides=["data.budget=512", "data.targets_per_sequence=3"])
    first = run_prepare(cfg, root, tmp_path / "a")
    m = first.manifest
    assert m.sequences_in == len(seqs) == m.sequences_out + m.sequences_quarantined
    assert sum(m.splits.values()) == len(seqs)
    ids_by_split = {}
    for split in ("train", "val", "test"):
        files = sorted((tmp_path / "a" / "stage2" / split).glob("*.parquet"))
        ids_by_split[split] = {
            s for f in files for s in pq.read_table(f, columns=["seq_id"])["seq_id"].to_pylist()
        }
    assert not ids_by_split["train"] & ids_by_split["test"]
    assert not ids_by_split["train"] & ids_by_split["val"]
    again = run_prepare(cfg, root, tmp_path / "a")
    assert again.reused
    second = run_prepare(cfg, root, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert second.manifest.rows == m.rows


@pytest.mark.ray
def test_auto_compression_calibrates_delta_and_records_it(ray_local, dataset, tmp_path):
    from mmtpp.prepare import run_prepare

    root, _, _ = dataset
    cfg = load_config(
        overrides=[
            "data.budget=512",
            "data.targets_per_sequence=3",
            "data.compression=auto",
            "data.compression_target=fraction=0.5",
        ]
    )
    m = run_prepare(cfg, root, tmp_path / "p").manifest
    assert m.compression.mode == "relative" and m.compression.calibrated_to == "fraction=0.5"
    assert m.compression.delta > 0 and m.compression.delta != cfg.data.delta
    assert m.calibration["rule"]["delta"] == m.compression.delta
    assert abs(m.calibration["achieved"] - 0.5) < 0.1  # half the training events compressed


@pytest.mark.ray
def test_run_prepare_quarantines_and_counts_every_sequence(ray_local, dataset, tmp_path):
    from mmtpp.events import write_dataset
    from mmtpp.prepare import run_prepare

    _, info, seqs = dataset
    bad = seqs[0].slice(0, 10)
    bad.time = bad.time[::-1].copy()
    write_dataset(tmp_path / "ds", info, [*seqs[1:7], bad], rows_per_file=3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "quarantine.json").write_text("[]")  # an earlier run's
    cfg = load_config(overrides=["data.budget=512", "data.validation=quarantine"])
    m = run_prepare(cfg, tmp_path / "ds", tmp_path / "out").manifest
    assert (m.sequences_in, m.sequences_out, m.sequences_quarantined) == (7, 6, 1)
    assert set(m.quarantine_reasons) == {"unsorted"}  # problems per reason
    q = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [x["seq_id"] for x in q] == ["s000"] and q[0]["problems"][0]["reason"] == "unsorted"
    clean = load_config(overrides=["data.budget=512"])
    write_dataset(tmp_path / "clean", info, seqs[1:7], rows_per_file=3)
    assert run_prepare(clean, tmp_path / "clean", tmp_path / "out").manifest.sequences_in == 6
    assert not (tmp_path / "out" / "quarantine.json").exists()


def test_data_workers_import_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = "import sys, mmtpp.prepare; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # they start seconds faster (README, Benchmarks)


def test_generated_datasets_follow_the_source_and_its_settings(tmp_path, monkeypatch):
    """'synthetic' and 'nycflights' are (re)made under the run whenever what the config
    asks differs from what the directory holds; unchanged, they are reused."""
    import mmtpp.sources.flights as flights
    from mmtpp.events import DatasetInfo, read_info
    from mmtpp.sources.resolve import resolve_dataset
    from mmtpp.validation import read_sequences

    _, seqs = make_dataset(tmp_path / "src", num_sequences=5)
    calls = []

    def fake_flights(max_sequences=None):
        calls.append(max_sequences)
        return DatasetInfo("nycflights", ["EWR", "JFK", "LGA"]), iter(seqs[:max_sequences])

    monkeypatch.setattr(flights, "load_nycflights", fake_flights)

    def resolve(*overrides):
        cfg = load_config(overrides=[f"output_dir={tmp_path / 'run'}", *overrides])
        root = resolve_dataset(cfg)
        return read_info(root).name, len(read_sequences(root))

    assert resolve("data.synth_sequences=3") == ("synthetic-city-alerts", 3)
    stamp = (tmp_path / "run" / "data" / "dataset.json").stat().st_mtime_ns
    assert resolve("data.synth_sequences=3")[1] == 3  # reused, not written again
    assert (tmp_path / "run" / "data" / "dataset.json").stat().st_mtime_ns == stamp
    assert resolve("data.source=nycflights", "data.synth_sequences=4") == ("nycflights", 4)
    assert resolve("data.source=nycflights", "data.synth_sequences=4")[1] == 4
    assert resolve("data.source=nycflights", "data.synth_sequences=0") == ("nycflights", 5)
    assert calls == [4, None]
    assert resolve("data.synth_sequences=3") == ("synthetic-city-alerts", 3)
