"""Consent: `nichetune consent DATASET --not-for-training --reason TEXT` writes a git-tracked mark; the pipeline's
ingest stage then refuses the dataset with one line (which dataset, since when, why, nothing trained, how to lift
it); files ingested into it are still stored but announce nothing; `--allow` lifts the mark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import consent
from tasks.batches import OUTBOX, UNLABELED
from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.ingest import assemble, ingest_batch
from tests.conftest import cfpb_sample, make_project, project_params
from tests.test_cli import COMMAND

CFG = IngestParams(**{**project_params("minilm")["ingest"], "path": None})
REASON = "the customers of this export did not agree to model training"


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC project whose dataset `complaints` holds 12 labeled complaints."""
    root = make_project(tmp_path / "project", cfpb_sample(per_class=3), project_params("minilm"))
    ingest_batch(CFG, [], root, root / "data" / "labeled.csv", announce=False)
    return root


def nichetune(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], cwd=root, capture_output=True, text=True, timeout=120)


def test_a_mark_records_reason_user_and_utc_time_in_a_small_file(project):
    made = consent.mark(project, "complaints", REASON, user="dana")
    recorded = json.loads((project / "data" / "consent" / "complaints.json").read_text())
    assert recorded == {"dataset": "complaints", "reason": REASON, "user": "dana", "since": made.since}
    assert made.since.endswith("Z") and len(made.since) == len("2026-12-05T10:00:00Z")
    assert consent.mark_of(project, "complaints") == made and consent.mark_of(project, "other") is None


def test_the_ingest_stage_refuses_a_marked_dataset_with_one_line_and_writes_nothing(project, tmp_path):
    made = consent.mark(project, "complaints", REASON, user="dana")
    with pytest.raises(DataError) as caught:
        assemble(CFG, project, tmp_path / "ingest")
    assert str(caught.value) == (
        f"dataset complaints is marked not for training since {made.since} by dana (reason: {REASON}); nothing was "
        "trained; `nichetune consent complaints --allow` lifts it if consent is given")
    assert not (tmp_path / "ingest").exists()


def test_a_file_ingested_into_a_marked_dataset_is_stored_but_says_it_will_not_be_trained_on(project):
    consent.mark(project, "complaints", REASON, user="dana")
    source = project / "more.csv"
    more = cfpb_sample(per_class=6)
    more[~more["complaint_id"].isin(cfpb_sample(per_class=3)["complaint_id"])].to_csv(source, index=False)
    report = ingest_batch(CFG, [], project, source)
    assert report.accepted == 12 and (project / report.batch).is_file()
    assert report.events == () and list((project / OUTBOX).rglob("*.json")) == []  # no training is triggered
    assert report.text().splitlines()[-1] == (
        f"  not for training: dataset complaints is marked since {consent.mark_of(project, 'complaints').since} "
        f"({REASON}); the rows are stored, but no run trains on them until `nichetune consent complaints --allow` "
        "lifts it")
    pool = ingest_batch(CFG, [], project, source, store=UNLABELED)
    assert pool.accepted == 12 and pool.not_for_training == report.not_for_training


def test_allow_lifts_the_mark_and_the_stage_assembles_again(project, tmp_path):
    consent.mark(project, "complaints", REASON, user="dana")
    lifted = consent.allow(project, "complaints")
    assert lifted.reason == REASON and not (project / "data" / "consent" / "complaints.json").exists()
    assert assemble(CFG, project, tmp_path / "ingest").rows == 12
    assert consent.allow(project, "complaints") is None


def test_the_finetune_stage_refuses_a_dataset_marked_after_its_split_ran(project):
    """`dvc repro` would train from the cached split: the fine-tune stage reads the mark again and trains nothing."""
    from tasks import finetune
    from tasks.config import Paths, load_params
    from tasks.layout import TRAIN_FILE

    params = load_params(project / "params.yaml")
    paths = Paths.of(project, params)
    split = paths.stage("split")
    split.mkdir(parents=True)
    cfpb_sample(per_class=3).rename(columns={"issue": "label"}).to_parquet(split / TRAIN_FILE)
    made = consent.mark(project, "complaints", REASON, user="dana")
    with pytest.raises(DataError) as caught:
        finetune.run_stage(params, paths)
    assert str(caught.value) == made.refusal()
    assert not paths.stage("finetune").exists()


def test_a_broken_mark_file_is_one_line_saying_how_to_restore_it(project):
    (project / "data" / "consent").mkdir(parents=True)
    (project / "data" / "consent" / "complaints.json").write_text("{not json")
    with pytest.raises(DataError, match=r"complaints.json: not a consent mark .* restore it from git"):
        consent.refuse_if_marked(project, "complaints")


@pytest.mark.slow  # the CLI and a stage in subprocesses
def test_the_cli_marks_prints_the_git_add_and_the_stage_command_exits_2_with_the_refusal(project):
    marked = nichetune(project, "consent", "complaints", "--not-for-training", "--reason", REASON)
    assert marked.returncode == 0, marked.stderr
    assert "dataset complaints is marked not for training since " in marked.stdout
    assert "git add data/consent/complaints.json" in marked.stdout
    stage = subprocess.run([sys.executable, "-m", "tasks.ingest"], cwd=project, capture_output=True, text=True,
                           timeout=120)
    assert stage.returncode == 2 and stage.stdout == ""
    [line] = stage.stderr.splitlines()
    assert line.startswith("error: dataset complaints is marked not for training since ") and REASON in line
    allowed = nichetune(project, "consent", "complaints", "--allow")
    assert allowed.returncode == 0, allowed.stderr
    assert "dataset complaints may be trained on again" in allowed.stdout
    assert "git rm --cached --quiet --ignore-unmatch data/consent/complaints.json" in allowed.stdout


@pytest.mark.slow  # the CLI in a subprocess
def test_the_cli_refuses_a_mark_without_a_reason_or_a_bad_name_in_one_line(project):
    for args, expected in [
        (("complaints", "--not-for-training"), "error: dataset complaints: marking it not for training needs a reason"),
        (("../etc", "--not-for-training", "--reason", "x"), "error: dataset '../etc': not a dataset name"),
    ]:
        done = nichetune(project, "consent", *args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(expected)
    assert not (project / "data" / "consent").exists()
