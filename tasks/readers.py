"""Reading whatever a labeling tool exports: CSV/TSV (any common delimiter, quoted multi-line fields, BOM,
other encodings detected), JSON Lines and Parquet, into text columns with each row's source line."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.errors import DataError

LINE = "_source_line"  # where a row starts in its file (1-based; the header is line 1 of a CSV)
PROBLEM = "_read_problem"  # why a row could not be read as a whole record, or empty
RAW = "_raw_record"  # the fields of a row that did not fit the header, as JSON (kept in quarantine)
DELIMITERS = ",;\t|"
csv.field_size_limit(1 << 30)  # a long text is quarantined for its length, not crashed on


@dataclass(frozen=True)
class Table:
    """Rows as strings (missing values as None), their source lines, and how the file was decoded."""

    frame: pd.DataFrame
    encoding: str
    delimiter: str | None


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


def decode(raw: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """UTF-8 with or without BOM; with `auto`, any other encoding is detected (and reported by the caller)."""
    if encoding != "auto":
        try:
            return raw.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as err:
            raise DataError(f"{path}: cannot be decoded as {encoding} ({err}); set ingest.encoding") from None
    for bom, name in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                      (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            return raw.decode(name), name
    for name in ("utf-8-sig", "cp1252"):  # Excel on Windows writes cp1252: try it before guessing
        try:
            return raw.decode(name), name.removesuffix("-sig")
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise DataError(f"{path}: not text in any known encoding; export it as UTF-8 CSV")
    return str(best), best.encoding


def _read_delimited(text: str, path: Path, encoding: str, delimiter: str) -> Table:
    if not text.strip():
        raise DataError(f"{path}: the file is empty; export the labeled rows with a header line")
    sep = _sniff(text) if delimiter == "auto" else delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = [name.strip() for name in next(reader)]
    _check_header(header, path)
    rows, lines, problems, raws = [], [], [], []
    last = reader.line_num
    for record in reader:
        start, last = last + 1, reader.line_num
        if not any(field.strip() for field in record):
            continue  # blank lines separate nothing in a CSV; they are not rows
        problem = raw = None
        if len(record) != len(header):
            problem = f"ragged row: {len(record)} fields where the header has {len(header)}"
            raw = json.dumps(record, ensure_ascii=False)  # every field, so the row can be repaired
        rows.append((record + [None] * len(header))[: len(header)])
        lines.append(start)
        problems.append(problem)
        raws.append(raw)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame[LINE] = lines
    frame[PROBLEM] = problems
    frame[RAW] = raws
    return Table(frame, encoding, sep)


def _sniff(text: str) -> str:
    """The delimiter that splits the header line into the most columns (texts below may hold any of them)."""
    header = text.split("\n", 1)[0]
    widths = {sep: len(next(csv.reader([header], delimiter=sep))) for sep in DELIMITERS}
    best = max(DELIMITERS, key=lambda sep: widths[sep])
    return best if widths[best] > 1 else ","


def _check_header(header: list[str], path: Path) -> None:
    if not any(header):
        raise DataError(f"{path}: the first line has no column names; add a header line")
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header; rename one and ingest again")
        seen.add(name)


def _read_jsonl(text: str, path: Path) -> pd.DataFrame:
    records, lines, problems = [], [], []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): JSON may hold U+2028
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = None if isinstance(record, dict) else "not a JSON object"
        except json.JSONDecodeError as err:
            record, problem = {}, f"not valid JSON ({err.msg})"
        record = record if isinstance(record, dict) else {}
        records.append({key: None if value is None else str(value) for key, value in record.items()})
        lines.append(number)
        problems.append(problem)
    if not records:
        raise DataError(f"{path}: the file has no records; export one JSON object per line")
    frame = pd.DataFrame.from_records(records).astype(object)
    frame = frame.where(frame.notna(), None)
    frame[LINE] = lines
    frame[PROBLEM] = problems
    frame[RAW] = None
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
