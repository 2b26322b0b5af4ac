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
    assert main(["data", "stats", str(synth), "--delta", "0.2", "--budget", "4096", "--json"]) == 0
    rows = {r["delta"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[0.2]["events_per_budget"] >= 2 * rows[0.0]["events_per_budget"]
    assert rows[0.0]["compression_ratio"] == 1.0 and rows[0.2]["compression_ratio"] > 2


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path)]) == 1
    assert "not an mmtpp dataset" in capsys.readouterr().err
