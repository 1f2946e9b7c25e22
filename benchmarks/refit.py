"""Benchmark: what training auto's fine-tuned member again on every row (`finetune.refit`) buys, against its time.

    python -m benchmarks.refit [--k 6] [--seeds 3] [--dev-rows 2000] [--data DIR]

Strategy auto fine-tunes its transformer candidate on the training rows less a 20% validation carve (where it
stops early and the mixture is chosen). With refit on, the chosen member then trains again on every row for the
epochs early stopping kept: a fifth more rows, for about twice the fine-tuning time. This benchmark trains auto
on k rows per intent of banking77's training split (seed s; 6 is what 8 per intent leave after the pipeline's
holdout) with refit on and off, and scores both on the same dev rows: other rows of the training split, never
the test split. Refit stays the default only if it scores better beyond the seeds' noise."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.folds import rows_and_dev
from benchmarks.quality import RESULTS, machine, strategy_params
from benchmarks.sources import add_data_option

OUT = RESULTS / "refit.json"


def run_seed(k: int, seed: int, dev_count: int, data: Path) -> list[dict]:
    from tasks import auto
    from tasks.metrics import score
    from tasks.portfolio import load_classifier

    train, dev = rows_and_dev(k, seed, dev_count, data)
    rows = []
    for refit in (True, False):
        cfg = strategy_params("auto").model_copy(update={"refit": refit})
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = auto.train_auto(train, cfg, seed, Path(out))
            predicted = load_classifier(result.model_dir).predict(dev["text"].astype(str).tolist())
        seconds = time.perf_counter() - started
        metrics, _ = score(dev["label"].tolist(), predicted, train["label"].value_counts().idxmax())
        rows.append({"seed": seed, "refit": refit, "weights": result.choice["weights"], "dev_accuracy": round(metrics["accuracy"], 4),
                     "dev_macro_f1": round(metrics["macro_f1"], 4), "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    rows = [row for seed in range(args.seeds) for row in run_seed(args.k, seed, args.dev_rows, args.data)]
    summary = {"command": " ".join(["python -m benchmarks.refit", *(argv if argv is not None else sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "k": args.k,
               "dev_rows": args.dev_rows, "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def section(*results: dict | None) -> list[str]:
    """One table per size measured (`--k`), each with its command and the paired differences per seed."""
    results = [one for one in results if one]
    if not results:
        return []
    lines = ["## Auto's refit: the fine-tuned member trained again on every row", ""]
    for one in results:
        lines += size_lines(one)
    return lines


def size_lines(results: dict) -> list[str]:
    k = results["k"]
    why = (" (what 8 per intent leave after the pipeline's 20% holdout)" if k == 6 else
           " (the size of an active-learning round near 1,000 labels)" if k == 13 else "")
    out = "refit.json" if k == 6 else f"refit_k{k}.json"
    lines = [f"`{results['command']}` ({results['date']}); `benchmarks/results/{out}`; protocol in "
             f"`benchmarks/refit.py`. banking77, {k} training rows per intent{why}; {results['dev_rows']} dev rows "
             "from the training split, the same for both settings of a seed.", "",
             "| refit | dev accuracy (mean) | dev macro-F1 (mean) | seconds (median) | seeds |", "|---|---|---|---|---|"]
    for refit in (True, False):
        mine = [row for row in results["rows"] if row["refit"] is refit]
        if mine:
            lines.append(f"| {str(refit).lower()} | {statistics.mean(r['dev_accuracy'] for r in mine) * 100:.1f} | "
                         f"{statistics.mean(r['dev_macro_f1'] for r in mine) * 100:.1f} | "
                         f"{statistics.median(r['seconds'] for r in mine):.0f} | {len(mine)} |")
    by_seed = {}
    for row in results["rows"]:
        by_seed.setdefault(row["seed"], {})[row["refit"]] = row
    pairs = [(mine[True], mine[False]) for mine in by_seed.values() if len(mine) == 2]
    if pairs:
        lines += ["", "Per seed, refit on minus off: dev accuracy "
                  + ", ".join(f"{(on['dev_accuracy'] - off['dev_accuracy']) * 100:+.1f}" for on, off in pairs)
                  + " points; time " + ", ".join(f"{on['seconds'] / off['seconds']:.2f}x" for on, off in pairs) + "."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
