"""Split: the most recent rows are the holdout when timestamps exist; otherwise a seeded, stratified split."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks import split
from tasks.config import SplitParams
from tasks.split import split_frame
from tests.conftest import cfpb_sample


def standard(frame: pd.DataFrame, with_time: bool = True) -> pd.DataFrame:
    """A cfpb sample in the ingest stage's columns, shuffled so that file order is not time order."""
    out = pd.DataFrame({"text": frame["text"], "label": frame["issue"]})
    if with_time:
        out["timestamp"] = pd.to_datetime(frame["date_received"], utc=True)
    return out.sample(frac=1, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def timed() -> pd.DataFrame:
    return standard(cfpb_sample(per_class=10))  # 40 rows


def test_with_timestamps_the_holdout_is_the_most_recent_rows(timed):
    train, holdout, by_time = split_frame(timed, SplitParams(holdout_fraction=0.3), seed=0)
    assert by_time is True
    assert len(holdout) == round(40 * 0.3) == 12 and len(train) == 28
    assert holdout["timestamp"].min() >= train["timestamp"].max()
    assert holdout["timestamp"].tolist() == sorted(timed["timestamp"])[-12:]


def test_with_timestamps_the_split_ignores_the_seed(timed):
    first = split_frame(timed, SplitParams(holdout_fraction=0.3), seed=0)[1]
    second = split_frame(timed, SplitParams(holdout_fraction=0.3), seed=99)[1]
    pd.testing.assert_frame_equal(first, second)


def test_train_and_holdout_partition_the_rows(timed):
    train, holdout, _ = split_frame(timed, SplitParams(holdout_fraction=0.25), seed=0)
    assert sorted(train.index.tolist() + holdout.index.tolist()) == list(range(40))


def test_a_missing_timestamp_falls_back_to_a_stratified_split(timed):
    frame = timed.copy()
    frame.loc[0, "timestamp"] = pd.NaT
    _, _, by_time = split_frame(frame, SplitParams(holdout_fraction=0.25), seed=0)
    assert by_time is False


@pytest.fixture(scope="module")
def untimed() -> pd.DataFrame:
    return standard(cfpb_sample(per_class=10), with_time=False)  # 4 classes x 10 rows


def test_without_timestamps_the_split_is_stratified(untimed):
    train, holdout, by_time = split_frame(untimed, SplitParams(holdout_fraction=0.2), seed=0)
    assert by_time is False
    assert len(holdout) == 8 and len(train) == 32
    assert set(holdout["label"]) == set(train["label"]) == set(untimed["label"])
    assert holdout["label"].value_counts().tolist() == [2, 2, 2, 2]


def test_the_same_seed_gives_the_same_split(untimed):
    first = split_frame(untimed, SplitParams(holdout_fraction=0.2), seed=5)[1]
    second = split_frame(untimed, SplitParams(holdout_fraction=0.2), seed=5)[1]
    pd.testing.assert_frame_equal(first, second)


def test_a_different_seed_gives_a_different_split(untimed):
    first = split_frame(untimed, SplitParams(holdout_fraction=0.2), seed=5)[1]
    second = split_frame(untimed, SplitParams(holdout_fraction=0.2), seed=6)[1]
    assert set(first.index) != set(second.index)


def test_a_class_with_one_row_still_splits_unstratified(untimed):
    frame = pd.concat([untimed, pd.DataFrame({"text": ["a lone complaint"], "label": ["rare"]})], ignore_index=True)
    train, holdout, by_time = split_frame(frame, SplitParams(holdout_fraction=0.2), seed=0)
    assert by_time is False
    assert len(holdout) == round(41 * 0.2) == 8 and len(train) == 33


def test_a_tiny_fraction_still_holds_out_one_row(untimed):
    _, holdout, _ = split_frame(untimed, SplitParams(holdout_fraction=0.001), seed=0)
    assert len(holdout) == 1


def test_run_writes_train_and_holdout_parquet(timed, tmp_path):
    dataset = tmp_path / "dataset.parquet"
    timed.to_parquet(dataset, index=False)
    result = split.run(SplitParams(holdout_fraction=0.25), 0, dataset, tmp_path / "out")
    assert result.train == tmp_path / "out" / "train.parquet"
    assert result.holdout == tmp_path / "out" / "holdout.parquet"
    assert (result.train_rows, result.holdout_rows, result.by_time) == (30, 10, True)
    train, holdout = pd.read_parquet(result.train), pd.read_parquet(result.holdout)
    assert (len(train), len(holdout)) == (30, 10)
    assert list(train.columns) == list(holdout.columns) == ["text", "label", "timestamp"]
    assert holdout["timestamp"].min() >= train["timestamp"].max()


def test_a_large_fraction_that_leaves_fewer_train_rows_than_classes_still_splits():
    frame = pd.DataFrame({"text": [f"row {i}" for i in range(16)], "label": [c for c in "abcd" for _ in range(4)]})
    train, holdout, by_time = split_frame(frame, SplitParams(holdout_fraction=0.85), seed=0)
    assert (len(train), len(holdout), by_time) == (2, 14, False)


def test_the_pool_loses_every_labeled_text_and_repeats_and_keeps_the_rest_in_order():
    from tasks.ingest import KEY, text_hash

    labeled = pd.DataFrame({"text": ["refund please", "card lost"], "label": ["a", "b"]})
    labeled[KEY] = text_hash(labeled["text"])
    texts = pd.Series(["new one", " refund   please", "other", "new one", "card lost"])
    pool = pd.DataFrame({"text": texts.str.strip(), KEY: text_hash(texts), "_batch": "000001-aaaaaaaaaaaa"})
    assert split.unlabeled_pool(pool, labeled)["text"].tolist() == ["new one", "other"]
    assert split.unlabeled_pool(pool, labeled.drop(columns=[KEY]))["text"].tolist() == ["new one", "other"]


def test_a_pool_text_labeled_as_stored_pii_masked_leaves_the_pool():
    """A suggested text comes back from the labeling tool as the pool stored it, email masked: the same text, though
    its key (of the text as given) differs from the pool's (of the original)."""
    from tasks.ingest import KEY, text_hash

    given = pd.Series(["write to ana@example.com please", "other"])
    pool = pd.DataFrame({"text": ["write to [EMAIL] please", "other"], KEY: text_hash(given), "_batch": "b"})
    labeled = pd.DataFrame({"text": ["write to [EMAIL] please"], "label": ["a"]})
    labeled[KEY] = text_hash(labeled["text"])
    assert split.unlabeled_pool(pool, labeled)["text"].tolist() == ["other"]


def test_a_dataset_without_a_pool_file_splits_with_an_empty_pool(tmp_path, timed):
    timed.to_parquet(tmp_path / "dataset.parquet")
    result = split.run(SplitParams(holdout_fraction=0.25), 0, tmp_path / "dataset.parquet", tmp_path / "split")
    assert (result.pool_rows, result.pool_excluded) == (0, 0)
    assert list(pd.read_parquet(result.pool).columns) == ["text", "_text_key", "_batch"]


def test_the_split_names_the_holdout_labels_no_training_row_has(timed, tmp_path):
    newest = timed.sort_values("timestamp").index[-1]
    late = timed.assign(label=timed["label"].where(timed.index != newest, "Struggling to repay"))
    dataset = tmp_path / "dataset.parquet"
    late.to_parquet(dataset, index=False)
    result = split.run(SplitParams(holdout_fraction=0.25), 0, dataset, tmp_path / "out")
    assert result.holdout_only == ("Struggling to repay",)
    assert result.unseen_text() == (
        "split: 1 label of the holdout has no training rows ('Struggling to repay'): the model cannot predict "
        "them, and its holdout scores count them as errors; label more texts of them")
    timed.to_parquet(dataset, index=False)
    assert split.run(SplitParams(holdout_fraction=0.25), 0, dataset, tmp_path / "out").unseen_text() is None
