"""CSV cells that a spreadsheet would run as formulas (OWASP CSV injection), escaped in every CSV nichetune writes
for people to open: predictions and the ingest quarantine."""

from __future__ import annotations

import re

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet run a cell
PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")  # "-3.5" is data, not a formula


def escape_formula(value):
    """A text cell a spreadsheet would run as a formula, with a leading apostrophe (numbers stay as they are)."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every text cell and column name escaped with `escape_formula`; numeric columns untouched."""
    escaped = frame.rename(columns=escape_formula)
    for column in escaped.columns:
        if not pd.api.types.is_numeric_dtype(escaped[column]):
            escaped[column] = escaped[column].map(escape_formula)
    return escaped
