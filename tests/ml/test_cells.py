"""CSV and markdown cells: formulas neutralized, numbers untouched, tables kept whole."""

from __future__ import annotations

import csv
import io

import pytest

from ml.cells import csv_cell, markdown_cell


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+cmd", "'+cmd"),
        ("-2+3", "'-2+3"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("model22", "model22"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_csv_cell_neutralizes_formulas(value: str, expected: str) -> None:
    assert csv_cell(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-0.5, "-0.5"),
        (-3, "-3"),
        (1e-05, "1e-05"),
        ("-0.5", "-0.5"),
        ("+1e3", "+1e3"),
        ("-.5", "-.5"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0.1, "0.1"),
    ],
)
def test_csv_cell_never_mangles_numbers(value: object, expected: str) -> None:
    assert csv_cell(value) == expected


def test_csv_cell_round_trips_through_a_csv_reader() -> None:
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell(v) for v in ["=1+1", -0.5, "a,b\nc"]])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'=1+1", "-0.5", "a,b\nc"]


def test_markdown_cell_keeps_the_table_whole() -> None:
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("one\ntwo\r\nthree\rfour") == "one two three four"
    assert markdown_cell("back\\slash|") == "back\\\\slash\\|"
    assert markdown_cell(None) == ""
    assert markdown_cell(0.25) == "0.25"
    row = "| " + " | ".join(markdown_cell(v) for v in ["x|y\nz", 3]) + " |"
    assert row.count("|") - row.count("\\|") == 3
    assert "\n" not in row
