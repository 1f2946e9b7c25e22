"""Monitor: the window split on real complaint dates (gaps, months, no timestamps), and per-window quality and
Evidently drift with a tiny random BERT, graded by thresholds."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.config import DriftThresholds, EvaluateParams, FinetuneParams, parse_params
from tasks.errors import ParamsError
from tasks.monitor import SIGNALS, grade, run, signal_status, split_windows, worst
from tests.conftest import cfpb_sample

TRAINING_ENDS = pd.Timestamp("2023-02-15", tz="UTC")
ZERO = DriftThresholds(**dict.fromkeys(SIGNALS, 0.0))
NEVER = DriftThresholds()


@pytest.fixture(scope="module")
def complaints() -> pd.DataFrame:
    """100 real complaints from 2023-01-01 to 2023-05-24: text, label, timestamp (UTC)."""
    sample = cfpb_sample(per_class=25, classes=4)
    return pd.DataFrame({"text": sample["text"], "label": sample["issue"],
                         "timestamp": pd.to_datetime(sample["date_received"], utc=True)})


def check_consecutive(windows, rows: pd.DataFrame) -> None:
    """Windows follow each other without overlap, and every row lies in exactly the window that holds it."""
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    for window in windows:
        assert window.rows["timestamp"].between(window.start, window.end, inclusive="left").all()
    assert sum(len(window.rows) for window in windows) == len(rows)


def test_weekly_windows_keep_a_gap_as_empty_windows(complaints):
    later = complaints[complaints["timestamp"] >= TRAINING_ENDS]
    april = later["timestamp"].dt.month == 4
    split = split_windows(later[~april], "1W", after=None)
    check_consecutive(split.windows, later[~april])
    assert split.windows[0].start == later["timestamp"].min().normalize()
    assert all((w.end - w.start) == pd.Timedelta(days=7) for w in split.windows)
    empty = [w for w in split.windows if w.empty]
    assert len(empty) >= 3 and all(w.start.month in (3, 4) and w.end.month in (4, 5) for w in empty)
    assert not split.windows[0].empty and not split.windows[-1].empty and split.reason is None


def test_monthly_windows_are_calendar_months(complaints):
    later = complaints[complaints["timestamp"] > TRAINING_ENDS]
    split = split_windows(later, "1M", after=TRAINING_ENDS)
    assert [w.name for w in split.windows] == ["2023-02-01", "2023-03-01", "2023-04-01", "2023-05-01"]
    assert split.windows[-1].end == pd.Timestamp("2023-06-01", tz="UTC")
    months = later["timestamp"].dt.month.value_counts().sort_index().tolist()
    assert [len(w.rows) for w in split.windows] == months
    check_consecutive(split.windows, later)


def test_rows_not_after_training_or_undated_are_counted_not_dropped(complaints):
    rows = complaints.copy()
    rows.loc[rows.index[-3:], "timestamp"] = pd.NaT
    split = split_windows(rows, "2W", after=TRAINING_ENDS)
    inside = sum(len(w.rows) for w in split.windows)
    assert split.left_out["no timestamp"] == 3
    assert split.left_out["not after the training period"] == (complaints["timestamp"] <= TRAINING_ENDS).sum()
    assert inside + sum(split.left_out.values()) == len(rows)


@pytest.mark.parametrize("case", ["no column", "all NaT", "window null"])
def test_no_windows_without_timestamps_or_window_and_a_reason(complaints, case):
    rows, window = complaints.copy(), "1W"
    if case == "no column":
        rows = rows.drop(columns="timestamp")
    elif case == "all NaT":
        rows["timestamp"] = pd.NaT
    else:
        window = None
    split = split_windows(rows, window, after=None)
    assert split.windows == [] and split.reason and "\n" not in split.reason
    assert ("evaluate.window" if case == "window null" else "timestamp") in split.reason


@pytest.mark.parametrize("bad", ["fortnight", "0W", "1X", "W", "1.5W", "1m"])
def test_a_bad_window_fails_at_load_time_naming_the_key_value_and_examples(bad):
    with pytest.raises(ParamsError) as caught:
        parse_params({"evaluate": {"window": bad}})
    message = str(caught.value)
    assert "evaluate.window" in message and repr(bad) in message and "1W" in message and "1M" in message
    assert "\n" not in message


def test_good_windows_and_null_load():
    for good in ("1D", "7D", "1W", "2W", "1M", "3M", None):
        assert parse_params({"evaluate": {"window": good}}).evaluate.window == good


@pytest.fixture(scope="module")
def predicted(complaints, tiny_backbone, tmp_path_factory):
    """A classifier fine-tuned (head only, one epoch) on the rows before TRAINING_ENDS; both sides predicted.
    April is dropped from the later rows: a gap."""
    from tasks.finetune import finetune
    from tasks.model import Classifier

    train = complaints[complaints["timestamp"] < TRAINING_ENDS].reset_index(drop=True)
    later = complaints[(complaints["timestamp"] >= TRAINING_ENDS) & (complaints["timestamp"].dt.month != 4)].copy()
    cfg = FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=1, batch_size=16, max_length=64)
    result = finetune(train, cfg, seed=7, out_dir=tmp_path_factory.mktemp("model"))
    classifier = Classifier(result.model_dir)
    for frame in (train, later):
        frame["prediction"] = classifier.predict(frame["text"].tolist())
    return classifier, train, later.reset_index(drop=True)


@pytest.fixture(scope="module")
def monitored(predicted, tmp_path_factory):
    classifier, train, later = predicted
    out = tmp_path_factory.mktemp("monitor")
    return run(EvaluateParams(window="1M", min_window_rows=10), classifier, train, later, out), out


def test_each_window_gets_quality_drift_or_a_reason(monitored):
    summary, _ = monitored
    by_name = {record["window"]: record for record in summary["windows"]}
    assert list(by_name) == ["2023-02-01", "2023-03-01", "2023-04-01", "2023-05-01"]
    assert by_name["2023-04-01"]["status"] == "empty" and by_name["2023-04-01"]["quality"] is None
    may = by_name["2023-05-01"]
    assert may["status"] == "skipped" and "min_window_rows = 10" in may["reason"] and may["rows"] < 10
    assert 0 <= may["quality"]["accuracy"] <= 1 and may["scores"] is None
    for name in ("2023-02-01", "2023-03-01"):
        record = by_name[name]
        assert record["status"] in ("ok", "warn", "block") and record["rows"] >= 10
        assert set(record["scores"]) == set(SIGNALS) and set(record["signals"]) == set(SIGNALS)
        assert 0 <= record["scores"]["text"] <= 1 and 0 <= record["scores"]["embeddings"] <= 1
        assert record["scores"]["descriptors"] == max(record["descriptors"].values())
        assert 0 <= record["quality"]["macro_f1"] <= 1
    assert summary["status"] == worst(record["status"] for record in summary["windows"])


def test_each_window_is_said_when_it_is_done(predicted, tmp_path, capsys):
    """A drift report takes seconds to minutes: the log says which window is done, of how many (not empty ones)."""
    classifier, train, later = predicted
    run(EvaluateParams(window="1M", min_window_rows=10), classifier, train, later, tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: drift window")]
    assert [line.split(": ")[1] for line in lines] == [
        "drift window 2023-02-01 (1 of 4)", "drift window 2023-03-01 (2 of 4)", "drift window 2023-05-01 (4 of 4)"]
    assert lines[2].split(", ")[1] == "skipped" and lines[2].endswith(" s")


def test_html_per_window_plot_and_json_are_written(monitored):
    summary, out = monitored
    reports = sorted((out / "windows").glob("*.html"))
    assert [path.name for path in reports] == ["2023-02-01.html", "2023-03-01.html"]
    for path in reports:
        assert path.read_text().lstrip().startswith("<!DOCTYPE html>") and path.stat().st_size > 100_000
    plot = out / "windows.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    assert json.loads((out / "windows.json").read_text()) == json.loads(json.dumps(summary, default=str))


def test_zero_thresholds_block_every_signal(predicted, tmp_path):
    classifier, train, later = predicted
    cfg = EvaluateParams(window="1M", min_window_rows=10, drift_warn=ZERO, drift_block=ZERO)
    summary = run(cfg, classifier, train, later, tmp_path)
    graded = [record for record in summary["windows"] if record["scores"] is not None]
    assert len(graded) == 2 and summary["status"] == "block"
    assert all(set(record["signals"].values()) == {"block"} for record in graded)


def test_null_thresholds_never_fire(monitored):
    summary, _ = monitored
    for record in summary["windows"]:
        regraded = grade(record, NEVER, NEVER)
        assert regraded["status"] == (record["status"] if record["scores"] is None else "ok")


def test_block_outranks_warn_and_each_fires_at_its_threshold(monitored):
    summary, _ = monitored
    scores = [score for record in summary["windows"] if record["scores"] for score in record["scores"].values()]
    for score in scores:
        assert signal_status(score, warn=score, block=None) == "warn"
        assert signal_status(score, warn=score, block=score + 0.01) == "warn"
        assert signal_status(score, warn=score, block=score) == "block"
        assert signal_status(score, warn=score + 1, block=score) == "block"
        assert signal_status(score, warn=score + 0.01, block=score + 0.02) == "ok"


def test_a_failing_drift_computation_is_recorded_and_reported_as_not_measured(predicted, tmp_path):
    classifier, train, later = predicted
    tiny_reference = train.head(6)  # too few training rows for the embedding map Evidently draws
    summary = run(EvaluateParams(window="1M", min_window_rows=10), classifier, tiny_reference, later, tmp_path)
    failed = [record for record in summary["windows"] if record["status"] == "error"]
    assert failed and all(record["reason"].startswith("drift failed: ") for record in failed)
    assert summary["status"] == "not measured" and "skipped or its drift test failed" in summary["reason"]
    assert (tmp_path / "windows.json").is_file()


def test_no_windows_still_writes_a_summary_with_the_reason(predicted, tmp_path):
    classifier, train, later = predicted
    summary = run(EvaluateParams(window=None), classifier, train, later, tmp_path)
    assert summary["status"] == "none" and "evaluate.window" in summary["reason"] and summary["windows"] == []
    assert json.loads((tmp_path / "windows.json").read_text())["status"] == "none"
