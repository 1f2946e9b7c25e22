"""Benchmark: peak memory and time of the default's fine-tuning (`full`, auto's fine-tuned candidate) on each
dataset, with and without gradient checkpointing (finetune.gradient_checkpointing).

    nichetune bench memory [--rows 240] [--data DIR]

Each dataset of the quality table's families (banking77 and amazon_counterfactual_en at 8 and 64 rows per
class, cfpb_payday_2023) gives `--rows` training rows sampled with seed 0 (all of them when it has fewer), and
that strategy trains for one epoch in a new process, once with `never` and once with `auto`. Peak memory
is the process's maximum resident set (getrusage), so it includes Python, the libraries and the model; it does
not grow with epochs or with rows beyond the batches' shapes, which the sample keeps (the same text lengths)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.sources import add_data_option

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DATASETS = ("banking77_k8", "banking77_k64", "amazon_counterfactual_en_k64", "cfpb_payday_2023")
SETTINGS = ("never", "auto")
GOAL_MB = 3 * 1024  # issue 54: under 3 GB for any dataset


def job(dataset: str, setting: str, rows: int, data: Path) -> dict:
    """One training in this process; its seconds and peak resident memory."""
    import tempfile

    from benchmarks import quality
    from tasks.config import FinetuneParams
    from tasks.finetune import finetune
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    spec = quality.DATASETS[dataset]
    train = spec.split(data / spec.folder, 0).train
    train = train.sample(min(rows, len(train)), random_state=0)[["text", "label"]]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        cfg = FinetuneParams(strategy=quality.tuned_strategy(), epochs=1, gradient_checkpointing=setting)
        finetune(train, cfg, seed=0, out_dir=Path(out))
    seconds = round(time.perf_counter() - started, 1)
    return {"dataset": dataset, "setting": setting, "rows": len(train), "seconds": seconds,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--job", nargs=2, metavar=("DATASET", "SETTING"), help=argparse.SUPPRESS)  # internal
    add_data_option(parser)
    args = parser.parse_args(argv)
    if args.job:
        print(json.dumps(job(*args.job, args.rows, args.data)))
        return
    runs = []
    for dataset in DATASETS:
        for setting in SETTINGS:
            done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--job", dataset, setting, "--rows",
                                   str(args.rows), "--data", str(args.data)], cwd=REPO, check=True,
                                  capture_output=True, text=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    summary = {"command": f"nichetune bench memory --rows {args.rows}", "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(summary, indent=2) + "\n")


def goal_lines(results: dict | None) -> list[str]:
    if not results:
        return []
    auto = [run for run in results["runs"] if run["setting"] == "auto"]
    worst = max(auto, key=lambda run: run["peak_mb"])
    verdict = "holds" if worst["peak_mb"] < GOAL_MB else "**does not hold**"
    return [f"- Peak training memory under 3 GB on every dataset: the largest, {worst['dataset']}, "
            f"{worst['peak_mb'] / 1024:.1f} GB: {verdict} (one epoch of a {worst['rows']}-row sample; memory "
            "follows the batches' shapes, not the epochs)"]


def section(results: dict | None) -> list[str]:
    if not results:
        return []
    by = {(run["dataset"], run["setting"]): run for run in results["runs"]}
    lines = ["## Training memory: gradient checkpointing (memory)", "",
             f"`{results['command']}` ({results['date']}, {results['machine']}); `benchmarks/results/memory.json`; "
             "protocol in `benchmarks/memory.py`. The default's fine-tuned network (`full`), one epoch, each run in "
             "its own process; peak resident memory of the process. `auto` turns checkpointing on only where a batch "
             "can hold more than 2,048 tokens.", "",
             "| dataset | rows | never: peak GB | never: s | auto: peak GB | auto: s | time × never |",
             "|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(run["dataset"] for run in results["runs"]):
        never, auto = by[(dataset, "never")], by[(dataset, "auto")]
        ratio = auto["seconds"] / never["seconds"]
        lines.append(f"| {dataset} | {never['rows']} | {never['peak_mb'] / 1024:.2f} | {never['seconds']:.0f} | "
                     f"{auto['peak_mb'] / 1024:.2f} | {auto['seconds']:.0f} | {ratio:.2f} |")
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
