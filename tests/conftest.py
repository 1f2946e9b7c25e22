"""Shared fixtures: a tiny random BERT, a temporary DVC project holding real labeled rows, Prefect's harness.

Real rows come from the slices of public data committed in tests/data (see the PROVENANCE.md there), so the tests
run the same from a clone alone; a test that needs a full dataset skips where ../shared/data is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.sources import DEFAULT_DATA
from tasks.model import PRECISION_ENV
from tasks.runtime import quiet_offline_defaults
from tests.data.cut_slices import CFPB_ISSUES, CFPB_PER_ISSUE

REPO = Path(__file__).resolve().parents[1]
SLICES = REPO / "tests" / "data"  # small slices of banking77 and the CFPB complaints, cut by tests/data/cut_slices.py
quiet_offline_defaults()
# The suite checks behaviour to fp32's tolerances on any machine, subprocesses included: a CPU with bf16
# units (AMX, AVX-512 BF16) would otherwise run bf16 (tasks.model.resolve_device). tests/test_precision.py checks the bf16 path itself
os.environ[PRECISION_ENV] = "fp32"
# DVC binds its log handlers to sys.stdout and sys.stderr when it is first imported. Imported inside a test that
# uses capsys, they would write to that test's streams, closed after it, and every later DVC log line would fail.
import dvc.repo  # noqa: E402, F401


def needs_full_data(*folders: str) -> pytest.MarkDecorator:
    """Skip unless the full datasets `folders` are in the benchmarks' default data folder (../shared/data)."""
    missing = [name for name in folders if not (DEFAULT_DATA / name).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"needs the full {', '.join(missing)} in {DEFAULT_DATA} "
                              "(the repository holds only slices of banking77 and cfpb_payday_2023)")


def kill_after_first_checkpoint(child: subprocess.Popen, work_dir: Path, timeout: float = 300) -> dict:
    """SIGKILL a training `child` once its first epoch checkpoint is in `work_dir`; that checkpoint's state."""
    import torch

    from tasks.layout import CHECKPOINT_DIR

    checkpoints = work_dir / CHECKPOINT_DIR
    deadline = time.monotonic() + timeout
    while not (checkpoints.is_dir() and any(checkpoints.glob("*.pt"))) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (checkpoint,) = checkpoints.glob("*.pt")
    return torch.load(checkpoint, weights_only=True)["state"]


@pytest.fixture(scope="session", autouse=True)
def no_stray_mlflow_artifacts():
    """Tests keep MLflow's artifacts under their temporary folders. An experiment made without an artifact
    location stores them in ./mlruns of the current folder, which would pile up in the checkout."""
    stray = Path.cwd() / "mlruns"
    there_before = stray.exists()
    yield
    assert there_before or not stray.exists(), (
        f"a test wrote MLflow artifacts to {stray}: give its experiment an artifact_location under tmp_path")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and the packaged MiniLM tokenizer: fast mechanics, no download."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tasks.model import backbone_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(backbone_path("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cfpb_sample(per_class: int = 25, classes: int = 4) -> pd.DataFrame:
    """Real complaints (CFPB, 2023) from the most common issues, `per_class` rows each, in time order."""
    if per_class > CFPB_PER_ISSUE or classes > CFPB_ISSUES:
        raise ValueError(f"per_class={per_class}, classes={classes}: the slice holds at most {CFPB_PER_ISSUE} rows "
                         f"of each of {CFPB_ISSUES} issues; cut a larger one with tests/data/cut_slices.py")
    frame = pd.read_csv(SLICES / "cfpb_payday_2023" / "complaints.csv")
    # The slice lists the issues most common first, each already thinned to every 7th complaint in date order.
    rows = [frame[frame["issue"] == issue].head(per_class) for issue in frame["issue"].unique()[:classes]]
    sample = pd.concat(rows).sort_values("date_received", kind="stable")
    return sample[["complaint_id", "date_received", "text", "issue"]].reset_index(drop=True)


def make_project(root: Path, frame: pd.DataFrame, params: dict) -> Path:
    """A fresh git + DVC project with a local directory remote, one labeled CSV and a params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    run = lambda *cmd: subprocess.run(cmd, cwd=root, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@example.org")
    run("git", "config", "user.name", "nichetune tests")
    from dvc.repo import Repo

    Repo.init(str(root))
    with Repo(str(root)) as repo:
        with repo.config.edit() as config:
            config["core"]["remote"] = "local"
            config["core"]["analytics"] = False
            config["remote"]["local"] = {"url": str(root.parent / f"{root.name}-remote")}
    (root / "data").mkdir()
    frame.to_csv(root / "data" / "labeled.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    run("git", "add", "params.yaml", "dvc.yaml", ".dvc", ".dvcignore")  # the data is DVC's to version
    run("git", "commit", "-q", "-m", "a test project")
    return root


def nichetune(root: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process in the project folder; returns the exit code, stdout and stderr."""
    from flows.cli import main

    monkeypatch.chdir(root)
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def project_params(backbone: str, **sections) -> dict:
    """params.yaml for a CFPB sample project; keyword arguments replace whole keys inside sections."""
    params = {
        "base": {"seed": 7, "workdir": "outputs"},
        "ingest": {"dataset": "complaints", "path": "data/labeled.csv", "text_column": "text",
                   "label_column": "issue", "timestamp_column": "date_received", "id_column": "complaint_id"},
        "validate": {"labels": [], "min_examples_per_class": 5},
        "split": {"holdout_fraction": 0.25},
        # one fine-tuned network: the pipeline's plumbing in seconds; tests/test_auto.py runs the default, auto.
        # The tiny backbone's word vectors are random: frozen, two epochs leave a model no better than the majority
        # class, which the gate rejects before a reviewer sees it
        "finetune": {"backbone": backbone, "strategy": "full", "epochs": 2, "batch_size": 8, "max_length": 64,
                     "learning_rate": 0.005, "word_embeddings": "train"},
        "adapt": {"objective": "none"},  # dvc.yaml's finetune stage reads both sections: DVC wants them present
        "self_training": {"rounds": 0},
        "evaluate": {"drift_report": True},
        "register": {"model_name": "complaints", "experiment": "tests", "approval": "auto"},
    }
    for section, values in sections.items():
        params[section].update(values)
    return params


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's real test harness: a temporary server and database for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
