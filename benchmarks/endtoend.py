"""Benchmark: time to a registered candidate, end to end as a user runs it, on banking77 with 8 labeled texts
per intent.

    nichetune bench endtoend [--strategies full auto] [--repeats 3] [--data DIR]

For each strategy, a fresh clone of this project gets banking77's training split sampled to 8 rows per intent
(seed 0, the quality table's banking77_k8 rows) as data/banking77.csv, and params.yaml pointed at it (dataset,
path, text and label columns; no timestamp, id, segments or time windows, which banking77 does not have; any label
accepted; register.approval auto so that no reviewer waits). `nichetune run --set finetune.strategy=S` then runs
in a new process with a new Prefect home, and the figure is its wall time from start to exit: Prefect's temporary
server and its first database, ingest (DVC), validation, split, training, evaluation with its reports,
registration and the gate. Each strategy runs `--repeats` times, the strategies in turn, and the goal line
reads each strategy's median: the same run varies by 10-20% on a shared machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
GOAL_S = 180  # issue 52: a registered candidate for banking77 with 8 per intent in under 3 minutes on 2 cores


def project(folder: Path, banking77: Path) -> Path:
    """A clone of this project whose params.yaml ingests 8 banking77 training rows per intent."""
    from benchmarks import quality

    root = folder / "project"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    rows = quality.DATASETS["banking77_k8"].split(banking77, 0).train[["text", "label"]]
    rows.to_csv(root / "data" / "banking77.csv", index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"].update(dataset="banking77", path="data/banking77.csv", text_column="text", label_column="label",
                            timestamp_column=None, id_column=None, metadata_columns=[])
    params["validate"]["labels"] = []
    params["evaluate"].update(segment_column=None, window=None)  # banking77 has no channel and no dates
    params["register"].update(approval="auto", model_name="banking77")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


FINISHED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO\s+\| Task run '([a-z_]+)-\w+' - Finished", re.M)


def stage_seconds(log: str, started_at: float) -> dict[str, float]:
    """Each stage's seconds from the flow's log: from the previous stage's end (the run's start for the first) to
    its own, as Prefect printed them (clock times of this machine)."""
    ends = sorted((int(h) * 3600 + int(m) * 60 + float(sec), stage) for h, m, sec, stage in FINISHED.findall(log))
    seconds, previous = {}, started_at
    for at, stage in ends:
        seconds[stage] = round((at - previous) % 86400, 1)
        previous = at
    return seconds


def timed_run(root: Path, strategy: str) -> tuple[float, str, dict]:
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect-home")}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    started, clock = time.perf_counter(), time.localtime()
    started_at = clock.tm_hour * 3600 + clock.tm_min * 60 + clock.tm_sec
    done = subprocess.run([str(Path(sys.executable).parent / "nichetune"), "--quiet", "run", "--set",
                           f"finetune.strategy={strategy}"], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: nichetune run ({strategy}) failed: {done.stderr.strip().splitlines()[-1:]}")
    holdout = re.search(r"holdout macro-F1 [^\n]*", done.stdout)
    return seconds, holdout.group(0) if holdout else "", stage_seconds(done.stdout + done.stderr, started_at)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["full", "auto"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each strategy, taken in turn (default 3)")
    add_data_option(parser)
    args = parser.parse_args(argv)
    banking77 = dataset_dir(args.data, "banking77")
    runs = []
    for repeat in range(args.repeats):
        for strategy in args.strategies:
            with tempfile.TemporaryDirectory() as folder:
                seconds, holdout, stages = timed_run(project(Path(folder), banking77), strategy)
            runs.append({"strategy": strategy, "repeat": repeat, "seconds": round(seconds, 1), "holdout": holdout,
                         "stages_s": stages})
            print(runs[-1], flush=True)
    summary = {"command": f"nichetune bench endtoend --strategies {' '.join(args.strategies)} "
                          f"--repeats {args.repeats}",
               "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "endtoend.json").write_text(json.dumps(summary, indent=2) + "\n")


def by_strategy(results: dict) -> dict[str, list[float]]:
    """Each strategy's run times, in the order they ran."""
    seconds = {}
    for run in results["runs"]:
        seconds.setdefault(run["strategy"], []).append(run["seconds"])
    return seconds


def goal_lines(results: dict | None) -> list[str]:
    """One line per strategy, on the median of its runs (this shared machine varies by 10-20% run to run)."""
    if not results:
        return []
    lines = []
    for strategy, seconds in by_strategy(results).items():
        median = statistics.median(seconds)
        spread = f"median of {len(seconds)} runs, {min(seconds):.0f}-{max(seconds):.0f} s" if len(seconds) > 1 else \
            "one run"
        lines.append(f"- A registered candidate for banking77 with 8 per intent, `nichetune run` end to end with "
                     f"strategy `{strategy}`: {median:.0f} s ({spread}), goal under {GOAL_S}: "
                     f"{'holds' if median < GOAL_S else '**does not hold**'}")
    return lines


def section(results: dict | None) -> list[str]:
    if not results:
        return []
    lines = ["## Time to a registered candidate (endtoend)", "",
             f"`{results['command']}` ({results['date']}, {results['machine']}); `benchmarks/results/endtoend.json`; "
             "protocol in `benchmarks/endtoend.py`: banking77, 8 labeled texts per intent, `nichetune run` in a "
             "fresh project, from start to exit; each stage from the end of the one before (Prefect's log).", "",
             "| strategy | run | seconds | stages | what the run printed |", "|---|---|---|---|---|"]
    for run in results["runs"]:
        stages = ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in run.get("stages_s", {}).items())
        lines.append(f"| {run['strategy']} | {run.get('repeat', 0) + 1} | {run['seconds']:.0f} | {stages} | "
                     f"{run['holdout']} |")
    lines += ["", "Median per strategy: " + ", ".join(f"`{strategy}` {statistics.median(seconds):.0f} s"
                                                     for strategy, seconds in by_strategy(results).items()) + "."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
