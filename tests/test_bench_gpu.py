"""The GPU benchmark's harness, checked on the CPU with a tiny backbone and the committed slice of banking77 (the
GPU figures need a GPU machine and the full dataset)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu, report
from tests.conftest import SLICES


def test_both_loops_are_measured_on_the_same_rows_and_the_report_shows_them(tiny_backbone, tmp_path):
    out = tmp_path / "gpu.json"
    result = gpu.main(["--device", "cpu", "--rows", "64", "--epochs", "1", "--repeats", "2",
                       "--backbone", str(tiny_backbone), "--data", str(SLICES), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["command"].startswith("nichetune bench gpu --device cpu") and saved["device"] == "CPU, cpu/fp32"
    assert (saved["rows"], saved["epochs"], saved["strategy"]) == (64, 1, "full")
    assert len(saved["repeats"]) == 2 and all(value > 0 for run in saved["repeats"] for value in run.values())
    speeds = saved["samples_per_second"]
    assert set(speeds) == {gpu.NICHETUNE, gpu.PLAIN}
    assert saved["ratio"] == pytest.approx(speeds[gpu.NICHETUNE] / speeds[gpu.PLAIN])
    section = "\n".join(report.gpu_section([{**saved, "file": "gpu.json"}]))
    assert f"| {gpu.PLAIN} | {speeds[gpu.PLAIN]:.0f} |" in section and f"{saved['ratio']:.2f}" in section
    assert report.gpu_goal_lines([{**saved, "file": "gpu.json"}])[0].endswith("not measured yet (waits for a lent "
                                                                               "GPU: `python -m benchmarks.device`)")


def test_each_piece_budget_is_a_loop_of_its_own_at_the_batch_and_length_asked_for(tiny_backbone, tmp_path):
    from tasks import training

    out = tmp_path / "gpu-batch.json"
    saved = gpu.main(["--device", "cpu", "--rows", "48", "--epochs", "1", "--repeats", "1", "--batch-size", "24",
                      "--max-length", "32", "--piece-tokens", "none", "64", "--backbone", str(tiny_backbone),
                      "--data", str(SLICES), "--out", str(out)])
    pieces = gpu.variant_name(64)
    assert (saved["batch_size"], saved["max_length"]) == (24, 32)
    assert set(saved["samples_per_second"]) == {gpu.NICHETUNE, pieces, gpu.PLAIN}
    assert set(saved["ratios"]) == {gpu.NICHETUNE, pieces} and saved["ratio"] == saved["ratios"][gpu.NICHETUNE]
    assert training.GPU_PIECE_TOKENS is None  # set for the measurement only
    on_gpu = {**saved, "file": out.name, "device": "NVIDIA H200, cuda/bf16", "batch_size": 256, "max_length": 128}
    line = report.gpu_goal_lines([on_gpu])[0]
    assert line.startswith("- Training on a lent GPU (NVIDIA H200) at batch 256 and 128 tokens") and "goal 2x" in line
    assert f"| ratio ({pieces} / plain) |" in "\n".join(report.gpu_section([on_gpu]))


def test_a_cpu_run_without_out_is_refused_so_gpu_figures_are_never_replaced(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu.main(["--device", "cpu"])
    assert exit_info.value.code == 2 and "give --out FILE" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_exits_2_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu.main([])
    assert exit_info.value.code == 2 and "no CUDA device is visible" in capsys.readouterr().err
