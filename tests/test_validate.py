"""Validate: the Great Expectations suite names what is wrong; run() writes a summary and Data Docs, then stops."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks import validate
from tasks.config import ValidateParams
from tasks.errors import ValidationFailed
from tasks.validate import validate_frame


def frame_of(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label"])


def by_name(checks) -> dict:
    return {check.name: check for check in checks}


GOOD = frame_of([(f"billing message {i}", "billing") for i in range(3)]
                + [(f"delivery message {i}", "delivery") for i in range(4)])


def test_a_good_frame_passes_every_check():
    checks, docs = validate_frame(GOOD, ValidateParams(labels=["billing", "delivery"], min_examples_per_class=3))
    assert docs is None
    assert [check.name for check in checks] == [
        "text and label columns exist", "text is present", "text is not blank", "label is present",
        "two or more classes", "text at most 100,000 characters", "at most 1% of rows repeat a text",
        "no text labeled two ways", "label is one of the 2 known labels",
        "at least 3 examples of 'billing'", "at least 3 examples of 'delivery'",
    ]
    assert all(check.success for check in checks)
    assert by_name(checks)["at least 3 examples of 'delivery'"].observed == 4


def test_without_known_labels_the_classes_come_from_the_data():
    checks, _ = validate_frame(GOOD, ValidateParams(min_examples_per_class=3))
    names = [check.name for check in checks]
    assert not any(name.startswith("label is one of") for name in names)
    assert names[-2:] == ["at least 3 examples of 'billing'", "at least 3 examples of 'delivery'"]


@pytest.fixture(scope="module")
def bad_checks():
    frame = frame_of([
        ("card charged twice", "billing"), ("late fee", "billing"), ("refund missing", "billing"),
        ("   ", "billing"),
        ("where is my parcel", "delivery"),
        ("I want a pony", "ponies"),
        ("no label on this one", None),
    ])
    checks, _ = validate_frame(frame, ValidateParams(labels=["billing", "delivery"], min_examples_per_class=2))
    return by_name(checks)


def test_blank_text_fails_and_is_shown(bad_checks):
    check = bad_checks["text is not blank"]
    assert check.success is False
    assert check.observed == "1 bad rows" and check.unexpected == ["   "]
    assert bad_checks["text is present"].success is True


def test_missing_label_fails(bad_checks):
    check = bad_checks["label is present"]
    assert check.success is False and check.observed == "1 bad rows"


def test_unknown_label_fails_and_names_the_value(bad_checks):
    check = bad_checks["label is one of the 2 known labels"]
    assert check.success is False
    assert check.unexpected == ["ponies"]
    assert check.line() == "FAIL label is one of the 2 known labels (found 1 bad rows) (e.g. 'ponies')"


def test_a_class_with_too_few_rows_fails_with_its_count(bad_checks):
    assert bad_checks["at least 2 examples of 'delivery'"].success is False
    assert bad_checks["at least 2 examples of 'delivery'"].observed == 1
    assert bad_checks["at least 2 examples of 'delivery'"].line() == "FAIL at least 2 examples of 'delivery' (found 1)"
    assert bad_checks["at least 2 examples of 'billing'"].success is True
    assert bad_checks["at least 2 examples of 'billing'"].observed == 4


def test_a_known_label_with_no_rows_fails_with_zero():
    cfg = ValidateParams(labels=["billing", "delivery", "returns"], min_examples_per_class=1)
    checks, _ = validate_frame(GOOD, cfg)
    check = by_name(checks)["at least 1 examples of 'returns'"]
    assert check.success is False and check.observed == 0


def test_labels_with_quotes_spaces_and_backslashes_are_counted_exactly():
    labels = ["it's broken", 'the "premium" plan', "a == b or label", "back\\slash"]
    frame = frame_of([(f"text {i}", label) for label, n in zip(labels, [2, 3, 4, 1]) for i in range(n)])
    checks, _ = validate_frame(frame, ValidateParams(min_examples_per_class=2))
    counts = {check.name: (check.observed, check.success) for check in checks if check.name.startswith("at least")}
    assert counts == {
        "at least 2 examples of \"it's broken\"": (2, True),
        "at least 2 examples of 'the \"premium\" plan'": (3, True),
        "at least 2 examples of 'a == b or label'": (4, True),
        "at least 2 examples of 'back\\\\slash'": (1, False),
    }


def test_run_passes_and_writes_summary_and_data_docs(tmp_path):
    dataset = tmp_path / "dataset.parquet"
    GOOD.astype("string").to_parquet(dataset)
    result = validate.run(ValidateParams(min_examples_per_class=3), dataset, tmp_path / "out")
    assert result.success and result.rows == 7
    assert result.data_docs == tmp_path / "out" / "data_docs" / "index.html"
    assert result.data_docs.stat().st_size > 1000
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["success"] is True and summary["rows"] == 7
    assert [c["name"] for c in summary["checks"]][-1] == "at least 3 examples of 'delivery'"
    assert result.text().splitlines()[0] == "validation passed: 10 of 10 checks passed on 7 rows"
    assert result.warnings() == "validation passed: 10 of 10 checks passed on 7 rows"  # nothing to warn of


def test_a_run_that_passes_with_warnings_names_them(tmp_path):
    """A check whose severity is warn fails without stopping the run; the run's log still says which."""
    dataset = tmp_path / "dataset.parquet"
    GOOD.astype("string").to_parquet(dataset)
    params = ValidateParams(min_examples_per_class=4, severity={"class_count": "warn"})
    result = validate.run(params, dataset, tmp_path / "out")
    assert result.success and result.warnings().splitlines() == [
        "validation passed: 9 of 10 checks passed (1 warning) on 7 rows", "warn at least 4 examples of 'billing' (found 3)"]


def test_run_fails_with_the_failing_check_lines_after_writing_summary_and_docs(tmp_path):
    dataset = tmp_path / "dataset.parquet"
    GOOD.astype("string").to_parquet(dataset)
    with pytest.raises(ValidationFailed) as caught:
        validate.run(ValidateParams(min_examples_per_class=4), dataset, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"{dataset}: validation FAILED: 9 of 10 checks passed on 7 rows\n")
    assert message.splitlines()[1:3] == ["FAIL at least 4 examples of 'billing' (found 3)",
                                         "9 other checks: `nichetune validate` lists every one"]
    assert "fix the data or the validate section of params.yaml" in message.splitlines()[-1]
    assert "ok   at least 4 examples of 'delivery' (found 4)" in caught.value.result.text().splitlines()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["success"] is False
    assert {c["name"]: c["observed"] for c in summary["checks"]}["at least 4 examples of 'billing'"] == 3
    assert (tmp_path / "out" / "data_docs" / "index.html").is_file()


def test_run_names_the_users_file_when_given(tmp_path):
    dataset = tmp_path / "dataset.parquet"
    GOOD.astype("string").to_parquet(dataset)
    with pytest.raises(ValidationFailed, match=r"^data/labeled\.csv: validation FAILED"):
        validate.run(ValidateParams(min_examples_per_class=4), dataset, tmp_path / "out", source="data/labeled.csv")


def test_run_replaces_stale_data_docs(tmp_path):
    dataset = tmp_path / "dataset.parquet"
    GOOD.astype("string").to_parquet(dataset)
    stale = tmp_path / "out" / "data_docs" / "validations" / "old.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("an earlier run")
    validate.run(ValidateParams(min_examples_per_class=1), dataset, tmp_path / "out")
    assert not stale.exists()
    assert (tmp_path / "out" / "data_docs" / "index.html").is_file()


def test_duplicates_and_conflicting_labels_are_caught_after_whitespace_normalisation():
    frame = frame_of([("where is my parcel", "delivery"), ("where  is my parcel ", "delivery"),
                      ("refund please", "billing"), ("refund   please", "delivery"),
                      *[(f"other {i}", "billing") for i in range(6)]])
    checks = by_name(validate_frame(frame, ValidateParams(min_examples_per_class=1))[0])
    assert checks["at most 1% of rows repeat a text"].success is False
    assert checks["no text labeled two ways"].success is False
    assert checks["no text labeled two ways"].observed == "2 bad rows"


def test_class_share_reports_each_class_share():
    frame = frame_of([("a rare one", "rare")] + [(f"common {i}", "common") for i in range(19)])
    checks = by_name(validate_frame(frame, ValidateParams(min_examples_per_class=1, min_class_share=0.1))[0])
    assert checks["at least 10% of rows are 'rare'"].success is False
    assert checks["at least 10% of rows are 'rare'"].observed == "5.0%"
    assert checks["at least 10% of rows are 'common'"].observed == "95.0%"


def test_label_shift_compares_with_the_dataset_without_its_newest_batch():
    old = [(f"old {i}", "billing" if i % 2 else "delivery", "20260101T000000-a") for i in range(40)]
    new = [(f"new {i}", "delivery", "20260201T000000-b") for i in range(40)]
    frame = pd.DataFrame(old + new, columns=["text", "label", "_batch"])
    checks = by_name(validate_frame(frame, ValidateParams(min_examples_per_class=1, max_label_shift=0.05))[0])
    shift = checks["label mix within KL 0.05 of the previous version"]
    assert shift.success is False and shift.severity == "warn" and shift.observed.startswith("KL ")
    one_batch = by_name(validate_frame(frame.drop(columns="_batch"), ValidateParams(min_examples_per_class=1))[0])
    assert not any(name.startswith("label mix") for name in one_batch)


def test_a_warning_check_reports_without_stopping_and_a_failing_one_stops(tmp_path):
    frame = frame_of([("same text", "billing"), ("same text", "billing")] + [(f"d {i}", "delivery") for i in range(3)])
    dataset = tmp_path / "dataset.parquet"
    frame.to_parquet(dataset)
    result = validate.run(ValidateParams(min_examples_per_class=2), dataset, tmp_path / "out")
    assert result.success and "(1 warning)" in result.text().splitlines()[0]
    assert "warn at most 1% of rows repeat a text" in result.text()
    assert "| warn | at most 1% of rows repeat a text |" in (tmp_path / "out" / "summary.md").read_text()
    strict = ValidateParams(min_examples_per_class=2, severity={"duplicates": "fail"})
    with pytest.raises(ValidationFailed, match="FAIL at most 1% of rows repeat a text"):
        validate.run(strict, dataset, tmp_path / "out2")


def test_nichetune_validate_lists_every_check_and_its_error_names_the_failed_ones(tmp_path, monkeypatch, capsys):
    """Real complaints, 6 of each of four issues against a floor of 8: four checks of twelve fail."""
    from tasks.config import IngestParams
    from tasks.ingest import ingest_batch
    from tests.conftest import cfpb_sample, make_project, nichetune, project_params

    params = project_params("minilm", validate={"labels": [], "min_examples_per_class": 8})
    root = make_project(tmp_path / "project", cfpb_sample(per_class=6), params)
    ingest_batch(IngestParams(**params["ingest"]), [], root, root / "data" / "labeled.csv", announce=False)
    code, out, err = nichetune(root, monkeypatch, capsys, "validate")
    assert code == 2 and "ok   text is present" in out.splitlines(), err
    lines = err.splitlines()
    assert lines[0].startswith("error: data/raw/complaints: validation FAILED: ")
    failed = [line for line in lines if line.startswith("FAIL at least 8 examples of ")]
    assert len(failed) == 4 and not [line for line in lines if line.startswith("ok ")], err
    assert lines[-2] == "8 other checks: `nichetune validate` lists every one"
    assert lines[-1].startswith("fix the data or the validate section of params.yaml (set "
                                "validate.severity.class_count to warn to train anyway); details: ")
