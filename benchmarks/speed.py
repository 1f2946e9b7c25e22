"""Benchmark: time to a candidate model (the flow against its stage functions run directly) and prediction speed.

    nichetune bench speed [--repeats 3] [--data DIR]

Overhead: in fresh copies of this project (git + DVC, the demo data, params.yaml as committed), a script calls the
six stage functions one after another in a new process; then `nichetune run` runs the same work as a Prefect flow
in a new process, twice in the same copy: first with a new Prefect home (the first run on a machine: Prefect's
temporary server creates its database), then again with that home (every later run: the server only starts).
Both sides are timed from process start to exit, so both pay Python's start-up and the imports; the per-stage
figures are the stage calls alone. The script and the two flow runs alternate, `--repeats` times. Two overheads,
medians over the repeats: end to end, flow / script - 1 (noisy: training alone varies by several seconds between
processes); and within each run, the flow's time outside its stage task runs (as Prefect recorded them) less the
script's time outside its stage calls, over the flow's stage time plus the script's start-up. Prediction: the
demo model's batch throughput on banking77's 3,080 test texts (banking77/ under --data, default ../shared/data),
and single-text latency (median and 95th percentile of 200 calls) on the CPU."""

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

import pandas as pd

from benchmarks.sources import add_data_option, dataset_dir
from tasks.layout import STAGES

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def fresh_project(folder: Path) -> Path:
    """A clone of the committed project with its own empty outputs, DVC store and Prefect home."""
    root = folder / "project"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    return root


def direct_stages(root: Path) -> dict[str, float]:
    """Each stage function of the stage table called in order, as `dvc repro` or a notebook would, timed one by
    one. Ingest first stores `ingest.path` when it is new, as the flow's ingest task does."""
    from tasks import ingest
    from tasks.config import Paths, load_params

    params = load_params(root / "params.yaml")
    paths = Paths.of(root, params)
    functions = {name: entry.function() for name, entry in STAGES.items()}  # imported before any clock starts
    functions["ingest"] = lambda params, paths: ingest.run(params.ingest, params.validate.labels, paths.root,
                                                           paths.stage("ingest"))
    seconds: dict[str, float] = {}
    for name, function in functions.items():
        started = time.perf_counter()
        function(params, paths)
        seconds[name] = time.perf_counter() - started
    return seconds


def direct_in_new_process(root: Path) -> tuple[dict[str, float], float]:
    """`direct_stages` in a new process: the seconds of each stage call, and the process's wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--direct", str(root)], cwd=REPO,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def project_env(root: Path) -> dict[str, str]:
    """The environment of a user without servers: Prefect's home in the project, no API or tracking URL."""
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect-home")}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def flow_run(root: Path) -> float:
    """`nichetune run` end to end in a new process, as a user runs it."""
    env = project_env(root)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nichetune"), "run"], cwd=root, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def flow_stage_seconds(root: Path) -> dict[str, float]:
    """The latest flow run's stage task runs as Prefect recorded them (root/.prefect-home): seconds from each
    stage's start to its end, read in a new process through Prefect's client (a temporary server again)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--task-runs"], cwd=REPO, env=project_env(root),
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_task_runs() -> dict[str, float]:
    """`flow_stage_seconds` inside the new process."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        latest = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[latest.id])))
    seconds = {run.name.rsplit("-", 1)[0]: (run.end_time - run.start_time).total_seconds() for run in runs}
    return {stage: seconds[stage] for stage in STAGES}


def trained_model(root: Path) -> Path:
    """Where the finetune stage saved the model in the project at `root` (its params name the workdir)."""
    from tasks.config import Paths, load_params
    from tasks.layout import MODEL_DIR

    return Paths.of(root, load_params(root / "params.yaml")).stage("finetune") / MODEL_DIR


def prediction_speed(model_dir: Path, banking77: Path) -> dict:
    """Batch rows per second and single-text latency of a trained classifier on the CPU, on banking77's test
    texts (test.csv in `banking77`)."""
    from tasks.portfolio import load_classifier

    classifier = load_classifier(model_dir)
    texts = pd.read_csv(banking77 / "test.csv")["text"].tolist()
    classifier.predict_proba(texts[:64])  # warm-up
    started = time.perf_counter()
    classifier.predict_proba(texts)
    batch_rate = len(texts) / (time.perf_counter() - started)
    latencies = []
    for text in texts[:200]:
        started = time.perf_counter()
        classifier.predict_proba([text])
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"batch_rows_per_s": round(batch_rate, 1), "single_ms_median": round(statistics.median(latencies), 2),
            "single_ms_p95": round(latencies[int(0.95 * len(latencies)) - 1], 2)}


def one_repeat(direct: dict, script: float, first: float, first_stages: dict, later: float,
               later_stages: dict) -> dict:
    """One repeat's figures. End to end: flow wall / script wall - 1 (noisy: training time varies by several
    seconds between processes). Within each run: the time outside the stage calls, flow against script (Python
    start-up and imports, which both pay), over the flow's own stage time plus the script's start-up."""
    outside = script - sum(direct.values())

    def within(wall: float, stages: dict) -> float:
        return (wall - sum(stages.values()) - outside) / (sum(stages.values()) + outside)

    return {"stages_s": {k: round(v, 2) for k, v in direct.items()}, "stages_total_s": round(sum(direct.values()), 2),
            "script_s": round(script, 2), "script_outside_s": round(outside, 2),
            "flow_first_s": round(first, 2), "flow_first_outside_s": round(first - sum(first_stages.values()), 2),
            "flow_s": round(later, 2), "flow_outside_s": round(later - sum(later_stages.values()), 2),
            "flow_stages_s": {k: round(v, 2) for k, v in later_stages.items()},
            "overhead_first": round(first / script - 1, 3), "overhead": round(later / script - 1, 3),
            "within_first": round(within(first, first_stages), 3), "within": round(within(later, later_stages), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # internal: one direct run, JSON out
    parser.add_argument("--task-runs", action="store_true", help=argparse.SUPPRESS)  # internal: JSON out
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    if args.direct:
        print(json.dumps(direct_stages(args.direct)))
        return
    if args.task_runs:
        print(json.dumps(read_task_runs()))
        return
    banking77 = dataset_dir(args.data, "banking77")
    repeats = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.repeats):
            direct, script = direct_in_new_process(fresh_project(Path(folder) / f"direct{index}"))
            flow_project = fresh_project(Path(folder) / f"flow{index}")
            first = flow_run(flow_project)
            first_stages = flow_stage_seconds(flow_project)
            later = flow_run(flow_project)
            later_stages = flow_stage_seconds(flow_project)
            repeats.append(one_repeat(direct, script, first, first_stages, later, later_stages))
        prediction = prediction_speed(trained_model(Path(folder) / f"direct{args.repeats - 1}" / "project"),
                                      banking77)
    summary = {
        "command": f"nichetune bench speed --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "median_overhead": statistics.median(r["overhead"] for r in repeats),
        "median_overhead_first": statistics.median(r["overhead_first"] for r in repeats),
        "median_within": statistics.median(r["within"] for r in repeats),
        "median_within_first": statistics.median(r["within_first"] for r in repeats),
        "median_outside_s": {key: statistics.median(r[f"{key}_outside_s"] for r in repeats)
                             for key in ("script", "flow_first", "flow")},
        "median_stages_s": {stage: statistics.median(r["stages_s"][stage] for r in repeats)
                            for stage in repeats[0]["stages_s"]},
        "median_script_s": statistics.median(r["script_s"] for r in repeats),
        "median_flow_first_s": statistics.median(r["flow_first_s"] for r in repeats),
        "median_flow_s": statistics.median(r["flow_s"] for r in repeats),
        "prediction": prediction, "repeats": repeats,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
