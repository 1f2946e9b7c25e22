"""Progress a person can see: one line per training epoch, bars only on a terminal, and `--quiet` for neither."""

from __future__ import annotations

import re
import sys

import pandas as pd
import pytest

from flows.cli import build_parser
from tasks import predict as predict_module
from tasks import progress
from tasks.config import FinetuneParams
from tasks.finetune import finetune
from tasks.model import Classifier
from tasks.predict import TextClassifierModel, predict_in_chunks
from tests.conftest import cfpb_sample

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
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


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
