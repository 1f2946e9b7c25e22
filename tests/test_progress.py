"""Progress a person can see: one line per training epoch and per stage of ingesting a big file, bars only on a
terminal, and `--quiet` for neither."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import build_parser
from tasks import predict as predict_module
from tasks import progress
from tasks.config import FinetuneParams, IngestParams
from tasks.finetune import finetune
from tasks.ingest import ingest_batch
from tasks.model import Classifier
from tasks.predict import TextClassifierModel, predict_in_chunks
from tasks.readers import BIG_FILE_BYTES
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
EPOCH_LINE = re.compile(r"^epoch (\d)/3: loss \d+\.\d{4}, validation macro_f1 \d\.\d{4}, \d+\.\d s$")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return cfpb_sample(per_class=6).rename(columns={"issue": "label"})[["text", "label"]]


def tiny_run(train, tiny_backbone, out_dir):
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=3, batch_size=8, max_length=32,
                         validation_fraction=0.25, early_stopping_metric="macro_f1", early_stopping_patience=3)
    return finetune(train, cfg, seed=11, out_dir=out_dir)


def test_every_epoch_prints_its_loss_validation_metric_and_seconds(train, tiny_backbone, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    result = tiny_run(train, tiny_backbone, tmp_path)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [EPOCH_LINE.match(line).group(1) for line in lines] == ["1", "2", "3"], out
    assert f"loss {result.losses[0]:.4f}" in lines[0]
    assert "%|" not in err  # stderr is no terminal here, as in CI: no bar


def test_quiet_prints_no_epoch_lines(train, tiny_backbone, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    tiny_run(train, tiny_backbone, tmp_path)
    out, err = capsys.readouterr()
    assert "epoch " not in out + err


class Terminal:
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def __init__(self):
        self.written: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self.written)


def test_bars_show_on_a_terminal_unless_quiet(monkeypatch):
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    assert not progress.bars_shown()  # pytest's captured stderr is no terminal
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.bars_shown()
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    assert not progress.bars_shown()
    monkeypatch.setenv(progress.QUIET_ENV, "0")
    assert progress.bars_shown()


def test_the_quiet_option_comes_before_the_command():
    assert build_parser().parse_args(["--quiet", "bench", "report"]).quiet
    assert not build_parser().parse_args(["bench", "report"]).quiet


class Loaded:
    """The registered model as `mlflow.pyfunc.load_model` gives it: predict(frame), around the real wrapper."""

    def __init__(self, model_dir):
        self.model = TextClassifierModel()
        self.model.classifier = Classifier(model_dir)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(None, frame)


def test_prediction_in_chunks_gives_the_rows_of_one_call_in_order(train, tiny_backbone, tmp_path, monkeypatch):
    loaded = Loaded(tiny_run(train, tiny_backbone, tmp_path).model_dir)
    texts = train["text"].tolist()
    whole = loaded.predict(pd.DataFrame({"text": texts}))
    monkeypatch.setattr(predict_module, "PROGRESS_CHUNK", 5)
    pd.testing.assert_frame_equal(predict_in_chunks(loaded, texts), whole, atol=1e-6)
    assert list(predict_in_chunks(loaded, []).columns) == list(whole.columns)


# --- ingesting a big file -----------------------------------------------------------------------------------------

INGEST_LINES = [re.compile(pattern) for pattern in (
    r"^big\.csv: read (\d+) rows \(utf-8\), \d+\.\d s$",
    r"^big\.csv: prepared: PII masked \(.+\), \d+\.\d s$",
    r"^big\.csv: checked: (\d+) rows pass, (\d+) do not, \d+\.\d s$",
    r"^big\.csv: stored (\d+) rows, quarantined (\d+); DVC versions them next, \d+\.\d s$",
)]
CFG = IngestParams(**project_params("unused")["ingest"])


@pytest.fixture(scope="module")
def big_project(tmp_path_factory) -> tuple[Path, Path]:
    """A DVC project, and real CFPB complaints repeated (each copy numbered, so none is a duplicate) to a CSV just
    over the size from which ingest shows its progress."""
    sample = cfpb_sample(per_class=25)
    root = make_project(tmp_path_factory.mktemp("big") / "project", sample, project_params("unused"))
    copies = BIG_FILE_BYTES // len(sample.to_csv(index=False).encode()) + 1
    rows = pd.concat([sample] * copies, ignore_index=True)
    rows["complaint_id"] = range(len(rows))
    rows["text"] = rows["text"] + " (copy " + (rows.index // len(sample)).astype(str) + ")"
    big = root / "exports" / "big.csv"
    big.parent.mkdir()
    rows.to_csv(big, index=False)
    assert big.stat().st_size >= BIG_FILE_BYTES
    return root, big


def test_a_big_file_shows_bars_on_a_terminal_and_a_line_per_stage(big_project, capsys, monkeypatch):
    root, big = big_project
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = ingest_batch(CFG, [], root, big, dataset="shown")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("big.csv: ")]
    matches = [pattern.match(line) for pattern, line in zip(INGEST_LINES, lines)]
    assert len(lines) == len(INGEST_LINES) and all(matches), lines
    assert int(matches[0].group(1)) == report.rows_read
    assert [int(matches[2].group(i)) for i in (1, 2)] == [report.accepted, report.quarantined]
    assert [int(matches[3].group(i)) for i in (1, 2)] == [report.accepted, report.quarantined]
    shown = terminal.text()
    assert "reading big.csv:" in shown and "masking PII:" in shown and "%|" in shown


def test_quiet_shows_neither_bars_nor_lines_for_a_big_file(big_project, capsys, monkeypatch):
    root, big = big_project
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = ingest_batch(CFG, [], root, big, dataset="quiet")
    assert report.accepted > 0
    assert "big.csv: " not in capsys.readouterr().out
    assert "reading big.csv" not in terminal.text() and "masking PII" not in terminal.text()


def test_a_small_file_shows_no_bar_and_no_stage_lines_on_a_terminal(big_project, capsys, monkeypatch):
    root, _ = big_project
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = ingest_batch(CFG, [], root, root / "data" / "labeled.csv", dataset="small")
    assert report.accepted == len(cfpb_sample(per_class=25))
    assert "labeled.csv: read" not in capsys.readouterr().out
    assert "reading labeled.csv" not in terminal.text() and "masking PII" not in terminal.text()
