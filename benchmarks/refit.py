"""Benchmark: what training auto's fine-tuned member again on every row (`finetune.refit`) buys, against its time.

    python -m benchmarks.refit [--k 6] [--seeds 3] [--dev-rows 2000] [--variants retrain continue:1 off] [--data DIR]

Strategy auto fine-tunes its transformer candidate on the training rows less a 20% validation carve (where it
stops early and the mixture is chosen). Then, with refit retrain, the chosen member trains again from the backbone
on every row for the epochs early stopping kept (a fifth more rows, for about twice the fine-tuning time); with
continue:N, it trains N more epochs on every row from the carve's weights; with off, the carve's model is kept.
This benchmark trains auto's candidates once per seed on k rows per intent of banking77's training split (6 is
what 8 per intent leave after the pipeline's holdout; 13 an active-learning round near 1,000 labels), chooses
their mixture, then saves the model once per variant and scores each on the same dev rows: other rows of the
training split, never the test split. A variant's seconds are the candidates' shared training plus its own
refit and saving."""

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
VARIANTS = ["retrain", "continue:1", "off"]


def refit_settings(variant: str, cfg) -> dict:
    """`retrain`, `off`, `continue:N` or `continue:N:F` (the learning rates times F) as finetune keys."""
    name, epochs, factor = (variant.split(":") + ["1", "1"])[:3]
    if name != "continue":
        return {"refit": name}
    return {"refit": name, "refit_epochs": int(epochs), "learning_rate": cfg.learning_rate * float(factor),
            "head_learning_rate": cfg.head_learning_rate * float(factor)}


def run_seed(k: int, seed: int, dev_count: int, data: Path, variants: list[str]) -> list[dict]:
    from tasks import auto
    from tasks.metrics import score
    from tasks.portfolio import load_classifier
    from tasks.training import run_fingerprint

    train, dev = rows_and_dev(k, seed, dev_count, data)
    # continue needs the carve's weights kept; the carve trains the same for every variant
    cfg = strategy_params("auto").model_copy(update={"refit": "continue"})
    rows = []
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        candidates = auto.Candidates(train, cfg, seed, Path(out), None)
        for name in cfg.candidates:
            candidates.train_one(name)
        weights, _, temperature = auto.choose_mixture(candidates)
        shared = time.perf_counter() - started
        # off moves the carve's model into the saved one: it goes last
        for variant in sorted(variants, key=lambda v: v == "off"):
            candidates.cfg = cfg.model_copy(update=refit_settings(variant, cfg))
            candidates.final = None
            started = time.perf_counter()
            model_dir = auto.save_portfolio(candidates, weights, temperature, Path(out) / variant,
                                            run_fingerprint(train, candidates.cfg, seed))
            seconds = shared + time.perf_counter() - started
            predicted = load_classifier(model_dir).predict(dev["text"].astype(str).tolist())
            metrics, _ = score(dev["label"].tolist(), predicted, train["label"].value_counts().idxmax())
            rows.append({"seed": seed, "refit": variant, "weights": weights,
                         "dev_accuracy": round(metrics["accuracy"], 4), "dev_macro_f1": round(metrics["macro_f1"], 4),
                         "seconds": round(seconds, 1)})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    rows = [row for seed in range(args.seeds) for row in run_seed(args.k, seed, args.dev_rows, args.data, args.variants)]
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


def variant_name(row: dict) -> str:
    """A row's refit variant; rows measured before `continue` existed say true (retrain) or false (off)."""
    refit = row["refit"]
    return {True: "retrain", False: "off"}.get(refit, refit) if isinstance(refit, bool) else refit


def size_lines(results: dict) -> list[str]:
    k = results["k"]
    why = (" (what 8 per intent leave after the pipeline's 20% holdout)" if k == 6 else
           " (the size of an active-learning round near 1,000 labels)" if k == 13 else "")
    out = "refit.json" if k == 6 else f"refit_k{k}.json"
    lines = [f"`{results['command']}` ({results['date']}); `benchmarks/results/{out}`; protocol in "
             f"`benchmarks/refit.py`. banking77, {k} training rows per intent{why}; {results['dev_rows']} dev rows "
             "from the training split, the same for every variant of a seed.", "",
             "| refit | dev accuracy (mean) | dev macro-F1 (mean) | seconds (median) | seeds |", "|---|---|---|---|---|"]
    variants = list(dict.fromkeys(variant_name(row) for row in results["rows"]))
    for variant in variants:
        mine = [row for row in results["rows"] if variant_name(row) == variant]
        lines.append(f"| {variant} | {statistics.mean(r['dev_accuracy'] for r in mine) * 100:.1f} | "
                     f"{statistics.mean(r['dev_macro_f1'] for r in mine) * 100:.1f} | "
                     f"{statistics.median(r['seconds'] for r in mine):.0f} | {len(mine)} |")
    by_seed = {}
    for row in results["rows"]:
        by_seed.setdefault(row["seed"], {})[variant_name(row)] = row
    for variant in variants:
        pairs = [(mine[variant], mine["off"]) for mine in by_seed.values() if variant != "off" and
                 {variant, "off"} <= set(mine)]
        if pairs:
            lines += ["", f"Per seed, {variant} minus off: dev accuracy "
                      + ", ".join(f"{(on['dev_accuracy'] - off['dev_accuracy']) * 100:+.1f}" for on, off in pairs)
                      + " points; time " + ", ".join(f"{on['seconds'] / off['seconds']:.2f}x" for on, off in pairs)
                      + "."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
