"""Property: whatever rows an export holds, ingest_batch neither loses nor duplicates one. Every generated row
is either stored or quarantined (exactly once, matched on its source line), the counts add up, and no two
stored rows share a normalised text. A small reference model says which rows must be accepted."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from ftfy import fix_encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.ingest import ingest_batch
from tasks.pii import redact
from tests.conftest import make_project, project_params

pytestmark = pytest.mark.slow  # 25 generated exports per test, each ingested into a DVC repository

LABELS = ["billing", "delivery"]
MAX_CHARS = 60
CFG = IngestParams(path=None, id_column="row", max_text_chars=MAX_CHARS)  # the delimiter is sniffed

# Texts made to break naive CSV/JSON handling: separators, quotes, newlines, emoji, blanks and empties.
TRICKY = st.sampled_from([",", ";", "|", "\t", '"', "'", "\n", "\r\n", "\r", " ", "  ", "é", "£", "🙂", "👩‍💻",
                          "\u00a0", "\\", "a", "b", "#", "=", "0", "7"])
TEXTS = st.one_of(
    st.sampled_from(["", " ", "   ", "\n", "\t \n", "same text", "same  text ", "Same text"]),  # blank, near-duplicate
    st.lists(TRICKY, max_size=12).map("".join),
    st.text(max_size=40),
    st.text(min_size=MAX_CHARS - 2, max_size=MAX_CHARS + 3, alphabet="xy "),  # around the length limit
)
LABEL_VALUES = st.sampled_from(["billing", "delivery", "Billing", " delivery ", "BILLING", "", "  ", "junk",
                                "bill ing", "🙂", "Delivery_", "de-livery"])


@st.composite
def export_rows(draw) -> list[tuple[str, str]]:
    """(text, label) rows; duplicates are likely: a few extra rows copy earlier ones."""
    rows = draw(st.lists(st.tuples(TEXTS, LABEL_VALUES), min_size=1, max_size=25))
    return rows + draw(st.lists(st.sampled_from(rows), max_size=5))


ROWS = export_rows()
SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
_names = itertools.count()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One DVC project for every example; each example ingests into a dataset of its own."""
    return make_project(tmp_path_factory.mktemp("properties") / "project", pd.DataFrame({"a": [1]}),
                        project_params("unused"))


def expected_outcome(rows: list[tuple[str, str]]) -> dict[int, str | None]:
    """Reference model: row number -> reason it is quarantined (None: accepted)."""
    # neither case nor a separator at either end changes a label; one inside a word does ("bill ing", "de-livery")
    canonical = {label: label for label in LABELS}
    seen: dict[str, str] = {}
    outcome: dict[int, str | None] = {}
    for number, (text, label) in enumerate(rows):
        text = repaired(text)
        clean = redact(text.strip())[0]
        label = canonical.get(label.strip().strip("_-").casefold(), label.strip())
        key = " ".join(text.split())  # duplicates are judged on the text as given (repaired), before PII masking
        if not clean:
            outcome[number] = "empty text"
        elif not label:
            outcome[number] = "missing label"
        elif "\x00" in clean:
            outcome[number] = "NUL bytes in the text: part of the row is UTF-16 or binary; export it again as UTF-8"
        elif label not in LABELS:
            outcome[number] = "label outside the label set"
        elif len(clean) > MAX_CHARS:
            outcome[number] = f"text over {MAX_CHARS} characters"
        elif key in seen:
            outcome[number] = "exact duplicate" if seen[key] == label else "same text already labeled differently"
        else:
            seen[key] = label
            outcome[number] = None
    return outcome


def repaired(text: str) -> str:
    """The text with mojibake undone, as ingest.repair_encoding does (a C1 control such as \\x80 is cp1252's €
    read as Latin-1)."""
    return text if text.isascii() else fix_encoding(text)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> list[int]:
    """The rows as the csv module writes them; returns the line each row starts on (the header is line 1)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["row", "text", "label"])
    starts, line = [], 2
    for number, (text, label) in enumerate(rows):
        record = io.StringIO(newline="")
        csv.writer(record).writerow([number, text, label])
        starts.append(line)
        line += len(io.StringIO(record.getvalue(), newline="").readlines())
        buffer.write(record.getvalue())
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    return starts


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> list[int]:
    path.write_text("".join(json.dumps({"row": number, "text": text, "label": label}) + "\n"
                            for number, (text, label) in enumerate(rows)), encoding="utf-8")
    return list(range(1, len(rows) + 1))


def read_quarantine(path: Path) -> pd.DataFrame:
    """The quarantine file as any CSV reader sees it (the csv module, as nichetune itself reads CSV)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return pd.DataFrame(list(csv.DictReader(handle)), dtype=object)


def check_nothing_lost(root: Path, rows: list[tuple[str, str]], suffix: str, writer) -> None:
    dataset = f"prop{next(_names)}"
    source = root / "inputs" / f"{dataset}.{suffix}"
    source.parent.mkdir(exist_ok=True)
    starts = writer(source, rows)
    expected = expected_outcome(rows)
    try:
        report = ingest_batch(CFG, LABELS, root, source, dataset)
    except DataError as err:  # every row rejected: the quarantine file still holds them all
        assert all(reason is not None for reason in expected.values()), str(err)
        assert f"every one of {len(rows)} rows was rejected" in str(err)
        report = None
    stored_files = list((root / "data" / "raw" / dataset).glob("*.parquet"))
    quarantine_files = list((root / "data" / "quarantine" / dataset).glob("*.csv"))
    stored = (pd.read_parquet(stored_files[0]) if stored_files
              else pd.DataFrame(columns=["id", "text", "label", "_source_line"]))
    quarantined = (read_quarantine(quarantine_files[0]) if quarantine_files
                   else pd.DataFrame(columns=["row", "_source_line", "_reason"]))
    if report is not None:
        assert report.rows_read == len(rows) == report.accepted + report.quarantined
        assert (report.accepted, report.quarantined) == (len(stored), len(quarantined))
    assert len(stored) + len(quarantined) == len(rows)

    # every generated row exactly once, matched on its source line (and its own row number)
    lines = [int(line) for line in stored["_source_line"]] + [int(line) for line in quarantined["_source_line"]]
    assert sorted(lines) == starts
    by_line = {start: number for number, start in enumerate(starts)}
    for frame, column, accepted in ((stored, "id", True), (quarantined, "row", False)):
        for row, line in zip(frame[column], frame["_source_line"]):
            number = by_line[int(line)]
            assert int(row) == number
            assert (expected[number] is None) == accepted, (rows[number], expected[number])
    for row, reason in zip(quarantined["row"], quarantined["_reason"]):
        assert reason == expected[int(row)], rows[int(row)]

    # stored texts are the repaired, stripped, redacted originals, and no two share a normalised text
    for row, text in zip(stored["id"], stored["text"]):
        assert text == redact(repaired(rows[int(row)][0]).strip())[0]
    keys = [" ".join(repaired(rows[int(row)][0]).split()) for row in stored["id"]]
    assert len(keys) == len(set(keys))
    assert set(stored["label"]) <= set(LABELS)


@SETTINGS
@given(rows=ROWS)
def test_csv_ingest_never_loses_or_duplicates_a_row(project, rows):
    check_nothing_lost(project, rows, "csv", write_csv)


@SETTINGS
@given(rows=ROWS)
def test_jsonl_ingest_never_loses_or_duplicates_a_row(project, rows):
    check_nothing_lost(project, rows, "jsonl", write_jsonl)
