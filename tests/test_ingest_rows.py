"""Rows, counted and written faithfully: an unterminated quote is reported with the lines it swallowed; rows of
bare delimiters are rows; the quarantine CSV escapes cells a spreadsheet would run as formulas; the id column is
masked like the text; messages that differ only in their PII are different messages."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import IngestParams
from tasks.ingest import ingest_batch
from tests.conftest import make_project, project_params

LABELS = ["billing", "delivery"]
CFG = IngestParams(path=None, id_column="id")
_datasets = itertools.count()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One DVC project; each test ingests into a dataset of its own."""
    return make_project(tmp_path_factory.mktemp("rows") / "project", pd.DataFrame({"a": [1]}),
                        project_params("unused"))


def ingest(project: Path, tmp_path: Path, content: str, cfg: IngestParams = CFG, name: str = "export.csv"):
    source = tmp_path / name
    source.write_text(content, encoding="utf-8", newline="")
    return ingest_batch(cfg, LABELS, project, source, f"rows{next(_datasets)}")


def quarantined(project: Path, report) -> list[dict]:
    with open(project / report.quarantine, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_an_unterminated_quote_is_reported_with_the_lines_it_swallowed(project, tmp_path):
    report = ingest(project, tmp_path, 'id,text,label\n1,fine,billing\n2,"never closed,billing\n'
                                       "3,swallowed,billing\n4,swallowed too,delivery\n")
    reason = ("unterminated quote: the quote opened on line 3 takes in lines 3-5 (the end of the file) as one "
              "field; close the quote and ingest again")
    assert (report.rows_read, report.accepted, report.quarantined, report.reasons) == (2, 1, 1, {reason: 1})
    [row] = quarantined(project, report)
    assert (row["id"], row["_source_line"], row["_reason"]) == ("2", "3", reason)
    assert "swallowed too" in row["text"]  # nothing the quote took in is lost


def test_a_quote_closed_rows_later_is_reported_even_when_the_fields_count_fits(project, tmp_path):
    report = ingest(project, tmp_path, 'id,text,label\n1,"opened here,billing\n2,fine,billing\n'
                                       '3,"quoted",billing\n4,after,delivery\n')
    [row] = quarantined(project, report)
    assert row["_reason"].startswith("unterminated quote: the quote opened on line 2 takes in lines 2-4 as one field")
    assert report.rows_read == report.accepted + report.quarantined == 2


def test_rows_of_bare_delimiters_are_counted_and_quarantined(project, tmp_path):
    report = ingest(project, tmp_path, "id,text,label\n1,hello,billing\n,,\n\n  \n,,\n2,bye,delivery\n")
    assert (report.rows_read, report.accepted, report.quarantined) == (4, 2, 2)
    assert [(row["_source_line"], row["_reason"]) for row in quarantined(project, report)] == [
        ("3", "empty text"), ("6", "empty text")]


def test_the_quarantine_file_escapes_formula_cells_as_predict_does(project, tmp_path):
    report = ingest(project, tmp_path, 'id,text,label,note\n1,"=HYPERLINK(""http://x"")",junk,@SUM(A1)\n'
                                       "2,+1 555 0100 is fine,junk,-3.5\n3,kept,billing,=1+1\n",
                    CFG.model_copy(update={"redact_pii": False}))
    rows = quarantined(project, report)
    assert [(row["text"], row["note"]) for row in rows] == [
        ("'=HYPERLINK(\"http://x\")", "'@SUM(A1)"), ("'+1 555 0100 is fine", "-3.5")]
    stored = pd.read_parquet(project / report.batch)
    assert stored["text"].tolist() == ["kept"]  # the stored batch keeps the text as given


def test_messages_that_differ_only_in_their_email_are_three_rows(project, tmp_path):
    report = ingest(project, tmp_path, "id,text,label\n1,please mail me at ann@example.com,billing\n"
                                       "2,please mail me at bob@example.com,billing\n"
                                       "3,please mail me at cy@example.org,billing\n"
                                       "4,please mail me at ann@example.com,billing\n")
    assert (report.accepted, report.quarantined, report.reasons) == (3, 1, {"exact duplicate": 1})
    assert pd.read_parquet(project / report.batch)["text"].tolist() == ["please mail me at [EMAIL]"] * 3
    assert quarantined(project, report)[0]["id"] == "4"


def test_the_same_email_text_in_a_later_batch_is_still_a_duplicate(project, tmp_path):
    first = ingest(project, tmp_path, "id,text,label\n1,write to ann@example.com,billing\n", name="one.csv")
    dataset = first.dataset
    source = tmp_path / "two.csv"
    source.write_text("id,text,label\n2,write to  ann@example.com,delivery\n3,write to bob@example.com,billing\n")
    second = ingest_batch(CFG, LABELS, project, source, dataset)
    assert second.reasons == {"same text already labeled differently": 1} and second.accepted == 1
    stored = pd.read_parquet(project / second.batch)
    assert stored["id"].tolist() == ["3"]
    assert not stored.astype(str).apply(lambda column: column.str.contains("example.com")).any().any()


def test_an_id_column_holding_pii_is_masked_and_ten_digit_ticket_numbers_are_kept(project, tmp_path):
    report = ingest(project, tmp_path, "id,text,label\nann@example.com,my parcel is late,delivery\n"
                                       "4111 1111 1111 1111,charged twice,billing\n2125550100,where is it,delivery\n"
                                       "+44 20 7946 0958,junk row,junk\n")
    stored = pd.read_parquet(project / report.batch)
    assert stored["id"].tolist() == ["[EMAIL]", "[CARD]", "2125550100"]
    assert quarantined(project, report)[0]["id"] == "[PHONE]"
    assert report.pii_redacted == {"email": 1, "card": 1, "phone": 1}
