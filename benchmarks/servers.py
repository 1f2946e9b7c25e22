"""Benchmark: memory of the servers `nichetune up` and `nichetune ui` start on a user's machine, the Prefect server
and the MLflow tracking server, against `mlflow server` as MLflow starts it by default.

    nichetune bench servers [--repeats 3]

Each repeat starts, in a new empty project folder on free ports: nichetune's two servers (flows.ui.Servers: MLflow
with MLFLOW_WORKERS workers and without MLflow's job execution), then, after they stop, `mlflow server` with the
same stores and MLflow's defaults (4 workers, job execution on). Each is measured SETTLE seconds after it answers
its health check (MLflow starts its workers and job consumers after that), as the proportional set size (PSS:
a page shared by several processes is split between them) summed over the server's process tree (Linux, from
psutil's memory_full_info). Linux only."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SETTLE = 30  # seconds after the health check; MLflow's job consumers were all up 20 s after it on 2 cores
SERVERS = ("prefect", "mlflow", "mlflow defaults")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pss_mb(pid: int) -> tuple[float, int]:
    """PSS summed over `pid`'s process tree, in MB, and how many processes it holds."""
    import psutil

    root = psutil.Process(pid)
    total, processes = 0, 0
    for member in [root, *root.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue  # ended while the tree was read
        processes += 1
    return total / 2**20, processes


def measure_nichetune(paths) -> dict:
    from flows.ui import Servers

    servers = Servers(paths, free_port(), free_port())
    try:
        servers.wait_until_healthy()
        time.sleep(SETTLE)
        prefect, mlflow = (pss_mb(child.pid) for child in servers.children)
    finally:
        servers.stop()
    return {"prefect": prefect, "mlflow": mlflow}


def measure_mlflow_defaults(paths) -> tuple[float, int]:
    """`mlflow server` with nichetune's stores and nothing else changed."""
    from flows.ui import HOST, _answers, _signal_group

    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST, "--port", str(port),
               "--backend-store-uri", f"sqlite:///{paths.mlflow_db}",
               "--default-artifact-root", paths.mlflow_artifacts.as_uri()]
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    child = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while not _answers(f"http://{HOST}:{port}/health"):
            if child.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}")
            time.sleep(0.5)
        time.sleep(SETTLE)
        return pss_mb(child.pid)
    finally:
        _signal_group(child, 15)
        child.wait(timeout=30)
        _signal_group(child, 9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from tasks.config import Paths
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()  # as the CLI does: no telemetry calls out of an offline machine

    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="nichetune-servers-") as folder:
            paths = Paths(root=Path(folder), workdir=Path(folder) / "outputs")
            paths.mlflow_db.parent.mkdir(parents=True)
            ours = measure_nichetune(paths)
            defaults = measure_mlflow_defaults(paths)
        for server, (mb, processes) in [*ours.items(), ("mlflow defaults", defaults)]:
            runs.append({"repeat": repeat, "server": server, "pss_mb": round(mb, 1), "processes": processes})
            print(runs[-1], flush=True)
    summary = {"command": f"nichetune bench servers --repeats {args.repeats}", "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "settle_s": SETTLE,
               "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "servers.json").write_text(json.dumps(summary, indent=2) + "\n")


def medians(results: dict) -> dict[str, tuple[float, int]]:
    """Each server's median PSS in MB and its process count (the same in every repeat)."""
    return {server: (statistics.median(run["pss_mb"] for run in results["runs"] if run["server"] == server),
                     max(run["processes"] for run in results["runs"] if run["server"] == server))
            for server in SERVERS}


def section(results: dict | None) -> list[str]:
    if not results:
        return []
    from flows.ui import MLFLOW_WORKERS

    found = medians(results)
    repeats = len({run["repeat"] for run in results["runs"]})
    ours = found["prefect"][0] + found["mlflow"][0]
    theirs = found["prefect"][0] + found["mlflow defaults"][0]
    lines = ["## The servers on a user's machine: memory (servers)", "",
             f"`{results['command']}` ({results['date']}, {results['machine']}); `benchmarks/results/servers.json`; "
             "protocol in `benchmarks/servers.py`. Proportional set size summed over each server's processes, "
             f"{results['settle_s']} s after it answered its health check; medians of {repeats} starts.", "",
             "| server | processes | memory MB (PSS) |", "|---|---|---|"]
    names = {"prefect": "Prefect server (`nichetune up`, `nichetune ui`)",
             "mlflow": f"MLflow server as nichetune starts it ({MLFLOW_WORKERS} workers, no job execution)",
             "mlflow defaults": "MLflow server with MLflow's defaults (4 workers, job execution)"}
    lines += [f"| {names[server]} | {processes} | {mb:.0f} |" for server, (mb, processes) in found.items()]
    lines += ["", f"Both servers as `nichetune up` starts them: {ours / 1024:.1f} GB; with MLflow's defaults they "
              f"would take {theirs / 1024:.1f} GB, {theirs - ours:.0f} MB more, on the machine that trains."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
