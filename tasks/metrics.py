"""Scores shared by evaluate, the time windows of monitor, promote and the trials: quality of predicted labels,
and how Evidently's drift reports are built and read."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def score(truth: list[str], predicted: list[str], majority: str) -> tuple[dict, pd.DataFrame]:
    """Accuracy, macro-F1 and the majority-class baseline, plus precision/recall/F1/support per class."""
    # sklearn loads on the first score: commands that import tasks.monitor only for its constants stay quick
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    labels = sorted(set(truth) | set(predicted))
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "majority_accuracy": float(accuracy_score(truth, [majority] * len(truth))),
        "majority_macro_f1": float(f1_score(truth, [majority] * len(truth), labels=labels, average="macro",
                                            zero_division=0)),
        "holdout_rows": len(truth),
    }
    report = classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0)
    per_class = pd.DataFrame({label: report[label] for label in labels}).T.rename_axis("label")
    return metrics, per_class


def classification_task(reference: pd.DataFrame, current: pd.DataFrame):
    """Evidently 0.7.23 scores any dataset with exactly two classes as binary and then fails on string labels;
    use a binary task when both sides have the same two classes, and skip quality when they differ."""
    from evidently import BinaryClassification, MulticlassClassification

    classes = [sorted(set(frame["label"]) | set(frame["prediction"])) for frame in (reference, current)]
    if all(len(found) > 2 for found in classes):
        return MulticlassClassification(target="label", prediction_labels="prediction")
    if classes[0] == classes[1] and len(classes[0]) == 2:
        return BinaryClassification(target="label", prediction_labels="prediction", pos_label=classes[0][0])
    return None


def drift_by_column(snapshot: dict) -> dict:
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


def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, metrics: list, html: Path,
                     descriptors: list, embeddings: dict[str, list[str]] | None = None) -> tuple[dict, bool]:
    """Evidently report of `current` against `reference` (columns text, label, prediction and the `embeddings`
    vector columns): `metrics`, plus classification quality when the class sets allow. Saves `html`; returns
    the snapshot as a dict and whether quality is in it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset
    from sklearn.exceptions import UndefinedMetricWarning
    from threadpoolctl import threadpool_limits

    task = classification_task(reference, current)
    definition = DataDefinition(text_columns=["text"], categorical_columns=["label", "prediction"],
                                embeddings=embeddings, classification=[task] if task else None)
    datasets = [Dataset.from_pandas(frame, data_definition=definition, descriptors=descriptors)
                for frame in (reference, current)]
    metrics = metrics + ([ClassificationPreset()] if task else [])
    # one OpenMP thread for embeddings: each of the 1000 steps of the t-SNE map Evidently draws for them waits
    # at a barrier for every thread, and on a busy machine the OS keeps putting one aside
    threads = threadpool_limits(limits=1, user_api="openmp") if embeddings else contextlib.nullcontext()
    with warnings.catch_warnings(), threads:
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # classes absent from one side
        snapshot = Report(metrics, include_tests=True).run(current_data=datasets[1], reference_data=datasets[0])
    snapshot.save_html(str(html))
    return snapshot.dict(), task is not None


def safe_report(build: Callable[..., dict], *args, what: str) -> dict:
    """`build(*args)`, or {"error": why} when Evidently fails, as it can on tiny or odd data (e.g. "no terms
    remain" on a few repeated words): a drift report must not sink a run."""
    from evidently.core.report import ReferenceMetricNotFound  # derives from BaseException, not Exception

    try:
        return build(*args)
    except (Exception, ReferenceMetricNotFound) as err:
        log.warning("%s skipped: %s", what, err)
        return {"error": " ".join(f"{type(err).__name__}: {err}".split())}
