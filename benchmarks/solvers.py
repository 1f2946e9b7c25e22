"""Benchmark: which solver fits auto's fast learners' logistic regressions (tasks.learners.solver_for).

    python -m benchmarks.solvers [--datasets D ...] [--seed 0] [--dev-rows 2000] [--data DIR]

Both learners minimise the same strictly convex loss (class-weighted cross-entropy plus an L2 penalty), so their
optimum is unique and a solver can only be faster or slower, closer to it or further. For each dataset (training
and dev rows as benchmarks.choice's rows_for: dev rows from the published training split, never the test split;
cfpb's are its last training months), each learner's features (TF-IDF n-grams as auto's learner reads them; the
backbone's unit-length sentence vectors) and each C of tasks.learners.C_GRID, every solver fits every training
row once, with the learners' settings (max_iter 3000, scikit-learn's default tolerance). The reference is lbfgs
at a tolerance of 1e-10: the optimum. Recorded per fit: seconds, the largest gap of a dev row's probability
to the reference's, and the share of dev rows whose label it predicts as the reference does. A solver is
auto's where it is both closer and faster."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.choice import rows_for
from benchmarks.quality import RESULTS, machine
from benchmarks.sources import add_data_option

OUT = RESULTS / "solvers.json"
DATASETS = ["banking77_k8", "banking77_k64", "amazon_counterfactual_en_k64", "cfpb_payday_2023"]
SOLVERS = ("lbfgs", "newton-cg")
REFERENCE_TOL = 1e-10


def learner_features(kind: str, texts: list[str], dev: list[str]):
    from tasks import learners
    from tasks.model import backbone_path, resolve_device, sentence_vectors
    from tasks.portfolio import unit_rows

    if kind == "tfidf":
        return learners._tfidf_features(texts, dev)[1:]
    device = resolve_device("cpu", "fp32")
    return tuple(unit_rows(sentence_vectors(backbone_path("minilm"), part, device)) for part in (texts, dev))


def run_dataset(name: str, seed: int, dev_count: int, data: Path) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from tasks import learners

    train, dev = rows_for(name, seed, dev_count, data)
    labels = train["label"].astype(str).to_numpy()
    rows = []
    for kind in ("tfidf", "embedding"):
        fit_x, dev_x = learner_features(kind, train["text"].astype(str).tolist(), dev["text"].astype(str).tolist())
        for C in learners.C_GRID:
            with threadpool_limits(limits=learners.BLAS_THREADS, user_api="blas"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a reference that stops at max_iter is reported by its gap
                exact = LogisticRegression(C=C, class_weight="balanced", max_iter=20000,
                                           tol=REFERENCE_TOL).fit(fit_x, labels)
                reference = exact.predict_proba(dev_x)
                for solver in SOLVERS:
                    started = time.perf_counter()
                    fitted = learners._logistic(C, solver).fit(fit_x, labels)
                    seconds = time.perf_counter() - started
                    probs = fitted.predict_proba(dev_x)
                    rows.append({"dataset": name, "learner": kind, "C": C, "solver": solver,
                                 "seconds": round(seconds, 3), "iterations": int(np.max(fitted.n_iter_)),
                                 "max_probability_gap": round(float(np.abs(probs - reference).max()), 4),
                                 "same_label": round(float((probs.argmax(1) == reference.argmax(1)).mean()), 4),
                                 "features": int(fit_x.shape[1]), "rows": len(labels)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.solvers", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    rows = [row for name in args.datasets for row in run_dataset(name, args.seed, args.dev_rows, args.data)]
    summary = {"command": " ".join(["python -m benchmarks.solvers", *(argv if argv is not None else sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "seed": args.seed,
               "dev_rows": args.dev_rows, "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def section(results: dict | None) -> list[str]:
    """A line per dataset, learner and C: each solver's seconds and its gap to the optimum on the dev rows."""
    if not results:
        return []
    where = f"{results['machine']['arch']}, {results['machine']['cores']} cores"
    lines = ["## The fast learners' solver", "",
             f"`{results['command']}` ({results['date']}, {where}, one BLAS thread as the learners fit); "
             "`benchmarks/results/solvers.json`; protocol in `benchmarks/solvers.py`. Each fit on every training "
             "row; the gap and agreement are to the exact optimum (lbfgs at tolerance 1e-10) on the dev rows.", "",
             "| dataset | learner | C | " + " | ".join(f"{s} s | {s} gap | {s} same label" for s in SOLVERS) + " |",
             "|---|---|---|" + "---|---|---|" * len(SOLVERS)]
    fits = {}
    for row in results["rows"]:
        fits.setdefault((row["dataset"], row["learner"], row["C"]), {})[row["solver"]] = row
    for (dataset, learner, C), by_solver in fits.items():
        cells = " | ".join(f"{by_solver[s]['seconds']:.2f} | {by_solver[s]['max_probability_gap']:.4f} | "
                           f"{by_solver[s]['same_label'] * 100:.1f}%" for s in SOLVERS if s in by_solver)
        lines.append(f"| {dataset} | {learner} | {C:g} | {cells} |")
    lines.append("")
    for learner in dict.fromkeys(key[1] for key in fits):
        mine = [by_solver for key, by_solver in fits.items() if key[1] == learner and set(SOLVERS) <= set(by_solver)]
        totals = {s: sum(by_solver[s]["seconds"] for by_solver in mine) for s in SOLVERS}
        closer = sum(by_solver["newton-cg"]["max_probability_gap"] <= by_solver["lbfgs"]["max_probability_gap"]
                     for by_solver in mine)
        lines.append(f"{learner}: every fit above took {totals['lbfgs']:.1f} s with lbfgs and "
                     f"{totals['newton-cg']:.1f} s with newton-cg ({totals['lbfgs'] / totals['newton-cg']:.1f}x); "
                     f"newton-cg was as close to the optimum or closer in {closer} of {len(mine)} fits.")
        lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
