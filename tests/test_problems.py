from mmtpp.problems import Problem, ReadError, ValidationError, as_utf8


def test_problem_names_the_row_and_keeps_bytes_that_were_not_utf8():
    message = "is not valid UTF-8"
    problem = Problem("t.csv", "s", 2, "text", "undecodable", message, row=9, value="caf\udce9")
    assert str(problem) == "t.csv, row 9, sequence 's', event 2, field 'text': is not valid UTF-8"
    assert problem.to_struct()["value"] == "caf\\xe9"


def test_errors_show_where_and_what_and_carry_their_problems():
    problems = [Problem("f.parquet", "s", i, "time", "unsorted", f"bad {i}") for i in range(7)]
    err = ValidationError(problems)
    assert err.problems == problems and "f.parquet, sequence 's', event 0" in str(err)
    assert "... and 2 more" in str(err) and "bad 5" not in str(err)
    cell = ReadError.at("t.csv row 3", Problem("t.csv", None, -1, "type", "missing", "is empty"))
    assert str(cell) == "t.csv row 3: field 'type' is empty" and cell.problem.reason == "missing"
    whole = ReadError.at("t.csv row 4", Problem("t.csv", None, -1, "row", "r", "has 3 fields"))
    assert str(whole) == "t.csv row 4: has 3 fields"
    assert as_utf8(None) is None and as_utf8("\ud800") == "\\ud800"
