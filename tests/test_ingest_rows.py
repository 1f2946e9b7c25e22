"""Rows, counted and written faithfully: an unterminated quote is reported with the lines it swallowed; rows of
bare delimiters are rows; the quarantine CSV escapes cells a spreadsheet would run as formulas; the id column is
masked like the text; messages that differ only in their PII are different messages."""

from __future__ import annotations

import codecs
import csv
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import IngestParams
from tasks.errors import DataError
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
    fixed = tmp_path / "fixed.csv"  # the quarantine file with its labels corrected, ingested again
    rows = [{**row, "label": "billing"} for row in quarantined(project, report)]
    with open(fixed, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    again = ingest_batch(CFG.model_copy(update={"redact_pii": False}), LABELS, project, fixed, report.dataset)
    assert pd.read_parquet(project / again.batch)["text"].tolist() == ['=HYPERLINK("http://x")',
                                                                       "+1 555 0100 is fine"]


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


def stored(project: Path, report) -> list[str]:
    return pd.read_parquet(project / report.batch)["text"].tolist()


def test_a_nested_value_in_the_text_is_quarantined_and_elsewhere_kept_as_json(project, tmp_path):
    records = [{"id": 1, "text": {"subject": "Bill", "body": "charged twice"}, "label": "billing"},
               {"id": 2, "text": ["Parcel", "late"], "label": "delivery"},
               {"id": 3, "text": "Where is my parcel?", "label": "delivery", "channel": {"app": "ios"}}]
    cfg = CFG.model_copy(update={"metadata_columns": ["channel"]})
    report = ingest(project, tmp_path, json.dumps(records), cfg, name="nested.json")
    assert (report.rows_read, report.accepted, report.quarantined) == (3, 1, 2)
    assert [row["_reason"] for row in quarantined(project, report)] == [
        "a nested value (a JSON object or list) in column 'text', not a text; flatten it in the export"] * 2
    assert quarantined(project, report)[0]["text"] == '{"subject": "Bill", "body": "charged twice"}'
    batch = pd.read_parquet(project / report.batch)
    assert batch["text"].tolist() == ["Where is my parcel?"] and batch["channel"].tolist() == ['{"app": "ios"}']


def test_parquet_strings_stored_as_bytes_are_decoded_and_bytes_that_are_not_utf8_quarantined(project, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "hive.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": pa.array(["Café was cold".encode(), b"\xff\xfe broken"]),
                             "label": pa.array([b"delivery", b"billing"])}), source)
    report = ingest_batch(CFG, LABELS, project, source, f"rows{next(_datasets)}")
    assert stored(project, report) == ["Café was cold"]
    [row] = quarantined(project, report)
    assert row["text"] == "\\xff\\xfe broken"
    assert row["_reason"] == "bytes that are not UTF-8 in column 'text' (shown as \\xNN); export it as text"


@pytest.mark.parametrize("text, reason", [
    ("My card\x00 was charged", "NUL bytes in the text: part of the row is UTF-16 or binary; export it again as UTF-8"),
    ("Broken emoji \ud83d here", "a broken character in the text (half of an emoji or another UTF-16 pair); fix the "
                                 "text where it was written"),
], ids=["nul", "lone-surrogate"])
def test_a_text_utf8_cannot_hold_honestly_is_quarantined_and_the_rest_stored(project, tmp_path, text, reason):
    records = [{"id": 1, "text": text, "label": "billing"}, {"id": 2, "text": "Parcel is late", "label": "delivery"}]
    report = ingest(project, tmp_path, json.dumps(records), name="odd.json")
    assert stored(project, report) == ["Parcel is late"]
    [row] = quarantined(project, report)
    assert row["_reason"] == reason
    assert row["text"] == text.encode("utf-8", "backslashreplace").decode("utf-8")  # shown, so it can be fixed


def test_lines_ending_in_a_carriage_return_alone_are_rows(project, tmp_path):
    report = ingest(project, tmp_path, "id,text,label\r1,Bill is wrong,billing\r2,Parcel is late,delivery\r")
    assert stored(project, report) == ["Bill is wrong", "Parcel is late"]


def test_trailing_empty_columns_are_left_out_and_a_repeated_header_is_quarantined(project, tmp_path):
    report = ingest(project, tmp_path, "id,text,label,,\n1,Bill is wrong,billing,,\n2,Parcel is late,delivery,,\n"
                                       "id,text,label,,\n3,Refund me,billing,,\n")
    assert stored(project, report) == ["Bill is wrong", "Parcel is late", "Refund me"]
    [row] = quarantined(project, report)
    assert row["_reason"] == "the header line again (files joined together?); nothing to store"
    assert row["_source_line"] == "4"


def test_an_unnamed_column_that_holds_a_value_is_one_clear_error(project, tmp_path):
    with pytest.raises(DataError, match="column 4 holds values but has no name in the header line"):
        ingest(project, tmp_path, "id,text,label,\n1,Bill is wrong,billing,urgent\n")


def test_a_utf16_file_cut_short_is_one_clear_error(project, tmp_path):
    source = tmp_path / "cut.csv"
    source.write_bytes(codecs.BOM_UTF16_LE + "id,text,label\n1,Bill is wrong,billing\n".encode("utf-16-le") + b"x")
    with pytest.raises(DataError, match="its UTF-16 text breaks off at byte .*: the file was cut short"):
        ingest_batch(CFG, LABELS, project, source, f"rows{next(_datasets)}")


def test_a_time_without_a_date_is_no_timestamp(project, tmp_path):
    cfg = CFG.model_copy(update={"timestamp_column": "created"})
    report = ingest(project, tmp_path, "id,text,label,created\n1,Bill is wrong,billing,12:30\n"
                                       "2,Parcel is late,delivery,9:05 PM\n3,Refund me,billing,2026-01-04 10:00\n", cfg)
    assert stored(project, report) == ["Refund me"]
    assert [row["_reason"] for row in quarantined(project, report)] == ["missing or unparseable timestamp"] * 2


def test_an_excel_error_in_the_text_or_label_is_quarantined_and_elsewhere_kept(project, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in (["id", "text", "label", "note"], [1, "Bill is wrong", "billing", "#REF!"], [2, "#DIV/0!", "delivery", ""],
                [3, "Refund me", "#N/A", ""]):
        sheet.append(row)
    source = tmp_path / "errors.xlsx"
    book.save(source)
    cfg = CFG.model_copy(update={"metadata_columns": ["note"]})
    report = ingest_batch(cfg, LABELS, project, source, f"rows{next(_datasets)}")
    batch = pd.read_parquet(project / report.batch)
    assert batch["text"].tolist() == ["Bill is wrong"] and batch["note"].tolist() == ["#REF!"]
    assert [row["_reason"] for row in quarantined(project, report)] == [
        "the Excel error #DIV/0! in column 'text' (a formula that failed); fix it in the workbook",
        "the Excel error #N/A in column 'label' (a formula that failed); fix it in the workbook"]


def test_without_a_label_set_labels_written_alike_are_named_in_the_report(project, tmp_path):
    with_set = ingest(project, tmp_path, "id,text,label\n1,Bill is wrong,billing\n2,Charged twice,Billing\n"
                                         "3,Parcel is late,delivery\n4,Refund me,billing\n", CFG, name="alike.csv")
    assert with_set.accepted == 4 and with_set.alike_labels == ()  # with a label set "Billing" is billing
    without = ingest_batch(CFG, [], project, tmp_path / "alike.csv", f"rows{next(_datasets)}")
    assert without.alike_labels == ("'billing' (2 rows) and 'Billing' (1 row)",)
    assert "labels written alike, trained as different classes: 'billing' (2 rows) and 'Billing' (1 row); list " \
           "the labels in validate.labels to read each as one" in without.text()
