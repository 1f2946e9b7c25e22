"""`dvc repro` runs the same stage functions as the flow, from dvc.yaml, in a temporary git + DVC project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cfpb_sample, make_project, project_params

pytestmark = pytest.mark.slow


def test_dvc_repro_runs_every_stage_and_registers_a_version(tmp_path, tiny_backbone):
    params = project_params(str(tiny_backbone), evaluate={"drift_report": False})
    root = make_project(tmp_path / "project", cfpb_sample(), params)
    (root / "tasks").symlink_to(REPO / "tasks")  # dvc.yaml lists the stage code as a dependency
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    ingest = subprocess.run([str(bin_dir / "nichetune"), "ingest", "data/labeled.csv"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    done = subprocess.run([str(bin_dir / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("ingest", "validate", "split", "finetune", "evaluate", "register"):
        assert f"Running stage '{stage}'" in done.stdout
    registered = json.loads((root / "outputs" / "register" / "registered.json").read_text())
    assert registered["version"] == "1" and registered["alias"] == "challenger"
    assert registered["tracking_uri"] == f"sqlite:///{root / 'outputs' / 'mlflow' / 'mlflow.db'}"
    again = subprocess.run([str(bin_dir / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "Running stage" not in again.stdout  # nothing changed, nothing re-runs


def test_dvc_lock_records_the_stage_code_commands_and_params_of_this_commit():
    """dvc.lock is what `make repro` writes for this code, so `dvc status` in a clone names only missing outputs.
    When this fails: run `make repro` in a fresh clone of the new commit and commit its dvc.lock."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        status = repo.status()
    stale = {}
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed"
                stale.setdefault(stage, []).append(change)
                continue
            for path, what in change.get("changed deps", {}).items():
                if path == "params.yaml" or path.startswith("tasks/"):
                    stale.setdefault(stage, []).append(f"{path}: {what}")
    assert not stale, f"dvc.lock is out of date with the code: {stale}"
