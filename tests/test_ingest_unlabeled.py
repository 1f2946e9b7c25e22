"""Unlabeled texts (the pool): stored like labeled batches (same readers, PII masking, quarantine with source
line and reason, conservation count, immutable DVC-versioned files, the same file recognised) in folders of their
own; they announce nothing; the ingest stage assembles them beside the labeled rows and the split stage keeps only
texts that are not labeled."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks import ingest, split
from tasks.batches import OUTBOX, UNLABELED
from tasks.config import IngestParams, SplitParams
from tasks.errors import DataError
from tasks.ingest import ALREADY_STORED, POOL_COLUMNS, assemble, ingest_batch
from tasks.layout import POOL_FILE, VERSION_FILE
from tests.conftest import REPO, cfpb_sample, make_project, project_params

CFG = IngestParams(**{**project_params("unused")["ingest"], "path": None, "max_text_chars": 60})
SAMPLE = cfpb_sample(per_class=3)  # 12 real complaints, the labeled rows of the project


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC project whose dataset `complaints` holds the 12 labeled complaints."""
    root = make_project(tmp_path / "project", SAMPLE, project_params("minilm"))
    ingest_batch(CFG.model_copy(update={"max_text_chars": 100_000}), [], root, root / "data" / "labeled.csv",
                 announce=False)
    return root


def write(root: Path, name: str, content: str) -> Path:
    path = root / "exports" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content, encoding="utf-8", newline="")
    return path


POOL_FILE_TEXT = (
    "text,issue\n"
    "my loan was renewed without asking me,\n"  # 2
    ",Getting a loan\n"  # 3: empty text
    "please call me at jane.doe@example.org about the fees,\n"  # 4: PII, masked
    "  my loan was   renewed without asking me ,\n"  # 5: the text of line 2 again
    + "x" * 61 + ",\n"  # 6: over max_text_chars
    + "the lender keeps charging me every two weeks,Struggling to pay\n"  # 7: a label is not stored
)


def test_unlabeled_rows_are_stored_in_their_own_folder_and_unusable_ones_quarantined_with_line_and_reason(project):
    source = write(project, "pool.csv", POOL_FILE_TEXT)
    report = ingest_batch(CFG, [], project, source, store=UNLABELED)
    assert (report.rows_read, report.accepted, report.quarantined) == (6, 3, 3)
    assert report.reasons == {"empty text": 1, "exact duplicate": 1, "text over 60 characters": 1}
    stored = pd.read_parquet(project / report.batch)
    assert list(stored.columns) == ["text", "_text_key", "_source_line", "_source_file", "_batch"]  # no label
    assert stored["text"].tolist() == ["my loan was renewed without asking me", "please call me at [EMAIL] about "
                                       "the fees", "the lender keeps charging me every two weeks"]
    assert stored["_source_line"].tolist() == [2, 4, 7]
    quarantined = pd.read_csv(project / report.quarantine, dtype=str, keep_default_na=False)
    assert dict(zip(quarantined["_source_line"], quarantined["_reason"])) == {
        "3": "empty text", "5": "exact duplicate", "6": "text over 60 characters"}
    assert report.batch.startswith("data/unlabeled/complaints/000001-")  # numbered apart from labeled batches
    assert report.quarantine == f"data/unlabeled_quarantine/complaints/{Path(report.batch).stem}.csv"
    lines = report.text().splitlines()
    assert lines[0] == f"{source}: 6 rows read = 3 accepted + 3 quarantined (decoded as utf-8)"
    assert "  PII redacted: email 1" in lines
    assert lines[-1].startswith(f"  unlabeled pool of complaints is now DVC version {report.data_version} ")
    assert lines[-1].endswith("git add data/unlabeled/complaints.dvc data/unlabeled/.gitignore "
                              "data/unlabeled_quarantine/complaints.dvc data/unlabeled_quarantine/.gitignore)")
    record = yaml.safe_load((project / "data" / "unlabeled" / "complaints.dvc").read_text())["outs"][0]
    assert record["md5"] == report.data_version and record["nfiles"] == 1
    assert stat.S_IMODE((project / report.batch).stat().st_mode) & 0o222 == 0  # read-only, never rewritten


def test_a_pool_file_keeps_its_timestamp_id_and_metadata_and_quarantines_only_a_garbled_time(project):
    """What a suggestion batch must carry back to a labeled batch; a text without a time is still a pool text."""
    source = write(project, "pool.csv", "complaint_id,date_received,text\n"
                                        "c1,2023-07-03,my loan was renewed without asking me\n"
                                        "c2,,the lender keeps charging me every two weeks\n"
                                        "c3,last tuesday,they never answer the phone\n")
    report = ingest_batch(CFG, [], project, source, store=UNLABELED)
    assert (report.accepted, report.reasons) == (2, {"unparseable timestamp": 1})
    stored = pd.read_parquet(project / report.batch)
    assert stored["id"].tolist() == ["c1", "c2"]
    assert stored["timestamp"].iloc[0] == pd.Timestamp("2023-07-03", tz="UTC") and pd.isna(stored["timestamp"].iloc[1])
    quarantined = pd.read_csv(project / report.quarantine, dtype=str, keep_default_na=False)
    assert quarantined["date_received"].tolist() == ["last tuesday"]  # the raw value, kept


def test_unlabeled_texts_announce_nothing_so_no_training_starts(project):
    report = ingest_batch(CFG, [], project, write(project, "pool.csv", POOL_FILE_TEXT), store=UNLABELED)
    assert report.accepted == 3 and report.events == ()
    assert list((project / OUTBOX).rglob("*.json")) == []  # the outbox `nichetune ingest` sends events from


def test_the_same_file_again_adds_nothing_and_a_repeat_of_a_stored_text_is_a_duplicate(project):
    first = ingest_batch(CFG, [], project, write(project, "pool.csv", POOL_FILE_TEXT), store=UNLABELED)
    again = ingest_batch(CFG, [], project, write(project, "copy.csv", POOL_FILE_TEXT.replace("\n", "\r\n")),
                         store=UNLABELED)
    assert again.text().endswith(f"already ingested as {first.batch}; nothing added")
    assert (again.accepted, again.data_version) == (0, first.data_version)
    later = ingest_batch(CFG, [], project, write(project, "later.csv", "text\nthe lender keeps charging me every "
                                                                      "two weeks\na new complaint\n"), store=UNLABELED)
    assert (later.accepted, later.reasons) == (1, {ALREADY_STORED: 1})
    assert later.text().splitlines()[0].endswith("2 rows read = 1 accepted + 1 quarantined (decoded as utf-8)")


def test_a_file_without_the_text_column_is_one_line_naming_it(project):
    source = write(project, "wrong.csv", "body\nhello\n")
    with pytest.raises(DataError) as caught:
        ingest_batch(CFG, [], project, source, store=UNLABELED)
    assert str(caught.value) == (f"{source}: column(s) 'text' not found; the file has 'body'; set ingest.*_column "
                                 "in params.yaml")
    assert not (project / "data" / "unlabeled" / "complaints").exists() or not any(
        (project / "data" / "unlabeled" / "complaints").iterdir())


def test_the_ingest_stage_assembles_the_pool_and_records_its_version(project, tmp_path):
    empty = assemble(CFG, project, tmp_path / "before")
    pool = pd.read_parquet(empty.pool)
    assert list(pool.columns) == list(POOL_COLUMNS) == ["text", "_text_key", "_batch"] and pool.empty
    assert json.loads((tmp_path / "before" / VERSION_FILE).read_text())["unlabeled"] == {
        "data_version": None, "batches": [], "rows": 0}
    report = ingest_batch(CFG, [], project, write(project, "pool.csv", POOL_FILE_TEXT), store=UNLABELED)
    result = assemble(CFG, project, tmp_path / "after")
    assert result.pool == tmp_path / "after" / POOL_FILE
    assert (result.pool_rows, result.pool_version, result.rows) == (3, report.data_version, len(SAMPLE))
    assert json.loads((tmp_path / "after" / VERSION_FILE).read_text())["unlabeled"] == {
        "data_version": report.data_version, "batches": [Path(report.batch).stem], "rows": 3}
    assert pd.read_parquet(result.pool)["_batch"].tolist() == [Path(report.batch).stem] * 3


def test_the_split_keeps_only_pool_texts_that_are_not_labeled_in_train_or_holdout(project, tmp_path):
    texts = SAMPLE["text"].str.strip()
    split_params = SplitParams(holdout_fraction=0.25)
    pool_rows = pd.DataFrame({"text": [f"  {texts[0]}", texts[11], "nobody labeled this one"]})  # train, holdout
    source = project / "exports" / "pool.csv"
    source.parent.mkdir()
    pool_rows.to_csv(source, index=False)
    ingest_batch(CFG.model_copy(update={"max_text_chars": 100_000}), [], project, source, store=UNLABELED)
    assembled = assemble(CFG, project, tmp_path / "ingest")
    result = split.run(split_params, 7, assembled.dataset, tmp_path / "split")
    holdout = pd.read_parquet(result.holdout)
    assert texts[11] in holdout["text"].tolist() and texts[0] in pd.read_parquet(result.train)["text"].tolist()
    assert pd.read_parquet(result.pool)["text"].tolist() == ["nobody labeled this one"]
    assert (result.pool_rows, result.pool_excluded) == (1, 2)


@pytest.mark.slow  # the CLI and DVC in subprocesses
def test_dvc_repro_runs_the_ingest_stage_without_a_pool_and_again_once_one_arrives(project):
    """The ingest stage depends on data/unlabeled/<dataset>; `nichetune ingest` leaves it empty when there is no
    pool, so `dvc repro` runs. Real DVC, from the project's dvc.yaml."""
    (project / "tasks").symlink_to(REPO / "tasks")
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(project), "DVC_NO_ANALYTICS": "1"}
    repro = lambda: subprocess.run([str(bin_dir / "dvc"), "repro", "ingest"], cwd=project, env=env,  # noqa: E731
                                   capture_output=True, text=True, timeout=300)
    assert (project / "data" / "unlabeled" / "complaints").is_dir()  # left by the labeled ingest
    done = repro()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert pd.read_parquet(project / "outputs" / "ingest" / POOL_FILE).empty
    source = write(project, "pool.csv", "text\none text nobody labeled\nanother one\n")
    cli = subprocess.run([str(bin_dir / "nichetune"), "ingest", str(source), "--unlabeled"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "2 rows read = 2 accepted + 0 quarantined" in cli.stdout and "event" not in cli.stdout
    again = repro()
    assert again.returncode == 0 and "Running stage 'ingest'" in again.stdout, again.stderr[-2000:]
    assert pd.read_parquet(project / "outputs" / "ingest" / POOL_FILE)["text"].tolist() == [
        "one text nobody labeled", "another one"]


def test_a_labeled_ingest_never_replaces_a_tracked_pool_with_an_empty_folder(project, tmp_path):
    ingest_batch(CFG, [], project, write(project, "pool.csv", "text\nsome text\n"), store=UNLABELED)
    git = lambda *args: subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)  # noqa: E731
    git("add", "data")
    git("commit", "-q", "-m", "batches")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    ingest.keep_pool_folder(clone, "complaints")
    assert not (clone / "data" / "unlabeled" / "complaints").exists()  # `dvc pull` brings it, with its texts
