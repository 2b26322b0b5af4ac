import pyarrow.parquet as pq
import pytest
from test_validation import BAD_SEQUENCES, write

from mmtpp.problems import QUARANTINE_SCHEMA, Problem
from mmtpp.quarantine import Quarantine, validate_dataset


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


def test_an_import_record_keeps_what_could_be_read_and_counts_it():
    message = "is not valid UTF-8"
    problem = Problem("t.csv", "s", 2, "text", "undecodable", message, row=9, value="caf\udce9")
    quarantine = Quarantine()
    quarantine.add("t.csv", "caf\udce9", [problem], times=[1.0], texts=["caf\udce9"])
    record = quarantine.table().to_pylist()[0]
    assert record["seq_id"] == "caf\\xe9" and record["text"] == ["caf\\xe9"]
    assert (quarantine.sequences, quarantine.rows, quarantine.lone_rows) == (1, 1, 0)
