"""The slices of public data committed in tests/data, and the benchmarks' data folder option."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from benchmarks import quality
from benchmarks.sources import DEFAULT_DATA, SOURCES
from tests.conftest import REPO, SLICES, cfpb_sample, needs_full_data
from tests.data.cut_slices import cut


def test_the_slices_are_kilobytes_each_with_its_provenance():
    files = sorted(SLICES.glob("*/*.csv"))
    assert [path.relative_to(SLICES).as_posix() for path in files] == [
        "banking77/test.csv", "banking77/train.csv", "cfpb_payday_2023/complaints.csv"]
    assert all(path.stat().st_size < 200_000 for path in files)
    for folder in {path.parent for path in files}:
        provenance = (folder / "PROVENANCE.md").read_text()
        assert "Licence" in provenance or "public domain" in provenance
        assert "python tests/data/cut_slices.py" in provenance


@needs_full_data("banking77", "cfpb_payday_2023")
def test_the_cut_script_gives_the_committed_slices_again(tmp_path):
    for path in cut(DEFAULT_DATA, tmp_path):
        assert path.read_bytes() == (SLICES / path.relative_to(tmp_path)).read_bytes(), path


def test_the_cfpb_sample_takes_the_most_common_issues_in_time_order():
    sample = cfpb_sample(per_class=40)
    counts = sample["issue"].value_counts()
    assert len(counts) == 4 and counts.max() == 40 and counts.min() == 39  # the fourth issue has 39 in the slice
    assert sample["date_received"].is_monotonic_increasing and sample["complaint_id"].is_unique
    assert cfpb_sample(per_class=3, classes=2)["issue"].value_counts().to_dict() == {
        "Charged fees or interest you didn't expect": 3, "Problem when making payments": 3}
    with pytest.raises(ValueError, match="per_class=41, classes=4: the slice holds at most 40 rows"):
        cfpb_sample(per_class=41)


@pytest.mark.parametrize("which, options, missing", [
    ("quality", ["--quick", "--out", "q.json"], "banking77"),
    ("quality", ["--datasets", "amazon_counterfactual_en_k8", "cfpb_payday_2023", "--out", "q.json"],
     "amazon_counterfactual_en"),  # the first one missing
    ("speed", [], "banking77"),
    ("growth", [], "banking77"),
    ("gpu", ["--device", "cpu", "--out", "gpu.json"], "banking77"),
])
def test_a_benchmark_without_its_dataset_folder_stops_saying_where_to_get_it(which, options, missing, tmp_path,
                                                                             monkeypatch):
    from flows.cli import main

    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", which, *options, "--data", str(empty)])
    assert exit_info.value.code == (f"error: {empty / missing}: no such dataset folder; get {missing} from "
                                    f"{SOURCES[missing]}, or give --data DIR holding {missing}/")
    assert list(tmp_path.iterdir()) == [empty] and not list(empty.iterdir())  # stopped before any work


def test_the_command_exits_non_zero_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flows.cli", "bench", "growth", "--data", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {tmp_path}/banking77: no such dataset folder; get banking77 from "
                                        f"{SOURCES['banking77']}, or give --data DIR holding banking77/"]


def test_every_dataset_folder_has_a_source_to_name_and_the_default_is_beside_the_checkout():
    assert {dataset.folder for dataset in quality.DATASETS.values()} == set(SOURCES)
    assert DEFAULT_DATA == REPO.parent / "shared" / "data"


def test_the_quick_subset_reads_the_same_rows_from_the_slice_as_from_the_full_dataset():
    split = quality.load_split("banking77_k8_10intents", 0, SLICES)
    assert len(split.train) == 80 and len(split.test) == 400 and split.train["label"].nunique() == 10
    if (DEFAULT_DATA / "banking77").is_dir():
        full = quality.load_split("banking77_k8_10intents", 0)
        pd.testing.assert_frame_equal(split.train, full.train)
        pd.testing.assert_frame_equal(split.test, full.test)
