"""Evaluate: holdout quality (per class, calibration, segments), drift over time windows, and explanations."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import cores, explain, monitor, plots
from tasks.config import EvaluateParams, Params, Paths
from tasks.layout import HOLDOUT_FILE, METRICS_FILE, MODEL_DIR, PER_CLASS_FILE, REPORTS_DIR, TRAIN_FILE
from tasks.metrics import bootstrap_ci, drift_by_column, evidently_report, safe_report, score
from tasks.portfolio import load_classifier
from tasks.progress import say

DRIFT_HTML = "evidently_report.html"
DRIFT_JSON = "drift.json"
SEGMENTS_FILE = "segments.csv"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
UNCALIBRATED_PNG = "reliability_uncalibrated.png"  # only for a calibrated model: the same bins before scaling
CALIBRATION_JSON = "calibration.json"
EXPLAIN_HTML = "explanations.html"


@dataclass(frozen=True)
class EvalResult:
    # accuracy, macro_f1 (each with *_ci_low, *_ci_high), majority_accuracy, majority_macro_f1, holdout_rows,
    # ece, ece_uncalibrated, temperature, drift_status, segments_flagged
    metrics: dict
    metrics_file: Path
    reports: Path  # per-class CSV, images, segments, Evidently HTML and drift summaries, explanations


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error over equal-width confidence bins, and the bins: the row-weighted mean gap
    between accuracy and mean confidence (Guo et al., 2017)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for i in range(n_bins):
        inside = which == i
        rows = int(inside.sum())
        accuracy = float(correct[inside].mean()) if rows else 0.0
        mean_conf = float(confidence[inside].mean()) if rows else 0.0
        ece += rows / max(1, len(confidence)) * abs(accuracy - mean_conf)
        bins.append({"low": float(edges[i]), "high": float(edges[i + 1]), "rows": rows,
                     "accuracy": accuracy, "confidence": mean_conf})
    return float(ece), bins


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling: softmax(z / T) ** T is proportional to softmax(z), so
    normalising each row of p ** T recovers them exactly."""
    raised = np.asarray(probs, dtype=np.float64) ** temperature
    return raised / raised.sum(axis=1, keepdims=True)


def segment_table(holdout: pd.DataFrame, column: str, margin: float, overall_f1: float) -> pd.DataFrame:
    """Accuracy and macro-F1 per value of `column`; `flagged` marks a segment whose macro-F1 is more than
    `margin` below the overall one (a bias check). Rows without a value form the segment "(missing)"."""
    rows = []
    for value, part in holdout.groupby(holdout[column].fillna("(missing)").astype(str), sort=True):
        metrics, _ = score(part["label"].tolist(), part["prediction"].tolist(), majority="")
        rows.append({"segment": value, "rows": len(part), "accuracy": metrics["accuracy"],
                     "macro_f1": metrics["macro_f1"], "flagged": metrics["macro_f1"] < overall_f1 - margin})
    return pd.DataFrame(rows).set_index("segment")


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, html: Path) -> dict:
    """Evidently: drift of text and text length (holdout vs training rows) and classification quality.

    Returns a compact summary; the full report is saved as self-contained HTML."""
    from evidently.descriptors import TextLength
    from evidently.presets import DataDriftPreset

    descriptors = [TextLength("text", alias="text_length")]  # needs no downloads, unlike Sentiment or OOV
    # abs_text_content_drift: a domain classifier's ROC AUC, without the 15x slower bootstrap
    metrics = [DataDriftPreset(columns=["text", "text_length"], text_method="abs_text_content_drift")]
    columns = ["text", "label", "prediction"]
    found, quality = evidently_report(reference[columns], current[columns], metrics, html, descriptors)
    return {"columns": drift_by_column(found), "quality_in_report": quality}


def run(cfg: EvaluateParams, model_dir: Path, train_path: Path, holdout_path: Path, out_dir: Path,
        seed: int = 0) -> EvalResult:
    """Predict the holdout with the fine-tuned model; write metrics.json and the reports folder: per-class
    metrics, confusion matrix, reliability diagram, segments, drift over time windows, explanations. Counts among
    the processes sharing this machine's cores (tasks.cores) while it runs, as a training does."""
    with cores.claim():
        return _run(cfg, model_dir, train_path, holdout_path, out_dir, seed)


def _run(cfg: EvaluateParams, model_dir: Path, train_path: Path, holdout_path: Path, out_dir: Path,
         seed: int) -> EvalResult:
    classifier = load_classifier(model_dir, batch_size=cfg.batch_size)
    train, holdout = pd.read_parquet(train_path), pd.read_parquet(holdout_path)
    with step(f"{len(holdout)} holdout rows predicted"):
        probs = classifier.predict_proba(holdout["text"].tolist())
    holdout["prediction"] = [classifier.labels[i] for i in probs.argmax(axis=1)]
    majority = train["label"].value_counts().idxmax()
    metrics, per_class = score(holdout["label"].tolist(), holdout["prediction"].tolist(), majority)
    metrics.update(bootstrap_ci(holdout["label"].tolist(), holdout["prediction"].tolist(), seed))
    reports = out_dir / REPORTS_DIR
    reports.mkdir(parents=True, exist_ok=True)
    per_class.to_csv(reports / PER_CLASS_FILE)
    temperature = float(getattr(classifier, "temperature", 1.0))
    metrics.update(_holdout_images(holdout, probs, temperature, per_class.index.tolist(), reports))
    if cfg.segment_column:
        segments = segment_table(holdout, cfg.segment_column, cfg.segment_margin, metrics["macro_f1"])
        segments.to_csv(reports / SEGMENTS_FILE)
        metrics["segments_flagged"] = segments.index[segments["flagged"]].tolist()
    with step(f"{len(train)} training rows predicted, the reference of the drift reports"):
        train["prediction"] = classifier.predict(train["text"].tolist())
    if cfg.drift_report:
        with step("Evidently report of the holdout against the training rows"):
            drift = safe_report(drift_report, train, holdout, reports / DRIFT_HTML, what="Evidently report")
        (reports / DRIFT_JSON).write_text(json.dumps(drift, indent=2))
    windows = monitor.run(cfg, classifier, train, holdout, reports)
    metrics["drift_status"] = windows["status"]
    with step(f"explanations of up to {2 * cfg.explain_samples} holdout rows" if cfg.explain_samples else None):
        explain.explain(classifier, holdout, cfg.explain_samples, seed, reports / EXPLAIN_HTML)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return EvalResult(metrics, out_dir / METRICS_FILE, reports)


@contextmanager
def step(what: str | None):
    """A line once `what` is done, with its seconds: the stage's parts take minutes on long texts. None: no line."""
    started = time.perf_counter()
    yield
    if what:
        say(f"evaluate: {what}, {time.perf_counter() - started:.0f} s")


def calibration(probs: np.ndarray, correct: np.ndarray, temperature: float) -> dict:
    """Expected calibration error and bins of the probabilities the model returns (`ece`, `bins`) and of the
    same probabilities before its temperature scaling (`ece_uncalibrated`, `bins_uncalibrated`)."""
    ece, bins = calibration_bins(probs.max(axis=1), correct)
    before, bins_before = ece, bins  # an unscaled model: nothing to undo
    if temperature != 1.0:
        before, bins_before = calibration_bins(uncalibrated(probs, temperature).max(axis=1), correct)
    return {"temperature": temperature, "ece": ece, "ece_uncalibrated": before, "bins": bins,
            "bins_uncalibrated": bins_before}


def _holdout_images(holdout: pd.DataFrame, probs: np.ndarray, temperature: float, labels: list[str],
                    reports: Path) -> dict:
    """The confusion matrix and the reliability diagrams as PNGs, calibration.json; returns the expected
    calibration errors after and before temperature scaling, and the temperature."""
    correct = (holdout["prediction"] == holdout["label"]).to_numpy()
    found = calibration(probs, correct, temperature)
    plots.confusion_matrix_png(holdout["label"].tolist(), holdout["prediction"].tolist(), labels,
                               reports / CONFUSION_PNG)
    plots.reliability_png(found["bins"], found["ece"], reports / RELIABILITY_PNG)
    if temperature != 1.0:
        plots.reliability_png(found["bins_uncalibrated"], found["ece_uncalibrated"], reports / UNCALIBRATED_PNG)
    (reports / CALIBRATION_JSON).write_text(json.dumps(found, indent=2))
    return {key: found[key] for key in ("ece", "ece_uncalibrated", "temperature")}


def run_stage(params: Params, paths: Paths) -> dict:
    """The dvc.yaml stage: evaluate the fine-tuned model on the split's holdout; returns the metrics."""
    split = paths.stage("split")
    return run(params.evaluate, paths.stage("finetune") / MODEL_DIR, split / TRAIN_FILE, split / HOLDOUT_FILE,
               paths.stage("evaluate"), params.base.seed).metrics


def main() -> None:
    """`python -m tasks.evaluate`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main("evaluate")


if __name__ == "__main__":
    main()
