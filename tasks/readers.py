"""Reading whatever a labeling tool exports: CSV/TSV (any common delimiter, quoted multi-line fields, BOM,
other encodings detected), JSON (an array of records), JSON Lines, Parquet and Excel workbooks (.xlsx), into text
columns with each row's source line. Exports of Label Studio and Argilla are told by their content and turned into
one row per text with its label columns (tasks.labeling_tools)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks import labeling_tools
from tasks.encodings import UNDECODABLE, decode, undecodable
from tasks.errors import DataError
from tasks.progress import bar

LINE = "_source_line"  # where a row starts in its file (1-based; the header is line 1 of a CSV)
PROBLEM = "_read_problem"  # why a row could not be read as a whole record, or empty
RAW = "_raw_record"  # a problem row as it was: its fields as JSON, its JSON line or record (kept in quarantine)
DELIMITERS = ",;\t|"
UNNAMED = "\x00unnamed "  # a header cell left empty, until it is dropped (no name a file can hold)
HEADER_AGAIN = "the header line again (files joined together?); nothing to store"
csv.field_size_limit(1 << 30)  # a long text is quarantined for its length, not crashed on
# Reading and masking take time in proportion to the bytes, long texts or short: a file this size takes seconds.
BIG_FILE_BYTES = 10_000_000
EXCEL_SUFFIXES = (".xlsx", ".xlsm")  # Office Open XML workbooks; the binary .xls of Excel 97-2003 is not read


@dataclass(frozen=True)
class Table:
    """Rows as strings (missing values as None), their source lines, and how the file was decoded."""

    frame: pd.DataFrame
    encoding: str
    delimiter: str | None


def big_file(path: Path) -> bool:
    """Whether reading `path` takes long enough that a person wants to see it move (a bar, a line per stage)."""
    return path.stat().st_size >= BIG_FILE_BYTES


def read_table(path: Path, encoding: str = "auto", delimiter: str = "auto", label_column: str | None = None,
               text_column: str | None = None) -> Table:
    """Read a labeled file; unreadable files raise DataError naming the file and what to do. In a labeling tool's
    export, an answer that is not one label (several choices, annotators who disagree) makes its row a problem:
    only the answer in `label_column` when one is named, else the answer to any question. A cell of the text or
    label column that holds no text (a nested object or list, bytes that are not UTF-8) makes its row one too."""
    table = _read_table(path, encoding, delimiter, label_column)
    needed = {_as_written(column, table.frame.columns) for column in (text_column, label_column)} - {None}
    return Table(_cells_checked(table.frame, needed), table.encoding, table.delimiter)


def _read_table(path: Path, encoding: str, delimiter: str, label_column: str | None) -> Table:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix in (".csv", ".tsv", ".txt"):
        text, used = decode(path.read_bytes(), encoding, path)
        sep = "\t" if suffix == ".tsv" and delimiter == "auto" else delimiter
        table = _read_delimited(text, path, used, sep)
        frame = _written_choices(_argilla_flat(table.frame, label_column), label_column)
        return Table(frame, table.encoding, table.delimiter)
    if suffix in (".json", ".jsonl", ".ndjson"):
        text, used = decode(path.read_bytes(), encoding, path)
        entries = _json_array(text, path) if suffix == ".json" and _is_array(text, path) else _json_lines(text, path)
        return Table(_records_frame(entries, label_column), used, None)
    if suffix == ".parquet":
        return Table(_as_text(_argilla_flat(_read_parquet(path), label_column)), "parquet", None)
    if suffix in EXCEL_SUFFIXES:
        return Table(_as_text(_argilla_flat(_read_xlsx(path), label_column)), "xlsx", None)
    raise DataError(f"{path}: unsupported file type {suffix!r}; export CSV, TSV, JSON, JSON Lines, Parquet or an "
                    "Excel workbook (.xlsx)")


def _read_delimited(text: str, path: Path, encoding: str, delimiter: str) -> Table:
    if not text.strip():
        raise DataError(f"{path}: the file is empty; export the labeled rows with a header line")
    sep = _sniff(text) if delimiter == "auto" else delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = [name.strip() for name in next(reader)]
    _check_header([name for name in header if name], path)
    named = header
    header = [name or f"{UNNAMED}{i}" for i, name in enumerate(header)]  # dropped below when empty
    lines = io.StringIO(text, newline="").readlines()  # the same physical lines the reader counts
    rows, starts, problems, raws = [], [], [], []
    last = reader.line_num
    with bar(len(lines) - last, f"reading {path.name}", "line", shown=big_file(path)) as progress:
        for record in reader:
            start, last = last + 1, reader.line_num
            progress.update(last - start + 1)
            if len(record) <= 1 and not "".join(record).strip():
                continue  # blank lines separate nothing in a CSV; a row of bare delimiters is a (blank) row
            record, problem = undecodable(record)
            problem = problem or _quote_problem(lines, start, last, sep)
            raw = None
            if problem is None and len(record) != len(header):
                problem = f"ragged row: {len(record)} fields where the header has {len(header)}"
            if problem:
                raw = json.dumps(record, ensure_ascii=False)  # every field, so the row can be repaired
            rows.append((record + [None] * len(header))[: len(header)])
            starts.append(start)
            problems.append(problem)
            raws.append(raw)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame[LINE] = starts
    again = [[(value or "").strip() for value in row] == named for row in rows]  # exports joined together
    frame[PROBLEM] = [problem or (HEADER_AGAIN if repeat else None) for problem, repeat in zip(problems, again)]
    frame[RAW] = [raw or (json.dumps(row, ensure_ascii=False) if repeat else None)
                  for raw, row, repeat in zip(raws, rows, again)]
    return Table(_without_unnamed(frame, path), encoding, sep)


def _without_unnamed(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The columns with no name in the header left out when no row has a value in them: the trailing delimiters
    a spreadsheet writes after the last column (`text,label,,`). One that holds a value is an error."""
    unnamed = [column for column in frame.columns if column.startswith(UNNAMED)]
    for column in unnamed:
        if not frame[column].map(lambda value: value is None or not value.strip()).all():
            position = int(column.removeprefix(UNNAMED)) + 1
            raise DataError(f"{path}: column {position} holds values but has no name in the header line; name it "
                            "or clear it, and ingest again")
    return frame.drop(columns=unnamed)


def _quote_problem(lines: list[str], start: int, last: int, sep: str) -> str | None:
    """A quote that is never closed (or closed in the middle of a field) makes the reader take the lines
    after it as one field; a record over several lines that a strict reader refuses is that."""
    if last == start:
        return None
    try:
        list(csv.reader(io.StringIO("".join(lines[start - 1:last]), newline=""), delimiter=sep, strict=True))
        return None
    except csv.Error:
        end = " (the end of the file)" if last >= len(lines) else ""
        return (f"unterminated quote: the quote opened on line {start} takes in lines {start}-{last}{end} as "
                f"one field; close the quote and ingest again")


def _sniff(text: str) -> str:
    """The delimiter that splits the header line into the most columns (texts below may hold any of them)."""
    header = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]  # an old Mac export ends its lines with \r alone
    widths = {sep: len(next(csv.reader([header], delimiter=sep))) for sep in DELIMITERS}
    best = max(DELIMITERS, key=lambda sep: widths[sep])
    return best if widths[best] > 1 else ","


def _check_header(header: list[str], path: Path) -> None:
    if undecodable(header)[1]:
        raise DataError(f"{path}: the header line is not valid UTF-8 unlike the rest of the file; re-save it as UTF-8")
    if not any(header):
        raise DataError(f"{path}: the first line has no column names; add a header line")
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header; rename one and ingest again")
        seen.add(name)


def _is_array(text: str, path: Path) -> bool:
    """A .json file holds a JSON array of records, or one record per line (what the datasets library's to_json
    writes); anything else is no export."""
    start = text.lstrip()[:1]
    if start not in ("[", "{"):
        what = "the file is empty" if not start else f"not JSON (it starts with {text.lstrip()[:20]!r})"
        raise DataError(f"{path}: {what}; export a JSON array of records, or one JSON object per line")
    return start == "["


def _json_array(text: str, path: Path) -> list[tuple]:
    """(position, record or None, problem, raw) per item of a JSON array: its position (1-based) is its line."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); export the file again") from None
    if not items:
        raise DataError(f"{path}: the JSON array has no records; export the labeled records too")
    if not any(isinstance(item, dict) for item in items):
        raise DataError(f"{path}: the JSON array holds no objects (its first item is {json.dumps(items[0])[:40]}); "
                        "export one JSON object per record")
    suspect = UNDECODABLE.search(text) is not None  # bytes that were not UTF-8: only then is each record checked
    entries = []
    for position, item in enumerate(items, start=1):
        raw = json.dumps(item, ensure_ascii=False) if suspect or not isinstance(item, dict) else None
        [raw], problem = undecodable([raw])
        problem = problem or (None if isinstance(item, dict) else "not a JSON object")
        entries.append((position, None if problem else item, problem, raw if problem else None))
    return entries


def _json_lines(text: str, path: Path) -> list[tuple]:
    """(line, record or None, problem, raw) per line that is not blank; a broken line keeps its text."""
    entries = []
    physical = text.split("\n")  # not splitlines(): JSON may hold U+2028
    with bar(len(physical), f"reading {path.name}", "line", shown=big_file(path)) as progress:
        for number, line in enumerate(physical, start=1):
            progress.update()
            if not line.strip():
                continue
            [line], problem = undecodable([line])
            try:
                record = None if problem else json.loads(line)
                problem = problem or (None if isinstance(record, dict) else "not a JSON object")
            except json.JSONDecodeError as err:
                problem = f"not valid JSON ({err.msg})"
            entries.append((number, None if problem else record, problem, line if problem else None))
    if not entries:
        raise DataError(f"{path}: the file has no records; export one JSON object per line")
    return entries


def _records_frame(entries: list[tuple], label_column: str | None) -> pd.DataFrame:
    """JSON records as rows, read the way the labeling tool that wrote them meant; a problem record's row is empty
    but for its line, reason and raw text."""
    converted = iter(labeling_tools.rows([record for _, record, _, _ in entries if record is not None]))
    values, problems, raws = [], [], []
    for _, record, problem, raw in entries:
        row = next(converted) if record is not None else labeling_tools.Row({})
        problem = problem or row.problem or _answer_problem(row.answers, label_column)
        values.append(row.values)
        problems.append(problem)
        raws.append(raw if raw is not None or not problem else _json(record))
    frame = pd.DataFrame(values, dtype=object)  # ids stay 7, not 7.0, where other records lack them
    frame = frame.where(frame.notna(), None)
    frame[LINE] = [line for line, *_ in entries]
    frame[PROBLEM] = problems
    frame[RAW] = raws
    return _as_text(_argilla_flat(frame, label_column))


def _argilla_flat(frame: pd.DataFrame, label_column: str | None) -> pd.DataFrame:
    """Argilla's flat records (columns `<question>.responses`, in any format): each question's submitted answer
    becomes its label column; a row whose answer is not one label becomes a problem row. Else `frame` as it is."""
    data = frame.drop(columns=[LINE, PROBLEM, RAW])
    if not labeling_tools.is_argilla_flat(data.columns):
        return frame
    labels, why = labeling_tools.argilla_flat(data)
    problems, raws = [], []
    for old, raw, reasons, record in zip(frame[PROBLEM], frame[RAW], why.to_dict("records"), data.to_dict("records")):
        reason = _answer_problem({question: text for question, text in reasons.items() if text}, label_column)
        problems.append(old or reason)
        raws.append(raw if old or not reason else _json(record))
    return _as_text(labels.assign(**{LINE: frame[LINE].to_numpy(), PROBLEM: problems, RAW: raws}))


def _written_choices(frame: pd.DataFrame, label_column: str | None) -> pd.DataFrame:
    """Label Studio's CSV export writes several choices as the JSON text {"choices": [...]}: such a label cell makes
    its row a problem saying so, not a label outside the label set."""
    column = _as_written(label_column, frame.columns)
    if column is None:
        return frame
    problems = frame[PROBLEM].tolist()
    for position, cell in enumerate(frame[column]):
        if problems[position] or not isinstance(cell, str) or not cell.lstrip().startswith('{"choices"'):
            continue
        try:
            value = json.loads(cell)
        except ValueError:
            continue
        if labeling_tools.json_min_choices(value):
            problems[position] = labeling_tools.several_choices(column, value["choices"], "Label Studio")
    return frame.assign(**{PROBLEM: problems})


def _answer_problem(reasons: dict[str, str], label_column: str | None) -> str | None:
    """Why the answer in `label_column` is not one label; without a label column named, the first such reason."""
    if label_column is not None:
        return reasons.get(_as_written(label_column, reasons))
    return next(iter(reasons.values()), None)


def _as_written(label_column: str | None, names) -> str | None:
    """The label column among `names` under its own name, or as the labeling tools name columns (a suggestion
    batch's Label Studio and Argilla files write `Ticket Type` as `ticket_type`); None when neither is there."""
    if label_column is None:
        return None
    return next((name for name in (label_column, labeling_tools.tool_name(label_column)) if name in names), None)


def _json(record) -> str:
    """A record as JSON, so that a problem row can be repaired (NumPy arrays as lists, anything else as text)."""
    plain = lambda value: value.tolist() if hasattr(value, "tolist") else str(value)  # noqa: E731
    return json.dumps(record, ensure_ascii=False, default=plain)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column but the bookkeeping ones as text (missing values as None); nested values and bytes stay as
    they are for `_cells_checked`."""
    columns = [column for column in frame.columns if column not in (LINE, PROBLEM, RAW)]
    frame[columns] = frame[columns].map(lambda value: value if value is None or _not_text(value) else str(value))
    return frame


class ExcelError(str):
    """A workbook cell holding an error value (#N/A, #REF!...): a formula that failed, not a text."""


# the error values Excel shows in a cell; openpyxl reads them as these strings
EXCEL_ERRORS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA", "#SPILL!",
                "#CALC!", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!", "#PYTHON!"}


def _not_text(value) -> bool:
    """A JSON object or list, a Parquet list (a NumPy array), bytes (Parquet's binary strings), an Excel error."""
    import numpy as np

    return isinstance(value, (dict, list, tuple, bytes, bytearray, np.ndarray, ExcelError))


def _cells_checked(frame: pd.DataFrame, needed: set[str]) -> pd.DataFrame:
    """Cells `_as_text` left as they were, as text: bytes decoded as UTF-8 (as Hive and older Spark write strings
    in Parquet), nested values written as JSON. In a `needed` column (the text, the label) a nested value or bytes
    that are not UTF-8 make the row a problem: neither is what a person wrote, and str() of them is no text."""
    problems = frame[PROBLEM].tolist()
    for column in [column for column in frame.columns if column not in (LINE, PROBLEM, RAW)]:
        values = frame[column].tolist()
        if not any(_not_text(value) for value in values):
            continue
        for row, value in enumerate(values):
            if value is None or not _not_text(value):
                continue
            if isinstance(value, ExcelError):
                values[row] = str(value)
                why = f"the Excel error {value} in column {column!r} (a formula that failed); fix it in the workbook"
            elif isinstance(value, (bytes, bytearray)):
                try:
                    values[row], why = bytes(value).decode("utf-8"), None
                except UnicodeDecodeError:
                    values[row] = bytes(value).decode("utf-8", "backslashreplace")
                    why = f"bytes that are not UTF-8 in column {column!r} (shown as \\xNN); export it as text"
            else:
                values[row] = _json(value)  # a NumPy array through _json's tolist
                why = (f"a nested value (a JSON object or list) in column {column!r}, not a text; flatten it in the "
                       "export")
            if why and column in needed and problems[row] is None:
                problems[row] = why
        frame[column] = pd.Series(values, index=frame.index, dtype=object)
    frame[PROBLEM] = problems
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")  # integer ids with gaps stay integers
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    raw = frame.astype(object).where(frame.notna(), None)
    raw[LINE] = range(1, len(frame) + 1)  # Parquet has rows, not lines: the row number
    raw[PROBLEM] = None
    raw[RAW] = None
    return raw


def sheet_rows(path: Path) -> list[tuple[int, tuple]]:
    """The rows of the one sheet of a workbook that holds any, as (row number, cell values), blank rows left out:
    formulas as the value Excel last computed, dates as datetimes. A workbook with rows on several sheets is an
    error: which one is the export is the user's to say."""
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable Excel workbook ({' '.join(str(err).split())}); save it again from "
                        "Excel as .xlsx, or export CSV") from None
    try:
        sheets = {sheet.title: [(number, row) for number, row in enumerate(sheet.iter_rows(values_only=True), 1)
                                if any(value is not None and str(value).strip() for value in row)]
                  for sheet in book.worksheets}
    finally:
        book.close()
    filled = [title for title, rows in sheets.items() if rows]
    if not filled:
        raise DataError(f"{path}: no sheet of the workbook holds any rows")
    if len(filled) > 1:
        raise DataError(f"{path}: {len(filled)} sheets hold rows ({', '.join(filled)}); keep only the export's sheet "
                        "in the workbook, or save that sheet as its own file, and ingest again")
    return sheets[filled[0]]


def _read_xlsx(path: Path) -> pd.DataFrame:
    """The workbook's sheet of rows: the first row is the header; a row's line is its number in the sheet."""
    rows = sheet_rows(path)
    (_, header), body = rows[0], rows[1:]
    width = max(len(row) for _, row in rows)
    used = max(i + 1 for _, row in rows for i, value in enumerate(row) if value is not None and str(value).strip())
    names = [("" if value is None else str(value)).strip() for value in (*header, *[None] * width)][:used]
    if not body:
        raise DataError(f"{path}: the sheet has a header but no rows; export the labeled rows too")
    unnamed = [i for i, name in enumerate(names) if not name]
    if unnamed:
        raise DataError(f"{path}: column {_column_letter(unnamed[0])} holds values but has no name in the header "
                        "row; name it or clear it, and ingest again")
    _check_header(names, path)
    # dates become text as str() writes them (2026-07-09 00:00:00): ISO order, read the same whatever the locale
    cells = [[ExcelError(value) if isinstance(value, str) and value in EXCEL_ERRORS else value for value in row]
             for _, row in body]
    frame = pd.DataFrame([(row + [None] * width)[:used] for row in cells], columns=names, dtype=object)
    frame[LINE] = [number for number, _ in body]
    frame[PROBLEM] = None
    frame[RAW] = None
    return frame


def _column_letter(index: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(index + 1)
