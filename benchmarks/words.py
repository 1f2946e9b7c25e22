"""Benchmark: fine-tuning with the backbone's word vectors frozen (`finetune.word_embeddings: freeze`) against
trained, for quality on dev rows and for speed.

    python -m benchmarks.words [--seeds 5] [--dev-rows 2000] [--sets banking77:6 amazon_counterfactual_en:64]
                               [--data DIR]

MiniLM's word vectors (30,522 x 384) are half its weights. Trained, each step computes their dense gradient and
AdamW updates all of them, though a batch of short texts reads a few hundred; frozen, the rest of the network
(position vectors, the embeddings' LayerNorm, every layer, the head) trains as before. With a few labels per class
the trained vectors move only for the words the training rows contain, away from synonyms no row shows.

For each set (dataset:k, k rows per class of its training split, seed s) both settings train strategy `full` as
auto's fine-tuned member does (params.yaml's finetune section, a 20% validation carve for early stopping and the
temperature), and each model is scored on `--dev-rows` other rows of the training split: never the test split.
Recorded per run: dev accuracy, macro-F1 and MCC, the epochs kept, training seconds and samples per second.
The settings alternate within each seed, in one process."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sklearn.metrics import matthews_corrcoef

from benchmarks.quality import (RESULTS, few_shot, machine, read_amazon_counterfactual, read_banking77,
                                strategy_params)
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "words.json"
READERS = {"banking77": read_banking77, "amazon_counterfactual_en": read_amazon_counterfactual}
SETTINGS = ("train", "freeze")
# the figure each set is judged by, as in the quality table: MCC where two classes are unbalanced
JUDGED_BY = {"banking77": "accuracy", "amazon_counterfactual_en": "mcc"}


def rows_and_dev(name: str, k: int, seed: int, dev_count: int, data: Path):
    """k training rows per class of `name`'s training split (seed `seed`), and `dev_count` other rows of it."""
    folder = dataset_dir(data, name)
    train = few_shot(READERS[name], k, folder, seed).train[["text", "label"]]
    rest = READERS[name](folder).train
    rest = rest[~rest["text"].isin(set(train["text"]))]
    return train, rest.sample(n=min(dev_count, len(rest)), random_state=seed)


def run_seed(name: str, k: int, seed: int, dev_count: int, data: Path) -> list[dict]:
    from tasks.metrics import score
    from tasks.portfolio import load_classifier
    from tasks.training import train_strategy

    train, dev = rows_and_dev(name, k, seed, dev_count, data)
    truth = dev["label"].astype(str).tolist()
    rows = []
    for setting in SETTINGS:
        cfg = strategy_params("full", {"validation_fraction": 0.2, "word_embeddings": setting})
        with tempfile.TemporaryDirectory() as out:
            result = train_strategy(train, cfg, seed, Path(out))
            predicted = load_classifier(result.model_dir).predict(dev["text"].astype(str).tolist())
        metrics, _ = score(truth, predicted, train["label"].value_counts().idxmax())
        rows.append({"set": f"{name}:{k}", "seed": seed, "word_embeddings": setting,
                     "dev_accuracy": round(metrics["accuracy"], 4), "dev_macro_f1": round(metrics["macro_f1"], 4),
                     "dev_mcc": round(float(matthews_corrcoef(truth, predicted)), 4),
                     "best_epoch": result.best_epoch, "epochs_run": len(result.losses),
                     "seconds": round(result.seconds, 1), "samples_per_second": round(result.samples_per_second, 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    return measure_sets("python -m benchmarks.words", __doc__, OUT, run_seed, section, argv)


def measure_sets(prog: str, doc: str, out: Path, run_seed: Callable, section: Callable, argv: list[str] | None,
                 check: Callable[[], None] | None = None) -> dict:
    """The command line of the benchmarks that compare two settings on dev rows, seed by seed (words,
    precision): `run_seed` for each set and seed, the rows written to `--out` with the command, then `section`
    printed. `check` runs after the options are read, before any training."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--sets", nargs="+", default=["banking77:6", "amazon_counterfactual_en:64"],
                        metavar="DATASET:K")
    parser.add_argument("--out", type=Path, default=out)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    if check is not None:
        check()
    quiet_offline_defaults()
    rows = []
    for one in args.sets:
        name, k = one.split(":")
        for seed in range(args.seeds):
            rows += run_seed(name, int(k), seed, args.dev_rows, args.data)
    summary = {"command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "dev_rows": args.dev_rows, "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(section(summary)))
    return summary


def section(*results: dict | None) -> list[str]:
    """One table per results file: a line per set with each setting's mean dev score, the paired difference per
    seed, and the speed."""
    results = [one for one in results if one]
    if not results:
        return []
    lines = ["## Fine-tuning with the word vectors frozen (words)", ""]
    for one in results:
        lines += table(one)
    return lines


def table(results: dict) -> list[str]:
    where = results["machine"]["gpu"] or f"{results['machine']['arch']}, {results['machine']['cores']} cores"
    lines = [f"`{results['command']}` ({results['date']}, {where}); protocol in `benchmarks/words.py`. Strategy "
             "`full` as auto's member trains it (20% validation carve, early stopping), scored on "
             f"{results['dev_rows']:,} other rows of each training split (never the test split).", "",
             "| set | figure | trained | frozen | frozen - trained, per seed | samples/s trained | frozen | "
             "seconds trained | frozen |", "|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["set"] for row in results["rows"]):
        runs = {setting: sorted((row for row in results["rows"] if row["set"] == name
                                 and row["word_embeddings"] == setting), key=lambda row: row["seed"])
                for setting in SETTINGS}
        key = "dev_" + JUDGED_BY[name.split(":")[0]]
        mean = {setting: 100 * statistics.mean(row[key] for row in runs[setting]) for setting in SETTINGS}
        gaps = [100 * (frozen[key] - trained[key]) for trained, frozen in zip(runs["train"], runs["freeze"])]
        speed = {setting: statistics.median(row["samples_per_second"] for row in runs[setting]) for setting in SETTINGS}
        seconds = {setting: statistics.median(row["seconds"] for row in runs[setting]) for setting in SETTINGS}
        lines.append(f"| {name} | {key[4:]} | {mean['train']:.1f} | {mean['freeze']:.1f} | "
                     f"{', '.join(f'{gap:+.1f}' for gap in gaps)} | {speed['train']:.1f} | {speed['freeze']:.1f} | "
                     f"{seconds['train']:.0f} | {seconds['freeze']:.0f} |")
    lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
