"""ingest_batch and assemble: an export becomes an immutable, DVC-versioned batch; unusable rows go to quarantine
with their source line and reason; nothing is lost; PII never reaches a written file; the pipeline assembles
every stored batch."""

from __future__ import annotations

import csv
import json
import re
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks import ingest
from tasks.config import IngestParams, ValidateParams
from tasks.errors import DataError
from tasks.ingest import ALREADY_STORED, assemble, ingest_batch
from tests.conftest import cfpb_sample, make_project, project_params

LABELS = ValidateParams(labels=["account_access", "billing", "delivery"]).labels
CFG = IngestParams(dataset="support", path=None, text_column="message", label_column="topic",
                   timestamp_column="created_at", id_column="message_id", metadata_columns=["channel"],
                   max_text_chars=200)
HEADER = "message_id,message,topic,created_at,channel\n"


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh git + DVC project (local directory remote) holding real CFPB rows as data/labeled.csv."""
    return make_project(tmp_path / "project", cfpb_sample(per_class=3), project_params("unused"))


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / "exports" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def read_csv_rows(path: Path) -> list[dict]:
    """A CSV as the csv module reads it: every value a string."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def stored(root: Path, report) -> pd.DataFrame:
    return pd.read_parquet(root / report.batch)


def quarantined(root: Path, report) -> list[dict]:
    return read_csv_rows(root / report.quarantine)


def dvc_record(root: Path, folder: str) -> dict:
    return yaml.safe_load((root / f"{folder}.dvc").read_text())["outs"][0]


# --- counts and the printed report -------------------------------------------------------------------------------

def test_real_rows_are_all_accepted_and_the_counts_add_up(project):
    """The CFPB rows make_project wrote, with the columns project_params maps."""
    cfg = IngestParams(**project_params("unused")["ingest"])
    source = project / "data" / "labeled.csv"
    report = ingest_batch(cfg, [], project, source)
    sample = cfpb_sample(per_class=3)
    assert (report.rows_read, report.accepted, report.quarantined) == (len(sample), len(sample), 0)
    assert report.dataset == "complaints" and report.quarantine is None and report.encoding == "utf-8"
    frame = stored(project, report)
    assert frame["text"].tolist() == [text.strip() for text in sample["text"]]  # no PII pattern in these rows
    assert frame["id"].tolist() == [str(value) for value in sample["complaint_id"]]
    assert frame["label"].tolist() == sample["issue"].tolist()
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert report.text().splitlines()[0] == (f"{source}: {len(sample)} rows read = {len(sample)} accepted + "
                                             f"0 quarantined (decoded as utf-8)")


def test_rows_read_equals_accepted_plus_quarantined_and_the_report_says_so(project):
    source = write(project, "mixed.csv", HEADER + "".join(
        f"m{i},message number {i},{'billing' if i % 3 else 'refunds'},2023-01-0{1 + i % 9},chat\n"
        for i in range(30)
    ))
    report = ingest_batch(CFG, LABELS, project, source)
    assert report.rows_read == 30 == report.accepted + report.quarantined
    assert (report.accepted, report.quarantined) == (20, 10)
    assert len(stored(project, report)) == 20 and len(quarantined(project, report)) == 10
    lines = report.text().splitlines()
    assert lines[0] == f"{source}: 30 rows read = 20 accepted + 10 quarantined (decoded as utf-8)"
    assert "  quarantined, label outside the label set: 10" in lines
    assert f"  stored: {report.batch}" in lines and f"  quarantine: {report.quarantine}" in lines
    assert f"dataset support is now DVC version {report.data_version}" in lines[-1]
    assert "git add data/raw/support.dvc data/raw/.gitignore data/quarantine/support.dvc" in lines[-1]


# --- each quarantine reason, with the right source line --------------------------------------------------------

REASONS_FILE = (
    HEADER
    + 'm1,"my card was charged twice\nand nobody answers",Billing,2023-01-02T10:00:00Z,email\n'  # lines 2-3
    + "m2,,billing,2023-01-02,chat\n"  # 4
    + "m3,   ,billing,2023-01-02,chat\n"  # 5
    + "m4,where is my parcel,,2023-01-02,chat\n"  # 6
    + "m5,the parcel is late,delivery,next tuesday,chat\n"  # 7
    + "m6,the parcel is very late,delivery,,chat\n"  # 8
    + "m7,cannot log in,refunds,2023-01-02,chat\n"  # 9
    + "m8," + "x" * 201 + ",billing,2023-01-02,chat\n"  # 10
    + 'm9,"my card was  charged twice\n\nand nobody answers ",billing,2023-01-03,chat\n'  # 11-13
    + "m10,my card was charged twice and nobody answers,delivery,2023-01-03,chat\n"  # 14
    + "m11,short row,billing\n"  # 15
    + "m12,too,many,fields,2023-01-03,chat\n"  # 16
    + "\n"  # 17: a blank line is not a row
    + 'm13,"a row with ""quotes"" and, commas",delivery,2023-01-03,email\n'  # 18
    + "m14," + "y" * 200 + ",account_access,2023-01-04,chat\n"  # 19: exactly at the limit
)
EXPECTED_REASONS = {
    "m2": (4, "empty text"),
    "m3": (5, "empty text"),
    "m4": (6, "missing label"),
    "m5": (7, "missing or unparseable timestamp"),
    "m6": (8, "missing or unparseable timestamp"),
    "m7": (9, "label outside the label set"),
    "m8": (10, "text over 200 characters"),
    "m9": (11, "exact duplicate"),
    "m10": (14, "same text already labeled differently"),
    "m11": (15, "ragged row: 3 fields where the header has 5"),
    "m12": (16, "ragged row: 6 fields where the header has 5"),
}


def test_each_reason_is_quarantined_with_its_source_line(project):
    source = write(project, "reasons.csv", REASONS_FILE)
    report = ingest_batch(CFG, LABELS, project, source)
    rows = quarantined(project, report)
    assert {row["message_id"]: (int(row["_source_line"]), row["_reason"]) for row in rows} == EXPECTED_REASONS
    accepted = stored(project, report)
    assert dict(zip(accepted["id"], accepted["_source_line"])) == {"m1": 2, "m13": 18, "m14": 19}
    assert report.rows_read == 14 == report.accepted + report.quarantined
    assert report.reasons == {"empty text": 2, "missing label": 1, "missing or unparseable timestamp": 2,
                              "label outside the label set": 1, "text over 200 characters": 1,
                              "exact duplicate": 1, "same text already labeled differently": 1,
                              "ragged row: 3 fields where the header has 5": 1,
                              "ragged row: 6 fields where the header has 5": 1}
    for reason, count in report.reasons.items():
        assert f"  quarantined, {reason}: {count}" in report.text().splitlines()


def test_the_quarantine_file_holds_the_original_columns_file_line_and_reason(project):
    source = write(project, "extra.csv", "message_id,message,topic,created_at,channel,notes\n"
                                         "m1,fine row,billing,2023-01-02,chat,kept\n"
                                         "m2,odd label,Refunds,2023-01-02,chat,also kept\n")
    report = ingest_batch(CFG, LABELS, project, source)
    with open(project / report.quarantine, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == ["message_id", "message", "topic", "created_at", "channel", "notes",
                      "_source_file", "_source_line", "_reason"]
    assert quarantined(project, report) == [{
        "message_id": "m2", "message": "odd label", "topic": "Refunds", "created_at": "2023-01-02",
        "channel": "chat", "notes": "also kept", "_source_file": source.name, "_source_line": "3",
        "_reason": "label outside the label set",
    }]
    assert report.quarantine == f"data/quarantine/support/{Path(report.batch).stem}.csv"


def test_duplicates_and_conflicts_are_found_against_an_earlier_batch(project):
    first = ingest_batch(CFG, LABELS, project, write(project, "first.csv", HEADER + (
        "a1,the parcel never arrived,delivery,2023-01-01,chat\n"
        "a2,I was billed twice,billing,2023-01-01,chat\n")))
    assert first.accepted == 2
    second = ingest_batch(CFG, LABELS, project, write(project, "second.csv", HEADER + (
        "b1,  the parcel   never arrived ,Delivery,2023-02-01,email\n"  # same text and label: stored already
        "b2,I was billed twice,account_access,2023-02-01,email\n"  # same text, another label: a conflict
        "b3,The parcel never arrived,delivery,2023-02-01,email\n")))  # case differs: a new text
    assert {row["message_id"]: (row["_source_line"], row["_reason"]) for row in quarantined(project, second)} == {
        "b1": ("2", ALREADY_STORED), "b2": ("3", "same text already labeled differently")}
    assert stored(project, second)["id"].tolist() == ["b3"]


def test_a_label_written_with_spaces_or_hyphens_is_the_known_label_and_others_are_named_with_the_closest(project):
    source = write(project, "labels.csv", HEADER + (
        "m1,cannot log in,Account access,2023-01-02,email\n"
        "m2,locked out again,account-access,2023-01-03,chat\n"
        "m3,refund my order,refunds,2023-01-04,chat\n"
        "m4,refund it now,refunds,2023-01-05,chat\n"
        "m5,where is it,deliverry,2023-01-06,chat\n"))
    report = ingest_batch(CFG, LABELS, project, source)
    assert stored(project, report)["label"].tolist() == ["account_access", "account_access"]
    assert report.reasons == {"label outside the label set": 3}
    assert report.unknown_labels == ("'refunds' (2 rows)", "'deliverry' (1 row; closest known: delivery)")
    assert ("    'refunds' (2 rows), 'deliverry' (1 row; closest known: delivery): correct them in the export, or add "
            "them to validate.labels in params.yaml and ingest the file again") in report.text().splitlines()


def test_a_label_column_holding_texts_is_reported_in_short(project):
    long_label = "write to jo@example.com: my order arrived broken and nobody answers"
    source = write(project, "texts.csv", HEADER + f"m1,broken,{long_label},2023-01-02,email\n"
                   "m2,cannot log in,account access,2023-01-03,chat\n")
    report = ingest_batch(CFG, LABELS, project, source)
    assert report.unknown_labels == ("'write to [EMAIL]: my order arrived brok…' (1 row)",)
    every = write(project, "every.csv", HEADER + f"m1,broken,{long_label},2023-01-02,email\n")
    with pytest.raises(DataError, match=r"every one of 1 rows was rejected .*reasons: label outside the label set "
                       r"\(1\); labels outside validate.labels: 'write to \[EMAIL\]: .*…' \(1 row\) \(is "
                       r"ingest.label_column 'topic' the column of labels\?\)$"):
        ingest_batch(CFG, LABELS, project, every)


def test_a_written_form_two_known_labels_share_names_neither():
    from tasks.ingest import label_form, label_forms

    forms = label_forms(["account_access", "account-access", "billing"])
    assert label_form("Account access") not in forms and forms[label_form(" BILLING ")] == "billing"


def test_ids_metadata_and_canonical_label_case_are_stored(project):
    source = write(project, "case.csv", HEADER + (
        "m1,  charged twice for one order ,Billing,2023-01-02T10:00:00+02:00,email\n"
        "m2,my parcel is lost, DELIVERY ,2023-01-03,\n"
        "m3,cannot reset my password,Account_Access,2023-01-04,chat\n"))
    report = ingest_batch(CFG, LABELS, project, source)
    frame = stored(project, report)
    assert list(frame.columns) == ["text", "label", "timestamp", "id", "channel", "_text_key", "_source_line",
                                   "_source_file", "_batch"]
    assert frame["label"].tolist() == ["billing", "delivery", "account_access"]
    assert frame["id"].tolist() == ["m1", "m2", "m3"]
    assert frame["channel"].tolist() == ["email", "", "chat"]
    assert frame["text"].tolist() == ["charged twice for one order", "my parcel is lost", "cannot reset my password"]
    assert frame["timestamp"].tolist() == pd.to_datetime(["2023-01-02T08:00:00Z", "2023-01-03", "2023-01-04"],
                                                         utc=True, format="ISO8601").tolist()
    assert set(frame["_batch"]) == {Path(report.batch).stem}
    assert set(frame["_source_file"]) == {source.name}


def test_an_empty_label_set_accepts_any_label(project):
    source = write(project, "any.csv", "text,label\nfirst,Anything\nsecond,else\n")
    report = ingest_batch(IngestParams(path=None, dataset="free"), [], project, source)
    assert stored(project, report)["label"].tolist() == ["Anything", "else"]


# --- PII ------------------------------------------------------------------------------------------------------

PII = {
    "email": "jane.doe@example.com",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "account": "87654321",
}
PII_CFG = IngestParams(dataset="pii", path=None, id_column="id", metadata_columns=["agent"])


def pii_export(project: Path) -> Path:
    return write(project, "pii.csv", (
        "id,text,label,agent,notes\n"
        f"1,write to {PII['email']} or call {PII['phone']},billing,ops@example.org,none\n"
        f"2,my card {PII['card']} was charged,billing,bob,call 020 7946 0123\n"
        f"3,refund to {PII['iban']} please,billing,bob,\n"
        f"4,my account number {PII['account']} is locked,account_access,bob,\n"
        f"5,mail {PII['email']} about it,refunds,carol,card 5500 0000 0000 0004\n"  # quarantined: unknown label
    ))


def all_written_bytes(project: Path) -> list[tuple[Path, bytes]]:
    """Every file ingest may have written: the batches, quarantine, DVC cache and the remote."""
    places = [project / "data" / "raw", project / "data" / "quarantine", project / ".dvc" / "cache",
              project.parent / f"{project.name}-remote"]
    return [(path, path.read_bytes()) for place in places for path in place.rglob("*") if path.is_file()]


def test_pii_is_redacted_in_stored_and_quarantined_rows_before_anything_is_written(project):
    report = ingest_batch(PII_CFG, LABELS, project, pii_export(project))
    frame = stored(project, report)
    assert frame["text"].tolist() == [
        "write to [EMAIL] or call [PHONE]", "my card [CARD] was charged", "refund to [IBAN] please",
        "my account number [ACCOUNT] is locked"]
    assert frame["agent"].tolist() == ["[EMAIL]", "bob", "bob", "bob"]  # metadata too
    [row] = quarantined(project, report)
    assert (row["text"], row["agent"], row["notes"]) == ("mail [EMAIL] about it", "carol", "card [CARD]")
    assert report.pii_redacted == {"email": 3, "phone": 1, "card": 2, "iban": 1, "account": 1}
    assert "  PII redacted: account 1, card 2, email 3, iban 1, phone 1" in report.text().splitlines()

    raw_values = [*PII.values(), "ops@example.org", "5500 0000 0000 0004"]
    written = all_written_bytes(project)
    assert any(path.suffix == ".parquet" for path, _ in written) and any(path.suffix == ".csv" for path, _ in written)
    for path, content in written:
        for value in raw_values:
            assert value.encode() not in content, (value, path)
        if content.startswith(b"PAR1"):  # compressed pages: look at the values too
            text = pd.read_parquet(path).astype(str).to_string()
            assert not any(value in text for value in raw_values), path


def test_with_redact_pii_false_nothing_is_changed(project):
    cfg = PII_CFG.model_copy(update={"redact_pii": False, "dataset": "raw-pii"})
    report = ingest_batch(cfg, LABELS, project, pii_export(project))
    frame = stored(project, report)
    assert frame["text"].tolist()[0] == f"write to {PII['email']} or call {PII['phone']}"
    assert frame["agent"].tolist()[0] == "ops@example.org"
    assert quarantined(project, report)[0]["notes"] == "card 5500 0000 0000 0004"
    assert report.pii_redacted == {} and "PII" not in report.text()


# --- the same file twice, DVC versions, immutable batches -------------------------------------------------------

def test_the_same_bytes_ingested_twice_store_nothing_new(project):
    source = write(project, "once.csv", HEADER + "m1,hello there,billing,2023-01-02,chat\n"
                                                 "m2,odd,refunds,2023-01-02,chat\n")
    first = ingest_batch(CFG, LABELS, project, source)
    record = dvc_record(project, "data/raw/support")
    again = ingest_batch(CFG, LABELS, project, source)
    copy = write(project, "renamed-copy.csv", source.read_bytes())
    renamed = ingest_batch(CFG, LABELS, project, copy)
    for report, path in ((again, source), (renamed, copy)):
        assert report.already_ingested_as == first.batch
        assert (report.rows_read, report.seen_before, report.accepted, report.quarantined, report.batch) == (
            2, 2, 0, 0, None)
        assert report.text() == f"{path}: already ingested as {first.batch}; nothing added"
    assert len(list((project / "data" / "raw" / "support").iterdir())) == 1
    assert len(list((project / "data" / "quarantine" / "support").iterdir())) == 1
    assert dvc_record(project, "data/raw/support") == record


def test_a_new_batch_changes_the_dvc_version_and_reaches_the_remote(project):
    first = ingest_batch(CFG, LABELS, project, write(project, "one.csv", HEADER + "m1,first,billing,2023-01-01,\n"))
    second = ingest_batch(CFG, LABELS, project, write(project, "two.csv", HEADER + "m2,second,billing,2023-01-02,\n"))
    assert first.data_version and second.data_version and first.data_version != second.data_version
    record = dvc_record(project, "data/raw/support")
    assert record["md5"] == second.data_version and record["nfiles"] == 2
    remote = project.parent / "project-remote" / "files" / "md5"
    md5 = second.data_version
    listing = json.loads((remote / md5[:2] / md5[2:]).read_text())  # the pushed directory listing
    assert sorted(entry["relpath"] for entry in listing) == sorted([Path(first.batch).name, Path(second.batch).name])
    for entry in listing:
        pushed = remote / entry["md5"][:2] / entry["md5"][2:]
        assert pushed.read_bytes() == (project / "data" / "raw" / "support" / entry["relpath"]).read_bytes()
    assert "/support" in (project / "data" / "raw" / ".gitignore").read_text().split()
    assert ingest.versioning.folder_version(project, "data/raw/support")["tracked"] is True


def test_a_fresh_clone_pulls_the_stored_batches_before_adding_one(project, tmp_path):
    import subprocess

    first = ingest_batch(CFG, LABELS, project, write(project, "one.csv", HEADER + "m1,first,billing,2023-01-01,\n"))
    git = lambda *args, cwd=project: subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)  # noqa: E731
    git("add", "data")
    git("commit", "-q", "-m", "the first batch")
    clone = tmp_path / "clone"
    git("clone", "-q", str(project), str(clone))
    assert not (clone / "data" / "raw" / "support").exists()  # only the record travels with git
    second = ingest_batch(CFG, LABELS, clone, write(clone, "two.csv", HEADER + "m2,second,billing,2023-01-02,\n"))
    record = dvc_record(clone, "data/raw/support")
    assert record["md5"] == second.data_version and record["nfiles"] == 2  # the first batch is still named
    assert sorted(path.name for path in (clone / "data" / "raw" / "support").iterdir()) == sorted(
        [Path(first.batch).name, Path(second.batch).name])


def test_batch_files_are_read_only_and_never_rewritten(project):
    first = ingest_batch(CFG, LABELS, project, write(project, "one.csv", HEADER + "m1,first,billing,2023-01-01,\n"
                                                                                  "m2,second,junk,2023-01-01,\n"))
    files = [project / first.batch, project / first.quarantine]
    before = [(path.read_bytes(), path.stat().st_mtime_ns) for path in files]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path
    ingest_batch(CFG, LABELS, project, write(project, "two.csv", HEADER + "m3,third,billing,2023-01-02,\n"
                                                                          "m4,first,billing,2023-01-02,\n"))
    assert [(path.read_bytes(), path.stat().st_mtime_ns) for path in files] == before
    with pytest.raises(DataError, match="already exists and batches are never rewritten"):
        ingest._write_once(project / first.batch, pd.DataFrame({"text": ["x"]}), "parquet")
    assert not list((project / "data" / "raw" / "support").glob(".*.tmp"))


# --- errors: one line naming the file ---------------------------------------------------------------------------

def one_line_error(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name, content, expected", [
    ("header-only.csv", HEADER, "the file has a header but no rows; export the labeled rows too"),
    ("header-and-blank-lines.csv", HEADER + "\n\n", "the file has a header but no rows; export the labeled rows too"),
    ("missing.csv", "message_id,message,created_at,channel\nm1,hello,2023-01-01,chat\n",
     "column(s) 'topic' not found; the file has 'message_id', 'message', 'created_at', 'channel'; "
     "set ingest.*_column in params.yaml"),
    ("twice.csv", "message_id,message,topic,topic,created_at,channel\nm1,a,billing,billing,2023-01-01,chat\n",
     "column 'topic' appears twice in the header; rename one and ingest again"),
])
def test_unusable_files_are_one_line_data_errors_naming_the_file(project, name, content, expected):
    source = write(project, name, content)
    message = one_line_error(lambda: ingest_batch(CFG, LABELS, project, source))
    assert message == f"{source}: {expected}"
    assert not (project / "data" / "raw" / "support").exists()


def test_a_missing_file_is_a_data_error(project):
    source = project / "exports" / "absent.csv"
    assert one_line_error(lambda: ingest_batch(CFG, LABELS, project, source)) == f"{source}: file not found"


def test_a_folder_that_is_not_a_dvc_project_is_a_data_error(tmp_path):
    source = write(tmp_path, "rows.csv", HEADER + "m1,hello,billing,2023-01-01,chat\n")
    message = one_line_error(lambda: ingest_batch(CFG, LABELS, tmp_path, source))
    assert message.startswith(f"{tmp_path}: not a DVC project")
    assert not (tmp_path / "data").exists()


def test_every_row_rejected_is_a_data_error_and_the_quarantine_is_still_written(project):
    source = write(project, "all-bad.csv", HEADER + "m1,hello,refunds,2023-01-01,chat\n"
                                                    "m2,,billing,2023-01-01,chat\n"
                                                    "m3,again,refunds,2023-01-01,chat\n")
    message = one_line_error(lambda: ingest_batch(CFG, LABELS, project, source))
    [quarantine] = (project / "data" / "quarantine" / "support").glob("*.csv")
    relative = quarantine.relative_to(project)
    assert message == (f"{source}: every one of 3 rows was rejected (see {relative}); "
                       "reasons: label outside the label set (2); empty text (1); labels outside validate.labels: "
                       "'refunds' (2 rows) (correct them in the export, or add them to validate.labels)")
    assert [row["_reason"] for row in read_csv_rows(quarantine)] == [
        "label outside the label set", "empty text", "label outside the label set"]
    assert dvc_record(project, "data/quarantine/support")["nfiles"] == 1
    assert not (project / "data" / "raw" / "support").exists()


# --- dates as spreadsheets write them ----------------------------------------------------------------------------

def dated(project: Path, name: str, *dates: str) -> Path:
    return write(project, name, HEADER + "".join(f"d{i},parcel {name} {i} is late,delivery,{date},chat\n"
                                                  for i, date in enumerate(dates)))


def test_numeric_dates_are_read_in_the_order_the_files_own_dates_show(project):
    """A European export: 13/09 can only start with its day, so 07/09 is 7 September, not 9 July (the mixed
    parser alone read each date by itself, month first where it could)."""
    report = ingest_batch(CFG, LABELS, project, dated(project, "eu.csv", "07/09/2026 10:15", "13/09/2026", "7.9.26"))
    assert stored(project, report)["timestamp"].tolist() == pd.to_datetime(
        ["2026-09-07 10:15", "2026-09-13 00:00", "2026-09-07 00:00"], utc=True).tolist()
    report = ingest_batch(CFG, LABELS, project, dated(project, "us.csv", "07/09/2025", "09/13/2025"))
    assert stored(project, report)["timestamp"].tolist() == pd.to_datetime(["2025-07-09", "2025-09-13"],
                                                                          utc=True).tolist()


def test_dates_that_read_either_way_stop_the_ingest_with_one_line_and_store_nothing(project):
    source = dated(project, "unclear.csv", "2026-09-01", "07/09/2026", "03/04/2026")
    message = one_line_error(lambda: ingest_batch(CFG, LABELS, project, source))
    assert message == (f"{source}: column 'created_at': dates such as '07/09/2026' (2 in the file) read as day/month "
                       "or month/day alike, and none tells which; set ingest.date_order: day_first or month_first")
    assert not (project / "data" / "raw" / "support").exists()
    both = dated(project, "both.csv", "13/09/2026", "09/14/2026")
    assert "dates in both orders, '13/09/2026' (day first) and '09/14/2026' (month first)" in one_line_error(
        lambda: ingest_batch(CFG, LABELS, project, both))


def test_a_number_over_31_says_nothing_about_the_order_and_does_not_parse():
    parsed = ingest.parse_timestamps(pd.Series(["45/12/2026", "09/13/2026", "07/09/2026"]), "auto", "f: column 'c'")
    assert parsed.tolist() == [pd.NaT, pd.Timestamp("2026-09-13", tz="UTC"), pd.Timestamp("2026-07-09", tz="UTC")]


def test_with_a_date_order_set_a_date_impossible_in_it_is_quarantined_not_swapped(project):
    cfg = CFG.model_copy(update={"date_order": "month_first"})
    report = ingest_batch(cfg, LABELS, project, dated(project, "set.csv", "07/09/2026", "13/09/2026"))
    assert stored(project, report)["timestamp"].tolist() == [pd.Timestamp("2026-07-09", tz="UTC")]
    assert [(row["created_at"], row["_reason"]) for row in quarantined(project, report)] == [
        ("13/09/2026", "missing or unparseable timestamp")]


# --- text an earlier system decoded wrong ----------------------------------------------------------------------

# real: a review of the Amazon counterfactual training split (EN_train.tsv) holds "Chaiâ€™s Choice" for "Chai’s Choice"
MOJIBAKE = [("Equal in quality with the Chaiâ€™s Choice", "Equal in quality with the Chai’s Choice"),
            ("Lieferung nach KÃ¶ln fehlt", "Lieferung nach Köln fehlt")]


def test_mojibake_is_repaired_counted_and_the_right_text_later_is_the_same_row(project):
    legit = "Paket beschädigt: café « naïve » – ok"  # accented text a right decoding gives stays as it is
    rows = [f"m{i},{text},delivery,2026-10-01,chat\n" for i, (text, _) in enumerate(MOJIBAKE)]
    source = write(project, "wrong.csv", HEADER + "".join(rows) + f"m9,{legit},delivery,2026-10-01,chat\n")
    report = ingest_batch(CFG, LABELS, project, source)
    assert stored(project, report)["text"].tolist() == [right for _, right in MOJIBAKE] + [legit]
    assert "  text repaired, decoded wrong by an earlier system (KÃ¶ln for Köln): 2 (lines 2, 3)" in report.text()
    again = write(project, "right.csv", HEADER + "".join(f"r{i},{right},delivery,2026-10-01,chat\n"
                                                        for i, (_, right) in enumerate(MOJIBAKE)))
    with pytest.raises(DataError, match="already stored by an earlier batch \\(2\\)"):
        ingest_batch(CFG, LABELS, project, again)


def test_with_repair_encoding_false_the_text_is_stored_as_given(project):
    cfg = CFG.model_copy(update={"repair_encoding": False})
    report = ingest_batch(cfg, LABELS, project, write(project, "as-given.csv", HEADER + "".join(
        f"m{i},{text},delivery,2026-10-01,chat\n" for i, (text, _) in enumerate(MOJIBAKE))))
    assert stored(project, report)["text"].tolist() == [text for text, _ in MOJIBAKE]
    assert "repaired" not in report.text()


# --- assemble ---------------------------------------------------------------------------------------------------

def test_assemble_returns_every_batch_with_its_batch_column_and_the_data_version(project, tmp_path):
    first = ingest_batch(CFG, LABELS, project, write(project, "one.csv", HEADER + (
        "m1,first message,billing,2023-01-01,chat\nm2,second message,delivery,2023-01-02,email\n")))
    second = ingest_batch(CFG, LABELS, project, write(project, "two.csv", HEADER + (
        "m3,third message,account_access,2023-01-03,chat\nm4,first message,billing,2023-01-04,chat\n")))
    out = tmp_path / "out"
    result = assemble(CFG, project, out)
    frame = pd.read_parquet(result.dataset)
    assert result.rows == 3 == len(frame)
    assert list(frame.columns) == ["text", "label", "timestamp", "id", "channel", "_text_key", "_batch"]
    batches = {Path(first.batch).stem: ["m1", "m2"], Path(second.batch).stem: ["m3"]}
    assert {batch: sorted(group["id"]) for batch, group in frame.groupby("_batch")} == batches
    version = json.loads((out / "data_version.json").read_text())
    assert version == result.version
    assert version == {"path": "data/raw/support", "md5": second.data_version, "tracked": True,
                       "dataset": "support", "batches": sorted(batches), "rows": 3,
                       "unlabeled": {"data_version": None, "batches": [], "rows": 0}}  # no unlabeled texts


def test_assemble_without_batches_says_to_run_nichetune_ingest(project, tmp_path):
    message = one_line_error(lambda: assemble(CFG, project, tmp_path / "out"))
    assert message == ("data/raw/support: no stored batches; run `nichetune ingest FILE --dataset support` "
                       "or set ingest.path")


# --- bugs found while writing these tests (strict xfails: each passes once the bug is fixed) ---------------------

def test_a_lone_carriage_return_survives_the_quarantine_file(project):
    source = write(project, "cr.csv", 'text,label\n"line one\rline two",refunds\nfine,billing\n')
    report = ingest_batch(IngestParams(path=None, dataset="cr"), LABELS, project, source)
    rows = quarantined(project, report)
    assert [(row["text"], row["_source_line"]) for row in rows] == [("line one\rline two", "2")]


def test_a_ragged_row_keeps_all_its_fields_in_quarantine(project):
    source = write(project, "ragged.csv", "id,text,label\n1,hello, world,billing\n2,fine,billing\n")
    report = ingest_batch(IngestParams(path=None, dataset="ragged", id_column="id"), LABELS, project, source)
    quarantine = (project / report.quarantine).read_text(encoding="utf-8")
    assert "billing" in quarantine.splitlines()[1]


def _break_the_remote(project: Path) -> None:
    from dvc.repo import Repo

    blocker = project.parent / "not-a-folder"
    blocker.write_text("a file where the remote's folder should be")
    with Repo(str(project)) as repo, repo.config.edit() as config:
        config["remote"]["local"]["url"] = str(blocker / "remote")


def test_a_push_that_fails_is_a_data_error(project):
    _break_the_remote(project)
    source = write(project, "rows.csv", "text,label\nhello there,billing\n")
    one_line_error(lambda: ingest_batch(IngestParams(path=None, dataset="push"), LABELS, project, source))


def test_ingesting_again_after_a_failed_push_pushes_the_batch(project):
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        good_remote = repo.config["remote"]["local"]["url"]
    _break_the_remote(project)
    source = write(project, "rows.csv", "text,label\nhello there,billing\n")
    cfg = IngestParams(path=None, dataset="push")
    with pytest.raises(Exception):
        ingest_batch(cfg, LABELS, project, source)
    with Repo(str(project)) as repo, repo.config.edit() as config:
        config["remote"]["local"]["url"] = good_remote
    report = ingest_batch(cfg, LABELS, project, source)
    md5 = dvc_record(project, "data/raw/push")["md5"]
    assert (Path(good_remote) / "files" / "md5" / md5[:2] / md5[2:]).is_file(), report.text()


def test_batches_stored_within_one_second_keep_their_ingestion_order(project, tmp_path):
    exports = [write(project, f"{n}.csv", HEADER + f"m{n},message {n},billing,2023-01-0{n},\n") for n in (1, 2, 3)]
    digests = [ingest.hashlib.sha256(path.read_bytes()).hexdigest()[:12] for path in exports]
    assert digests != sorted(digests)  # otherwise hash order and ingestion order agree by chance
    for path in exports:
        ingest_batch(CFG, LABELS, project, path)
    result = assemble(CFG, project, tmp_path / "out")
    assert pd.read_parquet(result.dataset)["id"].tolist() == ["m1", "m2", "m3"]



# --- Excel workbooks ---------------------------------------------------------------------------------------------

def workbook(root: Path, name: str, sheets: dict[str, list[list]]) -> Path:
    """An .xlsx written by openpyxl, as Excel stores one: typed cells (numbers, dates, text), one sheet per entry."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    path = root / "exports" / name
    path.parent.mkdir(exist_ok=True)
    book.save(path)
    return path


def test_an_excel_workbook_is_read_cell_by_cell_with_its_row_numbers(project):
    from datetime import datetime

    header = ["message_id", "message", "topic", "created_at", "channel"]
    source = workbook(project, "tickets.xlsx", {"Tickets": [
        header,
        [101, "charged twice\nfor one order", "Billing", datetime(2023, 7, 9, 14, 30), "email"],
        [],  # a blank row: skipped, and the rows below keep their numbers in the sheet
        [102, "my parcel is lost", "delivery", datetime(2023, 9, 7), None],
        [103, None, "billing", datetime(2023, 9, 8), "chat"],
    ]})
    report = ingest_batch(CFG, LABELS, project, source)
    frame = stored(project, report)
    assert frame["id"].tolist() == ["101", "102"] and frame["_source_line"].tolist() == [2, 4]
    assert frame["text"].tolist() == ["charged twice\nfor one order", "my parcel is lost"]
    assert frame["label"].tolist() == ["billing", "delivery"]
    # a date cell is a date: no day or month order to guess, unlike 07/09/2023 in a CSV
    assert frame["timestamp"].tolist() == pd.to_datetime(["2023-07-09T14:30", "2023-09-07T00:00"], utc=True).tolist()
    assert [(row["message_id"], row["_source_line"], row["_reason"]) for row in quarantined(project, report)] == [
        ("103", "5", "empty text")]
    assert report.rows_read == 3 == report.accepted + report.quarantined


@pytest.mark.parametrize("sheets, message", [
    ({"Tickets": [["message", "topic"], ["a", "billing"]], "Archive": [["message"], ["b"]]},
     "2 sheets hold rows (Tickets, Archive); keep only the export's sheet"),
    ({"Tickets": [["message", "topic", None], ["a", "billing", "stray"]]},
     "column C holds values but has no name in the header row"),
    ({"Tickets": [], "Notes": []}, "no sheet of the workbook holds any rows"),
])
def test_a_workbook_that_is_not_one_table_is_one_line_and_stores_nothing(project, sheets, message):
    source = workbook(project, "book.xlsx", sheets)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        ingest_batch(CFG, LABELS, project, source)
    assert str(error.value).startswith(f"{source}: ") and "\n" not in str(error.value)
    assert not list((project / "data" / "raw").rglob("*.parquet"))


def test_a_damaged_workbook_is_one_clear_error(project):
    source = write(project, "damaged.xlsx", b"PK\x03\x04 not really a workbook")
    with pytest.raises(DataError, match="not a readable Excel workbook .*save it again from Excel as .xlsx"):
        ingest_batch(CFG, LABELS, project, source)
