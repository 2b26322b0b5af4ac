import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmtpp.events import DatasetInfo, EventSequence, write_dataset
from mmtpp.images import ImageSpec
from mmtpp.validation import (
    QUARANTINE_SCHEMA,
    Problem,
    Quarantine,
    ValidationError,
    validate_dataset,
)

INFO = DatasetInfo("t", ["a", "b", "c"])


def png(width=8, height=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def good(seq_id="good") -> EventSequence:
    return EventSequence(seq_id, [0.0, 1.0, 2.5], [0, 1, 2], ["x", None, "y"], [png(), None, None])


def write(tmp_path, *bad: EventSequence):
    write_dataset(tmp_path, INFO, [good(), *bad])
    return tmp_path


def problems_of(root, **kw):
    with pytest.raises(ValidationError) as err:
        validate_dataset(root, **kw)
    return err.value.problems


BAD_SEQUENCES = {
    "not_finite": EventSequence("nan", [0.0, float("nan"), 2.0], [0, 0, 0]),
    "not_finite_inf": EventSequence("inf", [0.0, 1.0, float("inf")], [0, 0, 0]),
    "unsorted": EventSequence("unsorted", [0.0, 2.0, 1.0], [0, 0, 0]),
    "type_out_of_range": EventSequence("types", [0.0, 1.0, 2.0], [0, 3, 0]),
    "type_negative": EventSequence("neg", [0.0, 1.0, 2.0], [0, -1, 0]),
    "undecodable": EventSequence("img", [0.0, 1.0], [0, 0], image=[None, b"not an image"]),
    "missing": EventSequence("nofile", [0.0, 1.0], [0, 0], image=["images/absent.png", None]),
    "path_escapes_root": EventSequence("esc", [0.0], [0], image=["../../etc/passwd"]),
    "oversize_text": EventSequence("text", [0.0], [0], text=["x" * 5000]),
    "empty": EventSequence("empty", [], []),
}
# (sequence, field, event index, reason)
EXPECTED = {
    "not_finite": ("time", 1, "not_finite"),
    "not_finite_inf": ("time", 2, "not_finite"),
    "unsorted": ("time", 2, "unsorted"),
    "type_out_of_range": ("type", 1, "type_out_of_range"),
    "type_negative": ("type", 1, "type_out_of_range"),
    "undecodable": ("image", 1, "undecodable"),
    "missing": ("image", 0, "missing"),
    "path_escapes_root": ("image", 0, "path_escapes_root"),
    "oversize_text": ("text", 0, "oversize"),
    "empty": ("time", -1, "empty"),
}


@pytest.mark.parametrize("kind", sorted(BAD_SEQUENCES))
def test_each_bad_input_is_named_precisely(tmp_path, kind):
    seq = BAD_SEQUENCES[kind]
    problems = problems_of(write(tmp_path, seq))
    field, event, reason = EXPECTED[kind]
    assert [(p.seq_id, p.field, p.event, p.reason) for p in problems] == [
        (seq.seq_id, field, event, reason)
    ]
    text = str(problems[0])
    assert "sequences/part-00000.parquet" in text and repr(seq.seq_id) in text


def test_oversize_image_bytes_and_decompression_bomb(tmp_path):
    big = EventSequence("big", [0.0], [0], image=[png(64, 64)])
    spec = ImageSpec(max_bytes=100)
    problems = problems_of(write(tmp_path, big), image_spec=spec)
    # the good sequence's image is small too, but over 100 bytes: both are refused
    assert {p.reason for p in problems} == {"oversize"}
    bomb = EventSequence("bomb", [0.0], [0], image=[png(300, 300)])
    spec = ImageSpec(max_source_pixels=200 * 200)
    problems = problems_of(write(tmp_path, bomb), image_spec=spec)
    assert [(p.seq_id, p.reason) for p in problems] == [("bomb", "oversize")]


def test_duplicate_seq_id(tmp_path):
    problems = problems_of(write(tmp_path, good("good")))
    assert [(p.field, p.reason) for p in problems] == [("seq_id", "duplicate_seq_id")]


def test_images_as_files_under_the_root(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png())
    seq = EventSequence("files", [0.0, 1.0], [0, 1], image=["images/a.png", None])
    report = validate_dataset(write(tmp_path, seq))
    assert report.ok and report.valid_sequences == 2 and report.valid_events == 5


def _write_table(root, table):
    (root / "sequences").mkdir(parents=True)
    pq.write_table(table, root / "sequences" / "part-00000.parquet")
    from mmtpp.events import write_info

    write_info(root, INFO)


@pytest.mark.parametrize(
    ("columns", "field", "reason"),
    [
        ({"seq_id": ["a"], "time": [[0.0]]}, "type", "missing_column"),
        ({"seq_id": ["a"], "time": [["0.5"]], "type": [[0]]}, "time", "wrong_column_type"),
        ({"seq_id": ["a"], "time": [[0.0]], "type": [["a"]]}, "type", "wrong_column_type"),
        ({"seq_id": ["a"], "time": [0.0], "type": [[0]]}, "time", "wrong_column_type"),
        ({"seq_id": [1.5], "time": [[0.0]], "type": [[0]]}, "seq_id", "wrong_column_type"),
        (
            {"seq_id": ["a"], "time": [[0.0]], "type": [[0]], "image": [[3]]},
            "image",
            "wrong_column_type",
        ),
    ],
)
def test_wrong_columns_name_file_and_column(tmp_path, columns, field, reason):
    _write_table(tmp_path, pa.table(columns))
    problems = problems_of(tmp_path, mode="quarantine")  # a bad file fails in any mode
    assert [(p.field, p.reason, p.seq_id) for p in problems] == [(field, reason, None)]
    assert "part-00000.parquet" in str(problems[0])


def test_list_length_mismatch_and_plain_columns(tmp_path):
    table = pa.table(
        {
            "seq_id": [7, 8],  # integer ids are accepted
            "time": [[0, 1], [0.0, 1.0]],  # integer times are accepted
            "type": [[0, 1], [0]],
            "text": [["a", "b"], ["c", "d"]],
            "image": [[None, None], [png(), None]],  # plain binary column
        }
    )
    _write_table(tmp_path, table)
    problems = problems_of(tmp_path)
    assert [(p.seq_id, p.field, p.reason) for p in problems] == [("8", "type", "length_mismatch")]


def test_quarantine_writes_rejects_with_reasons_and_counts(tmp_path):
    bad = [BAD_SEQUENCES["unsorted"], BAD_SEQUENCES["type_out_of_range"]]
    root = write(tmp_path, *bad)
    report = validate_dataset(root, mode="quarantine")
    assert report.sequences == 3 and report.valid_sequences == 1
    assert report.rejected_sequences == 2
    assert report.reasons == {"unsorted": 1, "type_out_of_range": 1}
    side = pq.read_table(report.quarantine_file)
    assert side.schema.equals(QUARANTINE_SCHEMA)
    rows = side.to_pylist()
    assert [r["seq_id"] for r in rows] == ["unsorted", "types"]
    assert rows[0]["problems"][0]["reason"] == "unsorted"
    assert rows[0]["time"] == [0.0, 2.0, 1.0]  # the rejected data is kept whole
    assert report.sequences == report.valid_sequences + report.rejected_sequences


def test_strict_passes_clean_data(tmp_path):
    report = validate_dataset(write(tmp_path))
    assert report.ok and report.events == 3 and not report.problems
    assert np.isclose(report.valid_events, 3)


@pytest.mark.parametrize("bad", [-(2**40), 2**40])
def test_type_ids_beyond_int32_name_the_file_and_field(bad):
    import pyarrow as pa

    from mmtpp.validation import ValidationError, conform_table

    table = pa.table(
        {"seq_id": ["a"], "time": [[0.0, 1.0]], "type": [[0, bad]], "text": [[None, None]]}
    )
    with pytest.raises(ValidationError, match=r"f\.parquet, field 'type': type ids do not fit"):
        conform_table(table, "f.parquet")


def test_images_through_a_symlinked_folder_need_the_trusted_root(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.png").write_bytes(png())
    root = tmp_path / "ds"
    root.mkdir()
    (root / "images").symlink_to(store, target_is_directory=True)
    write_dataset(root, INFO, [EventSequence("s", [0.0], [0], image=["images/a.png"])])
    problems = problems_of(root)
    assert [(p.field, p.reason) for p in problems] == [("image", "path_escapes_root")]
    assert validate_dataset(root, trusted_root=store).ok


def import_quarantine(root) -> Quarantine:
    quarantine = Quarantine()
    problem = Problem("events.csv", "lost", 1, "time", "missing", "is empty", row=7)
    quarantine.add("events.csv", "lost", [problem], times=[0.0, None], types=[0, 1])
    quarantine.write(root)
    return quarantine


def test_import_and_validation_share_one_quarantine_file(tmp_path):
    root = write(tmp_path, BAD_SEQUENCES["unsorted"])
    import_quarantine(root)
    for _ in range(2):  # a second run replaces its own records, keeps the import's
        report = validate_dataset(root, mode="quarantine")
        assert report.quarantined_at_import == 1 and report.rejected_sequences == 1
        side = pq.read_table(root / "quarantine.parquet")
        assert side.schema.equals(QUARANTINE_SCHEMA)
        rows = side.select(["seq_id", "stage"]).to_pylist()
        assert rows == [
            {"seq_id": "lost", "stage": "import"},
            {"seq_id": "unsorted", "stage": "validate"},
        ]
    problem = side.column("problems").to_pylist()[0][0]
    assert (problem["row"], problem["field"], problem["reason"]) == (7, "time", "missing")
    write(tmp_path)  # the data fixed: validation has nothing to set aside any more
    report = validate_dataset(root, mode="quarantine")
    assert report.ok and report.quarantine_file is None
    assert pq.read_table(root / "quarantine.parquet").column("seq_id").to_pylist() == ["lost"]
    Quarantine().write(root)  # an import with nothing to set aside: the stale file goes
    assert not (root / "quarantine.parquet").exists()
    assert validate_dataset(root, mode="quarantine").quarantined_at_import == 0


def test_quarantine_file_is_never_another_file(tmp_path):
    root = write(tmp_path, BAD_SEQUENCES["unsorted"])
    other = tmp_path / "sequences" / "part-00000.parquet"
    before = other.read_bytes()
    with pytest.raises(ValueError, match="is not a quarantine file"):
        validate_dataset(root, mode="quarantine", quarantine_file=other)
    assert other.read_bytes() == before


def test_problem_names_the_row_and_keeps_bytes_that_were_not_utf8():
    message = "is not valid UTF-8"
    problem = Problem("t.csv", "s", 2, "text", "undecodable", message, row=9, value="caf\udce9")
    assert str(problem) == "t.csv, row 9, sequence 's', event 2, field 'text': is not valid UTF-8"
    assert problem.to_struct()["value"] == "caf\\xe9"
    quarantine = Quarantine()
    quarantine.add("t.csv", "caf\udce9", [problem], times=[1.0], texts=["caf\udce9"])
    record = quarantine.table().to_pylist()[0]
    assert record["seq_id"] == "caf\\xe9" and record["text"] == ["caf\\xe9"]
    assert (quarantine.sequences, quarantine.rows, quarantine.lone_rows) == (1, 1, 0)
