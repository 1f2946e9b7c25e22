"""Benchmark: what cross-fitting buys strategy `auto` at the size a pipeline run gives it, against its time.

    python -m benchmarks.folds [--k 6] [--seeds 2] [--thresholds 100 60] [--dev-rows 2000] [--data DIR]

A user with 8 labeled texts per intent runs `nichetune run`: the split keeps 20% for evaluation, so auto trains
on about 6 per intent. Its own 20% carve then holds fewer than tasks.auto.MIN_HELD_ROWS validation rows, and it
cross-fits: the fine-tuned candidate trains once per fold and once more on every row. This benchmark trains auto
on k rows per intent of banking77's training split (seed s) once per threshold: at 100 (today) it cross-fits, at
60 one carve is enough. Each model is scored on dev rows, other rows of the training split (never the test
split), with the training time. A threshold is lowered only if its dev score is within noise of today's."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.quality import RESULTS, few_shot, machine, read_banking77, strategy_params
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "folds.json"


def rows_and_dev(k: int, seed: int, dev_count: int, data: Path):
    """k training rows per intent of banking77's training split (seed `seed`), and `dev_count` other rows of that
    split to judge on (never the test split)."""
    folder = dataset_dir(data, "banking77")
    train = few_shot(read_banking77, k, folder, seed).train[["text", "label"]]
    pool = read_banking77(folder).train
    return train, pool[~pool["text"].isin(set(train["text"]))].sample(n=dev_count, random_state=seed)


def run_seed(k: int, seed: int, thresholds: list[int], dev_count: int, data: Path) -> list[dict]:
    from tasks import auto
    from tasks.metrics import score
    from tasks.portfolio import load_classifier

    train, dev = rows_and_dev(k, seed, dev_count, data)
    rows = []
    for threshold in thresholds:
        auto.MIN_HELD_ROWS = threshold
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = auto.train_auto(train, strategy_params("auto"), seed, Path(out))
            predicted = load_classifier(result.model_dir).predict(dev["text"].astype(str).tolist())
        seconds = time.perf_counter() - started
        metrics, _ = score(dev["label"].tolist(), predicted, train["label"].value_counts().idxmax())
        rows.append({"seed": seed, "threshold": threshold, "folds": result.choice["folds"],
                     "validation_rows": result.choice["validation_rows"], "weights": result.choice["weights"],
                     "dev_accuracy": round(metrics["accuracy"], 4), "dev_macro_f1": round(metrics["macro_f1"], 4),
                     "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[100, 60])
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    rows = [row for seed in range(args.seeds)
            for row in run_seed(args.k, seed, args.thresholds, args.dev_rows, args.data)]
    summary = {"command": "python -m benchmarks.folds " + " ".join(argv if argv is not None else sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "k": args.k, "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def section(results: dict | None) -> list[str]:
    if not results:
        return []
    lines = ["## How auto validates at pipeline size (folds)", "",
             f"`{results['command']}` ({results['date']}); `benchmarks/results/folds.json`; protocol in "
             f"`benchmarks/folds.py`. banking77, {results['k']} training rows per intent (what 8 per intent leave "
             "after the pipeline's 20% holdout); dev rows from the training split.", "",
             "| MIN_HELD_ROWS | folds | validation rows | dev accuracy (mean) | dev macro-F1 (mean) | seconds (mean) | "
             "seeds |", "|---|---|---|---|---|---|---|"]
    for threshold in dict.fromkeys(row["threshold"] for row in results["rows"]):
        mine = [row for row in results["rows"] if row["threshold"] == threshold]
        mean = partial(lambda key, rows: statistics.mean(row[key] for row in rows), rows=mine)
        lines.append(f"| {threshold} | {mine[0]['folds']} | {mine[0]['validation_rows']} | "
                     f"{mean('dev_accuracy') * 100:.1f} | {mean('dev_macro_f1') * 100:.1f} | {mean('seconds'):.0f} | "
                     f"{len(mine)} |")
    by_seed = {}
    for row in results["rows"]:
        by_seed.setdefault(row["seed"], {})[row["threshold"]] = row["dev_accuracy"]
    gaps = [np.diff(list(values.values()))[0] * 100 for values in by_seed.values() if len(values) == 2]
    if gaps:
        lines += ["", "Dev accuracy, second threshold minus first, per seed: "
                  + ", ".join(f"{gap:+.1f}" for gap in gaps) + " points."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
