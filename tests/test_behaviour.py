"""Behaviour: the real packaged backbone on real data (banking77) learns the task with every strategy.

The rows come from the slice of banking77 in tests/data, which holds every row of the ten intents used here, so
the samples are the same as from the full dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import FinetuneParams
from tasks.evaluate import score
from tasks.finetune import finetune
from tasks.portfolio import load_classifier
from tasks.strategies import STRATEGIES
from tests.conftest import SLICES

pytestmark = pytest.mark.slow
DEFAULT_STRATEGY = FinetuneParams.model_fields["strategy"].default

# Settings per strategy for 80 rows: few epochs, so that the whole file runs in about a minute on 2 cores.
# "auto" is the default strategy; its own test below runs it with the default settings.
STRATEGY_SETTINGS = {
    "head": {"epochs": 30},
    "freeze": {"epochs": 6, "learning_rate": 2e-4, "freeze_layers": 4},
    "lora": {"epochs": 6, "learning_rate": 3e-3},
    "ia3": {"epochs": 6, "learning_rate": 1e-2},
    "gradual_unfreeze": {"epochs": 4, "learning_rate": 1e-4, "layer_lr_decay": 0.8},
    "full": {"epochs": 4},
}


def banking77(split: str) -> pd.DataFrame:
    frame = pd.read_csv(SLICES / "banking77" / f"{split}.csv")
    return frame.rename(columns={"category": "label"})


def accuracy(train: pd.DataFrame, test: pd.DataFrame, cfg: FinetuneParams, tmp_path) -> tuple[dict, object]:
    result = finetune(train, cfg, seed=0, out_dir=tmp_path)
    predicted = load_classifier(result.model_dir).predict(test["text"].tolist())
    metrics, _ = score(test["label"].tolist(), predicted, train["label"].value_counts().idxmax())
    return metrics, result


def ten_intents() -> tuple[pd.DataFrame, pd.DataFrame]:
    """8 training rows for each of ten intents, and 10 test rows each."""
    intents = sorted(banking77("train")["label"].unique())[:10]
    train = banking77("train").query("label in @intents").groupby("label", group_keys=False).sample(8, random_state=0)
    return train, banking77("test").query("label in @intents").groupby("label").head(10)


# Every strategy in the table but the default: one added there without settings here fails (KeyError).
@pytest.mark.parametrize("strategy", [name for name in STRATEGIES if name != DEFAULT_STRATEGY])
def test_every_other_strategy_beats_the_majority_class_on_ten_intents(strategy, tmp_path):
    train, test = ten_intents()
    cfg = FinetuneParams(strategy=strategy, **STRATEGY_SETTINGS[strategy])
    metrics, result = accuracy(train, test, cfg, tmp_path)
    assert metrics["majority_accuracy"] == pytest.approx(0.1)  # 10 test rows per intent
    assert metrics["accuracy"] > 0.4, metrics  # well above 10%; the default reaches about 90%
    assert np.isfinite(result.losses).all() and result.losses[-1] < result.losses[0]


def test_the_default_settings_learn_ten_intents_from_8_examples_each(tmp_path):
    """All 77 intents at 8 examples each are a benchmark row (about 84% accuracy over 5 seeds, BENCHMARKS.md),
    which takes minutes here; ten intents check the same default settings in seconds."""
    train, test = ten_intents()
    metrics, result = accuracy(train, test, FinetuneParams(), tmp_path)
    assert metrics["majority_accuracy"] == pytest.approx(0.1)
    assert metrics["accuracy"] > 0.85 and metrics["macro_f1"] > 0.85, metrics  # 100% here on 2 cores
    # a portfolio: each candidate scored on validation rows, the mixture's weights adding up
    assert result.strategy == "auto" and [c["name"] for c in result.candidates] == ["tfidf", "embedding", "full"]
    assert sum(result.choice["weights"].values()) == pytest.approx(1)
