"""Batches are named and filled by their rows alone, so two clones that ingest the same rows get the same DVC
version; the same rows in other line endings are recognised; rows quarantined for their label come in once the
label set is widened; `--dataset` obeys the rule of `ingest.dataset`; older batch names keep their order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks import ingest
from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.ingest import assemble, ingest_batch
from tests.conftest import cfpb_sample, make_project, project_params

CFG = IngestParams(**{**project_params("unused")["ingest"], "path": None})
LABELS = ["billing", "delivery"]
SMALL = IngestParams(path=None, dataset="tickets", id_column="id")
ROWS = ("id,text,label\n1,charged twice for one order,billing\n2,my parcel is late,delivery\n"
        "3,please refund me,refunds\n4,the courier lost it,delivery\n5,cannot log in,account_access\n")


def dvc_md5(root: Path, folder: str) -> str:
    return yaml.safe_load((root / f"{folder}.dvc").read_text())["outs"][0]["md5"]


def listing(root: Path, dataset: str) -> list[str]:
    return sorted(path.name for path in (root / "data" / "raw" / dataset).iterdir())


def test_the_same_rows_in_two_fresh_clones_get_the_same_dvc_version(tmp_path):
    clones = [make_project(tmp_path / name, cfpb_sample(per_class=4), project_params("unused"))
              for name in ("clone-a", "clone-b")]
    second = tmp_path / "exports" / "second.csv"
    second.parent.mkdir()
    cfpb_sample(per_class=6).iloc[16:].to_csv(second, index=False)
    for root in clones:  # two batches each, at different times, from files at different absolute paths
        ingest_batch(CFG, [], root, root / "data" / "labeled.csv")
        copy = root.parent / f"{root.name}-inbox" / "second.csv"
        copy.parent.mkdir()
        shutil.copy(second, copy)
        ingest_batch(CFG, [], root, copy)
    a, b = clones
    assert listing(a, "complaints") == listing(b, "complaints")
    assert dvc_md5(a, "data/raw/complaints") == dvc_md5(b, "data/raw/complaints")
    stored = pd.read_parquet(a / "data" / "raw" / "complaints" / listing(a, "complaints")[0])
    assert str(a) not in stored.astype(str).to_string()  # no absolute path inside the batch
    assert listing(a, "complaints")[0].startswith("000001-") and listing(a, "complaints")[1].startswith("000002-")


def test_the_same_rows_with_crlf_line_ends_are_recognised_as_stored(tmp_path):
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    lf, crlf = tmp_path / "lf.csv", tmp_path / "crlf.csv"
    lf.write_bytes(ROWS.encode())
    crlf.write_bytes(ROWS.replace("\n", "\r\n").encode())
    first = ingest_batch(SMALL, LABELS, root, lf)
    again = ingest_batch(SMALL, LABELS, root, crlf)
    assert again.already_ingested_as == first.batch
    assert (again.accepted, again.quarantined, again.batch) == (0, 0, None)
    assert again.text() == f"{crlf}: already ingested as {first.batch}; nothing added"
    assert len(list((root / "data" / "quarantine" / "tickets").iterdir())) == 1  # no quarantine of duplicates


def test_rows_quarantined_for_their_label_come_in_once_the_label_set_is_widened(tmp_path):
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    source = tmp_path / "export.csv"
    source.write_text(ROWS + "6,charged twice for one order,billing\n")
    first = ingest_batch(SMALL, LABELS, root, source)
    assert (first.accepted, first.quarantined) == (3, 3)
    wider = [*LABELS, "refunds", "account_access"]
    again = ingest_batch(SMALL, wider, root, source)
    assert (again.rows_read, again.accepted, again.quarantined, again.seen_before) == (6, 2, 0, 4)
    assert again.text().splitlines()[0] == (f"{source}: 6 rows read = 2 accepted + 0 quarantined + 4 as before "
                                            f"(already ingested as {first.batch}) (decoded as utf-8)")
    stored = pd.read_parquet(root / again.batch)
    assert stored["id"].tolist() == ["3", "5"]
    assembled = pd.read_parquet(assemble(SMALL, root, tmp_path / "out").dataset)
    assert sorted(assembled["id"]) == ["1", "2", "3", "4", "5"]  # each row once
    third = ingest_batch(SMALL, wider, root, source)
    assert third.text() == f"{source}: already ingested as {first.batch}; nothing added"


@pytest.mark.parametrize("dataset", ["../../outside", "a/b", ".hidden", "", "x y"])
def test_a_dataset_name_that_breaks_the_rule_is_refused_before_anything_is_written(tmp_path, dataset):
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    source = tmp_path / "export.csv"
    source.write_text(ROWS)
    with pytest.raises(DataError) as caught:
        ingest_batch(SMALL, LABELS, root, source, dataset)
    assert str(caught.value) == (f"dataset {dataset!r}: not a dataset name; use letters, digits, '_', '.' and '-', "
                                 "starting with a letter or digit (the rule of ingest.dataset)")
    assert not (root / "data" / "raw").exists() and not (tmp_path / "outside").exists()
    assert not list((root / ".dvc" / "tmp").glob("nichetune-ingest-*"))


def test_batches_with_the_older_time_names_come_before_numbered_ones(tmp_path):
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    folder = root / "data" / "raw" / "tickets"
    folder.mkdir(parents=True)
    for name, text in (("20261101T090000000000-aaaaaaaaaaaa", "oldest"), ("20261102T090000000000-bbbbbbbbbbbb",
                                                                          "older")):
        pd.DataFrame({"text": [text], "label": ["billing"]}).to_parquet(folder / f"{name}.parquet")
    source = tmp_path / "new.csv"
    source.write_text("id,text,label\n1,newest,billing\n")
    report = ingest_batch(SMALL, LABELS, root, source)
    assert Path(report.batch).name.startswith("000003-")
    assert [path.stem[:6] for path in ingest.batch_files(root, "tickets")] == ["202611", "202611", "000003"]
    assert pd.read_parquet(assemble(SMALL, root, tmp_path / "out").dataset)["text"].tolist() == [
        "oldest", "older", "newest"]


def test_validation_judges_duplicates_and_conflicts_on_the_text_as_given_too(tmp_path):
    from tasks import validate

    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    source = tmp_path / "emails.csv"
    source.write_text("id,text,label\n1,please write to ann@example.com,billing\n"
                      "2,please write to bob@example.com,delivery\n3,please write to cy@example.org,billing\n")
    assert ingest_batch(SMALL, LABELS, root, source).accepted == 3
    frame = pd.read_parquet(assemble(SMALL, root, tmp_path / "out").dataset)
    assert frame["text"].tolist() == ["please write to [EMAIL]"] * 3
    checked = validate.with_check_columns(frame)
    assert checked["_label_conflict"].tolist() == [False, False, False]
    assert checked["_text_key"].nunique() == 3


def test_label_shift_compares_with_every_batch_but_the_last_to_arrive_across_both_name_styles(tmp_path):
    from tasks import validate

    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    folder = root / "data" / "raw" / "tickets"
    folder.mkdir(parents=True)
    old = "20261101T090000000000-aaaaaaaaaaaa"  # as ingest named batches before: sorts after any number
    pd.DataFrame({"text": ["before numbering"], "label": ["billing"], "_batch": [old]}).to_parquet(
        folder / f"{old}.parquet")
    source = tmp_path / "new.csv"
    source.write_text("id,text,label\n1,the newest batch,delivery\n")
    ingest_batch(SMALL, LABELS, root, source)
    frame = pd.read_parquet(assemble(SMALL, root, tmp_path / "out").dataset)
    assert validate.previous_labels(frame).tolist() == ["billing"]
