"""Reading an events table's cells: every cell parsed, the bad ones flagged by row."""

import numpy as np
import pandas as pd
import pytest

from mmtpp.sources.table_cells import (
    TableRows,
    TableSource,
    parse_times,
    parse_types,
    read_source,
    sequence_codes,
)


def rows_of(tmp_path, **columns) -> TableRows:
    """The rows of a CSV-like table with these columns (str cells, None where empty)."""
    series = {name: pd.Series(values, dtype=object) for name, values in columns.items()}
    n = len(next(iter(series.values())))
    source = TableSource(series, np.arange(2, n + 2), {}, [], len(series))
    return TableRows(tmp_path / "t.csv", source)


def flagged(rows: TableRows) -> list[tuple[int, str, str]]:
    """(row number as the user sees it, column, reason) of every bad cell."""
    return sorted(
        (int(rows.numbers[i]), f.column, f.reason) for f in rows.found for i in f.rows.tolist()
    )


def test_type_names_map_to_sorted_ids_and_unknown_names_are_flagged(tmp_path):
    col = ["water", "fire", None, "water", "smoke"]
    rows = rows_of(tmp_path, type=col)
    ids, names, mode = parse_types(pd.Series(col, dtype=object), None, np.ones(5, bool), rows)
    assert mode == "names" and names == ["fire", "smoke", "water"]
    assert ids.tolist() == [2, 0, -1, 2, 1] and flagged(rows) == [(4, "type", "missing")]
    rows = rows_of(tmp_path, type=col)
    given = ["water", "fire"]
    ids, _, _ = parse_types(pd.Series(col, dtype=object), given, np.ones(5, bool), rows)
    assert ids.tolist() == [0, 1, -1, 0, -1]
    assert flagged(rows) == [(4, "type", "missing"), (6, "type", "unknown_type")]


def test_type_ids_must_be_known_integers(tmp_path):
    col = ["0", "2", "1.5", "-1"]
    rows = rows_of(tmp_path, type=col)
    ids, names, mode = parse_types(pd.Series(col, dtype=object), None, np.ones(4, bool), rows)
    assert mode == "ids" and names == ["type_0", "type_1", "type_2"]
    assert ids.tolist() == [0, 2, -1, -1]
    assert flagged(rows) == [(4, "type", "not_an_integer"), (5, "type", "unknown_type")]


def test_datetimes_become_time_since_the_epoch_in_the_unit(tmp_path):
    col = ["1970-01-01T02:00:00", "1970-01-02 00:30", "tomorrow", None]
    rows = rows_of(tmp_path, time=col)
    hours = parse_times(pd.Series(col, dtype=object), "datetime", "h", rows)
    np.testing.assert_allclose(hours[:2], [2.0, 24.5])
    assert np.isnan(hours[2:]).all()
    assert flagged(rows) == [(4, "time", "not_a_datetime"), (5, "time", "missing")]
    rows = rows_of(tmp_path, time=["1.5", "x"])
    numbers = parse_times(pd.Series(["1.5", "x"], dtype=object), None, "s", rows)
    assert numbers[0] == 1.5 and np.isnan(numbers[1])
    assert flagged(rows) == [(3, "time", "not_a_number")]


def test_sequences_in_order_of_first_appearance(tmp_path):
    col = ["b", "a", None, "b", ""]
    rows = rows_of(tmp_path, seq_id=col)
    codes, ids = sequence_codes(pd.Series(col, dtype=object), rows)
    assert ids == ["b", "a"] and codes.tolist() == [0, 1, -1, 0, -1]
    assert flagged(rows) == [(4, "seq_id", "missing"), (6, "seq_id", "missing")]


def test_a_csv_line_with_the_wrong_field_count_is_kept_aside_whole(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("seq_id,time,type,extra\ns,0,a,x\ns,1,b,x,oops\nt,2,a,x\n")
    source = read_source(path)
    assert source.numbers.tolist() == [2, 4] and list(source.columns) == ["seq_id", "time", "type"]
    (line,) = source.broken
    assert (line.row, line.fields, line.seq_id, line.text) == (3, 5, "s", "s,1,b,x,oops")
    with pytest.raises(ValueError, match="required column 'type' is missing"):
        (tmp_path / "u.csv").write_text("seq_id,time\ns,0\n")
        read_source(tmp_path / "u.csv")
