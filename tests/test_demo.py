"""End to end as a new user: a fresh clone, `make demo` on the shipped demo data, the printed summary, and a
clone left as it was cloned (the registered version names a clean commit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_make_demo_on_a_fresh_clone_pulls_the_demo_data_registers_a_model_and_leaves_git_clean(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone / "data" / "demo" / "messages.csv").exists()  # only its .dvc record is in git
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    venv = Path(sys.executable).parent.parent  # this environment stands in for the install `make` would do
    command = ["make", "-o", f"{venv}/.installed", "demo", f"VENV={venv}", "ARGS=--set finetune.epochs=1"]
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (clone / "data" / "demo" / "messages.csv").is_file()  # pulled from the shipped demo store
    assert "Registered model: models:/nichetune-demo@challenger (version 1" in done.stdout
    assert "  holdout macro-F1 " in done.stdout and "95% CI" in done.stdout  # the scores with their intervals
    assert "version 1 passed the gate and awaits a reviewer" in done.stdout  # no Prefect server: no form
    assert (clone / "outputs" / "evaluate" / "reports" / "evidently_report.html").is_file()
    assert (clone / "outputs" / "mlflow" / "mlflow.db").is_file()

    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True)
    tags = json.loads((clone / "outputs" / "register" / "registered.json").read_text())["tags"]
    assert tags["git_commit"] == head.stdout.strip()  # not "-dirty"
    committed = yaml.safe_load((clone / "data" / "raw" / "demo.dvc").read_text())["outs"][0]["md5"]
    assert tags["data_version"] == committed

    # the default strategy, auto: each candidate's validation scores and the choice are in the MLflow run
    from mlflow import MlflowClient

    registered = json.loads((clone / "outputs" / "register" / "registered.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'outputs' / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(registered["run_id"])
    choice = json.loads(Path(client.download_artifacts(run.info.run_id, "auto_choice.json", str(tmp_path))).read_text())
    assert tags["strategy"] == "auto" and len(choice["candidates"]) >= 2 and choice["choice"]["weights"]
    for candidate in (c for c in choice["candidates"] if "left_out" not in c):  # a time budget may leave one out
        for metric in ("accuracy", "macro_f1", "log_loss"):
            assert run.data.metrics[f"candidate_{candidate['name']}_{metric}"] == pytest.approx(candidate[metric])
    assert 0 <= run.data.metrics["ece"] <= 1 and run.data.metrics["temperature"] > 0  # calibrated on validation rows
