"""Evaluate: holdout accuracy, macro-F1 and a per-class report, and an Evidently drift and quality report."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, classification_report, f1_score

from tasks.config import EvaluateParams
from tasks.model import Classifier

METRICS_FILE = "metrics.json"
REPORTS_DIR = "reports"
PER_CLASS_FILE = "per_class.csv"
DRIFT_HTML = "evidently_report.html"
DRIFT_JSON = "drift.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    metrics: dict  # accuracy, macro_f1, majority_accuracy, holdout_rows
    metrics_file: Path
    reports: Path  # per-class CSV, drift summary JSON, Evidently HTML


def score(truth: list[str], predicted: list[str], majority: str) -> tuple[dict, pd.DataFrame]:
    """Accuracy, macro-F1 and the majority-class baseline, plus precision/recall/F1/support per class."""
    labels = sorted(set(truth) | set(predicted))
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "majority_accuracy": float(accuracy_score(truth, [majority] * len(truth))),
        "holdout_rows": len(truth),
    }
    report = classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0)
    per_class = pd.DataFrame({label: report[label] for label in labels}).T.rename_axis("label")
    return metrics, per_class


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, html: Path) -> dict:
    """Evidently: drift of text and text length (holdout vs training rows) and classification quality.

    Returns a compact summary; the full report is saved as self-contained HTML."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import TextLength
    from evidently.presets import ClassificationPreset, DataDriftPreset

    task = _classification_task(reference, current)
    definition = DataDefinition(text_columns=["text"], categorical_columns=["label", "prediction"],
                                classification=[task] if task else None)
    descriptors = [TextLength("text", alias="text_length")]  # needs no downloads, unlike Sentiment or OOV
    datasets = [Dataset.from_pandas(frame[["text", "label", "prediction"]], data_definition=definition,
                                    descriptors=descriptors) for frame in (reference, current)]
    # abs_text_content_drift: a domain classifier's ROC AUC, without the 15x slower bootstrap
    metrics = [DataDriftPreset(columns=["text", "text_length"], text_method="abs_text_content_drift")]
    metrics += [ClassificationPreset()] if task else []
    with warnings.catch_warnings():  # classes absent from one side make sklearn warn inside Evidently
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report(metrics, include_tests=True).run(current_data=datasets[1], reference_data=datasets[0])
    snapshot.save_html(str(html))
    return {"columns": _drift_by_column(snapshot.dict()), "quality_in_report": task is not None}


def run(cfg: EvaluateParams, model_dir: Path, train_path: Path, holdout_path: Path, out_dir: Path) -> EvalResult:
    """Predict the holdout with the fine-tuned model and write metrics.json and the reports folder."""
    classifier = Classifier(model_dir, batch_size=cfg.batch_size)
    train, holdout = pd.read_parquet(train_path), pd.read_parquet(holdout_path)
    holdout["prediction"] = classifier.predict(holdout["text"].tolist())
    majority = train["label"].value_counts().idxmax()
    metrics, per_class = score(holdout["label"].tolist(), holdout["prediction"].tolist(), majority)
    reports = out_dir / REPORTS_DIR
    reports.mkdir(parents=True, exist_ok=True)
    per_class.to_csv(reports / PER_CLASS_FILE)
    if cfg.drift_report:
        train["prediction"] = classifier.predict(train["text"].tolist())
        drift = _safe_drift_report(train, holdout, reports / DRIFT_HTML)
        (reports / DRIFT_JSON).write_text(json.dumps(drift, indent=2))
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return EvalResult(metrics, out_dir / METRICS_FILE, reports)


def _classification_task(reference: pd.DataFrame, current: pd.DataFrame):
    """Evidently 0.7.23 scores any dataset with exactly two classes as binary and then fails on string labels;
    use a binary task when both sides have the same two classes, and skip quality when they differ."""
    from evidently import BinaryClassification, MulticlassClassification

    classes = [sorted(set(frame["label"]) | set(frame["prediction"])) for frame in (reference, current)]
    if all(len(found) > 2 for found in classes):
        return MulticlassClassification(target="label", prediction_labels="prediction")
    if classes[0] == classes[1] and len(classes[0]) == 2:
        return BinaryClassification(target="label", prediction_labels="prediction", pos_label=classes[0][0])
    return None


def _safe_drift_report(reference: pd.DataFrame, current: pd.DataFrame, html: Path) -> dict:
    """The drift report must not sink a run: on tiny or odd data Evidently can fail; say so in the summary."""
    from evidently.core.report import ReferenceMetricNotFound  # derives from BaseException, not Exception

    try:
        return drift_report(reference, current, html)
    except (Exception, ReferenceMetricNotFound) as err:  # e.g. "no terms remain" on a few repeated words
        log.warning("Evidently report skipped: %s", err)
        return {"error": " ".join(str(err).split())}


def _drift_by_column(snapshot: dict) -> dict:
    """Per column: drift detected (the report's own test), score, method and threshold."""
    status = {test["metric_config"]["metric_id"]: getattr(test["status"], "value", test["status"])
              for test in snapshot.get("tests", [])}
    columns = {}
    for metric in snapshot["metrics"]:
        config = metric.get("config") or {}
        if config.get("type", "").endswith("ValueDrift"):
            columns[config["column"]] = {
                "drift_detected": status.get(metric["id"]) == "FAIL",
                "score": float(metric["value"]),
                "method": config.get("method"),
                "threshold": config.get("threshold"),
            }
    return columns


def main() -> None:
    """`python -m tasks.evaluate`: the dvc.yaml stage."""
    from tasks.finetune import MODEL_DIR
    from tasks.split import HOLDOUT_FILE, TRAIN_FILE
    from tasks.stage import stage_main

    stage_main(lambda params, paths: run(
        params.evaluate, paths.stage("finetune") / MODEL_DIR, paths.stage("split") / TRAIN_FILE,
        paths.stage("split") / HOLDOUT_FILE, paths.stage("evaluate"),
    ).metrics)


if __name__ == "__main__":
    main()
