"""Processes computing on one machine share its cores (tasks.cores): a live claim counts, a dead process's claim
does not, and torch's thread count follows the share while a claim is held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from tasks import cores
from tests.conftest import REPO

HOLD = "import sys, time; from tasks import cores\nwith cores.claim():\n    print('held', flush=True); time.sleep(60)"


@pytest.fixture
def private_claims(tmp_path, monkeypatch):
    """Claims in a folder of this test's own, so that other nichetune processes on the machine do not count."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(cores.THREADS_ENV, raising=False)
    return tmp_path


def holder() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_live_claim_counts_and_a_killed_process_gives_its_cores_back(private_claims):
    assert cores.active() == 0
    child = holder()
    try:
        assert cores.active() == 1
        assert cores.share() == max(1, cores.given() // 1)
        with cores.claim():
            assert cores.active() == 2
            assert cores.share() == max(1, cores.given() // 2)
        assert cores.active() == 1
    finally:
        child.send_signal(signal.SIGKILL)  # no clean-up runs: the lock goes with the process
        child.wait()
    assert cores.active() == 0
    assert not list(cores.claims_dir().glob("*.claim"))  # the dead claim's file is gone too


def test_torch_threads_follow_the_share_while_a_claim_is_held(private_claims, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "given", lambda: 4)
    monkeypatch.setattr(cores, "REFRESH_S", 0.0)
    try:
        with cores.claim():
            assert torch.get_num_threads() == 4
            child = holder()
            try:
                cores.refresh()
                assert torch.get_num_threads() == 2
            finally:
                child.kill()
                child.wait()
            time.sleep(0.05)
            cores.refresh()
            assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_nichetune_threads_fixes_the_count(private_claims, monkeypatch):
    monkeypatch.setenv(cores.THREADS_ENV, "3")
    assert cores.share() == 3
    monkeypatch.setenv(cores.THREADS_ENV, "0")  # not a count: the share decides
    assert cores.share() == max(1, cores.given())
