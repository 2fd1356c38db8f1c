"""Cells of tables written for other programs: CSV read by spreadsheets, markdown read by people.

Torch-free and dependency-free, so the API, the CLI and scripts share one rule:
- `csv_cell`: a spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
  return as a formula (CSV/formula injection, OWASP). Such a *string* is prefixed with `'`,
  which spreadsheets show as text; numbers (`-0.5`, `1e-3`) are never touched, whether they
  arrive as numbers or as the text of a number.
- `markdown_cell`: a `|` ends a markdown table cell and a newline ends the row, so a name holding
  either would break the table: `|` is escaped as `\\|` and line breaks become spaces.
"""

from __future__ import annotations

import math
import re
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The text of a plain number (what str() of an int or float gives, and what a user types).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)


def csv_cell(value: Any) -> str:
    """The text of one CSV cell, safe to open in a spreadsheet (None is the empty cell)."""
    text = _text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text  # a number is data, never a formula
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def markdown_cell(value: Any) -> str:
    """The text of one markdown table cell: `|` escaped, line breaks as spaces."""
    text = _text(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", " ", text)
