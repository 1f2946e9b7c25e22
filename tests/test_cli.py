"""The `nichetune` console command: bad params stop it with one line on stderr and exit code 2, before Prefect."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

NICHETUNE = Path(sys.executable).parent / "nichetune"
COMMAND = [str(NICHETUNE)] if NICHETUNE.is_file() else [sys.executable, "-m", "flows.cli"]


def nichetune(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    return done, time.perf_counter() - started


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "Starting temporary server" not in done.stdout + done.stderr
    return lines[0]


@pytest.fixture
def folder(tmp_path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_a_bad_set_value_exits_2_with_one_line_before_prefect_starts(folder):
    done, seconds = nichetune(folder, "run", "--set", "finetune.epochs=0")
    line = one_error_line(done)
    assert line == (f"error: {folder / 'params.yaml'}: finetune.epochs = 0 is not allowed: "
                    "Input should be greater than or equal to 1")
    assert seconds < 10  # Prefect, torch and the ML stack are never imported
    assert not (folder / "outputs").exists()


def test_a_missing_params_file_exits_2_with_one_line(folder):
    line = one_error_line(nichetune(folder, "run", "--params", "missing.yaml")[0])
    assert line.startswith(f"error: {folder / 'missing.yaml'}: params file not found")


def test_an_unknown_key_in_the_params_file_exits_2_naming_it(folder):
    (folder / "bad.yaml").write_text("finetune:\n  epoch: 3\n")
    line = one_error_line(nichetune(folder, "run", "--params", "bad.yaml")[0])
    assert "unknown key 'finetune.epoch'" in line
    assert "allowed keys here: backbone, strategy, epochs, batch_size" in line


def test_a_malformed_set_exits_2_with_one_line(folder):
    line = one_error_line(nichetune(folder, "run", "--set", "finetune.epochs")[0])
    assert line == "error: --set 'finetune.epochs': expected SECTION.KEY=VALUE, for example finetune.epochs=3"


def test_the_project_root_is_found_from_a_subfolder(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text("split:\n  holdout_fraction: 1.5\n")
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    line = one_error_line(nichetune(tmp_path / "notebooks" / "deep", "run")[0])
    assert line.startswith(f"error: {tmp_path / 'params.yaml'}: split.holdout_fraction = 1.5 is not allowed")


def test_ui_with_a_bad_params_file_exits_2_with_one_line(folder):
    (folder / "params.yaml").write_text("- not\n- sections\n")
    line = one_error_line(nichetune(folder, "ui")[0])
    assert line.endswith("expected sections such as 'finetune:', found a list")


def test_no_command_is_a_usage_error(folder):
    done, _ = nichetune(folder)
    assert done.returncode == 2
    assert "usage: nichetune" in done.stderr and "{run,ingest,validate,ui}" in done.stderr
