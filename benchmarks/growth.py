"""Benchmark: how ingest, validation and training grow with the data (wall time and peak memory per step).

    nichetune bench growth [--rows 1000 10000 100000] [--repeats 3] [--data DIR]

The rows are real texts (banking77 train and test: banking77/ under --data, default ../shared/data), repeated with a
row number appended until there are N, so that no two rows are duplicates; labels are the 77 intents; timestamps
span a year. Each repeat uses a fresh temporary git + DVC project with a local directory remote. Each step runs in
its own new process, so that its peak resident memory is its own: ingest (`ingest_batch`: read, checks, PII masking,
store, DVC add + push), validate (`assemble` + the Great Expectations suite and Data Docs), train (split + fine-tune
with the params.yaml defaults, the default's fine-tuned network (`full`, auto's fine-tuned candidate), but
`--train-epochs` epochs (default 1: its 8 epochs at 100k rows would take hours on 2 cores, and time grows linearly
with epochs), the feature cache empty: the first training on a new dataset version). Figures are medians over the
repeats."""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
STEPS = ("ingest", "validate", "train")


def make_rows(n: int, folder: Path) -> pd.DataFrame:
    """`n` distinct labeled rows with timestamps, from banking77's train.csv and test.csv in `folder`."""
    base = pd.concat([pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")], ignore_index=True)
    rows = base.iloc[[i % len(base) for i in range(n)]].reset_index(drop=True)
    rows["text"] = rows["text"] + " #" + pd.Series(range(n)).astype(str)
    rows["created_at"] = pd.date_range("2025-01-01", "2025-12-31", periods=n).strftime("%Y-%m-%dT%H:%M:%SZ")
    return rows.rename(columns={"category": "label"})


def step(name: str, root: Path, csv_path: Path, train_epochs: int = 1) -> dict:
    """One step in this (new) process; its wall time and this process's peak resident memory. Validate and train
    run the pipeline's stage functions from the stage table, as `dvc repro` does."""
    from benchmarks.quality import tuned_strategy
    from tasks.config import Params, Paths, load_params
    from tasks.ingest import ingest_batch
    from tasks.layout import SUMMARY_FILE, stage

    finetune = load_params(REPO / "params.yaml", [f"finetune.epochs={train_epochs}",
                                                  f"finetune.strategy={tuned_strategy()}"]).finetune
    params = Params.model_validate({"ingest": {"dataset": "bench", "path": None, "timestamp_column": "created_at"},
                                    "finetune": finetune})
    paths = Paths.of(root, params)
    run = {key: functools.partial(stage(key).function(), params, paths)  # imported before the clock starts
           for key in ("ingest", "validate", "split", "finetune")}
    started = time.perf_counter()
    if name == "ingest":
        report = ingest_batch(params.ingest, [], root, csv_path)
        extra = {"accepted": report.accepted, "quarantined": report.quarantined}
    elif name == "validate":  # the stored batches assembled, then the suite (which raises on a failed check)
        run["ingest"]()
        run["validate"]()
        extra = {"passed": json.loads((paths.stage("validate") / SUMMARY_FILE).read_text())["success"]}
    else:
        parts, tuned = run["split"](), run["finetune"]()
        extra = {"strategy": tuned.strategy, "train_rows": parts.train_rows}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def one_repeat(rows: int, folder: Path, train_epochs: int, steps: list[str], banking77: Path) -> dict:
    """A fresh project, then each step in a child process."""
    root = folder / "project"
    root.mkdir(parents=True)
    dvc = str(Path(sys.executable).with_name("dvc"))  # the venv's, without needing it on PATH
    for command in (["git", "init", "-q"], [dvc, "init", "-q"],
                    [dvc, "remote", "add", "-d", "local", str(folder / "remote")]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    csv_path = folder / f"labeled_{rows}.csv"
    make_rows(rows, banking77).to_csv(csv_path, index=False)
    measured = {}
    for name in steps:
        child = subprocess.run([sys.executable, "-m", "benchmarks.growth", "--step", name, str(root), str(csv_path),
                                "--train-epochs", str(train_epochs)],
                               cwd=REPO, check=True, capture_output=True, text=True)
        measured[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{rows} rows, {name}: {measured[name]['seconds']:.1f} s, {measured[name]['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    return measured


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to measure")
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs of the training step (default 1)")
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)  # internal: NAME ROOT CSV, JSON out
    add_data_option(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    if args.step:
        name, root, csv_path = args.step
        print(json.dumps(step(name, Path(root), Path(csv_path), args.train_epochs)))
        return None
    banking77 = dataset_dir(args.data, "banking77")
    out = RESULTS / "growth.json"
    results = json.loads(out.read_text()) if out.is_file() else {"sizes": {}}
    for rows in args.rows:
        repeats = []
        for index in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="growth-") as folder:
                repeats.append(one_repeat(rows, Path(folder), args.train_epochs, args.steps, banking77))
        results["sizes"][str(rows)] = {
            "command": " ".join(["nichetune bench growth", "--rows", str(rows), "--repeats", str(args.repeats),
                                 "--train-epochs", str(args.train_epochs), "--steps", *args.steps]),
            "train_epochs": args.train_epochs,
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
            "load_average_1min": os.getloadavg()[0], "repeats": repeats,
            "median": {name: {key: round(statistics.median(r[name][key] for r in repeats), 2)
                              for key in ("seconds", "peak_rss_mb")} for name in args.steps},
        }
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
