"""Reading whatever a labeling tool exports: CSV/TSV (any common delimiter, quoted multi-line fields, BOM,
other encodings detected), JSON Lines and Parquet, into text columns with each row's source line."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.encodings import decode, undecodable
from tasks.errors import DataError
from tasks.progress import bar

LINE = "_source_line"  # where a row starts in its file (1-based; the header is line 1 of a CSV)
PROBLEM = "_read_problem"  # why a row could not be read as a whole record, or empty
RAW = "_raw_record"  # a row that could not be read whole: its fields as JSON, or its JSON line (kept in quarantine)
DELIMITERS = ",;\t|"
csv.field_size_limit(1 << 30)  # a long text is quarantined for its length, not crashed on
# Reading and masking take time in proportion to the bytes, long texts or short: a file this size takes seconds.
BIG_FILE_BYTES = 10_000_000


@dataclass(frozen=True)
class Table:
    """Rows as strings (missing values as None), their source lines, and how the file was decoded."""

    frame: pd.DataFrame
    encoding: str
    delimiter: str | None


def big_file(path: Path) -> bool:
    """Whether reading `path` takes long enough that a person wants to see it move (a bar, a line per stage)."""
    return path.stat().st_size >= BIG_FILE_BYTES


def read_table(path: Path, encoding: str = "auto", delimiter: str = "auto") -> Table:
    """Read a labeled file; unreadable files raise DataError naming the file and what to do."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix in (".csv", ".tsv", ".txt"):
        text, used = decode(path.read_bytes(), encoding, path)
        return _read_delimited(text, path, used, "\t" if suffix == ".tsv" and delimiter == "auto" else delimiter)
    if suffix in (".jsonl", ".ndjson"):
        text, used = decode(path.read_bytes(), encoding, path)
        return Table(_read_jsonl(text, path), used, None)
    if suffix == ".parquet":
        return Table(_read_parquet(path), "parquet", None)
    raise DataError(f"{path}: unsupported file type {suffix!r}; export CSV, TSV, JSON Lines or Parquet")


def _read_delimited(text: str, path: Path, encoding: str, delimiter: str) -> Table:
    if not text.strip():
        raise DataError(f"{path}: the file is empty; export the labeled rows with a header line")
    sep = _sniff(text) if delimiter == "auto" else delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = [name.strip() for name in next(reader)]
    _check_header(header, path)
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
    frame[PROBLEM] = problems
    frame[RAW] = raws
    return Table(frame, encoding, sep)


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
    header = text.split("\n", 1)[0]
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


def _read_jsonl(text: str, path: Path) -> pd.DataFrame:
    records, lines, problems, raws = [], [], [], []
    physical = text.split("\n")  # not splitlines(): JSON may hold U+2028
    with bar(len(physical), f"reading {path.name}", "line", shown=big_file(path)) as progress:
        for number, line in enumerate(physical, start=1):
            progress.update()
            if not line.strip():
                continue
            [line], problem = undecodable([line])
            try:
                record = {} if problem else json.loads(line)
                problem = problem or (None if isinstance(record, dict) else "not a JSON object")
            except json.JSONDecodeError as err:
                record, problem = {}, f"not valid JSON ({err.msg})"
            record = record if isinstance(record, dict) else {}
            records.append({key: None if value is None else str(value) for key, value in record.items()})
            lines.append(number)
            problems.append(problem)
            raws.append(line if problem else None)  # the line as it was, so the record can be repaired
    if not records:
        raise DataError(f"{path}: the file has no records; export one JSON object per line")
    frame = pd.DataFrame.from_records(records).astype(object)
    frame = frame.where(frame.notna(), None)
    frame[LINE] = lines
    frame[PROBLEM] = problems
    frame[RAW] = raws
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")  # integer ids with gaps stay integers
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    text = frame.astype(object).where(frame.notna(), None)
    text = text.map(lambda value: None if value is None else str(value))
    text[LINE] = range(1, len(frame) + 1)  # Parquet has rows, not lines: the row number
    text[PROBLEM] = None
    text[RAW] = None
    return text
