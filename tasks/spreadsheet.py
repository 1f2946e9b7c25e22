"""CSV cells that a spreadsheet would run as formulas (OWASP CSV injection), escaped in every CSV nichetune writes
for people to open: predictions, suggestion batches and the ingest quarantine; and the escape taken off again
where such a file comes back to be ingested (a suggestion batch filled in). A workbook nichetune writes is safe
without it (each cell says its type, and no text cell is a formula); the suggestion batch's workbook carries it all
the same, so that ingest takes the same escape off whichever of its files comes back."""

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


def unescape_formula(value):
    """`escape_formula` undone: the apostrophe it put before a formula's first character taken off."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every text cell and column name escaped with `escape_formula`; numeric columns untouched."""
    escaped = frame.rename(columns=escape_formula)
    for column in escaped.columns:
        if not pd.api.types.is_numeric_dtype(escaped[column]):
            escaped[column] = escaped[column].map(escape_formula)
    return escaped


def write_workbook(frame: pd.DataFrame, path) -> None:
    """`frame` as the one sheet of an Excel workbook: numbers as numbers, missing values as empty cells, and every
    text as text, a leading "=" included (openpyxl would store such a value as a formula)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("predictions")
    sheet.append([str(column) for column in frame.columns])
    for row in frame.itertuples(index=False):
        sheet.append([_cell(sheet, value) for value in row])
    book.save(path)


def _cell(sheet, value):
    from openpyxl.cell import WriteOnlyCell

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if hasattr(value, "item"):  # NumPy scalars: openpyxl takes Python numbers
        value = value.item()
    cell = WriteOnlyCell(sheet, value)
    if isinstance(value, str):
        cell.data_type = "s"
    return cell
