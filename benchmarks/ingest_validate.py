"""Benchmark: ingest plus validation of N rows on this machine (wall time per step, peak memory).

    python -m benchmarks.ingest_validate --rows 100000 --repeats 3

The rows are real texts (banking77 train and test from ../shared/data), repeated with a row number appended
until there are N, so that no two rows are duplicates; labels are the 77 intents; timestamps span a year.
Each repeat runs in a fresh temporary git + DVC project with a local directory remote, so DVC add and push
are included, as in `nichetune ingest`. Peak memory is the process's maximum resident set size."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


def make_rows(n: int) -> pd.DataFrame:
    base = pd.concat([pd.read_csv(SHARED / "train.csv"), pd.read_csv(SHARED / "test.csv")], ignore_index=True)
    rows = base.iloc[[i % len(base) for i in range(n)]].reset_index(drop=True)
    rows["text"] = rows["text"] + " #" + pd.Series(range(n)).astype(str)
    rows["created_at"] = pd.date_range("2025-01-01", "2025-12-31", periods=n).strftime("%Y-%m-%dT%H:%M:%SZ")
    return rows.rename(columns={"category": "label"})


def one_run(csv_path: Path) -> dict:
    from tasks import ingest, validate
    from tasks.config import IngestParams, ValidateParams

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "project"
        root.mkdir()
        for command in (["git", "init", "-q"], ["dvc", "init", "-q"],
                        ["dvc", "remote", "add", "-d", "local", str(Path(folder) / "remote")]):
            subprocess.run(command, cwd=root, check=True, capture_output=True)
        cfg = IngestParams(dataset="bench", path=None, timestamp_column="created_at")
        started = time.perf_counter()
        report = ingest.ingest_batch(cfg, [], root, csv_path)
        ingested = time.perf_counter()
        dataset = ingest.assemble(cfg, root, root / "outputs" / "ingest")
        validate.run(ValidateParams(), dataset.dataset, root / "outputs" / "validate")
        done = time.perf_counter()
    return {"ingest_s": ingested - started, "validate_s": done - ingested, "total_s": done - started,
            "accepted": report.accepted, "quarantined": report.quarantined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / f"labeled_{args.rows}.csv"
        make_rows(args.rows).to_csv(csv_path, index=False)
        runs = [one_run(csv_path) for _ in range(args.repeats)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "command": f"python -m benchmarks.ingest_validate --rows {args.rows} --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%d"), "rows": args.rows, "repeats": args.repeats, "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "median": {key: round(statistics.median(run[key] for run in runs), 2) for key in ("ingest_s", "validate_s", "total_s")},
        "peak_rss_mb": round(peak_mb), "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ingest_validate_{args.rows}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
