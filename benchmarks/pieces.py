"""Benchmark: the size of the length pieces a CPU batch runs in (tasks.training.PIECE_TOKENS), on short and long
texts, measured side by side in one process.

    python -m benchmarks.pieces [--budgets 256 512 1024 2048] [--k 13] [--long-rows 128] [--repeats 3] [--data DIR]

On the CPU a batch of `finetune.batch_size` rows runs in pieces, shortest rows first, of at most PIECE_TOKENS padded
tokens (rows x the piece's longest row): a long complaint does not pad fifteen short ones to its length, but each
piece pays the model's fixed cost per call. Rows: banking77 with `--k` per intent (short questions; 13 is an
active-learning round near 1,000 labels) and `--long-rows` of cfpb_payday_2023's training complaints (seed 0's
rows, the first ones), strategy `full` (auto's fine-tuned candidate) with params.yaml's finetune section, no
validation share, one epoch a run. Every budget gives the same vectors, loss and gradients up to rounding; the
dropout draws differ with the pieces, so the last losses differ a little. One untimed warm-up run first, then the
budgets alternate `--repeats` times, in reverse order every other time; samples per second as the run reports
them, medians."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.quality import RESULTS, few_shot, load_split, machine, read_banking77, strategy_params
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "pieces.json"


def fine_tune(train, budget: int) -> dict:
    from tasks import training

    training.PIECE_TOKENS = budget
    cfg = strategy_params("full", {"epochs": 1, "validation_fraction": 0.0})
    with tempfile.TemporaryDirectory() as out:
        result = training.train_strategy(train, cfg, 0, Path(out))
    return {"samples_per_second": round(result.samples_per_second, 2), "last_loss": round(result.losses[-1], 5)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pieces", description=__doc__)
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--k", type=int, default=13)
    parser.add_argument("--long-rows", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    sets = {f"banking77, {args.k} per intent":
            few_shot(read_banking77, args.k, dataset_dir(args.data, "banking77"), 0).train[["text", "label"]],
            f"cfpb_payday_2023, {args.long_rows} complaints":
            load_split("cfpb_payday_2023", 0, args.data).train[["text", "label"]].head(args.long_rows)}
    for train in sets.values():  # warm-up: first imports, allocator, thread pools
        fine_tune(train.head(64), args.budgets[0])
    runs = {name: {str(budget): [] for budget in args.budgets} for name in sets}
    for repeat in range(args.repeats):
        for name, train in sets.items():  # every other repeat in reverse order: a machine slowing down (or speeding
            for budget in args.budgets[::-1 if repeat % 2 else 1]:  # up) within a repeat favours no budget
                runs[name][str(budget)].append(fine_tune(train, budget))
                print(name, budget, runs[name][str(budget)][-1], flush=True)
    summary = {"command": " ".join(["python -m benchmarks.pieces", *(argv if argv is not None else sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": {n: len(t) for n, t in sets.items()},
               "runs": runs}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(_table(summary, args.out.name)))
    return summary


def section(sweep: dict | None, paired: dict | None = None) -> list[str]:
    """The sweep of budgets (`pieces.json`), then the run that pairs two of them (`pieces_pair.json`), each with
    its reading in its notes."""
    if not sweep:
        return []
    lines = ["## Length pieces of a CPU batch (pieces)", ""]
    for results, name in ((sweep, "pieces.json"), (paired, "pieces_pair.json")):
        if results:
            lines += _table(results, name)
    return lines


def _table(results: dict, name: str) -> list[str]:
    where = results["machine"]["gpu"] or f"{results['machine']['arch']}, {results['machine']['cores']} cores"
    budgets = list(next(iter(results["runs"].values())))
    lines = [f"`{results['command']}` ({results['date']}, {where}); `benchmarks/results/{name}`; protocol in "
             "`benchmarks/pieces.py`. Strategy `full`, one epoch a run, the budgets alternating in one process; "
             "samples per second, medians (each run's in brackets).", "",
             "| rows | " + " | ".join(f"{b} tokens" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for rows, by_budget in results["runs"].items():
        cells = []
        for budget in budgets:
            speeds = [run["samples_per_second"] for run in by_budget[budget]]
            each = ", ".join(f"{s:.1f}" if s < 10 else f"{s:.0f}" for s in speeds)
            cells.append(f"{statistics.median(speeds):.1f} ({each})")
        lines.append(f"| {rows} ({results['rows'][rows]:,}) | " + " | ".join(cells) + " |")
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
