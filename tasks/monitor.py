"""Monitor: rolling windows after the training period, each with model quality and Evidently drift against the
training rows (text, text descriptors, backbone embeddings, label and prediction mix), graded by thresholds."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tasks.config import DriftThresholds, EvaluateParams, parse_window
from tasks.metrics import drift_by_column, evidently_report, safe_report, score
from tasks.progress import say

if TYPE_CHECKING:
    from tasks.model import Classifier

WINDOWS_DIR = "windows"  # one Evidently HTML per window, named by its first day
SUMMARY_FILE = "windows.json"
PLOT_FILE = "windows.png"
SIGNALS = ("text", "descriptors", "embeddings", "label", "prediction")
# numeric text descriptors that need no download (Sentiment and OOVWordsPercentage fetch NLTK data)
DESCRIPTORS = {"text_length": "TextLength", "word_count": "WordCount", "sentence_count": "SentenceCount",
               "non_letter_share": "NonLetterCharacterPercentage"}
METHODS = {"text": "abs_text_content_drift", **dict.fromkeys(DESCRIPTORS, "wasserstein"),
           "label": "jensenshannon", "prediction": "jensenshannon"}
LEVELS = ("ok", "warn", "block")
# Windows with rows exist, but none got a drift result: unknown drift, which register.unmeasured_drift may block.
# "none" stays for data that has no windows at all (no timestamps, no rows after training, evaluate.window null).
UNMEASURED = "not measured"


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive
    rows: pd.DataFrame

    @property
    def name(self) -> str:
        return self.start.strftime("%Y-%m-%d")

    @property
    def empty(self) -> bool:
        return self.rows.empty


@dataclass(frozen=True)
class WindowSplit:
    windows: list[Window]  # consecutive, empty ones (gaps) included
    reason: str | None = None  # why there are no windows
    left_out: dict[str, int] = field(default_factory=dict)  # rows in no window, by why


def split_windows(rows: pd.DataFrame, window: str | None, after: pd.Timestamp | None) -> WindowSplit:
    """Consecutive windows of length `window` over the rows later than `after` (the last training timestamp),
    from the first such row's day (its month's first day for M) to the last row; gaps stay as empty windows."""
    if window is None:
        return WindowSplit([], "evaluate.window is null: no rolling windows")
    if "timestamp" not in rows or rows["timestamp"].isna().all():
        return WindowSplit([], "the rows have no timestamps (ingest.timestamp_column): no rolling windows")
    stamps = rows["timestamp"]
    dated = stamps.notna()
    later = dated & (stamps > after) if after is not None else dated
    left_out = {"no timestamp": int((~dated).sum()), "not after the training period": int((dated & ~later).sum())}
    left_out = {why: count for why, count in left_out.items() if count}  # reported, never silently dropped
    if not later.any():
        return WindowSplit([], f"no rows later than the training period (which ends {after})", left_out)
    edges = window_edges(stamps[later].min(), stamps[later].max(), *parse_window(window))
    windows = [Window(start, end, rows[later & (stamps >= start) & (stamps < end)])
               for start, end in zip(edges[:-1], edges[1:])]
    return WindowSplit(windows, None, left_out)


def window_edges(first: pd.Timestamp, last: pd.Timestamp, count: int, unit: str) -> list[pd.Timestamp]:
    """Window boundaries from midnight of `first` (the first of its month for M) until past `last`."""
    start = first.normalize()
    if unit == "M":  # calendar months: pandas spells them ME or MS, users write M
        start, step = start.replace(day=1), (lambda k: pd.DateOffset(months=count * k))
    else:
        step = lambda k: pd.Timedelta(days=count * k * (7 if unit == "W" else 1))  # noqa: E731
    edges = [start]
    while edges[-1] <= last:
        edges.append(start + step(len(edges)))
    return edges


def last_timestamp(frame: pd.DataFrame) -> pd.Timestamp | None:
    """The latest timestamp of the training rows, None when they have none."""
    if "timestamp" not in frame or frame["timestamp"].isna().all():
        return None
    return frame["timestamp"].max()


def signal_status(score: float | None, warn: float | None, block: float | None) -> str:
    """block at or above `block`, else warn at or above `warn`, else ok; a None threshold never fires, and a
    score Evidently could not compute (None) is unknown, which counts as no finding."""
    if score is None:
        return "unknown"
    if block is not None and score >= block:
        return "block"
    return "warn" if warn is not None and score >= warn else "ok"


def grade(record: dict, warn: DriftThresholds, block: DriftThresholds) -> dict:
    """The record with a status per drift signal and for the window (the worst signal)."""
    if record["scores"] is None:
        return record
    signals = {name: signal_status(score, getattr(warn, name), getattr(block, name))
               for name, score in record["scores"].items()}
    return {**record, "signals": signals, "status": worst(signals.values())}


def worst(statuses) -> str:
    """The most severe of ok, warn and block (other statuses do not count); ok when there is none."""
    return max((s for s in statuses if s in LEVELS), key=LEVELS.index, default="ok")


def run(cfg: EvaluateParams, classifier: Classifier, train: pd.DataFrame, later: pd.DataFrame,
        out_dir: Path) -> dict:
    """Quality and drift per window of `later` (rows after training; both frames carry `prediction`); writes
    one Evidently HTML per window, windows.json and windows.png to `out_dir` and returns the summary."""
    split = split_windows(later, cfg.window, last_timestamp(train))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"status": "none", "reason": split.reason, "window": cfg.window, "left_out": split.left_out,
               "thresholds": {"warn": cfg.drift_warn.model_dump(), "block": cfg.drift_block.model_dump()},
               "windows": [], "files": {"summary": str(out_dir / SUMMARY_FILE)}}
    if split.windows:
        reference = _with_vectors(train, classifier)
        majority = train["label"].value_counts().idxmax()
        records = []
        for number, window in enumerate(split.windows, start=1):  # a drift report takes seconds: say each one
            started = time.perf_counter()
            records.append(_window_record(cfg, classifier, reference, window, majority, out_dir))
            if records[-1]["status"] != "empty":
                say(f"evaluate: drift window {window.name} ({number} of {len(split.windows)}): {len(window.rows)} "
                    f"rows, {records[-1]['status']}, {time.perf_counter() - started:.0f} s")
        graded = [r["status"] for r in records if r["status"] in LEVELS]
        summary.update(status=worst(graded) if graded else UNMEASURED, windows=records,
                       reason=None if graded else "every window with rows was skipped or its drift test failed "
                                                  "(see each window's reason)")
        plot_windows(records, cfg, out_dir / PLOT_FILE)
        summary["files"].update(plot=str(out_dir / PLOT_FILE),
                                reports=[str(out_dir / r["report"]) for r in records if r["report"]])
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _window_record(cfg: EvaluateParams, classifier: Classifier, reference: pd.DataFrame, window: Window,
                   majority: str, out_dir: Path) -> dict:
    """One window: its rows, quality, and drift scores (or why there are none)."""
    record = {"window": window.name, "start": window.start.isoformat(), "end": window.end.isoformat(),
              "rows": len(window.rows), "quality": None, "scores": None, "signals": None, "descriptors": None,
              "status": "empty", "reason": "no rows in this window", "report": None}
    if window.empty:
        return record
    metrics, _ = score(window.rows["label"].tolist(), window.rows["prediction"].tolist(), majority)
    record["quality"] = {key: metrics[key] for key in ("accuracy", "macro_f1")}
    if len(window.rows) < cfg.min_window_rows:
        reason = f"{len(window.rows)} rows, fewer than evaluate.min_window_rows = {cfg.min_window_rows}"
        return {**record, "status": "skipped", "reason": f"drift not tested: {reason}"}
    html = out_dir / WINDOWS_DIR / f"{window.name}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    current = _with_vectors(window.rows, classifier)
    drift = safe_report(window_drift, reference, current, html, what=f"drift of window {window.name}")
    if "error" in drift:
        return {**record, "status": "error", "reason": f"drift failed: {drift['error']}"}
    record.update(drift, reason=None, report=str(html.relative_to(out_dir)))
    return grade(record, cfg.drift_warn, cfg.drift_block)


def _with_vectors(rows: pd.DataFrame, classifier: Classifier) -> pd.DataFrame:
    """text, label, prediction and the base backbone's sentence vector as columns emb_0, emb_1, ..."""
    vectors = classifier.embed(rows["text"].astype(str).tolist())
    columns = [f"emb_{i}" for i in range(vectors.shape[1])]
    base = rows[["text", "label", "prediction"]].reset_index(drop=True)
    return pd.concat([base, pd.DataFrame(vectors, columns=columns)], axis=1)


def window_drift(reference: pd.DataFrame, current: pd.DataFrame, html: Path) -> dict:
    """Evidently report of one window against the training rows (both from `_with_vectors`), with quality when
    the class sets allow; writes `html` and returns the five drift scores and each descriptor's score."""
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset

    vectors = [column for column in reference if column.startswith("emb_")]
    metrics = [DataDriftPreset(columns=list(METHODS), per_column_method=METHODS),
               # a domain classifier's ROC AUC; the bootstrap only sets Evidently's own verdict, not the score
               EmbeddingsDrift(embeddings_name="backbone", drift_method=ModelDriftMethod(bootstrap=False))]
    found, _ = evidently_report(reference, current, metrics, html, _descriptors(), {"backbone": vectors})
    columns = {name: _finite(column["score"]) for name, column in drift_by_column(found).items()}
    embeddings = [m["value"] for m in found["metrics"] if m["config"]["type"].endswith(":EmbeddingsDrift")]
    descriptors = {name: columns[name] for name in DESCRIPTORS}
    known = [value for value in descriptors.values() if value is not None]
    scores = {"text": columns["text"], "descriptors": max(known) if known else None,
              "embeddings": _finite(embeddings[0]), "label": columns["label"], "prediction": columns["prediction"]}
    return {"scores": scores, "descriptors": descriptors}


def _descriptors() -> list:
    import evidently.descriptors as known

    return [getattr(known, kind)("text", alias=alias) for alias, kind in DESCRIPTORS.items()]


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def plot_windows(records: list[dict], cfg: EvaluateParams, png: Path) -> None:
    """Quality and each drift score over the windows, warn and block thresholds drawn, empty windows shaded."""
    from matplotlib.figure import Figure  # the object API needs no pyplot and no global backend

    figure = Figure(figsize=(14, 7), layout="constrained")
    axes = figure.subplots(2, 3, sharex=True).ravel()
    value = lambda record, group, key: (record[group] or {}).get(key)  # noqa: E731
    _panel(axes[0], "quality", {key: [value(r, "quality", key) for r in records] for key in ("accuracy", "macro_f1")})
    axes[0].set_ylim(-0.05, 1.05)
    for ax, signal in zip(axes[1:], SIGNALS):
        for level, thresholds, color in (("warn", cfg.drift_warn, "orange"), ("block", cfg.drift_block, "red")):
            if getattr(thresholds, signal) is not None:
                ax.axhline(getattr(thresholds, signal), color=color, linestyle="--", label=level)
        _panel(ax, f"{signal} drift", {"score": [value(r, "scores", signal) for r in records]})
    for ax in axes:
        for i, record in enumerate(records):
            if record["status"] in ("empty", "skipped", "error"):  # gaps and windows without a drift result
                ax.axvspan(i - 0.5, i + 0.5, color="grey", alpha=0.25 if record["status"] == "empty" else 0.1)
        ax.set_xticks(range(len(records)), [f"{r['window']}\n{r['rows']} rows" for r in records], fontsize=7,
                      rotation=45, ha="right")
    figure.suptitle(f"Windows of {cfg.window} after the training period (grey: no rows; light grey: no drift result)")
    figure.savefig(png, dpi=90)


def _panel(ax, title: str, lines: dict[str, list]) -> None:
    for label, values in lines.items():
        ax.plot(range(len(values)), [math.nan if v is None else v for v in values], marker="o", label=label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
