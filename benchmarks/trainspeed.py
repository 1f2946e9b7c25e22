"""Benchmark: training speed on this machine's device, two choices measured side by side in one process: AdamW's
per-tensor update against its fused kernel for the fine-tuned network (tasks.training.FUSED_ADAMW), and the fast
learners' cross-validated search in this process or in worker processes (tasks.learners.CV_WORKERS), its fits on
OpenBLAS's default threads or on one (tasks.learners.BLAS_THREADS).

    python -m benchmarks.trainspeed [--k 13] [--epochs 1] [--repeats 3] [--data DIR]

Rows: k per intent of banking77's training split (seed 0; 13 is the size of an active-learning round near 1,000
labels).
- Fine-tuning: strategy `full` (auto's fine-tuned candidate) with params.yaml's finetune section, without a
  validation share or a work dir (no checkpoints), for `--epochs` epochs; samples per second as the run reports
  it. Both make the same update, so their last training losses agree to rounding (kept beside the speeds).
- Fast learners: `tasks.learners.fit_tfidf` and `fit_embedding` (on the base backbone's sentence vectors, computed
  once beforehand with torch, as auto does), each with its search of C by stratified folds; seconds, and the C
  each chose (the same either way).
One untimed warm-up of each setting first, then the settings alternate `--repeats` times; figures are medians."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.quality import RESULTS, few_shot, machine, read_banking77, strategy_params
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "trainspeed.json"
UPDATES = {"per-tensor": False, "fused": True}
# folds run, and the BLAS threads of each logistic regression fit (None: OpenBLAS's own count, every core)
SEARCHES = {"in this process, BLAS default threads": (False, None), "in this process, one BLAS thread": (False, 1),
            "in worker processes, one BLAS thread": (True, 1)}


def fine_tune(train, epochs: int, fused: bool) -> dict:
    from tasks import training

    training.FUSED_ADAMW = fused
    cfg = strategy_params("full", {"epochs": epochs, "validation_fraction": 0.0})
    with tempfile.TemporaryDirectory() as out:
        result = training.train_strategy(train, cfg, 0, Path(out))
    return {"samples_per_second": result.samples_per_second, "last_loss": result.losses[-1]}


def fast_learners(texts: list[str], labels: list[str], vectors, setting: tuple[bool, int | None]) -> dict:
    from tasks import learners

    learners.CV_WORKERS, learners.BLAS_THREADS = setting
    timed = {}
    for name, fit in (("tfidf", lambda: learners.fit_tfidf(texts, labels, 0)),
                      ("embedding", lambda: learners.fit_embedding(vectors, labels, 0))):
        started = time.perf_counter()
        learner = fit()
        timed[name] = {"seconds": time.perf_counter() - started, "C": learner.settings["C"]}
    return timed


def main(argv: list[str] | None = None) -> dict:
    from tasks.model import backbone_path, resolve_device, sentence_vectors
    from tasks.portfolio import unit_rows

    parser = argparse.ArgumentParser(prog="python -m benchmarks.trainspeed", description=__doc__)
    parser.add_argument("--k", type=int, default=13)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    train = few_shot(read_banking77, args.k, dataset_dir(args.data, "banking77"), 0).train[["text", "label"]]
    texts, labels = train["text"].astype(str).tolist(), train["label"].astype(str).tolist()
    vectors = unit_rows(sentence_vectors(backbone_path("minilm"), texts, resolve_device("auto")))
    for fused in UPDATES.values():  # warm-up: first imports, allocator, thread pools, worker processes
        fine_tune(train, 1, fused)
    for setting in SEARCHES.values():
        fast_learners(texts, labels, vectors, setting)
    updates, searches = {name: [] for name in UPDATES}, {name: [] for name in SEARCHES}
    for _ in range(args.repeats):
        for name, fused in UPDATES.items():
            updates[name].append(fine_tune(train, args.epochs, fused))
        for name, setting in SEARCHES.items():
            searches[name].append(fast_learners(texts, labels, vectors, setting))
    summary = {"command": " ".join(["python -m benchmarks.trainspeed", *(argv if argv is not None else sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d"), "machine": machine(), "k": args.k, "rows": len(train),
               "epochs": args.epochs, "updates": updates, "searches": searches}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(section(summary)))
    return summary


def section(results: dict | None) -> list[str]:
    if not results:
        return []
    where = results["machine"]["gpu"] or f"{results['machine']['arch']}, {results['machine']['cores']} cores"
    lines = ["## Training speed on the CPU: AdamW's update, the fast learners' search (trainspeed)", "",
             f"`{results['command']}` ({results['date']}, {where}); `benchmarks/results/trainspeed.json`; protocol "
             f"in `benchmarks/trainspeed.py`. {results['rows']:,} rows of banking77 ({results['k']} per intent); the "
             "settings alternate in one process; medians.", "",
             f"Fine-tuning (`full`, {results['epochs']} epoch a run):", "",
             "| AdamW update | samples/s | runs | last training loss of each run |", "|---|---|---|---|"]
    speed = {}
    for name, runs in results["updates"].items():
        speed[name] = statistics.median(run["samples_per_second"] for run in runs)
        losses = ", ".join(f"{run['last_loss']:.4f}" for run in runs)
        lines.append(f"| {name} | {speed[name]:.1f} | {len(runs)} | {losses} |")
    lines += ["", f"Fused / per-tensor: {speed['fused'] / speed['per-tensor']:.2f}x the samples per second.", "",
              "The fast learners, each with its search of C by stratified folds:", "",
              "| folds run | TF-IDF s | C | sentence vectors s | C |", "|---|---|---|---|---|"]
    seconds, choices = {}, set()
    for name, runs in results["searches"].items():
        seconds[name] = {kind: statistics.median(run[kind]["seconds"] for run in runs)
                         for kind in ("tfidf", "embedding")}
        chosen = {kind: sorted({run[kind]["C"] for run in runs}) for kind in ("tfidf", "embedding")}
        choices.add(json.dumps(chosen))
        lines.append(f"| {name} | {seconds[name]['tfidf']:.1f} | {', '.join(f'{c:g}' for c in chosen['tfidf'])} | "
                     f"{seconds[name]['embedding']:.1f} | {', '.join(f'{c:g}' for c in chosen['embedding'])} |")
    before, after = seconds[next(iter(SEARCHES))], seconds[list(SEARCHES)[-1]]
    lines += ["", f"The default (the last row) against the first: TF-IDF {before['tfidf'] / after['tfidf']:.1f}x as "
              f"fast, sentence vectors {before['embedding'] / after['embedding']:.1f}x"
              + (", with the same choices of C." if len(choices) == 1 else "; the choices of C differ."),
              ""]
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
