"""The quality benchmark's harness (benchmarks/quality.py): sampling, splits, metrics, table and JSON.

The quick subset (banking77 k=8 on 10 intents, 1 seed, nichetune_lora with 2 epochs) runs with the real packaged
backbone through the module's Python API, writing its JSON to a temporary folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import quality

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality") / "quality_quick.json"
    return quality.main(["--quick", "--out", str(out)]), out


def test_the_sample_is_k_rows_per_class_and_the_same_for_the_same_seed():
    first, again, other = (quality.load_split("banking77_k8", seed).train for seed in (0, 0, 1))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert first["label"].nunique() == 77 and (first["label"].value_counts() == 8).all()
    assert len(quality.load_split("banking77_k8", 0).test) == 3080
    k64 = quality.load_split("banking77_k64", 0).train["label"].value_counts()
    assert k64.max() == 64 and sorted(k64[k64 < 64]) == [35, 41, 59, 61]  # small intents give all their rows
    assert set(first["text"]) <= set(quality.load_split("banking77_k64", 0).train["text"])
    amazon = quality.load_split("amazon_counterfactual_en_k8", 3)
    assert amazon.train["label"].value_counts().to_dict() == {"counterfactual": 8, "not_counterfactual": 8}
    assert len(amazon.test) == 670 and (amazon.test["label"] == "counterfactual").sum() == 131


def test_every_method_gets_the_same_training_rows_for_a_seed():
    seen = []

    def spy(train, test, seed):
        seen.append((seed, quality.fingerprint(train)))
        return quality.MethodRun([train["label"].iloc[0]] * len(test), 0.0)

    results = quality.run_benchmark(quality.QUICK_DATASETS, {"a": spy, "b": spy}, seeds=2)
    assert [seed for seed, _ in seen] == [0, 0, 1, 1]
    assert seen[0][1] == seen[1][1] != seen[2][1] == seen[3][1]
    assert [row["train_sha"] for row in results["rows"]] == [sha for _, sha in seen]


def test_the_cfpb_split_is_by_month_and_merges_small_issues():
    split = quality.cfpb_split()
    assert split.train["date_received"].between("2023-01-01", "2023-06-30").all()
    assert split.test["date_received"].between("2023-07-01", "2023-08-31").all()
    assert len(split.train) + len(split.test) == 2827
    whole = pd.read_csv(quality.SHARED / "cfpb_payday_2023" / "complaints.csv")["issue"].value_counts()
    small = set(whole[whole < quality.MIN_ISSUE_ROWS].index)
    labels = pd.concat([split.train["label"], split.test["label"]])
    assert small and not small & set(labels)
    assert (labels == quality.OTHER_ISSUE).sum() == whole[list(small)].sum()
    assert set(labels) == set(whole[whole >= quality.MIN_ISSUE_ROWS].index) | {quality.OTHER_ISSUE}


def test_the_quick_run_scores_every_method_in_range(quick):
    results, _ = quick
    rows = results["rows"]
    assert [(row["dataset"], row["method"], row["seed"]) for row in rows] == [
        ("banking77_k8_10intents", method, 0) for method in ("tfidf_lr", "embeddings_lr", "nichetune_lora")]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 and -1 <= row["mcc"] <= 1
        assert row["train_s"] > 0 and (row["train_rows"], row["test_rows"], row["classes"]) == (80, 400, 10)
    assert len({row["train_sha"] for row in rows}) == 1
    assert results["settings"] == {"finetune_overrides": {"epochs": 2}}


def test_the_table_has_a_row_per_dataset_and_method(quick):
    results, _ = quick
    table = quality.markdown_table(results).splitlines()
    assert table[0].startswith("| dataset | method | seeds | accuracy %")
    body = [line.split(" | ")[:2] for line in table[2:]]
    assert body == [["| banking77_k8_10intents", method] for method in results["methods"]]
    assert len(results["aggregate"]) == len(body) == 3


def test_the_json_is_written_where_asked_with_the_command_and_machine(quick):
    results, out = quick
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["command"] == f"python -m benchmarks.quality --quick --out {out}"
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["arch"]
    assert saved["date"] and len(saved["rows"]) == 3
