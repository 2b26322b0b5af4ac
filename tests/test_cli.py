import json

import pytest

from mmtpp.cli import main


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "synth", "--out", str(out), "--num-sequences", "30"]) == 0
    return out


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    text = capsys.readouterr().out
    for command in ("synth", "import", "validate", "stats"):
        assert command in text


def test_validate_json(synth, capsys):
    assert main(["data", "validate", str(synth), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["sequences"] == 30


def test_stats_compression_doubles_events_per_budget(synth, capsys):
    argv = ["data", "stats", str(synth), "--mode", "absolute", "--delta", "0.2", "--json"]
    assert main(argv) == 0
    rows = {r["delta"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[0.2]["events_per_budget"] >= 2 * rows[0.0]["events_per_budget"]
    assert rows[0.0]["compression_ratio"] == 1.0 and rows[0.2]["compression_ratio"] > 2


def test_stats_list_every_mode_side_by_side(synth, capsys):
    assert main(["data", "stats", str(synth), "--budget", "1024"]) == 0
    out = capsys.readouterr().out
    for mode in ("absolute", "relative", "typed"):
        assert out.count(f"\n{mode} ") >= 3, out  # each mode on its own Δ grid
    assert "log-gap units" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path)]) == 1
    assert "not an mmtpp dataset" in capsys.readouterr().err


def test_import_argument_errors_are_one_line(tmp_path, capsys):
    csv = tmp_path / "ev.csv"
    csv.write_text("seq_id,time,type\na,0,0\na,1,1\n")
    out = str(tmp_path / "ds")
    for argv, message in (
        (
            ["table", str(csv), "-o", "foo=1"],
            "unknown option(s) ['foo']; valid: ['image_root', 'time_format'",
        ),
        (["table"], "give the input file or folder (SOURCE)"),
        (["nycflights", "somewhere"], "reads no SOURCE"),
    ):
        assert main(["data", "import", *argv, "--out", out]) == 1
        assert message in capsys.readouterr().err


def test_import_records_the_time_resolution(tmp_path, capsys):
    import json

    csv = tmp_path / "ev.csv"
    csv.write_text("seq_id,time,type\na,0,0\na,60,1\na,180,0\n")
    out = tmp_path / "ds"
    argv = ["data", "import", "table", str(csv), "--out", str(out)]
    assert main([*argv, "-o", "time_resolution=60"]) == 0
    assert json.loads((out / "dataset.json").read_text())["time_resolution"] == 60
    assert main([*argv, "-o", "time_resolution=0"]) == 1
    assert "time_resolution must be a positive number" in capsys.readouterr().err


def _job(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"job_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_options_are_declared_and_parsed(capsys):
    from mmtpp.launch import parse_job_args

    train, tune = _job("train"), _job("tune")
    argv = train.stage_alias(["stage=2", "lora.r=4"])
    config, args = parse_job_args(train.__doc__, argv, train.stage_argument)
    assert (args.stage, config.lora.r) == ("2", 4)
    assert parse_job_args(tune.__doc__, ["--resume"], tune.resume_argument)[1].resume
    with pytest.raises(SystemExit):
        parse_job_args(train.__doc__, ["--stage", "3"], train.stage_argument)
    with pytest.raises(SystemExit):
        parse_job_args(train.__doc__, ["--help"], train.stage_argument)
    text = capsys.readouterr().out
    assert "--stage {1,2,both}" in text and "-- \\\n" in text  # the docstring's continuation
    assert "data.tokenizer=null" in text


def test_evaluate_job_refuses_keys_it_would_ignore(tmp_path, monkeypatch, capsys):
    evaluate = _job("evaluate")
    base = [
        "evaluate.py",
        "--model",
        str(tmp_path),
        "--prepared",
        str(tmp_path),
        "--dataset",
        str(tmp_path),
        "--out",
        str(tmp_path / "report"),
    ]
    monkeypatch.setattr("sys.argv", [*base, "data.delta=0.5"])
    with pytest.raises(SystemExit):
        evaluate.main()
    assert "only eval.* keys apply here" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", base)
    assert evaluate.main() == 1
    assert "no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_stats_refuse_invalid_data_naming_the_problem(tmp_path, capsys):
    csv = tmp_path / "ev.csv"
    csv.write_text("seq_id,time,type\na,0,0\na,1,1\nb,0,0\nb,-1,0\n")
    assert main(["data", "import", "table", str(csv), "--out", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(tmp_path / "ds")]) == 1
    err = capsys.readouterr().err
    assert "sequence 'b', event 1, field 'time'" in err and "--mode quarantine" in err
