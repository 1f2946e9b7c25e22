"""Evaluate: metrics computed by hand, and the Evidently drift report on small real frames."""

from __future__ import annotations

import pandas as pd
import pytest

import numpy as np

from tasks.evaluate import calibration_bins, drift_report, score, segment_table
from tasks.metrics import safe_report
from tests.conftest import cfpb_sample

TRUTH = ["a", "a", "a", "b", "b", "c"]
PREDICTED = ["a", "a", "b", "b", "c", "c"]


def test_score_gives_the_hand_computed_metrics():
    metrics, _ = score(TRUTH, PREDICTED, majority="a")
    # a: P 2/2, R 2/3, F1 0.8; b: P 1/2, R 1/2, F1 0.5; c: P 1/2, R 1/1, F1 2/3
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["majority_accuracy"] == pytest.approx(3 / 6)
    assert metrics["holdout_rows"] == 6


def test_score_per_class_table_has_precision_recall_f1_and_support():
    _, per_class = score(TRUTH, PREDICTED, majority="a")
    assert per_class.index.name == "label" and per_class.index.tolist() == ["a", "b", "c"]
    assert per_class.loc["a", "precision"] == pytest.approx(1.0)
    assert per_class.loc["a", "recall"] == pytest.approx(2 / 3)
    assert per_class.loc["c", "f1-score"] == pytest.approx(2 / 3)
    assert per_class["support"].tolist() == [3, 2, 1]


def test_a_label_only_predicted_counts_in_macro_f1_as_zero():
    metrics, per_class = score(["a", "a", "b", "b"], ["a", "a", "b", "x"], majority="b")
    # a: F1 1; b: P 1, R 1/2, F1 2/3; x: F1 0 (never true)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["majority_accuracy"] == pytest.approx(2 / 4)
    # always "b": a F1 0, b P 1/2 R 1 F1 2/3, x F1 0, over the same three labels as the model's macro-F1
    assert metrics["majority_macro_f1"] == pytest.approx((0 + 2 / 3 + 0) / 3)
    assert per_class.loc["x", "support"] == 0


def test_a_majority_label_absent_from_the_holdout_scores_zero():
    metrics, _ = score(["a", "b"], ["a", "b"], majority="z")
    assert metrics == {"accuracy": 1.0, "macro_f1": 1.0, "majority_accuracy": 0.0, "majority_macro_f1": 0.0,
                       "holdout_rows": 2}


def test_expected_calibration_error_by_hand():
    # bin 0.9-1.0: confidences 0.95, 0.95, right once -> |0.5 - 0.95|; bin 0.6-0.7: 0.65, right -> |1 - 0.65|
    confidence = np.array([0.95, 0.95, 0.65])
    correct = np.array([True, False, True])
    ece, bins = calibration_bins(confidence, correct)
    assert ece == pytest.approx(2 / 3 * 0.45 + 1 / 3 * 0.35)
    filled = [b for b in bins if b["rows"]]
    assert [(b["low"], b["rows"], b["accuracy"]) for b in filled] == [(pytest.approx(0.6), 1, 1.0),
                                                                      (pytest.approx(0.9), 2, 0.5)]
    assert sum(b["rows"] for b in bins) == 3 and len(bins) == 10


def test_perfectly_calibrated_confidence_has_zero_error():
    confidence = np.array([1.0, 1.0, 0.55, 0.55])
    ece, _ = calibration_bins(confidence, np.array([True, True, True, False]))
    assert ece == pytest.approx(0.05 / 2)  # the 0.5-0.6 bin: accuracy 0.5, confidence 0.55


def test_segments_below_the_overall_macro_f1_by_more_than_the_margin_are_flagged():
    holdout = pd.DataFrame({"label": ["a", "b", "a", "b", "a", "b"], "prediction": ["a", "b", "a", "b", "b", "a"],
                            "channel": ["chat", "chat", "email", "email", "app", None]})
    overall = score(holdout["label"].tolist(), holdout["prediction"].tolist(), "a")[0]["macro_f1"]
    table = segment_table(holdout, "channel", margin=0.1, overall_f1=overall)
    assert table.index.tolist() == ["(missing)", "app", "chat", "email"]
    assert table.loc["chat", "macro_f1"] == 1.0 and table.loc["app", "macro_f1"] == 0.0
    assert table["flagged"].tolist() == [True, True, False, False]
    assert table["rows"].sum() == len(holdout)
    assert not segment_table(holdout, "channel", margin=1.0, overall_f1=overall)["flagged"].any()


def frames(classes: int, per_class: int, cut: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real complaints in time order, a prediction column that is right on every other row, split at `cut`."""
    sample = cfpb_sample(per_class=per_class, classes=classes).rename(columns={"issue": "label"})
    labels = sorted(sample["label"].unique())
    sample["prediction"] = [label if i % 2 else labels[i % len(labels)] for i, label in enumerate(sample["label"])]
    frame = sample[["text", "label", "prediction"]]
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def check_columns(summary: dict) -> None:
    assert set(summary["columns"]) == {"text", "text_length"}
    text, length = summary["columns"]["text"], summary["columns"]["text_length"]
    assert text["method"] == "abs_text_content_drift" and 0 <= text["score"] <= 1
    assert text["drift_detected"] == (text["score"] > text["threshold"])  # domain classifier ROC AUC
    assert length["method"] == "K-S p_value" and 0 <= length["score"] <= 1
    assert length["drift_detected"] == (length["score"] < length["threshold"])  # a p-value


def test_drift_report_on_real_rows_writes_html_and_per_column_drift(tmp_path):
    reference, current = frames(classes=4, per_class=8, cut=20)
    summary = drift_report(reference, current, tmp_path / "report.html")
    check_columns(summary)
    assert summary["quality_in_report"] is True
    html = (tmp_path / "report.html").read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "text_length" in html and len(html) > 100_000


def test_drift_report_handles_two_classes_as_binary(tmp_path):
    reference, current = frames(classes=2, per_class=10, cut=10)
    assert sorted(set(reference["label"])) == sorted(set(current["label"]))
    summary = drift_report(reference, current, tmp_path / "binary.html")
    check_columns(summary)
    assert summary["quality_in_report"] is True
    assert (tmp_path / "binary.html").stat().st_size > 100_000


def test_drift_report_skips_quality_when_the_sides_have_different_class_sets(tmp_path):
    reference, current = frames(classes=3, per_class=8, cut=12)
    two = sorted(set(current["label"]))[:2]
    current = current[current["label"].isin(two) & current["prediction"].isin(two)].reset_index(drop=True)
    summary = drift_report(reference, current, tmp_path / "mixed.html")
    check_columns(summary)
    assert summary["quality_in_report"] is False


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_safe_report_returns_an_error_for_degenerate_text(tmp_path):
    frame = pd.DataFrame({"text": ["hello world"] * 5, "label": ["a", "b", "a", "b", "a"]})
    frame["prediction"] = frame["label"]
    summary = safe_report(drift_report, frame, frame.copy(), tmp_path / "report.html", what="drift")
    assert set(summary) == {"error"}
    assert "no terms remain" in summary["error"] and "\n" not in summary["error"]
    assert not (tmp_path / "report.html").exists()


def test_safe_report_returns_the_summary_when_it_works(tmp_path):
    reference, current = frames(classes=4, per_class=6, cut=12)
    summary = safe_report(drift_report, reference, current, tmp_path / "report.html", what="drift")
    check_columns(summary)
