"""Self-training: confident pseudo-labels within a per-class cap, never held out for validation, recorded in the
training log; a strategy trains again with them."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from tasks.auto import folds_for
from tasks.config import FinetuneParams, SelfTrainingParams
from tasks.finetune import Unlabeled, finetune, train_one
from tasks.layout import LOG_FILE
from tasks.model import MODEL_CARD
from tasks.selftrain import calibrated, pseudo_labels, same_members, self_train
from tasks.training import PSEUDO, carve_validation, labeled_rows, run_fingerprint
from tests.conftest import cfpb_sample


def test_pseudo_labels_keep_the_most_confident_rows_of_each_class_up_to_its_cap():
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.91, 0.09], [0.60, 0.40], [0.02, 0.98], [0.5, 0.5]])
    keep, names = pseudo_labels(probs, ["a", "b"], {"a": 2, "b": 4}, threshold=0.9, per_class=1.0)
    # a: three rows pass the threshold, two fit its cap (the two most confident); b: one passes
    assert keep.tolist() == [0, 1, 4]
    assert names == ["a", "a", "b"]
    keep, _ = pseudo_labels(probs, ["a", "b"], {"a": 2, "b": 4}, threshold=0.9, per_class=0.5)
    assert keep.tolist() == [0, 4]


def test_later_rounds_train_the_members_the_time_budget_kept_on_the_labeled_rows():
    cfg = FinetuneParams(strategy="auto", candidates=["tfidf", "embedding", "full"], time_budget=10)
    full_left_out = SimpleNamespace(candidates=[{"name": "tfidf"}, {"name": "embedding"},
                                                {"name": "full", "left_out": "time_budget"}])
    later = same_members(cfg, full_left_out)
    assert later.candidates == ["tfidf", "embedding"] and later.time_budget is None
    every_one = SimpleNamespace(candidates=[{"name": name} for name in cfg.candidates])
    assert same_members(cfg, every_one).candidates == cfg.candidates  # more rows never push full out
    head = FinetuneParams(strategy="head")
    assert same_members(head, full_left_out) is head


def test_pseudo_labeled_rows_are_never_held_out_for_validation():
    texts = [f"text {i}" for i in range(40)]
    labels = ["a", "b"] * 20
    frame = pd.DataFrame({"text": texts, "label": labels, PSEUDO: [i >= 10 for i in range(40)]})
    labeled = labeled_rows(frame)
    _, held = carve_validation(texts, labels, 0.5, seed=0, labeled=labeled)
    assert held and all(i < 10 for i in held)
    for fit, held in folds_for(texts, labels, 0.2, seed=0, labeled=labeled):
        assert all(i < 10 for i in held)
        assert set(range(10, 40)) <= set(fit)  # every pseudo-labeled row is fitted on in every fold
    # without pseudo-labels the carve is the one it always was (checkpoints and results stay reproducible)
    assert carve_validation(texts, labels, 0.5, seed=0) == carve_validation(texts, labels, 0.5, seed=0,
                                                                             labeled=[True] * 40)


def test_self_training_adds_confident_pool_texts_and_records_each_round(tmp_path, tiny_backbone):
    sample = cfpb_sample(per_class=20).rename(columns={"issue": "label"})[["text", "label"]]
    train, pool = sample.groupby("label").head(8), sample.groupby("label").tail(12)["text"].tolist()
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=2, batch_size=8, max_length=64)
    rounds = SelfTrainingParams(rounds=2, threshold=0.01, max_per_class=0.5)  # a random tiny model is never sure
    result = finetune(train, cfg, seed=0, out_dir=tmp_path, unlabeled=Unlabeled(pool, self_training=rounds))
    record = result.unlabeled["self_training"]
    assert record["rounds"] == 2 and record["pool_texts"] == len(pool) == result.unlabeled["pool_rows"]
    # round r takes at most r x 0.5 x 8 texts of each class, and the threshold lets every text through
    assert all(0 < count <= 8 for count in record["last_round_by_class"].values())
    assert sum(record["last_round_by_class"].values()) == record["pseudo_labels"][-1]
    logged = json.loads((tmp_path / LOG_FILE).read_text())
    assert logged["unlabeled"]["self_training"]["pseudo_labels"] == record["pseudo_labels"]
    card = json.loads((result.model_dir / MODEL_CARD).read_text())
    labeled_only = run_fingerprint(train.assign(**{PSEUDO: False}), calibrated(cfg), 0)
    assert card["fingerprint"] != labeled_only  # the saved model trained on more rows than the labeled ones
    assert result.temperature != 1.0  # the threshold reads calibrated probabilities: validation rows were carved


def test_a_member_the_budget_left_out_on_the_labeled_rows_stays_on_the_record(tmp_path, tiny_backbone):
    sample = cfpb_sample(per_class=12).rename(columns={"issue": "label"})[["text", "label"]]
    train, pool = sample.groupby("label").head(8), sample.groupby("label").tail(4)["text"].tolist()
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=64)
    left_out = {"name": "full", "left_out": "time_budget", "projected_seconds": 1800.0}
    trained = []

    def trainer(frame, cfg, seed, out_dir, work_dir):  # the first training, on the labeled rows, reports full left out
        result = train_one(frame, cfg, seed, out_dir, work_dir)
        trained.append(len(frame))
        return dataclasses.replace(result, candidates=[{"name": "head"}, *([left_out] if len(trained) == 1 else [])])

    rounds = SelfTrainingParams(rounds=1, threshold=0.01)
    result, record = self_train(train, pool, cfg, rounds, 0, tmp_path, None, trainer)
    assert record["rounds"] == 1 and len(trained) == 2 and trained[1] > trained[0]
    assert result.candidates == [{"name": "head"}, left_out]


def test_without_unlabeled_texts_nothing_changes(tmp_path, tiny_backbone):
    train = cfpb_sample(per_class=8).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=64)
    empty = Unlabeled([], self_training=SelfTrainingParams(rounds=2))
    result = finetune(train, cfg, seed=0, out_dir=tmp_path, unlabeled=empty)
    assert result.unlabeled == {}
