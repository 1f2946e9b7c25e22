"""The kit a lent GPU runs (benchmarks/device.py), checked on the CPU: every planned command parses, the backbone
survives its fp16 trip, and `run --plan check` goes through every step (the backbone restored and found through
the packaged module's name, jobs alone then together, a deadline, the archive) into results that `merge` folds in."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import device, gpu, privacy, quality
from tests.conftest import SLICES

MODULES = {"benchmarks.gpu": lambda argv: gpu.parse_args(argv)[1], "benchmarks.quality": quality.parse_args,
           "benchmarks.privacy": privacy.parse_args}


@pytest.mark.parametrize("job", [job for plan in device.PLANS.values() for job in plan.alone + plan.together],
                         ids=lambda job: job.name)
def test_every_planned_command_is_one_its_bench_accepts(job):
    for command in job.commands:
        module, *argv = device.fill(command, {"results": "/r", "data": "/d", "work": "/w"})
        assert MODULES[module](argv).data.as_posix() == "/d"


def test_the_backbone_travels_in_half_the_bytes_and_comes_back_as_fp32(tiny_backbone, tmp_path):
    device.half_backbone(tiny_backbone, tmp_path / "kit")
    device.full_backbone(tmp_path / "kit", tmp_path / "back")
    original, back = load_file(tiny_backbone / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    half = (tmp_path / "kit" / device.HALF_WEIGHTS).stat().st_size
    assert half < 0.6 * (tiny_backbone / "model.safetensors").stat().st_size
    assert set(back) == set(original) and all(back[name].dtype == original[name].dtype for name in original)
    assert all(torch.allclose(back[name], original[name], rtol=1e-3, atol=1e-4) for name in original)
    assert (tmp_path / "back" / "tokenizer.json").is_file() and (tmp_path / "back" / "config.json").is_file()


def test_there_the_packaged_backbone_name_finds_the_kit_copy(tiny_backbone, tmp_path):
    device.half_backbone(tiny_backbone, tmp_path / "kit" / "backbone")
    env = device.prepare(tmp_path / "kit", tmp_path / "scratch", install=False)
    code = "from tasks.backbone import backbone_path; print(backbone_path('minilm'))"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == str(tmp_path / "scratch" / "backbone")


def test_a_check_run_goes_through_every_step_and_its_rows_merge_in(tiny_backbone, tmp_path, monkeypatch):
    kit = tmp_path / "kit"
    shutil.copytree(SLICES, kit / "data")
    device.half_backbone(tiny_backbone, kit / "backbone")
    out = tmp_path / "out"
    entries = device.run(device.CHECK_PLAN, kit, out, budget=600, install=False)
    summary = (out / device.SUMMARY).read_text()
    assert [entry.status for entry in entries] == ["done", "done"], summary
    with tarfile.open(out / device.ARCHIVE) as archive:
        names = set(archive.getnames())
    assert {"gpu-check.json", "quality_gpu-check.json", "gpu-check.log", "quick-head.log"} <= names

    results = tmp_path / "results"
    results.mkdir()
    said = device.merge(out / device.ARCHIVE, results)
    assert said == ["gpu-check.json: copied", "quality_gpu-check.json: 1 rows into quality_gpu.json"]
    merged = quality.read_results(results / "quality_gpu.json")
    assert [(row["dataset"], row["method"], row["seed"]) for row in merged["rows"]] == [
        ("banking77_k8_10intents", "nichetune_head", 0)]
    assert json.loads((results / "gpu-check.json").read_text())["device"] == "CPU, cpu/fp32"
    assert device.merge(out / device.ARCHIVE, results)[1] == said[1]  # again: the row is replaced, not added
    assert len(quality.read_results(results / "quality_gpu.json")["rows"]) == 1


def test_a_job_still_running_at_the_deadline_is_stopped_and_said_so(tmp_path):
    sleeper = device.Job("sleeper", [["http.server", "--help"], ["timeit", "-n", "1", "import time; time.sleep(60)"]])
    after = device.Job("after", [["http.server", "--help"]])
    places = {"results": str(tmp_path), "data": "", "work": ""}
    import time

    entries = device.run_jobs([sleeper, after], places, {"PATH": "", "PYTHONPATH": ""}, time.monotonic() + 5,
                              together=False)
    assert [entry.status for entry in entries] == ["stopped at the deadline (command 2 of 2)",
                                                   "not started: no time left"]
    assert entries[0].seconds < 30 and "$ " + sys.executable in (tmp_path / "sleeper.log").read_text()
