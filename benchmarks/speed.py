"""Benchmark: time to a candidate model (the flow against its stage functions run directly) and prediction speed.

    nichetune bench speed [--repeats 3]

Overhead: in fresh copies of this project (git + DVC, the demo data, params.yaml as committed), the six stage
functions are called one after another in this process, then `nichetune run` runs the same work as a Prefect flow
in a new process (Prefect's temporary server included, as a user gets it). The two alternate, `--repeats` times;
the figure is the median of the per-repeat ratios. Prediction: the demo model's batch throughput on banking77's
3,080 test texts, and single-text latency (median and 95th percentile of 200 calls) on the CPU."""

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

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHARED = REPO.parent / "shared" / "data"


def fresh_project(folder: Path) -> Path:
    """A clone of the committed project with its own empty outputs, DVC store and Prefect home."""
    root = folder / "project"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    return root


def direct_stages(root: Path) -> dict[str, float]:
    """Each stage function called in order, as `dvc repro` or a notebook would, timed one by one."""
    from tasks import evaluate, finetune, ingest, register, split, validate
    from tasks.config import Paths, load_params

    params = load_params(root / "params.yaml")
    paths = Paths.of(root, params)
    seconds: dict[str, float] = {}

    def timed(name, call):
        started = time.perf_counter()
        value = call()
        seconds[name] = time.perf_counter() - started
        return value

    data = timed("ingest", lambda: ingest.run(params.ingest, params.validate.labels, root, paths.stage("ingest")))
    timed("validate", lambda: validate.run(params.validate, data.dataset, paths.stage("validate")))
    parts = timed("split", lambda: split.run(params.split, params.base.seed, data.dataset, paths.stage("split")))
    tuned = timed("finetune", lambda: finetune.run(params.finetune, params.base.seed, parts.train,
                                                   paths.stage("finetune"), paths.workdir))
    timed("evaluate", lambda: evaluate.run(params.evaluate, tuned.model_dir, parts.train, parts.holdout,
                                           paths.stage("evaluate"), params.base.seed))
    timed("register", lambda: register.run(params, paths))
    return seconds


def direct_in_new_process(root: Path) -> dict[str, float]:
    """`direct_stages` in a new process, so that both sides pay the same imports (stages import lazily)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--direct", str(root)], cwd=REPO,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def flow_run(root: Path) -> float:
    """`nichetune run` end to end in a new process, as a user runs it."""
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect-home")}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nichetune"), "run"], cwd=root, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def prediction_speed(model_dir: Path) -> dict:
    """Batch rows per second and single-text latency of a trained classifier on the CPU."""
    from tasks.model import Classifier

    classifier = Classifier(model_dir)
    texts = pd.read_csv(SHARED / "banking77" / "test.csv")["text"].tolist()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # internal: one direct run, JSON out
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    if args.direct:
        print(json.dumps(direct_stages(args.direct)))
        return
    repeats = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.repeats):
            direct = direct_in_new_process(fresh_project(Path(folder) / f"direct{index}"))
            flow = flow_run(fresh_project(Path(folder) / f"flow{index}"))
            repeats.append({"stages_s": {k: round(v, 2) for k, v in direct.items()},
                            "stages_total_s": round(sum(direct.values()), 2), "flow_s": round(flow, 2),
                            "overhead": round(flow / sum(direct.values()) - 1, 3)})
        model_dir = Path(folder) / f"direct{args.repeats - 1}" / "project" / "outputs" / "finetune" / "model"
        prediction = prediction_speed(model_dir)
    summary = {
        "command": f"nichetune bench speed --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "median_overhead": statistics.median(r["overhead"] for r in repeats),
        "median_stages_s": {stage: statistics.median(r["stages_s"][stage] for r in repeats)
                            for stage in repeats[0]["stages_s"]},
        "median_flow_s": statistics.median(r["flow_s"] for r in repeats),
        "prediction": prediction, "repeats": repeats,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
