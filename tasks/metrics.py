"""Scores shared by evaluate, the time windows of monitor, promote and the trials: quality of predicted labels,
how sure a holdout can be of them (bootstrap intervals, paired comparisons), and how Evidently's drift reports
are built and read."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000  # draws of the holdout rows: enough for stable 2.5% and 97.5% percentiles
CONFIDENCE = 0.95  # of every interval below
QUALITY = ("accuracy", "macro_f1")  # the metrics that get intervals and paired comparisons
_BLOCK_CELLS = 2_000_000  # resampled rows per block: a large holdout draws in blocks of 16 MB index arrays


def score(truth: list[str], predicted: list[str], majority: str, also: set | None = None
          ) -> tuple[dict, pd.DataFrame]:
    """Accuracy, macro-F1 and the majority-class baseline, plus precision/recall/F1/support per class. Macro-F1
    averages over the labels of the truth and the predictions, and `also` (another model's predicted labels,
    so that two models compared on the same rows average over the same labels)."""
    # sklearn loads on the first score: commands that import tasks.monitor only for its constants stay quick
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    labels = sorted(set(truth) | set(predicted) | set(also or ()))
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


def bootstrap_scores(truth: list, predictions: list[list], seed: int,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> list[dict[str, np.ndarray]]:
    """Accuracy and macro-F1 of each list in `predictions` on the same `resamples` draws of the rows with
    replacement (seeded): one array per metric and list. Each draw's macro-F1 averages over the labels that
    occur in it, in the truth or in any of the lists, as `score` does for a whole holdout with `also`."""
    if not len(truth) or any(len(found) != len(truth) for found in predictions):
        raise ValueError(f"bootstrap needs one prediction per truth row and at least one row; got {len(truth)} "
                         f"truth rows and {[len(found) for found in predictions]} predictions")
    codes = {label: i for i, label in enumerate(sorted(set(truth).union(*map(set, predictions)), key=str))}
    true = np.array([codes[label] for label in truth])
    predicted = [np.array([codes[label] for label in found]) for found in predictions]
    rng, rows = np.random.default_rng(seed), len(true)
    block = max(1, _BLOCK_CELLS // rows)
    parts: list[list[tuple]] = [[] for _ in predictions]
    for start in range(0, resamples, block):
        drawn = rng.integers(0, rows, size=(min(block, resamples - start), rows))
        counted = [_resampled_counts(true[drawn], found[drawn], len(codes)) for found in predicted]
        present = np.logical_or.reduce([occurs > 0 for _, _, occurs in counted])  # labels in this draw
        for (correct, hits, occurs), part in zip(counted, parts):
            f1 = np.divide(2 * hits, occurs, out=np.zeros(occurs.shape), where=occurs > 0)
            part.append((correct.mean(axis=1), f1.sum(axis=1) / present.sum(axis=1)))
    return [{metric: np.concatenate([scores[i] for scores in part]) for i, metric in enumerate(QUALITY)}
            for part in parts]


def _resampled_counts(true: np.ndarray, predicted: np.ndarray, labels: int) -> tuple[np.ndarray, ...]:
    """Per row of (draws x rows) label codes: which rows are right, and per label the true positives and
    2 TP + FP + FN (the F1 denominator), from per-draw label counts."""
    draws = len(true)
    offsets = np.arange(draws)[:, None] * labels  # draw d counts label k in cell d * labels + k

    def count(cells: np.ndarray) -> np.ndarray:
        return np.bincount(cells.ravel(), minlength=draws * labels).reshape(draws, labels)

    correct = true == predicted
    return correct, count((offsets + true)[correct]), count(offsets + true) + count(offsets + predicted)


def interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval at `confidence` of bootstrap draws."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(truth: list, predicted: list, seed: int, resamples: int = BOOTSTRAP_RESAMPLES,
                 also: list | None = None) -> dict:
    """`accuracy_ci_low`, `accuracy_ci_high`, `macro_f1_ci_low`, `macro_f1_ci_high`: 95% bootstrap intervals;
    with `also` (another model's predictions on the same rows), macro-F1 over its labels too, as `score`'s."""
    draws = bootstrap_scores(truth, [predicted] if also is None else [predicted, also], seed, resamples)[0]
    bounds = {metric: interval(draws[metric]) for metric in QUALITY}
    return {f"{metric}_ci_{side}": bounds[metric][i] for metric in QUALITY for i, side in enumerate(("low", "high"))}


def paired_bootstrap(truth: list, challenger: list, champion: list, seed: int,
                     resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE) -> dict[str, dict]:
    """Per metric: challenger minus champion on these rows, the `confidence` (95%) interval of that difference
    over draws shared by both models (a paired bootstrap), and `within_noise`: whether the interval contains 0."""
    new, old = bootstrap_scores(truth, [challenger, champion], seed, resamples)
    point_new, point_old = (_point(truth, found, also) for found, also in ((challenger, champion),
                                                                            (champion, challenger)))
    found = {}
    for metric in QUALITY:
        low, high = interval(new[metric] - old[metric], confidence)
        found[metric] = {"difference": point_new[metric] - point_old[metric], "ci_low": low, "ci_high": high,
                         "within_noise": low <= 0 <= high, "resamples": resamples}
    return found


def _point(truth: list, predicted: list, also: list) -> dict:
    metrics, _ = score(truth, predicted, majority="", also=set(also))
    return {metric: metrics[metric] for metric in QUALITY}


def with_interval(value: float, low: float | None, high: float | None, rows: int | None = None) -> str:
    """"0.710 (95% CI 0.640-0.780, 57 rows)", or the value alone when there is no interval."""
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({CONFIDENCE:.0%} CI {low:.3f}-{high:.3f}" + (f", {rows} rows)" if rows else ")")


def classification_task(reference: pd.DataFrame, current: pd.DataFrame):
    """Evidently 0.7.23 scores any dataset with exactly two classes as binary and then fails on string labels;
    use a binary task when both sides have the same two classes. Its per-class tables look up each class of
    `current` in `reference` and fail on one the reference lacks (a rare class first seen in the holdout's
    later months), so quality is left out then, and wherever the class sets differ in size class."""
    from evidently import BinaryClassification, MulticlassClassification

    classes = [sorted(set(frame["label"]) | set(frame["prediction"])) for frame in (reference, current)]
    if all(len(found) > 2 for found in classes) and set(classes[1]) <= set(classes[0]):
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
