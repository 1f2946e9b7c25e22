"""Benchmark: how auto's TF-IDF learner should read texts: which n-grams, and whether term counts are damped.

    python -m benchmarks.tfidf [--datasets D ...] [--seeds 5] [--dev-rows 2000] [--data DIR] [--out FILE]

Per dataset and seed, the training and dev rows are benchmarks.choice's (rows_for): dev rows are other rows of
the published training split, never the test split; cfpb_payday_2023's are its last training months, May and
June. Each reading chooses its C as auto's TF-IDF learner does, by cross-validated macro-F1 (tasks.learners) on
the fitting rows of auto's validation carve (on every training row where auto cross-fits instead,
tasks.auto.folds_for), is then fitted on every training row, and is scored on the dev rows. Readings: word 1-2
grams, character 2-5 grams within word boundaries, or both side by side; each with term counts damped
(sublinear tf: 1 + log of the count, auto's) or raw (`raw`: scikit-learn's default, the tfidf_lr baseline's).
`search` is the n-gram choice, damped, with the best cross-validated macro-F1: auto's learner until this
benchmark, which searched the three choices on each fit. Its seconds are the sum of the three (the learner
shared each fold's vectorizers between them, so it took somewhat less). A reading replaces auto's only if it
loses beyond the seeds' noise on no dataset's dev rows."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.choice import rows_for
from benchmarks.quality import DATASETS, PRIMARY_METRIC, RESULTS, machine, strategy_params
from benchmarks.sources import add_data_option

OUT = RESULTS / "tfidf.json"
WORD = {"analyzer": "word", "ngram_range": (1, 2)}
CHAR = {"analyzer": "char_wb", "ngram_range": (2, 5)}
NGRAM_CHOICES = {"word": (WORD,), "char": (CHAR,), "word+char": (WORD, CHAR)}
READINGS = {f"{ngrams}{'' if damped else ' raw'}": (ngrams, damped)
            for ngrams in NGRAM_CHOICES for damped in (True, False)}
SEARCH = "search"


def features(ngrams: str, damped: bool, fit_texts: list[str], other_texts: list[str]):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tasks.learners import TFIDF_SETTINGS

    vectorizers = [TfidfVectorizer(**{**TFIDF_SETTINGS, "sublinear_tf": damped}, **options)
                   for options in NGRAM_CHOICES[ngrams]]
    fitted = hstack([v.fit_transform(fit_texts) for v in vectorizers]).tocsr()
    return fitted, hstack([v.transform(other_texts) for v in vectorizers]).tocsr()


def dev_scores(truth: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "mcc": float(matthews_corrcoef(truth, predicted))}


def run_seed(name: str, seed: int, dev_count: int, data: Path) -> list[dict]:
    from tasks import learners
    from tasks.auto import VALIDATION_FRACTION, folds_for

    train, dev = rows_for(name, seed, dev_count, data)
    texts, names = train["text"].astype(str).tolist(), train["label"].astype(str).tolist()
    dev_texts, dev_names = dev["text"].astype(str).tolist(), dev["label"].astype(str).tolist()
    fraction = strategy_params("auto").validation_fraction or VALIDATION_FRACTION
    folds = folds_for(texts, names, fraction, seed)
    choose_on = folds[0][0] if len(folds) == 1 else list(range(len(texts)))  # as auto's fast learners choose
    chosen_texts, chosen_names = [texts[i] for i in choose_on], np.asarray([names[i] for i in choose_on])
    cv = learners._folds(chosen_names.tolist(), seed)
    rows = []
    for reading, (ngrams, damped) in READINGS.items():
        started = time.perf_counter()
        tried = learners._cv_scores(
            lambda _, a, b: features(ngrams, damped, [chosen_texts[i] for i in a], [chosen_texts[i] for i in b]),
            chosen_names, cv) if cv is not None else {10.0: 0.0}
        C = max(tried, key=tried.get)
        fit_x, dev_x = features(ngrams, damped, texts, dev_texts)
        linear = learners._fit_linear(fit_x, names, C)
        predicted = np.asarray(linear.labels)[linear.proba(dev_x).argmax(axis=1)].tolist()
        rows.append({"dataset": name, "seed": seed, "reading": reading, "C": C, "cv_macro_f1": tried[C],
                     "chosen_on_rows": len(choose_on), "seconds": round(time.perf_counter() - started, 1),
                     **dev_scores(dev_names, predicted)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    damped_choices = [row for row in rows if READINGS[row["reading"]][1]]
    best = max(damped_choices, key=lambda row: row["cv_macro_f1"])
    rows.append({**best, "reading": SEARCH, "searched_to": best["reading"],
                 "seconds": round(sum(row["seconds"] for row in damped_choices), 1)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tfidf", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=sorted(DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": [], "rows": []}
    command = "python -m benchmarks.tfidf " + " ".join(argv if argv is not None else sys.argv[1:])
    results["runs"].append({"command": command.strip(), "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                            "dev_rows": args.dev_rows})
    for name in args.datasets:
        for seed in range(args.seeds):
            new = run_seed(name, seed, args.dev_rows, args.data)
            keys = {(row["dataset"], row["seed"], row["reading"]) for row in new}
            results["rows"] = [row for row in results["rows"]
                               if (row["dataset"], row["seed"], row["reading"]) not in keys] + new
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # after every seed: a long run can stop
    return results


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: per dataset, each reading's mean dev scores and median seconds."""
    if not results:
        return []
    lines = ["## How auto's TF-IDF learner reads texts (n-grams, damped term counts)", "",
             "Protocol in `benchmarks/tfidf.py`; `benchmarks/results/tfidf.json`. Dev rows: other rows of the "
             "training split (cfpb: May-June), never the test split. C chosen by cross-validation on the rows auto "
             "chooses on, the model fitted on every training row. `raw`: term counts not damped; `search`: the "
             "damped n-gram choice with the best cross-validated macro-F1. Runs: "
             + "; ".join(f"`{run['command']}` ({run['date']}, {run['machine']['cores']} cores)"
                         for run in results["runs"]) + ".", ""]
    for dataset in dict.fromkeys(row["dataset"] for row in results["rows"]):
        metric = PRIMARY_METRIC.get(dataset, "accuracy")
        mine = [row for row in results["rows"] if row["dataset"] == dataset]
        lines += [f"### {dataset}", "",
                  f"| reading | dev {metric} (mean) | sd | dev macro-F1 (mean) | seconds (median) | seeds |",
                  "|---|---|---|---|---|---|"]
        for reading in [*READINGS, SEARCH]:
            rows = [row for row in mine if row["reading"] == reading]
            if not rows:
                continue
            values = [100 * row[metric] for row in rows]
            spread = f"{statistics.stdev(values):.1f}" if len(values) > 1 else "-"
            lines.append(f"| {reading} | {statistics.mean(values):.1f} | {spread} | "
                         f"{statistics.mean(100 * row['macro_f1'] for row in rows):.1f} | "
                         f"{statistics.median(row['seconds'] for row in rows):.0f} | {len(rows)} |")
        searched = [row["searched_to"] for row in mine if row["reading"] == SEARCH]
        if searched:
            counts = {choice: searched.count(choice) for choice in dict.fromkeys(searched)}
            lines += ["", "search chose " + ", ".join(f"{choice} ({n} of {len(searched)} seeds)"
                                                      for choice, n in counts.items()) + "."]
        lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    main()
