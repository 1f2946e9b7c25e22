"""The incoming folder: a file is taken once it stops changing, ingested as a batch and moved to processed/;
a bad file, a symbolic link or a file over the size cap goes to failed/ beside its one-line reason; temporary
names wait; nothing is deleted."""

from __future__ import annotations

import pytest

from flows.incoming import FAILED, PROCESSED, UNLABELED_DIR, IncomingWatcher
from tasks.config import Paths, load_params
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.slow  # the watcher ingests through Prefect's test server (about 10 s to start)


@pytest.fixture
def watcher(tmp_path, prefect_harness):
    params = project_params("minilm", ingest={**project_params("")["ingest"], "path": None})
    root = make_project(tmp_path / "project", cfpb_sample().iloc[:0], params)
    loaded = load_params(root / "params.yaml")
    watcher = IncomingWatcher([(loaded, Paths.of(root, loaded))], interval=0.1)
    watcher.folder.mkdir(parents=True)
    return watcher


def test_a_file_is_taken_once_it_stops_changing_then_ingested_and_moved(watcher):
    rows = cfpb_sample()
    rows.iloc[:50].to_csv(watcher.folder / "labels.csv", index=False)
    assert watcher.scan() == []  # first sight: it may still be growing
    rows.to_csv(watcher.folder / "labels.csv", index=False)  # it grew
    assert watcher.scan() == []
    assert watcher.scan() == []
    [line] = watcher.scan()
    assert "labels.csv -> dataset complaints" in line and "100 rows read = 100 accepted" in line
    assert "event nichetune.data.labeled for nichetune.dataset.complaints" in line
    [kept] = (watcher.folder / PROCESSED).iterdir()
    assert kept.name.endswith("-labels.csv") and kept.read_text() == rows.to_csv(index=False)
    assert len(list((watcher.folder.parent / "raw" / "complaints").glob("*.parquet"))) == 1


def test_temporary_and_hidden_names_are_left_alone(watcher):
    names = [".~lock.csv", "export.csv.part", "upload.tmp", "~$tickets.xlsx"]  # the last: Excel has tickets.xlsx open
    for name in names:
        (watcher.folder / name).write_text("text,issue\nhello,a\n")
    watcher.scan()
    assert watcher.scan() == []
    assert sorted(path.name for path in watcher.folder.iterdir()) == names


def test_a_bad_file_goes_to_failed_with_its_reason_and_the_bytes_kept(watcher):
    (watcher.folder / "broken.csv").write_text("text,wrong_column\nhello,a\n")
    (watcher.folder / "elsewhere").mkdir()
    cfpb_sample().to_csv(watcher.folder / "elsewhere" / "labels.csv", index=False)
    lines = [line for _ in range(3) for line in watcher.scan()]
    assert len(lines) == 2 and all("not ingested" in line for line in lines)
    failed = {path.name.split("-", 1)[1]: path for path in (watcher.folder / FAILED).iterdir()}
    assert set(failed) == {"broken.csv", "broken.csv.error.txt", "labels.csv", "labels.csv.error.txt"}
    assert failed["broken.csv"].read_text() == "text,wrong_column\nhello,a\n"
    reason = failed["broken.csv.error.txt"].read_text()
    assert reason.count("\n") == 1 and "issue" in reason  # names the missing label column
    assert "no served dataset named 'elsewhere' (served: complaints)" in failed["labels.csv.error.txt"].read_text()


def test_an_unforeseen_failure_keeps_the_file_and_the_watcher_going(watcher, capsys):
    raw = watcher.folder.parent / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "complaints").write_text("a file where the dataset's folder belongs\n")  # writing the batch fails
    rows = cfpb_sample()
    rows.to_csv(watcher.folder / "labels.csv", index=False)
    [line] = [line for _ in range(3) for line in watcher.scan()]
    assert "labels.csv not ingested: " in line and "unexpected" in line and "to retry" in line
    assert "Traceback" in capsys.readouterr().err
    failed = {path.name.split("-", 1)[1]: path for path in (watcher.folder / FAILED).iterdir()}
    assert failed["labels.csv"].read_text() == rows.to_csv(index=False)
    assert failed["labels.csv.error.txt"].read_text().count("\n") == 1
    (raw / "complaints").unlink()  # the cause fixed, the watcher takes the next file as usual
    rows.to_csv(watcher.folder / "again.csv", index=False)
    [line] = [line for _ in range(3) for line in watcher.scan()]
    assert "again.csv -> dataset complaints" in line


def test_a_file_must_keep_its_size_and_time_across_two_looks_before_it_is_taken(watcher):
    cfpb_sample().to_csv(watcher.folder / "labels.csv", index=False)
    assert watcher.scan() == []  # first sight
    assert watcher.scan() == []  # unchanged once
    [line] = watcher.scan()  # unchanged twice
    assert "labels.csv -> dataset complaints" in line


def test_a_symbolic_link_is_not_followed_and_goes_to_failed(watcher, tmp_path):
    secret = tmp_path / "elsewhere.csv"
    cfpb_sample().to_csv(secret, index=False)
    (watcher.folder / "link.csv").symlink_to(secret)
    (watcher.folder / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    lines = [line for _ in range(3) for line in watcher.scan()]
    assert len(lines) == 2 and all("a symbolic link, which the incoming folder does not follow" in line
                                   for line in lines)
    failed = {path.name.split("-", 1)[1]: path for path in (watcher.folder / FAILED).iterdir()}
    assert failed["link.csv"].is_symlink() and failed["linked-dir"].is_symlink()  # the links moved
    assert secret.is_file() and (tmp_path / "project").is_dir()  # their targets untouched
    assert not (watcher.folder.parent / "raw").exists()


def test_a_file_over_the_size_cap_goes_to_failed_with_its_reason(tmp_path, prefect_harness):
    params = project_params("minilm", ingest={**project_params("")["ingest"], "path": None,
                                                        "incoming_max_mb": 0.001})
    root = make_project(tmp_path / "project", cfpb_sample().iloc[:0], params)
    loaded = load_params(root / "params.yaml")
    watcher = IncomingWatcher([(loaded, Paths.of(root, loaded))], interval=0.1)
    watcher.folder.mkdir(parents=True)
    cfpb_sample().to_csv(watcher.folder / "big.csv", index=False)
    lines = [line for _ in range(3) for line in watcher.scan()]
    assert len(lines) == 1 and "MB, over ingest.incoming_max_mb = 0.001; split the export" in lines[0]
    assert not (root / "data" / "raw").exists()


def test_a_file_in_the_unlabeled_folder_joins_the_pool_and_starts_no_training(tmp_path):
    """No event is sent for unlabeled texts, so this watcher needs no Prefect server."""
    params = project_params("minilm", ingest={**project_params("")["ingest"], "path": None})
    root = make_project(tmp_path / "project", cfpb_sample().iloc[:0], params)
    loaded = load_params(root / "params.yaml")
    watcher = IncomingWatcher([(loaded, Paths.of(root, loaded))], interval=0.1)
    (watcher.folder / UNLABELED_DIR / "elsewhere").mkdir(parents=True)
    cfpb_sample()[["text"]].to_csv(watcher.folder / UNLABELED_DIR / "texts.csv", index=False)
    cfpb_sample()[["text"]].to_csv(watcher.folder / UNLABELED_DIR / "elsewhere" / "texts.csv", index=False)
    lines = [line for _ in range(3) for line in watcher.scan()]
    taken = next(line for line in lines if "-> the unlabeled pool of complaints" in line)
    assert "100 rows read = 100 accepted" in taken and "unlabeled texts: no event, no training" in taken
    assert len(list((root / "data" / "unlabeled" / "complaints").glob("*.parquet"))) == 1
    assert not (root / "data" / "raw").exists()  # nothing labeled was stored
    assert any("no served dataset named 'elsewhere'" in line for line in lines)
    assert sorted(path.name.split("-", 1)[1] for path in (watcher.folder / PROCESSED).iterdir()) == ["texts.csv"]


@pytest.mark.parametrize("name", [PROCESSED, FAILED, UNLABELED_DIR])
def test_nichetune_up_refuses_a_dataset_named_as_a_folder_of_the_incoming_folder(tmp_path, name):
    from flows.up import check_projects
    from tasks.errors import NichetuneError

    (tmp_path / "params.yaml").write_text(f"ingest:\n  dataset: {name}\n  path: null\n")
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(NichetuneError, match=f"dataset '{name}' is the name of a folder of data/incoming/ "
                                             r"\(processed, failed, unlabeled\); give ingest.dataset another name"):
        check_projects([(params, Paths.of(tmp_path, params), tmp_path / "params.yaml")])
