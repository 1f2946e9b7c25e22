"""End to end as a new user: a fresh clone, `nichetune run` on the shipped demo data, the printed summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_nichetune_run_on_a_fresh_clone_pulls_the_demo_data_and_registers_a_model(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone / "data" / "demo" / "messages.csv").exists()  # only its .dvc record is in git
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    command = [str(Path(sys.executable).parent / "nichetune"), "run", "--set", "finetune.epochs=1"]
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (clone / "data" / "demo" / "messages.csv").is_file()  # pulled from the shipped demo store
    assert "Registered model: models:/nichetune-demo@challenger (version 1" in done.stdout
    assert "version 1 passed the gate and awaits a reviewer" in done.stdout  # no Prefect server: no form
    assert (clone / "outputs" / "evaluate" / "reports" / "evidently_report.html").is_file()
    assert (clone / "outputs" / "mlflow" / "mlflow.db").is_file()
