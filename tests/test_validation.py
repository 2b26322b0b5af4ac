import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmtpp.events import DatasetInfo, EventSequence, write_dataset
from mmtpp.images import ImageSpec
from mmtpp.problems import ValidationError
from mmtpp.quarantine import validate_dataset

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


def test_strict_passes_clean_data(tmp_path):
    report = validate_dataset(write(tmp_path))
    assert report.ok and report.events == 3 and not report.problems
    assert np.isclose(report.valid_events, 3)


@pytest.mark.parametrize("bad", [-(2**40), 2**40])
def test_type_ids_beyond_int32_name_the_file_and_field(bad):
    import pyarrow as pa

    from mmtpp.validation import conform_table

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
