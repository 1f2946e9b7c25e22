"""`nichetune ingest` from two processes at once into one dataset: both take turns on the dataset's lock and both
batches land, intact and DVC-versioned. A file whose every row is rejected exits 2 with one line on stderr. While
another DVC command holds the repository's lock, ingest waits for it (bounded, with one clear line)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import make_project, project_params

pytestmark = pytest.mark.slow  # ingest commands in subprocesses, racing on one DVC repository

NICHETUNE = Path(sys.executable).parent / "nichetune"
ROWS_PER_FILE = 300


@pytest.fixture
def project(tmp_path) -> Path:
    root = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    params = project_params("minilm", ingest={"dataset": "shared", "path": None, "text_column": "text",
                                              "label_column": "label", "timestamp_column": None, "id_column": "id"})
    params["validate"]["labels"] = ["billing", "delivery"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}


def export(path: Path, prefix: str, junk_every: int = 0) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for n in range(ROWS_PER_FILE):
            label = "junk" if junk_every and n % junk_every == 0 else ["billing", "delivery"][n % 2]
            writer.writerow([f"{prefix}{n}", f"{prefix} message {n}, with a comma\nand a second line", label])
    return path


def nichetune_ingest(root: Path, env: dict, path: Path, dataset: str) -> subprocess.Popen:
    return subprocess.Popen([str(NICHETUNE), "ingest", str(path), "--dataset", dataset], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_ingests_of_one_dataset_at_the_same_time_both_land(project, env):
    from filelock import FileLock

    files = [export(project / "a.csv", "a", junk_every=10), export(project / "b.csv", "b")]
    lock = project / ".dvc" / "tmp" / "nichetune-ingest-shared.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):  # hold the dataset's lock so that both commands queue on it, then let them race
        processes = [nichetune_ingest(project, env, path, "shared") for path in files]
        time.sleep(3)
        assert not (project / "data" / "raw" / "shared").exists()  # nothing written while another holds the lock
        assert all(process.poll() is None for process in processes)
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    assert f"{files[0]}: {ROWS_PER_FILE} rows read = 270 accepted + 30 quarantined" in outputs[0][0]
    assert f"{files[1]}: {ROWS_PER_FILE} rows read = {ROWS_PER_FILE} accepted + 0 quarantined" in outputs[1][0]

    batches = sorted((project / "data" / "raw" / "shared").glob("*.parquet"))
    assert len(batches) == 2
    stored = pd.concat([pd.read_parquet(path) for path in batches], ignore_index=True)
    with open(next((project / "data" / "quarantine" / "shared").glob("*.csv")), newline="") as handle:
        quarantined = list(csv.DictReader(handle))
    ids = sorted([*stored["id"], *(row["id"] for row in quarantined)])
    assert ids == sorted([f"{prefix}{n}" for prefix in "ab" for n in range(ROWS_PER_FILE)])
    assert stored["text"].str.endswith("with a comma\nand a second line").all()
    assert {row["_reason"] for row in quarantined} == {"label outside the label set"}

    record = yaml.safe_load((project / "data" / "raw" / "shared.dvc").read_text())["outs"][0]
    assert record["nfiles"] == 2
    listing = project.parent / "project-remote" / "files" / "md5" / record["md5"][:2] / record["md5"][2:]
    assert listing.is_file()  # the version holding both batches was pushed
    assert not list((project / "data" / "raw" / "shared").glob(".*"))  # no temporary files left


def test_a_file_with_every_row_rejected_exits_2_with_one_line(project, env, tmp_path):
    path = tmp_path / "all-junk.csv"
    path.write_text("id,text,label\n1,hello,junk\n2,,billing\n")
    done = subprocess.run([str(NICHETUNE), "ingest", str(path), "--dataset", "shared"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {path}: every one of 2 rows was rejected (see data/quarantine/shared/")
    assert line.endswith("reasons: label outside the label set (1); empty text (1); labels outside validate.labels: "
                         "'junk' (1 row) (correct them in the export, or add them to validate.labels)")
    assert len(list((project / "data" / "quarantine" / "shared").glob("*.csv"))) == 1


def hold_dvc_lock(project: Path, seconds: float) -> subprocess.Popen:
    """Another process holding DVC's repository lock, as a long `dvc push` would; it prints once it holds it."""
    script = ("import sys, time; from dvc.lock import make_lock; lock = make_lock(sys.argv[1]); lock.lock(); "
              "print('held', flush=True); time.sleep(float(sys.argv[2])); lock.unlock()")
    holder = subprocess.Popen([sys.executable, "-c", script, str(project / ".dvc" / "tmp" / "lock"), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_ingest_waits_for_dvc_s_repository_lock_instead_of_failing_after_3_s(project, tmp_path):
    from tasks.config import IngestParams
    from tasks.ingest import ingest_batch

    source = export(tmp_path / "rows.csv", "w")
    holder = hold_dvc_lock(project, 6)
    started = time.monotonic()
    report = ingest_batch(IngestParams(path=None, dataset="shared", id_column="id"), ["billing", "delivery"],
                         project, source)
    assert time.monotonic() - started > 4  # DVC alone gives up after 3 s
    holder.wait(timeout=30)
    assert report.accepted == ROWS_PER_FILE and report.data_version
    record = yaml.safe_load((project / "data" / "raw" / "shared.dvc").read_text())["outs"][0]
    assert record["md5"] == report.data_version


def test_a_lock_held_too_long_is_one_clear_error_and_the_next_ingest_versions_and_announces(project, tmp_path):
    from tasks.config import IngestParams
    from tasks.errors import DataError
    from tasks.ingest import ingest_batch

    cfg = IngestParams(path=None, dataset="shared", id_column="id", dvc_lock_wait=1)
    source = export(tmp_path / "rows.csv", "w")
    holder = hold_dvc_lock(project, 8)
    with pytest.raises(DataError) as caught:
        ingest_batch(cfg, ["billing", "delivery"], project, source)
    holder.kill()
    holder.wait()
    message = str(caught.value)
    assert message.startswith(f"{project / '.dvc' / 'tmp' / 'lock'}: another DVC command held the repository for "
                              "over 1 s;") and "\n" not in message
    [batch] = (project / "data" / "raw" / "shared").glob("*.parquet")  # stored, not yet versioned
    again = ingest_batch(cfg, ["billing", "delivery"], project, source)
    assert again.already_ingested_as == str(batch.relative_to(project)) and again.data_version
    [pending] = again.events  # its event was never sent: the next ingest carries it
    assert json.loads(Path(pending).read_text())["batch"] == again.already_ingested_as
