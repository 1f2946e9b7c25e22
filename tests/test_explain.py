"""Explanations: word occlusion on a tiny fine-tuned model and real CFPB complaints, rendered as one HTML page."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.config import FinetuneParams
from tasks.explain import MAX_WORDS, attribute, explain, sample_rows
from tasks.finetune import finetune
from tasks.model import Classifier
from tests.conftest import cfpb_sample


@pytest.fixture(scope="module")
def classifier(tiny_backbone, tmp_path_factory) -> Classifier:
    train = cfpb_sample(per_class=6).rename(columns={"issue": "label"})[["text", "label"]]
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=64)
    result = finetune(train, cfg, seed=3, out_dir=tmp_path_factory.mktemp("explain-model"))
    return Classifier(result.model_dir)


@pytest.fixture(scope="module")
def holdout(classifier) -> pd.DataFrame:
    """Real complaints with their true issue and the tiny model's prediction: some right, most wrong."""
    frame = cfpb_sample(per_class=10).rename(columns={"issue": "label"})
    frame["prediction"] = classifier.predict(frame["text"].tolist())
    return frame


def test_an_attribution_is_the_drop_in_the_predicted_class_probability_without_that_word(classifier, holdout):
    row = holdout.iloc[[0]]
    (explained,) = attribute(classifier, row)
    words = row["text"].iloc[0].split()
    column = classifier.labels.index(row["prediction"].iloc[0])
    without_third = " ".join(words[:2] + words[3:])
    probs = classifier.predict_proba([row["text"].iloc[0], without_third])  # computed apart from attribute()
    assert explained.attributions[2] == pytest.approx(probs[0, column] - probs[1, column], abs=1e-5)
    assert explained.probability == pytest.approx(probs[0, column], abs=1e-5)
    assert len(explained.attributions) == min(len(words), MAX_WORDS)


def test_long_texts_are_scored_on_their_first_words_only_and_the_page_says_so(classifier, holdout, tmp_path):
    long = holdout.iloc[[0]].assign(text=" ".join(holdout["text"].head(4)))
    assert len(long["text"].iloc[0].split()) > 10
    (explained,) = attribute(classifier, long, max_words=10)
    assert len(explained.attributions) == 10
    summary = explain(classifier, long, samples=1, seed=0, html=tmp_path / "page.html", max_words=10)
    page = (tmp_path / "page.html").read_text()
    assert summary["capped_texts"] == 1 and "Only the first 10 words of a text are scored" in page


def test_user_text_and_labels_are_escaped_in_the_page(classifier, holdout, tmp_path):
    prediction = holdout["prediction"].iloc[0]
    hostile = pd.DataFrame({"text": ["<script>alert('x')</script> they took my payment twice & more"],
                            "label": ["<img src=x onerror=alert(1)>"], "prediction": [prediction]})
    explain(classifier, hostile, samples=5, seed=0, html=tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&amp;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize("samples", [1, 3, 100])
def test_up_to_samples_correct_and_wrong_rows_are_explained(classifier, holdout, tmp_path, samples):
    right = int((holdout["label"] == holdout["prediction"]).sum())
    assert 0 < right < len(holdout)  # the sample holds both kinds
    summary = explain(classifier, holdout, samples, seed=1, html=tmp_path / "page.html")
    assert summary["correct"] == min(samples, right)
    assert summary["wrong"] == min(samples, len(holdout) - right)
    page = (tmp_path / "page.html").read_text()
    assert page.count("class='row'") == summary["correct"] + summary["wrong"]


def test_the_sample_depends_on_the_seed_only(classifier, holdout, tmp_path):
    first = explain(classifier, holdout, 3, seed=5, html=tmp_path / "a.html")
    again = explain(classifier, holdout.copy(), 3, seed=5, html=tmp_path / "b.html")
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    assert first["wrong"] == again["wrong"] == 3
    picked = lambda seed: sample_rows(holdout, 3, seed)[1].index.tolist()  # noqa: E731
    assert picked(5) == picked(5) != picked(6)


def test_zero_samples_writes_an_empty_state_page(classifier, holdout, tmp_path):
    summary = explain(classifier, holdout, 0, seed=0, html=tmp_path / "reports" / "explain.html")
    page = (tmp_path / "reports" / "explain.html").read_text()
    assert summary["correct"] == summary["wrong"] == 0
    assert "No rows to explain" in page and "class='row'" not in page
