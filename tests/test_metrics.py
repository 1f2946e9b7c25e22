"""How sure a holdout can be: bootstrap intervals of accuracy and macro-F1, and the paired bootstrap that compares
two models on the same rows, on the predictions of real models (TF-IDF + logistic regression) on banking77 rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.metrics import QUALITY, bootstrap_ci, bootstrap_scores, paired_bootstrap, score, with_interval
from tests.conftest import SLICES


def banking77(split: str) -> pd.DataFrame:
    return pd.read_csv(SLICES / "banking77" / f"{split}.csv").rename(columns={"category": "label"})


def predictions(per_intent: int) -> list[str]:
    """A real model's labels for the 400 test rows: TF-IDF + logistic regression on `per_intent` training rows
    of each of the ten intents (8 gives a weak model, all of them a strong one)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = banking77("train").groupby("label").head(per_intent)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10))
    return model.fit(train["text"], train["label"]).predict(banking77("test")["text"]).tolist()


@pytest.fixture(scope="module")
def rows() -> dict:
    """The test rows' truth, and the labels of a strong and a weak model for them."""
    return {"truth": banking77("test")["label"].tolist(), "strong": predictions(1000), "weak": predictions(8)}


def first(rows: dict, count: int, *keys: str) -> list[list[str]]:
    """`count` rows, the first `count // 10` of each of the ten intents, for each of `keys`."""
    picked = pd.Series(rows["truth"]).groupby(rows["truth"]).head(count // 10).index
    return [[rows[key][i] for i in picked] for key in keys]


def test_each_draw_scores_as_score_does_on_the_same_rows(rows):
    truth, found = first(rows, 60, "truth", "weak")
    (draws,) = bootstrap_scores(truth, [found], seed=5, resamples=20)
    picked = np.random.default_rng(5).integers(0, len(truth), size=(20, len(truth)))
    for i in (0, 7, 19):  # some draws miss an intent entirely: macro-F1 then averages over the others
        metrics, _ = score([truth[j] for j in picked[i]], [found[j] for j in picked[i]], majority="")
        assert draws["accuracy"][i] == pytest.approx(metrics["accuracy"])
        assert draws["macro_f1"][i] == pytest.approx(metrics["macro_f1"])


def test_the_interval_holds_the_holdout_score_and_narrows_with_more_rows(rows):
    widths = []
    for count in (50, 400):
        truth, found = first(rows, count, "truth", "weak")
        point, _ = score(truth, found, majority="")
        ci = bootstrap_ci(truth, found, seed=7)
        for metric in QUALITY:
            assert ci[f"{metric}_ci_low"] <= point[metric] <= ci[f"{metric}_ci_high"]
        widths.append(ci["macro_f1_ci_high"] - ci["macro_f1_ci_low"])
    assert widths[1] < widths[0] / 2  # 8x the rows: about 1/sqrt(8) of the width
    assert 0.01 < widths[1] < 0.15


def test_the_same_seed_gives_the_same_interval_and_another_seed_a_close_one(rows):
    truth, found = rows["truth"], rows["weak"]
    assert bootstrap_ci(truth, found, seed=1) == bootstrap_ci(truth, found, seed=1)
    other = bootstrap_ci(truth, found, seed=2)
    for key, value in bootstrap_ci(truth, found, seed=1).items():
        assert other[key] == pytest.approx(value, abs=0.02)


def test_identical_predictions_differ_by_zero_within_noise(rows):
    paired = paired_bootstrap(rows["truth"], rows["strong"], list(rows["strong"]), seed=3)
    for metric in QUALITY:
        assert paired[metric] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "within_noise": True,
                                  "resamples": 1000}


def test_a_clearly_better_model_on_enough_rows_is_better_beyond_noise(rows):
    truth, strong, weak = rows["truth"], rows["strong"], rows["weak"]
    gap = score(truth, strong, "")[0]["macro_f1"] - score(truth, weak, "")[0]["macro_f1"]
    assert gap > 0.1  # 8 rows per intent against all of them
    paired = paired_bootstrap(truth, strong, weak, seed=3)
    assert paired["macro_f1"]["difference"] == pytest.approx(gap)
    assert 0 < paired["macro_f1"]["ci_low"] < gap < paired["macro_f1"]["ci_high"]
    assert not paired["macro_f1"]["within_noise"] and not paired["accuracy"]["within_noise"]
    reverse = paired_bootstrap(truth, weak, strong, seed=3)["macro_f1"]
    assert reverse["ci_high"] < 0 and reverse["difference"] == pytest.approx(-gap)


def test_a_similar_gap_on_two_rows_per_intent_is_within_noise(rows):
    truth, strong, weak = first(rows, 20, "truth", "strong", "weak")
    paired = paired_bootstrap(truth, strong, weak, seed=3)["macro_f1"]
    assert paired["difference"] > 0.05  # the strong model still scores higher on these 20 rows
    assert paired["within_noise"] and paired["ci_low"] <= 0 < paired["ci_high"]


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="at least one row; got 0 truth rows"):
        bootstrap_ci([], [], seed=0)
    with pytest.raises(ValueError, match=r"one prediction per truth row.*got 3 truth rows and \[2\]"):
        bootstrap_ci(["a", "b", "a"], ["a", "b"], seed=0)


def test_an_interval_reads_as_value_interval_and_rows():
    assert with_interval(0.7123, 0.6412, 0.7833, 57) == "0.712 (95% CI 0.641-0.783, 57 rows)"
    assert with_interval(0.7123, None, None, 57) == "0.712"


def test_two_models_are_compared_over_the_same_labels_when_one_predicts_a_label_the_other_never_does():
    """A champion trained when a label existed that has since been retired predicts it: both models average
    over it, instead of the champion alone taking a zero for it into its macro-F1."""
    truth = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    challenger = ["b", "b"] + truth[2:]  # two errors onto a real label
    champion = ["retired", "retired"] + truth[2:]  # the same two rows, onto the retired label
    f1_a, f1_b = 2 * 8 / (2 * 8 + 2), 2 * 10 / (2 * 10 + 2)
    by_hand = {"challenger": (f1_a + f1_b + 1.0 + 0.0) / 4, "champion": (f1_a + 1.0 + 1.0 + 0.0) / 4}
    paired = paired_bootstrap(truth, challenger, champion, seed=3)
    assert paired["macro_f1"]["difference"] == pytest.approx(by_hand["challenger"] - by_hand["champion"])
    assert paired["accuracy"]["difference"] == 0.0 and paired["macro_f1"]["within_noise"]
    alone = score(truth, challenger, "")[0]["macro_f1"]  # its own holdout score: over a, b and c only
    assert alone == pytest.approx((f1_a + f1_b + 1.0) / 3)
