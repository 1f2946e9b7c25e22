"""Integration: the whole Prefect flow on a temporary git + DVC project, MLflow on SQLite, a tiny random BERT."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.pipeline import train_pipeline
from tasks.errors import NichetuneError, ValidationFailed
from tasks.model import Classifier
from tasks.predict import predict_frame
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.slow  # the whole flow on Prefect's test server


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone, prefect_harness):
    root = make_project(tmp_path_factory.mktemp("flow") / "project", cfpb_sample(),
                        project_params(str(tiny_backbone)))
    result = train_pipeline(root=str(root))
    return root, result


def test_flow_registers_a_challenger_tagged_with_data_version_and_commit(trained):
    root, result = trained
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    version = client.get_model_version_by_alias("complaints", "challenger")
    dvc_md5 = yaml.safe_load((root / "data" / "raw" / "complaints.dvc").read_text())["outs"][0]["md5"]
    assert str(version.version) == result["version"] == "1"
    assert version.tags["data_version"] == dvc_md5
    assert version.tags["git_commit"].removesuffix("-dirty") == result["tags"]["git_commit"].removesuffix("-dirty")
    assert len(version.tags["git_commit"].removesuffix("-dirty")) == 40
    assert version.tags["params_hash"] == result["tags"]["params_hash"]
    assert version.tags["strategy"] == "full" and version.tags["primary_metric"] == "macro_f1"
    assert version.tags["validation_status"].startswith("passed")
    assert version.tags["drift_status"] in {"ok", "warn", "block", "not measured"}  # windows may be too small
    run = client.get_run(result["run_id"])
    assert run.data.metrics["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert run.data.params["finetune.epochs"] == "2"


def test_approval_auto_promotes_a_first_version_that_passes_the_gate(trained):
    _, result = trained
    assert result["gate"] == "gate passed" and result["decision"] == "promoted"
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    champion = client.get_model_version_by_alias("complaints", "champion")
    assert str(champion.version) == result["version"]
    assert champion.tags["promoted_via"] == "flow (approval: auto)"
    assert champion.tags["gate"] == "gate passed (checked again at approval)"
    comparison = client.download_artifacts(result["run_id"], "comparison.json")
    assert json.loads(Path(comparison).read_text())["champion"] is None


def test_ingest_stores_a_batch_versioned_with_dvc_and_pushed(trained):
    root, result = trained
    md5 = result["tags"]["data_version"]
    assert md5.endswith(".dir")  # the dataset is the folder of its batches
    assert (root.parent / "project-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    version = json.loads((root / "outputs" / "ingest" / "data_version.json").read_text())
    assert version["tracked"] is True and version["rows"] == 100 and len(version["batches"]) == 1
    assert len(list((root / "data" / "raw" / "complaints").glob("*.parquet"))) == 1


def test_the_validation_summary_is_a_prefect_artifact(trained):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["validation-complaints"])))
    assert artifacts and "validation passed" in artifacts[0].data


def test_the_run_publishes_a_summary_and_a_per_class_table_in_the_prefect_ui(trained):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, result = trained
    with get_client(sync_client=True) as client:
        found = {key: client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                 for key in ("summary-complaints", "per-class-complaints", "review-complaints")}
    # other tests' projects publish under the same keys: this run's artifacts are those of its flow run
    [mine] = [artifact for artifact in found["summary-complaints"] if result["run_id"] in artifact.data]
    ours = {key: [a for a in found[key] if a.flow_run_id == mine.flow_run_id] for key in found}
    summary = mine.data
    assert f"complaints version {result['version']}" in summary and result["tags"]["data_version"] in summary
    assert "| macro_f1 (primary) |" in summary and result["run_id"] in summary and "/#/experiments/" in summary
    assert "Drift over time windows" in summary and "Validation**: passed" in summary
    table = ours["per-class-complaints"][0]
    assert table.type == "table" and "precision" in str(table.data) and "f1-score" in str(table.data)
    assert "gate passed" in ours["review-complaints"][0].data


def test_reports_are_written_and_logged(trained):
    root, result = trained
    reports = root / "outputs" / "evaluate" / "reports"
    assert (reports / "evidently_report.html").stat().st_size > 100_000
    drift = json.loads((reports / "drift.json").read_text())
    assert set(drift["columns"]) == {"text", "text_length"}
    per_class = pd.read_csv(reports / "per_class.csv")
    assert len(per_class) >= 4 and {"precision", "recall", "f1-score"} <= set(per_class.columns)
    artifacts = {a.path for a in MlflowClient(result["tracking_uri"]).list_artifacts(result["run_id"], "reports")}
    assert "reports/evidently_report.html" in artifacts
    assert {"reports/confusion_matrix.png", "reports/reliability.png", "reports/explanations.html",
            "reports/windows.json", "reports/windows.png", "reports/calibration.json"} <= artifacts
    windows = json.loads((reports / "windows.json").read_text())
    assert windows["status"] == result["tags"]["drift_status"]
    metrics = json.loads((root / "outputs" / "evaluate" / "metrics.json").read_text())
    assert 0 <= metrics["ece"] <= 1
    validation = {a.path for a in MlflowClient(result["tracking_uri"]).list_artifacts(result["run_id"], "validation")}
    assert {"validation/summary.json", "validation/summary.md"} <= validation


def test_registered_model_reloads_with_the_same_predictions(trained):
    root, result = trained
    texts = cfpb_sample(per_class=3)["text"].tolist() + ["I was charged a late fee twice", ""]
    before = predict_frame(Classifier(root / "outputs" / "finetune" / "model"), texts)
    mlflow.set_tracking_uri(result["tracking_uri"])
    loaded = mlflow.pyfunc.load_model("models:/complaints@challenger")
    after = loaded.predict(pd.DataFrame({"text": texts}))
    assert after["prediction"].tolist() == before["prediction"].tolist()
    pd.testing.assert_frame_equal(after, before, atol=1e-6)


def test_a_failed_validation_stops_the_flow_before_training(tmp_path, tiny_backbone, prefect_harness):
    params = project_params(str(tiny_backbone), validate={"labels": [], "min_examples_per_class": 50})
    root = make_project(tmp_path / "project", cfpb_sample(), params)
    with pytest.raises(ValidationFailed, match="at least 50 examples of"):
        train_pipeline(root=str(root))
    assert not (root / "outputs" / "finetune").exists()
    assert not (root / "outputs" / "mlflow").exists()


def test_a_run_triggered_for_another_project_is_refused_by_the_up_that_picked_it_up(tmp_path, tiny_backbone,
                                                                                      prefect_harness, monkeypatch):
    """Two clones with one dataset name share nichetune-train/train-<dataset> on one Prefect server: a run
    triggered for the first while its `nichetune up` was stopped, and picked up by the second's, stops before
    it reads or writes either project."""
    from flows.pipeline import SERVED_ROOTS_ENV, check_served_root

    root = make_project(tmp_path / "first", cfpb_sample(), project_params(str(tiny_backbone)))
    monkeypatch.setenv(SERVED_ROOTS_ENV, str(tmp_path / "second"))
    with pytest.raises(NichetuneError, match=rf"triggered for the project in {root}, but the `nichetune up` that "
                                             rf"picked it up serves {tmp_path / 'second'} \(both name their "
                                             r"deployment nichetune-train/train-complaints\)"):
        train_pipeline(root=str(root))
    assert not (root / "outputs").exists() and not (root / "data" / "raw").exists()
    monkeypatch.setenv(SERVED_ROOTS_ENV, os.pathsep.join([str(tmp_path / "second"), str(root)]))
    check_served_root(str(root), "complaints")  # one of the projects this up serves: it trains


def test_a_version_worse_than_the_champion_ends_rejected_with_the_reason(trained):
    root, first = trained
    result = train_pipeline(root=str(root), overrides=["register.min_improvement=1.0"])
    assert result["decision"] == "rejected" and result["version"] != first["version"]
    assert "below the required +1.0000" in result["gate"] and f"vs champion v{first['version']}" in result["gate"]
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    rejected = client.get_model_version("complaints", result["version"])
    assert rejected.tags["decision"] == "rejected" and "below the required" in rejected.tags["rejection_reason"]
    assert str(client.get_model_version_by_alias("complaints", "champion").version) == first["version"]


def test_a_version_whose_windows_drift_past_the_block_threshold_ends_rejected_with_the_reason(trained):
    root, first = trained
    measured_and_blocking = ["evaluate.window=1M", "evaluate.min_window_rows=2", "evaluate.drift_block={label: 0.0}"]
    result = train_pipeline(root=str(root), overrides=measured_and_blocking)
    assert result["tags"]["drift_status"] == "block"
    assert result["decision"] == "rejected" and "drift blocks promotion" in result["gate"]
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    assert client.get_model_version("complaints", result["version"]).tags["decision"] == "rejected"
    assert str(client.get_model_version_by_alias("complaints", "champion").version) == first["version"]


def test_the_flow_learns_from_unlabeled_texts_and_tags_where_they_came_from(tmp_path, tiny_backbone, prefect_harness):
    from tasks.batches import UNLABELED
    from tasks.config import load_params
    from tasks.ingest import ingest_batch

    labeled = cfpb_sample()
    params = project_params(str(tiny_backbone), register={"model_name": "pooled", "experiment": "pool",
                                                          "approval": "auto"})
    params["adapt"] = {"objective": "tsdae", "steps": 2, "batch_size": 4, "max_length": 32}
    params["self_training"] = {"rounds": 1, "threshold": 0.01}
    params["suggest"] = {"after_review": True, "n": 3}  # the flow's last step: the next texts to label
    root = make_project(tmp_path / "project", labeled, params)
    unlabeled = pd.concat([cfpb_sample(per_class=35)[["text"]].tail(40), labeled[["text"]].head(5)])
    unlabeled.to_csv(root / "data" / "pool.csv", index=False)  # five of them are labeled texts too
    ingest_batch(load_params(root / "params.yaml").ingest, [], root, root / "data" / "pool.csv", store=UNLABELED)
    result = train_pipeline(root=str(root))
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    tags = client.get_model_version("pooled", result["version"]).tags
    kept = pd.read_parquet(root / "outputs" / "split" / "unlabeled.parquet")
    assert not set(kept["text"]) & set(pd.read_parquet(root / "outputs" / "split" / "holdout.parquet")["text"])
    assert int(tags["unlabeled_texts"]) == len(kept) <= 40
    pool_version = json.loads((root / "outputs" / "ingest" / "data_version.json").read_text())["unlabeled"]
    assert tags["unlabeled_pool_version"] == pool_version["data_version"]
    assert tags["adapt_objective"] == "tsdae" and tags["self_training_rounds"] == "1"
    trained_on = set(pd.read_parquet(root / "outputs" / "split" / "train.parquet")["text"])
    assert tags["adapt_corpus"] == "pool+training"
    assert int(tags["adapt_texts"]) == len(set(kept["text"]) | trained_on)  # the holdout's texts never among them
    assert int(tags["self_training_pseudo_labels"]) > 0
    model = root / "outputs" / "finetune" / "model"
    assert json.loads((model / "nichetune.json").read_text())["base"] == "base"  # the adapted backbone, kept inside
    assert result["decision"] == "promoted"  # register.approval auto: the champion the next batch is asked of
    asked = pd.read_csv(Path(result["suggested"]) / "suggestions.csv")
    assert len(asked) == 3 and not set(asked["text"]) & set(labeled["text"])
    record = json.loads((root / "data" / "suggestions" / "complaints" / "0001.json").read_text())
    assert record["model"] == f"pooled/{result['version']}" and record["ids"] == asked["nichetune_id"].tolist()
