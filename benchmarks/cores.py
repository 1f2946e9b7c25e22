"""Benchmark: two trainings on one machine, each taking every core against sharing them (tasks.cores).

    nichetune bench cores [--repeats 2] [--data DIR]

The job: the default's fine-tuning (`full`, auto's fine-tuned candidate) for 2 epochs on 16 banking77 training rows
of each of 20 intents, in a new process. Each repeat runs, in turn: the job alone; two jobs started together, each
told to take every core (NICHETUNE_THREADS set to the machine's cores, how nichetune ran before tasks.cores); and
two jobs started together with the shared count (the default). Each figure is the wall time until both jobs ended,
as a ratio to the job alone in the same repeat (2.0: no worse than running them one after the other); medians over
repeats."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
INTENTS, ROWS, EPOCHS = 20, 16, 2


def job(banking77: Path, out: Path) -> None:
    """One training (the process a benchmark run starts)."""
    import pandas as pd

    from benchmarks import quality
    from tasks.config import FinetuneParams
    from tasks.finetune import finetune
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    train = pd.read_csv(banking77 / "train.csv").rename(columns={"category": "label"})
    intents = sorted(train["label"].unique())[:INTENTS]
    rows = train[train["label"].isin(intents)].groupby("label", group_keys=False).sample(ROWS, random_state=0)
    cfg = FinetuneParams(strategy=quality.tuned_strategy(), epochs=EPOCHS)
    finetune(rows[["text", "label"]], cfg, seed=0, out_dir=out)


def together(count: int, banking77: Path, folder: Path, env: dict) -> float:
    """Seconds until `count` jobs started at once have all ended."""
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-m", "benchmarks.cores", "--job", str(folder / f"job{i}"),
                                  "--data", str(banking77.parent)], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for i in range(count)]
    for child in children:
        _, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"a training job failed: {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # internal: one training into this folder
    add_data_option(parser)
    args = parser.parse_args(argv)
    banking77 = dataset_dir(args.data, "banking77")
    if args.job:
        job(banking77, args.job)
        return
    from tasks import cores

    shared = {k: v for k, v in os.environ.items() if k != cores.THREADS_ENV}
    every_core = {**shared, cores.THREADS_ENV: str(cores.given())}
    repeats = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            alone = together(1, banking77, Path(folder) / "alone", shared)
            old = together(2, banking77, Path(folder) / "old", every_core)
            new = together(2, banking77, Path(folder) / "new", shared)
        repeats.append({"alone_s": round(alone, 1), "two_every_core_s": round(old, 1), "two_shared_s": round(new, 1),
                        "every_core_ratio": round(old / alone, 2), "shared_ratio": round(new / alone, 2)})
    summary = {"command": f"nichetune bench cores --repeats {args.repeats}", "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {cores.given()} cores",
               "median_alone_s": statistics.median(r["alone_s"] for r in repeats),
               "median_every_core_ratio": statistics.median(r["every_core_ratio"] for r in repeats),
               "median_shared_ratio": statistics.median(r["shared_ratio"] for r in repeats), "repeats": repeats}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cores.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section."""
    if not results:
        return []
    runs = "; ".join(f"alone {r['alone_s']:.0f} s, every core {r['two_every_core_s']:.0f} s, shared "
                     f"{r['two_shared_s']:.0f} s" for r in results["repeats"])
    return ["## Two trainings on one machine (cores)", "",
            f"`{results['command']}` ({results['date']}, {results['machine']}); `benchmarks/results/cores.json`; "
            "protocol in `benchmarks/cores.py`. Wall time until both of two trainings started together ended, as a "
            "ratio to one training alone (2.0: as fast as one after the other).", "",
            "| two trainings | × one alone (median) |", "|---|---|",
            f"| each takes every core (before) | {results['median_every_core_ratio']:.2f} |",
            f"| cores shared (tasks.cores, the default) | **{results['median_shared_ratio']:.2f}** |", "",
            f"One training alone: {results['median_alone_s']:.0f} s (median). Runs: {runs}.", ""] + [
            line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
