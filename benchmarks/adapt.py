"""Benchmark: the time domain adaptation (tasks.adapt) takes on the CPU.

    python -m benchmarks.adapt [--objectives tsdae simcse mlm] [--steps N] [--data DIR]

The packaged MiniLM (`finetune.backbone: minilm`) is adapted on banking77's training texts (about 10,000, the
issue's pool size) with params.yaml's `adapt` settings, each objective in turn; `--steps N` runs N steps instead
of the configured number, for an estimate of what the full run costs (seconds per step times the configured
steps). Every run starts from an empty cache, so it trains, in the precision `precision: auto` takes on this CPU.
The goal: under 15 minutes on 2 CPU cores, once per pool version. Results go to benchmarks/results/adapt.json, one
run per objective, step count and kind of CPU."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.quality import RESULTS, cpu_kind, machine, project_params, read_banking77
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "adapt.json"
GOAL_SECONDS = 15 * 60  # the goal for a 10,000-text pool on 2 CPU cores
SEED = 0


def time_objective(texts: list[str], objective: str, steps: int | None) -> dict:
    """Adapt MiniLM with params.yaml's adapt settings (and `objective`, and `steps` when given) from an empty
    cache; the wall time of the whole call (loading, training, saving) and the provenance it returns."""
    from tasks.adapt import adapted_backbone
    from tasks.config import AdaptParams
    from tasks.model import resolve_device

    cfg = AdaptParams(**{**project_params().get("adapt", {}), "objective": objective,
                         **({"steps": steps} if steps else {})})
    configured = AdaptParams(**project_params().get("adapt", {})).steps
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        adapted = adapted_backbone(texts, "banking77-train", cfg, "minilm", SEED, Path(cache), resolve_device("cpu"))
        seconds = time.perf_counter() - started
    done = adapted.provenance
    return {"objective": objective, "precision": resolve_device("cpu").name.split("/")[1], "steps": cfg.steps, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
            "learning_rate": cfg.learning_rate, "texts": done["texts"], "seconds": round(seconds, 1),
            "train_seconds": done["seconds"], "steps_per_second": done["steps_per_second"],
            "texts_per_second": round(done["steps_per_second"] * cfg.batch_size, 1),
            "seconds_at_configured_steps": round(seconds + (configured - cfg.steps) / done["steps_per_second"], 1),
            "configured_steps": configured, "loss_start": done["loss_start"], "loss_end": done["loss_end"]}


def run_entry(result: dict, argv: list[str]) -> dict:
    info, cpu = machine(), cpu_kind()
    return {"command": "python -m benchmarks.adapt " + " ".join(argv),
            "date": datetime.now(timezone.utc).date().isoformat(),
            "machine": f"{info['arch']}, {info['cores']} cores, {cpu}, {info['gpu'] or 'no GPU'}, "
                       f"load {info['load_average_1min']:.1f} at the start", "cpu": cpu, "result": result}


def write_results(entries: list[dict], out: Path) -> dict:
    """Add `entries` to `out`, replacing an earlier run of the same objective and step count on the same kind of
    CPU (benchmarks.quality.cpu_kind) in the same precision; runs from before these were recorded count apart."""
    results = json.loads(out.read_text()) if out.is_file() else {"runs": [], "notes": []}

    def key(run_: dict) -> tuple:
        result = run_["result"]
        return result["objective"], result["steps"], run_.get("cpu", ""), result.get("precision", "")

    new = {key(e) for e in entries}
    results["runs"] = sorted([r for r in results["runs"] if key(r) not in new] + entries, key=key)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def line(result: dict) -> str:
    verdict = "meets" if result["seconds_at_configured_steps"] <= GOAL_SECONDS else "misses"
    return (f"{result['objective']}: {result['steps']} steps of {result['batch_size']} in {result['seconds']:.0f} s "
            f"({result['steps_per_second']:.2f} steps/s, {result['texts_per_second']:.0f} texts/s); "
            f"{result['configured_steps']} steps: about {result['seconds_at_configured_steps'] / 60:.1f} min, "
            f"{verdict} the 15-minute goal")


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: one row per objective and step count; a row at fewer steps is an estimate."""
    if not results:
        return []
    lines = ["## Domain adaptation: time on the CPU (adapt)", "",
             "Protocol in `benchmarks/adapt.py`; `benchmarks/results/adapt.json`. The packaged MiniLM adapted on "
             "banking77's 10,000 training texts with params.yaml's `adapt` settings. Goal: under 15 minutes on 2 "
             "CPU cores, once per pool version. A run of fewer steps than configured is an estimate (its seconds "
             "per step times the configured steps).", "",
             "| objective | steps run | seconds | steps/s | configured steps: minutes | measured or estimated | "
             "command, date, machine |", "|---|---|---|---|---|---|---|"]
    for run_ in results["runs"]:
        r = run_["result"]
        kind = "measured" if r["steps"] == r["configured_steps"] else "estimated"
        lines.append(f"| {r['objective']} | {r['steps']} | {r['seconds']:.0f} | {r['steps_per_second']:.2f} | "
                     f"{r['seconds_at_configured_steps'] / 60:.1f} | {kind} | `{run_['command']}`, {run_['date']}, "
                     f"{run_['machine']}{', ' + r['precision'] if 'precision' in r else ''} |")
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


def main(argv: list[str] | None = None) -> list[dict]:
    from tasks.runtime import quiet_offline_defaults

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adapt", description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["tsdae", "simcse", "mlm"],
                        choices=["tsdae", "simcse", "mlm"])
    parser.add_argument("--steps", type=int, default=None, help="steps per objective (default: params.yaml's)")
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    quiet_offline_defaults()
    texts = read_banking77(dataset_dir(args.data, "banking77")).train["text"].tolist()
    entries = []
    for objective in args.objectives:
        entries.append(run_entry(time_objective(texts, objective, args.steps), argv))
        print(line(entries[-1]["result"]), flush=True)
    write_results(entries, args.out)
    return entries


if __name__ == "__main__":
    main()
