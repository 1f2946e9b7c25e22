"""Provenance of unlabeled texts: a model trained from a backbone adapted on the pool (and self-trained) is
registered in real MLflow on SQLite with tags saying which pool, how adapted and how many pseudo-labels, the
adapted backbone as an artifact, and a summary line; the registered model predicts with the cache gone."""

from __future__ import annotations

import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.summary import summary_markdown
from tasks import register
from tasks.adapt import adapted_backbone, embed_base
from tasks.config import AdaptParams, FinetuneParams, Paths, load_params
from tasks.finetune import finetune
from tasks.layout import HOLDOUT_FILE, LOG_FILE, METRICS_FILE, REPORTS_DIR, SUMMARY_FILE, VERSION_FILE
from tasks.model import forget_bases, resolve_device
from tasks.portfolio import load_classifier
from tasks.tracking import registry_client, tracking_store
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

UNLABELED = {"pool_version": "d41d8cd9", "pool_batches": 2, "pool_rows": 40,
             "self_training": {"rounds": 2, "threshold": 0.9, "pseudo_labels": [5, 2]}}


def stage_outputs(paths: Paths, rows: pd.DataFrame, unlabeled: dict) -> None:
    """What ingest, validate, split and evaluate leave on disk for register, written as those stages write it;
    the finetune stage's record gets `unlabeled` as the finetune stage fills it."""
    for stage in ("ingest", "validate", "split", "evaluate"):
        paths.stage(stage).mkdir(parents=True, exist_ok=True)
    (paths.stage("ingest") / VERSION_FILE).write_text(json.dumps(
        {"md5": "0123456789abcdef0123456789abcdef", "path": "data/raw/complaints", "tracked": True,
         "rows": len(rows)}))
    (paths.stage("validate") / SUMMARY_FILE).write_text(json.dumps({"success": True, "checks": []}))
    rows.to_parquet(paths.stage("split") / HOLDOUT_FILE)
    (paths.stage("evaluate") / REPORTS_DIR).mkdir(exist_ok=True)
    (paths.stage("evaluate") / REPORTS_DIR / "per_class.csv").write_text("label,f1\na,0.5\n")
    (paths.stage("evaluate") / METRICS_FILE).write_text(json.dumps(
        {"accuracy": 0.5, "macro_f1": 0.5, "majority_accuracy": 0.5, "majority_macro_f1": 0.33,
         "drift_status": "ok"}))
    record = paths.stage("finetune") / LOG_FILE
    record.write_text(json.dumps({**json.loads(record.read_text()), "unlabeled": unlabeled}))


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_backbone) -> dict:
    """Two versions of the same project: one trained from an adapted backbone and self-trained, one plain."""
    rows = cfpb_sample(per_class=6, classes=2).rename(columns={"issue": "label"})
    root = make_project(tmp_path_factory.mktemp("register") / "project", cfpb_sample(per_class=6, classes=2),
                        project_params(str(tiny_backbone)))
    params = load_params(root / "params.yaml")
    paths = Paths.of(root, params)
    cache = tmp_path_factory.mktemp("cache")
    pool = cfpb_sample(per_class=10, classes=4)["text"].tolist()
    adapted = adapted_backbone(pool, UNLABELED["pool_version"], AdaptParams(objective="tsdae", steps=2, batch_size=4,
                               max_length=32), str(tiny_backbone), 7, cache, resolve_device("cpu"))
    cfg = FinetuneParams(backbone=str(adapted.path), strategy="head", epochs=2, batch_size=8, max_length=32)
    model_dir = finetune(rows[["text", "label"]], cfg, seed=7, out_dir=paths.stage("finetune")).model_dir
    embed_base(model_dir, adapted.path)
    probs = load_classifier(model_dir).predict_proba(rows["text"].tolist())
    stage_outputs(paths, rows, {**UNLABELED, "adapt": {**adapted.provenance, "corpus": "pool+training"}})
    adapted_version = register.run(params, paths)
    shutil.rmtree(cache)
    forget_bases()
    finetune(rows[["text", "label"]], cfg.model_copy(update={"backbone": str(tiny_backbone)}), seed=7,
             out_dir=paths.stage("finetune"))
    stage_outputs(paths, rows, {})
    plain_version = register.run(params, paths)
    return {"params": params, "paths": paths, "adapted": adapted_version, "plain": plain_version,
            "provenance": adapted.provenance, "rows": rows, "probs": probs}


def test_a_version_trained_with_unlabeled_texts_is_tagged_with_their_provenance(registered):
    registration = registered["adapted"]
    expected = {"unlabeled_pool_version": "d41d8cd9", "unlabeled_texts": "40", "adapt_objective": "tsdae",
                "adapt_steps": "2", "adapt_texts": str(registered["provenance"]["texts"]),
                "adapt_corpus": "pool+training", "self_training_rounds": "2", "self_training_pseudo_labels": "7"}
    client = registry_client(registration.tracking_uri)
    version = client.get_model_version(registration.model_name, registration.version)
    run = client.get_run(registration.run_id)
    assert {key: version.tags.get(key) for key in expected} == expected
    assert {key: run.data.tags.get(key) for key in expected} == expected


def test_the_adapted_backbone_is_an_artifact_of_the_run(registered):
    registration = registered["adapted"]
    client = registry_client(registration.tracking_uri)
    logged = {item.path for item in client.list_artifacts(registration.run_id, register.ADAPTED_ARTIFACT)}
    assert {f"{register.ADAPTED_ARTIFACT}/{name}" for name in ("config.json", "model.safetensors",
                                                                 "tokenizer.json")} <= logged


def test_a_version_trained_without_unlabeled_texts_has_none_of_those_tags_or_the_artifact(registered):
    registration = registered["plain"]
    client = registry_client(registration.tracking_uri)
    version = client.get_model_version(registration.model_name, registration.version)
    assert not set(register.UNLABELED_TAGS) & set(version.tags)
    assert client.list_artifacts(registration.run_id, register.ADAPTED_ARTIFACT) == []


def test_the_registered_model_predicts_the_same_with_the_adapter_cache_gone(registered):
    registration = registered["adapted"]
    forget_bases()
    with tracking_store(registration.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{registration.model_name}/{registration.version}")
    rows = registered["rows"]
    predicted = model.predict(pd.DataFrame({"text": rows["text"]}))
    probs = predicted[[column for column in predicted.columns if column.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs, registered["probs"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which, line", [
    ("adapted", "- **Unlabeled texts**: 40 texts in pool version `d41d8cd9`; domain adaptation `tsdae`, 2 steps on "
                "40 texts from the pool and the training rows; self-training 2 rounds, 7 pseudo-labels"),
    ("plain", None),
])
def test_the_run_summary_states_the_unlabeled_texts_used(registered, which, line):
    review = {"gate": "gate passed", "table": "| metric |\n|---|"}
    outcome = {"decision": "promoted", "message": "promoted"}
    markdown = summary_markdown(registered["params"], registered["paths"], registered[which], review, outcome)
    lines = markdown.splitlines()
    if line is None:
        assert not any("Unlabeled texts" in text for text in lines)
    else:
        assert lines[lines.index(next(t for t in lines if t.startswith("- **Model**"))) + 1] == line


def test_a_summary_of_adaptation_on_the_training_texts_alone_says_so():
    from flows.summary import unlabeled_lines

    tags = register.unlabeled_tags({"pool_version": None, "pool_rows": 0, "adapt": {
        "objective": "tsdae", "steps": 500, "texts": 2159, "corpus": "pool+training"}})
    assert unlabeled_lines(tags) == ["- **Unlabeled texts**: no unlabeled pool; domain adaptation `tsdae`, 500 steps "
                                     "on 2159 texts from the training rows"]


def test_pseudo_label_counts_per_round_or_per_class_add_up():
    assert register.unlabeled_tags({"self_training": {"rounds": 1, "pseudo_labels": [{"a": 3, "b": 4}]}}) == {
        "self_training_rounds": "1", "self_training_pseudo_labels": "7"}
    assert register.unlabeled_tags({"pool_version": "v", "pool_rows": 9}) == {
        "unlabeled_pool_version": "v", "unlabeled_texts": "9"}
