"""The quality benchmark's harness (benchmarks/quality.py): sampling, splits, metrics, table and JSON.

The quick subset (banking77 k=8 on 10 intents, 1 seed, every method with one epoch or one SetFit iteration) runs
with the real packaged backbone through the module's Python API, writing its JSON to a temporary folder."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks import quality, report
from tasks.layout import CHECKPOINT_DIR
from tasks.progress import QUIET_ENV
from benchmarks.sources import DEFAULT_DATA
from tests.conftest import REPO, SLICES, kill_after_first_checkpoint, needs_full_data

pytestmark = pytest.mark.slow


def run_quick(methods: dict, seeds: int, out=None, **options) -> dict:
    """quality.run_benchmark on the quick subset, read from the committed slice of banking77."""
    return quality.run_benchmark(quality.QUICK_DATASETS, methods, seeds, out, data=SLICES, **options)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality")
    out = folder / "quality_quick.json"
    return quality.main(["--quick", "--data", str(SLICES), "--out", str(out), "--work-dir", str(folder / "work")]), out


def test_the_sample_is_k_rows_per_class_and_the_same_for_the_same_seed():
    first, again, other = (quality.load_split("banking77_k8_10intents", seed, SLICES).train for seed in (0, 0, 1))
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert first["label"].nunique() == 10 and (first["label"].value_counts() == 8).all()
    k64 = quality.few_shot(quality.read_banking77, 64, SLICES / "banking77", 0, classes=10).train
    assert (k64["label"].value_counts() == 64).all() and set(first["text"]) <= set(k64["text"])


@needs_full_data("banking77", "amazon_counterfactual_en")
def test_the_full_datasets_give_k_rows_per_class_and_test_on_every_row():
    first = quality.load_split("banking77_k8", 0)
    assert first.train["label"].nunique() == 77 and (first.train["label"].value_counts() == 8).all()
    assert len(first.test) == 3080
    k64 = quality.load_split("banking77_k64", 0).train["label"].value_counts()
    assert k64.max() == 64 and sorted(k64[k64 < 64]) == [35, 41, 59, 61]  # small intents give all their rows
    assert set(first.train["text"]) <= set(quality.load_split("banking77_k64", 0).train["text"])
    amazon = quality.load_split("amazon_counterfactual_en_k8", 3)
    assert amazon.train["label"].value_counts().to_dict() == {"counterfactual": 8, "not_counterfactual": 8}
    assert len(amazon.test) == 670 and (amazon.test["label"] == "counterfactual").sum() == 131


def test_every_method_gets_the_same_training_rows_for_a_seed():
    seen = []

    def spy(train, test, seed):
        seen.append((seed, quality.fingerprint(train)))
        return quality.MethodRun([train["label"].iloc[0]] * len(test), 0.0)

    results = run_quick({"a": spy, "b": spy}, seeds=2)
    assert [seed for seed, _ in seen] == [0, 0, 1, 1]
    assert seen[0][1] == seen[1][1] != seen[2][1] == seen[3][1]
    assert [row["train_sha"] for row in results["rows"]] == [sha for _, sha in seen]


def test_methods_that_learn_from_unlabeled_texts_get_the_training_texts_and_never_a_test_text():
    seen = []

    def spy(train, test, seed, pool=()):
        seen.append(pool)
        return quality.MethodRun([train["label"].iloc[0]] * len(test), 0.0)

    run_quick({"nichetune_full": spy, "nichetune_full+self": spy}, seeds=1)
    split = quality.load_split("banking77_k8_10intents", 0, SLICES)
    assert seen[0] == () and set(split.train["text"]) < set(seen[1])
    assert not set(seen[1]) & set(split.test["text"])
    assert quality.unlabeled_settings(["tsdae", "self"])["adapt"].objective == "tsdae"
    assert quality.unlabeled_settings(["self"])["self_training"].rounds == quality.SELF_ROUNDS  # params.yaml: off
    with pytest.raises(SystemExit):
        quality.parse_args(["--methods", "tfidf_lr+self"])  # only nichetune's own methods learn from the pool


@pytest.mark.parametrize("data", [SLICES, pytest.param(DEFAULT_DATA, marks=needs_full_data("cfpb_payday_2023"))],
                         ids=["slice", "full"])
def test_the_cfpb_split_is_by_month_and_merges_small_issues(data):
    split = quality.load_split("cfpb_payday_2023", 0, data)
    assert split.train["date_received"].between("2023-01-01", "2023-06-30").all()
    assert split.test["date_received"].between("2023-07-01", "2023-08-31").all() and len(split.test)
    whole = pd.read_csv(data / "cfpb_payday_2023" / "complaints.csv")["issue"].value_counts()
    assert len(split.train) + len(split.test) == whole.sum()  # 2,827 in the full file, 167 in the slice
    small = set(whole[whole < quality.MIN_ISSUE_ROWS].index)
    labels = pd.concat([split.train["label"], split.test["label"]])
    assert small and not small & set(labels)
    assert (labels == quality.OTHER_ISSUE).sum() == whole[list(small)].sum()
    assert set(labels) == set(whole[whole >= quality.MIN_ISSUE_ROWS].index) | {quality.OTHER_ISSUE}


def test_the_quick_run_scores_every_method_in_range(quick):
    results, _ = quick
    rows = results["rows"]
    assert [(row["dataset"], row["method"], row["seed"]) for row in rows] == [
        ("banking77_k8_10intents", method, 0) for method in quality.METHODS]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 and -1 <= row["mcc"] <= 1
        assert row["train_s"] > 0 and (row["train_rows"], row["test_rows"], row["classes"]) == (80, 400, 10)
    assert len({row["train_sha"] for row in rows}) == 1
    assert results["runs"][-1]["settings"] == {"finetune_overrides": {}, "quick": True,
                                                "params_finetune": quality.project_finetune()}
    by_method = {row["method"]: row for row in rows}
    assert by_method["embeddings_lr"]["accuracy"] > 0.5 and by_method["nichetune_head"]["accuracy"] > 0.3
    assert [method for method, row in by_method.items() if "chosen" in row] == ["tfidf_lr", "embeddings_lr"]
    assert by_method["embeddings_lr"]["chosen"]["C"] in quality.C_GRID


def test_the_table_has_a_row_per_dataset_and_method(quick):
    results, _ = quick
    table = quality.markdown_table(results).splitlines()
    assert table[0].startswith("| dataset | method | seeds | accuracy %")
    body = [line.split(" | ")[:2] for line in table[2:]]
    assert body == [["| banking77_k8_10intents", method] for method in quality.METHODS]


def test_the_json_is_written_where_asked_with_the_command_and_machine(quick):
    results, out = quick
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(results))
    work = out.parent / "work"
    assert saved["runs"][-1]["command"] == (f"nichetune bench quality --quick --data {SLICES} --out {out} "
                                            f"--work-dir {work}")
    assert saved["runs"][-1]["machine"]["cores"] >= 1 and saved["runs"][-1]["machine"]["arch"]
    assert saved["runs"][-1]["date"] and len(saved["rows"]) == len(quality.METHODS)


def test_a_killed_run_resumes_its_seed_when_the_same_command_runs_again(tmp_path, tiny_backbone):
    work, out = tmp_path / "work", tmp_path / "q.json"
    argv = ["--quick", "--methods", "nichetune_full", "--finetune", "epochs=12", f"backbone={tiny_backbone}",
            "--data", str(SLICES), "--out", str(out), "--work-dir", str(work)]
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.quality", *argv], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = kill_after_first_checkpoint(child, work)
    assert 1 <= saved["epoch"] < 12 and not out.exists(), "the run should be killed part-way"

    results = quality.main(argv)
    (row,) = results["rows"]
    assert row["resumed_from_epoch"] == saved["epoch"]
    assert row["train_s"] > saved["seconds"] > 0  # the killed run's epochs are counted
    assert not any((work / CHECKPOINT_DIR).glob("*.pt"))
    (listed,) = report.quality_runs(results)
    assert f"nichetune_full seed 0 resumed from a killed run's epoch {saved['epoch']} checkpoint" in listed


SETFIT_RUN = """
import sys
from pathlib import Path
from benchmarks.quality import load_split
from benchmarks.setfit_baseline import train_setfit
split = load_split("banking77_k8_10intents", 0, Path(sys.argv[3]))
train_setfit(split.train, split.test, 0, 4, Path(sys.argv[1]), checkpoint_every_s=0, backbone=Path(sys.argv[2]))
"""


def test_a_killed_setfit_run_resumes_to_the_same_model(tmp_path, tiny_backbone):
    import torch

    from benchmarks.setfit_baseline import STATE_FILE, train_setfit

    split = quality.load_split("banking77_k8_10intents", 0, SLICES)  # 80 rows, 4 iterations: 640 pairs, 40 batches
    straight = train_setfit(split.train, split.test, 0, 4, tmp_path / "straight", backbone=tiny_backbone)
    work = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", SETFIT_RUN, str(work), str(tiny_backbone), str(SLICES)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not [step for step in work.glob(f"checkpoint-*/{STATE_FILE}")
                                               if int(step.parent.name.split("-")[1]) >= 5]:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()

    resumed = train_setfit(split.train, split.test, 0, 4, work, backbone=tiny_backbone)
    assert resumed.resumed_from_step is not None and 5 <= resumed.resumed_from_step < 40, "killed part-way"
    trained, again = straight.model.model_body.state_dict(), resumed.model.model_body.state_dict()
    assert all(torch.allclose(trained[name], again[name], atol=1e-6) for name in trained)
    assert resumed.predictions == straight.predictions
    assert resumed.seconds > 0 and straight.resumed_from_step is None
    assert not work.exists() and not (tmp_path / "straight").exists()


def test_a_runs_note_follows_its_command_in_the_run_list(tmp_path):
    methods = {"tfidf_lr": lambda train, test, seed: quality.MethodRun(["x"] * len(test), 0.1)}
    results = run_quick(methods, 1, tmp_path / "q.json", command="nichetune bench quality --note First with pieces.",
                        settings={"note": "First with pieces."})
    (listed,) = report.quality_runs(results)
    assert listed.startswith("- `nichetune bench quality` (") and listed.endswith(") First with pieces.")


def test_a_second_run_replaces_its_own_rows_and_keeps_the_others(tmp_path):
    def constant(label):
        return lambda train, test, seed: quality.MethodRun([label] * len(test), 0.1)

    out = tmp_path / "q.json"
    first = run_quick({"a": constant("x"), "b": constant("y")}, 1, out)
    label = first["rows"][0]["accuracy"]
    second = run_quick({"b": constant("Refund_not_showing_up")}, 1, out)
    assert [(row["method"], row["run"]) for row in second["rows"]] == [("a", 0), ("b", 1)]
    assert second["rows"][0]["accuracy"] == label and second["rows"][1]["accuracy"] == pytest.approx(0.1)
    assert len(json.loads(out.read_text())["runs"]) == 2


def test_from_seed_extends_the_seeds_already_measured(tmp_path):
    def constant(train, test, seed):
        return quality.MethodRun([train["label"].iloc[0]] * len(test), 0.1)

    out = tmp_path / "q.json"
    run_quick({"a": constant}, 1, out)
    extended = run_quick({"a": constant}, 3, out, from_seed=1)
    assert [(row["seed"], row["run"]) for row in extended["rows"]] == [(0, 0), (1, 1), (2, 1)]
    assert extended["runs"][1]["first_seed"] == 1 and extended["aggregate"][0]["seeds"] == 3


def test_what_is_written_to_the_file_during_a_run_is_kept(tmp_path):
    """A note added by hand and a second bench on the same file, both while the first bench is still running."""
    out = tmp_path / "q.json"

    def constant(train, test, seed):
        return quality.MethodRun(["x"] * len(test), 0.1)

    run_quick({"a": constant}, 1, out, command="earlier")

    def meanwhile(train, test, seed):
        if seed == 1:  # the long run's seed-0 row is in the file by now
            saved = json.loads(out.read_text())
            saved["runs"][0]["settings"]["note"] = "Added by hand."
            out.write_text(json.dumps(saved))
            run_quick({"c": constant}, 1, out, command="second bench")
        return constant(train, test, seed)

    results = run_quick({"b": meanwhile}, 2, out, command="long")
    assert json.loads(out.read_text()) == results
    assert [run["command"] for run in results["runs"]] == ["earlier", "long", "second bench"]
    assert results["runs"][0]["settings"]["note"] == "Added by hand."
    assert [(row["method"], row["seed"], row["run"]) for row in results["rows"]] == [
        ("a", 0, 0), ("b", 0, 1), ("c", 0, 2), ("b", 1, 1)]
    assert {entry["method"]: entry["seeds"] for entry in results["aggregate"]} == {"a": 1, "b": 2, "c": 1}
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


def test_the_goal_line_compares_the_default_with_every_measured_baseline():
    def row(dataset, method, accuracy, mcc, seed=0):
        return {"dataset": dataset, "method": method, "seed": seed, "accuracy": accuracy, "macro_f1": accuracy,
                "mcc": mcc, "train_s": 1.0}

    results = {"rows": [row("banking77_k8", "nichetune_head", 0.83, 0.8), row("banking77_k8", "embeddings_lr", 0.80, 0.9),
                        row("amazon_counterfactual_en_k64", "nichetune_head", 0.9, 0.60),
                        row("amazon_counterfactual_en_k64", "setfit", 0.8, 0.67)]}
    lines = {line["dataset"]: line for line in quality.goal_lines(results, "nichetune_head")}
    assert lines["banking77_k8"]["holds"] and lines["banking77_k8"]["metric"] == "accuracy"
    assert lines["banking77_k8"]["not_measured"] == ["tfidf_lr", "setfit", "plain_full_ft"]
    amazon = lines["amazon_counterfactual_en_k64"]
    assert amazon["metric"] == "mcc" and not amazon["holds"] and amazon["beaten_by"] == ["setfit"]


def test_the_summary_is_in_dataset_then_method_order_whatever_the_run_order():
    rows = [{"dataset": dataset, "method": method, "seed": 0, "accuracy": 0.5, "macro_f1": 0.5, "mcc": 0.0,
             "train_s": 1.0}
            for dataset, method in [("cfpb_payday_2023", "tfidf_lr"), ("banking77_k8", "nichetune_full"),
                                    ("banking77_k8", "tfidf_lr"), ("cfpb_payday_2023", "nichetune_head")]]
    assert [(entry["dataset"], entry["method"]) for entry in quality.aggregate(rows)] == [
        ("banking77_k8", "tfidf_lr"), ("banking77_k8", "nichetune_full"),
        ("cfpb_payday_2023", "tfidf_lr"), ("cfpb_payday_2023", "nichetune_head")]


def test_the_gpu_section_sets_each_strategy_beside_the_same_seed_on_the_cpu(tmp_path):
    def constant(label, seconds):
        return lambda train, test, seed: quality.MethodRun([label] * len(test), seconds)

    methods = {"nichetune_full": constant("Refund_not_showing_up", 2.0), "tfidf_lr": constant("x", 1.0)}
    cpu = run_quick(methods, 1, tmp_path / "cpu.json")
    gpu = run_quick({**methods, "nichetune_full": constant("x", 0.5)}, 1, tmp_path / "gpu.json",
                    command="nichetune bench quality --note Weights in fp16.", settings={"note": "Weights in fp16."})
    section = report.gpu_quality_section(gpu, cpu)
    assert [line for line in report.gpu_quality_runs(gpu) if line.startswith("- `nichetune bench quality` (")
            and line.endswith(") Weights in fp16.")]
    per_seed = [line for line in section if line.startswith("| banking77") and line.count("|") == 9]
    cpu_accuracy = cpu["rows"][0]["accuracy"] * 100
    assert per_seed == [f"| banking77_k8_10intents | nichetune_full | 0 | 0.0 | {cpu_accuracy:.1f} | "
                        f"{cpu_accuracy:.1f} (1) | 0.5 | 2 |"]  # baselines are not the pipeline's: left out
    over_seeds = [line.split(" | ")[1:3] for line in "\n".join(section).splitlines()
                  if line.startswith("| banking77") and line.count("|") == 8]
    assert over_seeds == [["tfidf_lr", "1"], ["nichetune_full", "1"], ["tfidf_lr (CPU, quality table)", "1"]]
    assert report.gpu_quality_section(None, cpu) == []


def test_a_gpu_run_over_more_seeds_joins_the_goal_line_and_the_missing_list():
    def row(method, accuracy, seed):
        return {"dataset": "cfpb_payday_2023", "method": method, "seed": seed, "accuracy": accuracy,
                "macro_f1": accuracy, "mcc": accuracy, "train_s": 1.0, "run": 0}

    default = quality.default_method()
    run = {"command": "nichetune bench quality", "date": "2026-11-30", "settings": {},
           "machine": {"arch": "x86_64", "cores": 2, "gpu": None}}
    cpu = {"runs": [run], "rows": [row("tfidf_lr", 0.46, 0), row(default, 0.44, 0)]}
    gpu = {"rows": [row(default, accuracy, seed) for seed, accuracy in enumerate([0.45, 0.47])]
           + [row("nichetune_lora", 0.42, 0)]}
    goal = next(line for line in report.goals_section(cpu, None, gpu) if line.startswith("- cfpb_payday_2023"))
    assert "**does not hold** (beaten by tfidf_lr)" in goal and goal.endswith("on the lent GPU over 2 seeds: "
                                                                            "accuracy 46.0 ± 1.4")
    assert not report.goals_section(cpu, None, {"rows": gpu["rows"][:1]})[2].endswith("seeds: accuracy 45.0")
    missing = next(line for line in report.quality_section(cpu, gpu) if line.startswith("- cfpb_payday_2023: "))
    assert "nichetune_lora (on the lent GPU only, below)" in missing and "setfit," in missing


def test_the_settings_section_groups_seeds_by_their_overrides_beside_the_cpu_baseline(tmp_path):
    def constant(label):
        return lambda train, test, seed: quality.MethodRun([label] * len(test), 1.0)

    out = tmp_path / "settings.json"
    cpu = run_quick({"tfidf_lr": constant("x")}, 1, tmp_path / "cpu.json")
    for length, label in ((128, "x"), (512, "Refund_not_showing_up")):
        run_quick({"nichetune_full": constant(label)}, 2, out,
                  command=f"nichetune bench quality --finetune max_length={length} --out {out}",
                  settings={"finetune_overrides": {"max_length": length}})
    section = report.settings_section(json.loads(out.read_text()), cpu)
    assert "- `nichetune bench quality --finetune max_length=512 --out benchmarks/results/settings_gpu.json` (" in \
        "\n".join(report.settings_runs(json.loads(out.read_text())))
    rows = [line.split(" | ")[1:3] for line in "\n".join(section).splitlines() if line.startswith("| banking77")]
    assert rows == [["tfidf_lr (CPU, quality table)", "1"], ["nichetune_full (max_length=128)", "2"],
                    ["nichetune_full (max_length=512)", "2"]]
    assert report.settings_section(None, cpu) == []


def test_fine_tune_overrides_are_not_written_into_the_quality_table(capsys):
    with pytest.raises(SystemExit, match="--finetune changes what params.yaml trains: .* --out FILE"):
        quality.main(["--datasets", "banking77_k8", "--methods", "nichetune_head", "--finetune", "max_length=64"])


def test_the_report_lists_only_runs_that_still_have_rows(tmp_path):
    def constant(label):
        return lambda train, test, seed: quality.MethodRun([label] * len(test), 0.1)

    out = tmp_path / "q.json"
    run_quick({"a": constant("x")}, 1, out, command="first")
    results = run_quick({"a": constant("y")}, 1, out, command="second")
    listed = report.quality_runs(results)
    assert len(results["runs"]) == 2 and len(listed) == 1 and listed[0].startswith("- `second` (")


def test_a_resumed_setfit_row_is_listed_with_the_step_it_resumed_from(tmp_path):
    def resumed(train, test, seed):
        return quality.MethodRun([test["label"].iloc[0]] * len(test), 12.5, resumed_from_step=300)

    results = run_quick({"setfit": resumed}, 1, tmp_path / "q.json", command="nichetune bench quality --methods setfit")
    (row,) = results["rows"]
    (listed,) = report.quality_runs(results)
    assert row["resumed_from_step"] == 300 and "resumed_from_epoch" not in row
    assert "setfit seed 0 resumed from a killed run's step 300 checkpoint, its train s adds up the runs" in listed


def test_the_report_opens_with_the_goals_and_one_table_per_dataset_and_ends_with_the_run_log(tmp_path):
    def constant(label):
        return lambda train, test, seed: quality.MethodRun([label] * len(test), 0.1)

    results = run_quick({"tfidf_lr": constant("x")}, 1, tmp_path / "q.json", command="nichetune bench quality")
    text = "\n".join([*report.goals_section(results, None), *report.quality_section(results),
                      *report.run_log(results, None, None)])
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["## Goal lines", "## Quality: few-shot classification against what users would pick instead",
                        *[f"### {dataset}" for dataset in report.datasets_in(results)], "## Run log",
                        "### Quality tables (runs whose rows were all replaced since stay in the JSON only)"]
    assert not [line for line in report.quality_section(results) if line.startswith("- `")]
    assert text.rstrip().endswith(report.quality_runs(results)[-1])


@pytest.mark.parametrize(("counts", "folds"), [({"a": 10, "b": 10}, 5), ({"a": 10, "b": 3}, 3), ({"a": 9, "b": 1}, 2)])
def test_cross_validation_takes_as_many_folds_as_the_smallest_label_allows(counts, folds):
    labels = [label for label, count in counts.items() for _ in range(count)]
    assert quality.cv_folds(labels, seed=0).get_n_splits() == folds


def test_the_tfidf_baseline_chooses_its_ngrams_and_c_by_cross_validation_on_the_training_rows():
    train = quality.load_split("banking77_k8_10intents", 0, SLICES).train
    texts, labels = train["text"].tolist(), train["label"].tolist()
    tuned = quality.tune_tfidf_lr(texts, labels, seed=0)
    scores = tuned.settings["cv_macro_f1"]
    assert list(scores) == [f"{'+'.join(parts)} C={c:g}" for parts in quality.NGRAM_CHOICES for c in quality.C_GRID]
    best = quality.setting_name(tuned.settings)
    assert scores[best] == max(scores.values()) and best == next(name for name in scores if scores[name] == scores[best])
    assert quality.chosen_settings(tuned) == {"ngrams": tuned.settings["ngrams"], "C": tuned.settings["C"],
                                              "cv_macro_f1": scores[best]}
    # the model kept is the chosen setting refitted on every training row
    refitted = quality.Pipeline([("features", quality.tfidf_features(tuple(tuned.settings["ngrams"].split("+")))),
                                 ("model", quality.logistic_regression(0, tuned.settings["C"]))]).fit(texts, labels)
    assert (tuned.model.predict(texts) == refitted.predict(texts)).all()
    assert quality.tune_tfidf_lr(texts, labels, seed=0).settings == tuned.settings  # the seed fixes the folds


def test_the_embeddings_are_sentence_transformers_own_and_their_c_is_chosen_by_cross_validation():
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from tasks.model import backbone_path

    train = quality.load_split("banking77_k8_10intents", 0, SLICES).train
    texts = train["text"].tolist()
    vectors = quality.embed(texts, batch_size=16)
    reference = SentenceTransformer(str(backbone_path("minilm")), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    tuned = quality.tune_embedding_lr(vectors, train["label"].tolist(), seed=0)
    assert list(tuned.settings["cv_macro_f1"]) == [f"C={c:g}" for c in quality.C_GRID]
    assert set(tuned.settings) == {"C", "cv_macro_f1"} and tuned.settings["C"] in quality.C_GRID


def test_the_report_lists_what_cross_validation_chose_under_each_table():
    rows = [{"method": "tfidf_lr", "chosen": {"ngrams": ngrams, "C": 10.0, "cv_macro_f1": 0.8}}
            for ngrams in ("char", "word+char", "char")]
    rows += [{"method": "embeddings_lr", "chosen": {"C": 100.0, "cv_macro_f1": 0.9}}, {"method": "setfit"}]
    assert report.chosen_lines(rows) == [
        "Chosen by cross-validation on the training rows: tfidf_lr char C=10 (2 of 3 seeds), word+char C=10 "
        "(1 of 3 seeds); embeddings_lr C=100 (1 of 1 seeds).", ""]
    assert report.chosen_lines([{"method": "setfit"}]) == []


def test_the_report_lists_what_auto_kept_and_what_its_time_budget_left_out():
    kept = [{"weights": {"tfidf": 0.5, "embedding": 0.5}, "left_out": ["full"]},
            {"weights": {"tfidf": 1.0}, "left_out": ["full"]}, {"weights": {"tfidf": 1.0}, "left_out": []}]
    rows = [{"method": "nichetune_auto", "kept": k} for k in kept] + [{"method": "nichetune_auto"}]
    assert report.kept_lines(rows) == [
        "nichetune_auto kept tfidf 1.00 (2 of 3 seeds), tfidf 0.50 + embedding 0.50 (1 of 3 seeds); left out by "
        "finetune.time_budget: full (2 of 3 seeds).", ""]
    assert report.kept_lines([{"method": "tfidf_lr"}]) == []


def test_a_row_that_adapted_the_backbone_records_how_long_and_a_cached_one_does_not(tmp_path, tiny_backbone):
    from tasks.config import AdaptParams, FinetuneParams, SelfTrainingParams
    from tests.conftest import cfpb_sample

    rows = cfpb_sample(per_class=6, classes=2).rename(columns={"issue": "label"})[["text", "label"]]
    params = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=8, max_length=32)
    unlabeled = {"adapt": AdaptParams(objective="tsdae", steps=2, batch_size=4, max_length=32),
                 "self_training": SelfTrainingParams()}
    first, again = (quality.nichetune(rows, rows, 0, params, tmp_path, unlabeled=unlabeled) for _ in range(2))
    assert first.adapt_seconds > 0 and again.adapt_seconds is None  # the second read the cache
    lines = report.adapt_lines([{"method": "nichetune_head+tsdae", "adapt_s": s} for s in (30.0, 50.0, 40.0)])
    assert lines == ["nichetune_head+tsdae adapted the backbone before training for 40 s (median of 3 seeds), not "
                     "counted in its train s.", ""]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal and keeps what was written to it."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True], ids=["terminal", "quiet"])
def test_bench_rows_show_a_bar_on_a_terminal_unless_quiet(quiet, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setenv(QUIET_ENV, "1" if quiet else "0")

    def constant(train, test, seed):
        return quality.MethodRun([train["label"].iloc[0]] * len(test), 0.1)

    run_quick({"a": constant, "b": constant}, 2, tmp_path / "q.json")
    shown = sys.stderr.getvalue()
    assert ("4/4" in shown and "banking77_k8_10intents seed 1 b: " in shown) != quiet  # the bar names the row
    assert shown.count("accuracy") == 4  # each finished row is printed either way


def test_auto_goal_lines_say_reached_not_reached_or_not_measured():
    from benchmarks.report import AUTO_METHOD, AUTO_TARGETS, auto_goal_lines

    def row(dataset, seed, value):
        return {"dataset": dataset, "method": AUTO_METHOD, "seed": seed, "accuracy": value, "macro_f1": value,
                "mcc": value, "train_s": 1.0}

    rows = [row("banking77_k8", 0, 0.85), row("banking77_k8", 1, 0.85), row("banking77_k64", 0, 0.90)]
    lines = auto_goal_lines({"rows": rows})
    assert len(lines) == len(AUTO_TARGETS)
    assert lines[0].startswith("- banking77_k8: `nichetune_auto` accuracy 85.0 ± 0.0 over 2 seeds") and \
        lines[0].endswith(": reached")
    assert lines[1].endswith("**not reached**")
    assert all("**not measured**" in line for line in lines[2:])


def test_a_goal_line_missed_by_less_than_its_rounding_shows_two_decimals():
    from benchmarks.report import AUTO_METHOD, auto_goal_lines

    rows = [{"dataset": "banking77_k8", "method": AUTO_METHOD, "seed": seed, "accuracy": value, "macro_f1": value,
             "mcc": value, "train_s": 1.0} for seed, value in [(0, 0.8398), (1, 0.8400)]]
    missed, = auto_goal_lines({"rows": rows}, [("banking77_k8", "accuracy", 84.0)])
    assert " accuracy 83.99 ± 0.0 " in missed and missed.endswith("**not reached**")
    reached, = auto_goal_lines({"rows": rows}, [("banking77_k8", "accuracy", 83.9)])
    assert " accuracy 84.0 ± 0.0 " in reached and reached.endswith(": reached")


def test_the_refit_section_pairs_each_variant_with_off_seed_by_seed():
    from benchmarks import refit

    rows = [{"seed": seed, "refit": variant, "dev_accuracy": accuracy, "dev_macro_f1": accuracy, "seconds": seconds}
            for seed, variant, accuracy, seconds in [
                (0, "retrain", 0.81, 150), (0, "continue:1", 0.805, 110), (0, "off", 0.80, 100),
                (1, "retrain", 0.78, 120), (1, "continue:1", 0.80, 88), (1, "off", 0.79, 80)]]
    lines = refit.section({"command": "python -m benchmarks.refit", "date": "2026-12-07", "k": 13, "dev_rows": 2000,
                           "rows": rows})
    assert "| retrain | 79.5 | 79.5 | 135 | 2 |" in lines and "| off | 79.5 | 79.5 | 90 | 2 |" in lines
    assert "| continue:1 | 80.2 | 80.2 | 99 | 2 |" in lines
    assert any(line.startswith("Per seed, retrain minus off") and "+1.0, -1.0 points; time 1.50x, 1.50x" in line
               for line in lines)
    assert any(line.startswith("Per seed, continue:1 minus off") and "+0.5, +1.0 points; time 1.10x, 1.10x" in line
               for line in lines)


def test_the_refit_section_reads_rows_from_before_continue():
    from benchmarks import refit

    rows = [{"seed": 0, "refit": on, "dev_accuracy": accuracy, "dev_macro_f1": accuracy, "seconds": seconds}
            for on, accuracy, seconds in [(True, 0.81, 150), (False, 0.80, 100)]]
    lines = refit.section({"command": "python -m benchmarks.refit", "date": "2026-12-05", "k": 6, "dev_rows": 2000,
                           "rows": rows})
    assert "| retrain | 81.0 | 81.0 | 150 | 1 |" in lines and "| off | 80.0 | 80.0 | 100 | 1 |" in lines
    assert any("retrain minus off: dev accuracy +1.0 points; time 1.50x" in line for line in lines)


def test_the_temperature_section_counts_the_seeds_whose_temperature_sits_at_a_limit():
    from benchmarks import temperature
    from tasks.calibration import LIMITS, PRIOR_SD

    def run(seed: int, alone: float, with_prior: float) -> dict:
        fitted = {"T = 1": 1.0, "None": alone, str(PRIOR_SD): with_prior}
        return {"seed": seed, "validation_rows": 16, "dev_rows": 1000,
                "priors": {key: {"temperature": t, "dev_ece": 0.1, "dev_log_loss": 0.6} for key, t in fitted.items()}}

    lines = temperature.section({"amazon_counterfactual_en_k8": {
        "command": "python -m benchmarks.temperature", "date": "2026-12-06", "machine": {"cores": 2},
        "runs": [run(0, LIMITS[1], 3.0), run(1, 0.5, 0.6), run(2, LIMITS[0], 0.2)]}})
    assert "### amazon_counterfactual_en_k8: 3 seeds, 16 validation rows" in lines
    assert f"| none: the log loss alone | 0.50 ({LIMITS[0]:.2f} to {LIMITS[1]:.2f}) | 2 | 0.6000 | 10.0 |" in lines
    assert f"| {PRIOR_SD:g} (auto's) | 0.60 (0.20 to 3.00) | 0 | 0.6000 | 10.0 |" in lines


def test_the_selftrain_section_compares_each_setting_with_no_self_training_seed_by_seed():
    from benchmarks import selftrain

    today = selftrain.bench_setting()  # marked as the quality bench's `+self`

    def run(seed: int, off: float, on: float, added: list[int]) -> dict:
        return {"seed": seed, "pool": 3002, "scores": {"off": off, "0.5/2/1": on, today: on},
                "pseudo_labels": {"0.5/2/1": added, today: added}}

    lines = selftrain.section({"amazon_counterfactual_en_k8": {
        "command": "python -m benchmarks.selftrain", "date": "2026-12-06", "machine": {"cores": 2}, "metric": "mcc",
        "runs": [run(0, 0.30, 0.30, []), run(1, 0.40, 0.50, [16, 32]), run(2, 0.35, 0.33, [2])]}})
    assert "### amazon_counterfactual_en_k8: 3 seeds, pools of 3,002 texts" in lines
    assert "| off | 35.0 | +0.0 ± 0.0 | 0 / 0 | - | - |" in lines
    assert "| 0.5/2/1 | 37.7 | +2.7 ± 6.4 | 1 / 1 | 2 | 17 |" in lines
    assert f"| {today} (`+self`) | 37.7 | +2.7 ± 6.4 | 1 / 1 | 2 | 17 |" in lines
    assert selftrain.parse("0.7/3/2").model_dump() == {"rounds": 3, "threshold": 0.7, "max_per_class": 2.0}
    assert selftrain.parse("off") is None
    with pytest.raises(SystemExit, match="threshold/rounds/max_per_class"):
        selftrain.parse("0.7/3")  # the cap is never left to whatever params.yaml says today


def test_selftrain_settings_name_an_adaptation_objective_self_training_or_both():
    from benchmarks import selftrain

    assert selftrain.parse_setting("off") == ("none", None)
    assert selftrain.parse_setting("tsdae") == ("tsdae", None)
    objective, rounds = selftrain.parse_setting("mlm+0.7/2/2")
    assert (objective, selftrain.setting_name(rounds)) == ("mlm", "0.7/2/2")
    assert selftrain.parse_setting("0.7/2/2")[0] == "none"
    for wrong in ("bert", "tsdae+off", "0.7/2/2+tsdae", "tsdae+0.7/2"):
        with pytest.raises(SystemExit, match="an objective"):
            selftrain.parse_setting(wrong)
    lines = selftrain.section({"cfpb_payday_2023": {
        "command": "python -m benchmarks.selftrain", "date": "2026-12-06", "machine": {"cores": 2},
        "metric": "accuracy", "runs": [{"seed": 0, "pool": 0, "labeled": 1300, "dev": 860,
                                        "scores": {"off": 0.40, "tsdae": 0.42}, "pseudo_labels": {}}]}})
    assert "### cfpb_payday_2023: 1 seed, pools of 0 texts, 1,300 labeled and 860 dev rows" in lines
    assert "| tsdae | 42.0 | +2.0 | 1 / 0 | - | - |" in lines


def test_the_endtoend_goal_reads_each_strategys_median_run():
    from benchmarks import endtoend

    runs = [{"strategy": strategy, "repeat": repeat, "seconds": seconds, "holdout": "", "stages_s": {}}
            for repeat, pair in enumerate([(170, 110), (200, 115), (175, 190)])
            for strategy, seconds in zip(("auto", "full"), pair)]
    command = "nichetune bench endtoend --strategies auto full --repeats 3"
    auto, full = endtoend.goal_lines({"banking77_k8": {"command": command, "runs": runs}})
    assert "`auto`: 175 s (median of 3 runs, 170-200 s), goal under 180: holds" in auto
    assert "`full`: 115 s (median of 3 runs, 110-190 s), goal under 180: holds" in full
    (slow,) = endtoend.goal_lines({"banking77_k8": {"command": command, "runs": [runs[2]]}})
    assert slow.endswith("200 s (one run), goal under 180: **does not hold**")
    cfpb = {"command": "nichetune bench endtoend --dataset cfpb_payday_2023 --strategies auto --repeats 1 "
                       "--set finetune.time_budget=10", "runs": [{**runs[0], "seconds": 700}]}
    (line,) = endtoend.goal_lines({"cfpb_payday_2023": cfpb})
    assert "cfpb_payday_2023" in line and "(--set finetune.time_budget=10): 700 s" in line
    assert line.endswith("goal under 900: holds")
    amx, zen = ({"command": command, "cpu": cpu, "runs": [runs[0]]} for cpu in ("Xeon (AMX)", "EPYC (AVX-512 BF16)"))
    lines = endtoend.goal_lines({"banking77_k8": [amx, zen]})
    assert [line.split(", `nichetune run`")[0] for line in lines] == [
        "- A registered candidate for banking77 with 8 per intent on Xeon (AMX)",
        "- A registered candidate for banking77 with 8 per intent on EPYC (AVX-512 BF16)"]


def test_an_endtoend_run_replaces_the_record_of_its_own_kind_of_cpu_only(tmp_path, monkeypatch):
    from benchmarks import endtoend

    monkeypatch.setattr(endtoend, "RESULTS", tmp_path)
    monkeypatch.setattr(endtoend.quality, "cpu_kind", lambda: "EPYC (AVX-512 BF16)")
    monkeypatch.setattr(endtoend, "timed_run", lambda project, strategy, settings: (100.0, "holdout", {}))
    monkeypatch.setattr(endtoend, "project", lambda folder, dataset, data: folder)
    (tmp_path / "endtoend.json").write_text(json.dumps({"banking77_k8": {"command": "old", "cpu": "Xeon (AMX)",
                                                                          "runs": []}}))
    for seconds in (100.0, 90.0):
        monkeypatch.setattr(endtoend, "timed_run", lambda project, strategy, settings, s=seconds: (s, "holdout", {}))
        endtoend.main(["--strategies", "auto", "--repeats", "1"])
    kept = json.loads((tmp_path / "endtoend.json").read_text())["banking77_k8"]
    assert [record["cpu"] for record in kept] == ["Xeon (AMX)", "EPYC (AVX-512 BF16)"]
    assert kept[1]["runs"][0]["seconds"] == 90.0


@needs_full_data("amazon_counterfactual_en")
def test_the_tfidf_bench_scores_each_reading_on_dev_rows_and_search_is_the_best_cross_validated_one(tmp_path):
    from benchmarks import tfidf

    out = tmp_path / "tfidf.json"
    results = tfidf.main(["--datasets", "amazon_counterfactual_en_k8", "--seeds", "1", "--dev-rows", "200",
                          "--out", str(out)])
    rows = {row["reading"]: row for row in results["rows"]}
    assert set(rows) == {*tfidf.READINGS, tfidf.SEARCH}
    assert all(row["chosen_on_rows"] == 16 for row in rows.values())  # 8 per class: auto cross-fits, on every row
    damped = [reading for reading, (_, is_damped) in tfidf.READINGS.items() if is_damped]
    best = max(damped, key=lambda reading: rows[reading]["cv_macro_f1"])
    assert rows[tfidf.SEARCH]["searched_to"] == best and rows[tfidf.SEARCH]["mcc"] == rows[best]["mcc"]
    assert json.loads(out.read_text())["rows"] == results["rows"]
    lines = tfidf.section(results)
    assert "### amazon_counterfactual_en_k8" in lines
    assert any(line.startswith("| word+char raw | ") and line.endswith(" | 1 |") for line in lines)
