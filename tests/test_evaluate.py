"""Evaluate: metrics computed by hand, calibration before and after temperature scaling, the stage's metrics.json
on a real model, and the Evidently drift report on small real frames."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pandas as pd
import pytest

from tasks import cores, evaluate
from tasks.config import EvaluateParams, FinetuneParams
from tasks.evaluate import calibration, calibration_bins, drift_report, score, segment_table, uncalibrated
from tasks.finetune import finetune
from tasks.metrics import safe_report
from tests.conftest import cfpb_sample
from tests.test_metrics import banking77

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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def logits() -> tuple[np.ndarray, np.ndarray]:
    """A real model's logits on the banking77 test rows (logistic regression on TF-IDF, 8 rows per intent),
    and whether its label is right on each row."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = banking77("train").groupby("label").head(8), banking77("test")
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(C=10)).fit(train["text"],
                                                                                          train["label"])
    found = model.decision_function(test["text"])
    return found, model.classes_[found.argmax(axis=1)] == test["label"].to_numpy()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_the_probabilities_before_temperature_scaling_are_recovered_exactly(logits, temperature):
    found, _ = logits
    scaled = softmax(found / temperature)
    np.testing.assert_allclose(uncalibrated(scaled, temperature), softmax(found), rtol=1e-9, atol=1e-12)


def test_calibration_reports_the_error_after_and_before_temperature_scaling(logits):
    found, correct = logits
    raw, scaled = softmax(found), softmax(found / 0.4)  # sharper: a different error, the same predictions
    result = calibration(scaled, correct, temperature=0.4)
    assert result["ece"] == pytest.approx(calibration_bins(scaled.max(axis=1), correct)[0])
    assert result["ece_uncalibrated"] == pytest.approx(calibration_bins(raw.max(axis=1), correct)[0])
    assert result["ece"] != pytest.approx(result["ece_uncalibrated"], abs=0.01)
    assert sum(b["rows"] for b in result["bins_uncalibrated"]) == len(correct) and result["temperature"] == 0.4
    same = calibration(raw, correct, temperature=1.0)  # an uncalibrated model: both are its own error
    assert same["ece"] == same["ece_uncalibrated"] and same["bins"] == same["bins_uncalibrated"]


def test_a_calibrated_model_gets_both_reliability_diagrams(logits, tmp_path):
    found, correct = logits
    test = banking77("test")
    labels = sorted(test["label"].unique())
    holdout = test.assign(prediction=[labels[i] for i in found.argmax(axis=1)])
    metrics = evaluate._holdout_images(holdout, softmax(found / 2.0), 2.0, labels, tmp_path)
    assert set(metrics) == {"ece", "ece_uncalibrated", "temperature"} and metrics["temperature"] == 2.0
    assert (tmp_path / evaluate.RELIABILITY_PNG).stat().st_size > 10_000
    assert (tmp_path / evaluate.UNCALIBRATED_PNG).stat().st_size > 10_000
    written = json.loads((tmp_path / evaluate.CALIBRATION_JSON).read_text())
    assert written["ece_uncalibrated"] == pytest.approx(calibration_bins(softmax(found).max(axis=1), correct)[0])


def test_the_stage_writes_holdout_intervals_and_calibration_into_metrics_json(tiny_backbone, tmp_path, monkeypatch):
    sample = cfpb_sample(per_class=12).rename(columns={"issue": "label"})
    holdout = sample.groupby("label").tail(4)
    train = sample.drop(holdout.index)
    train.to_parquet(tmp_path / "train.parquet")
    holdout.to_parquet(tmp_path / "holdout.parquet")
    model = finetune(train, FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=20,
                                          learning_rate=0.05, validation_fraction=0.0), seed=3,
                     out_dir=tmp_path / "finetune").model_dir
    cfg = EvaluateParams(drift_report=False, window=None, explain_samples=0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # claims of this test's own (tasks.cores)
    loading, computing = evaluate.load_classifier, []
    monkeypatch.setattr(evaluate, "load_classifier",
                        lambda *args, **kwargs: computing.append(cores.active()) or loading(*args, **kwargs))
    result = evaluate.run(cfg, model, tmp_path / "train.parquet", tmp_path / "holdout.parquet", tmp_path / "out",
                          seed=11)
    assert computing == [1] and cores.active() == 0  # a process sharing the cores while it predicted, not after
    written = json.loads(result.metrics_file.read_text())
    assert written == result.metrics and written["holdout_rows"] == len(holdout) == 16
    for metric in ("accuracy", "macro_f1"):
        assert 0 <= written[f"{metric}_ci_low"] <= written[metric] <= written[f"{metric}_ci_high"] <= 1
        assert written[f"{metric}_ci_high"] - written[f"{metric}_ci_low"] > 0.05  # 16 rows say little
    assert written["temperature"] == 1.0 and written["ece"] == written["ece_uncalibrated"]
    assert not (result.reports / evaluate.UNCALIBRATED_PNG).exists()  # nothing was scaled
    again = evaluate.run(cfg, model, tmp_path / "train.parquet", tmp_path / "holdout.parquet", tmp_path / "again",
                         seed=11)
    assert again.metrics["macro_f1_ci_low"] == written["macro_f1_ci_low"]  # drawn from base.seed


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


def test_drift_report_keeps_quality_when_the_holdout_lacks_some_classes(tmp_path):
    reference, current = frames(classes=4, per_class=10, cut=25)
    three = sorted(set(current["label"]))[:3]
    current = current[current["label"].isin(three) & current["prediction"].isin(three)].reset_index(drop=True)
    summary = drift_report(reference, current, tmp_path / "fewer.html")
    check_columns(summary)
    assert summary["quality_in_report"] is True


def test_drift_report_skips_quality_when_the_holdout_has_a_class_the_training_rows_lack(tmp_path):
    reference, current = frames(classes=4, per_class=10, cut=25)
    newcomer = sorted(set(current["label"]))[-1]
    reference = reference[(reference["label"] != newcomer) & (reference["prediction"] != newcomer)]
    summary = drift_report(reference.reset_index(drop=True), current, tmp_path / "newcomer.html")
    check_columns(summary)
    assert summary["quality_in_report"] is False
