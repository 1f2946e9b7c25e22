"""Benchmark: how strategy `auto` should weigh its candidates when labels are few, measured on training-side rows.

    python -m benchmarks.choice [--dataset amazon_counterfactual_en_k8] [--seeds 10] [--dev-rows 1000] [--out FILE]

For each seed, the training rows are the quality bench's (benchmarks.quality.few_shot: k rows per class from the
published training split). The dev rows are other rows of that same training split (never the test split), drawn
with the seed: they stand in for the future texts a user's model meets, and are where the choice rule is judged.
cfpb_payday_2023 has no such rows: its training rows are January-April 2023 and its dev rows May-June (rows_for).
Each candidate of params.yaml's `finetune.candidates` is scored out-of-fold on the training rows exactly as `auto`
scores it (tasks.auto.Candidates, under `finetune.time_budget`: one it leaves out on this machine is left out
here too), then fitted on every training row and run on the dev rows. Rules compared:
- grid/<metric>: the weights on the grid of tenths with the best out-of-fold <metric>;
- grid/log_loss: the weights with the lowest out-of-fold log loss;
- equal: every candidate with the same weight, whatever the out-of-fold scores say;
- best_single: the one candidate with the best out-of-fold <metric>;
- shrunk: half the grid's weights, half equal weights;
- evidence: the grid's weights when their out-of-fold <metric> beats the first candidate alone beyond noise (paired
  bootstrap, tasks.auto.choose_with_evidence), else the first candidate alone;
- evidence/equal: the same test with equal weights in place of the grid's;
- rows/equal: equal weights, whose burden of proof depends on the validation rows (tasks.auto.choose_equal): on
  fewer than tasks.auto.MIN_HELD_ROWS they must beat the first candidate beyond noise, on more the first candidate
  must beat them beyond noise to be kept alone;
- pruned/equal: rows/equal without the candidates the first one beats beyond noise (tasks.auto.prune);
- rows/shrunk: on fewer than tasks.auto.MIN_HELD_ROWS validation rows evidence/equal, on more `shrunk`, with no
  test (tasks.auto.choose_shrunk);
- pruned/shrunk: rows/shrunk without the candidates the first one beats beyond noise;
- few/shrunk: rows/shrunk, but on fewer than tasks.auto.FEW_ROWS validation rows the first candidate alone, with no
  test;
- scaled: few/shrunk, but from tasks.auto.MIN_HELD_ROWS validation rows on, the grid's weights shrunk towards
  equal ones by the share MIN_HELD_ROWS / rows (all the way at 60 rows, half at 120, a seventh at cfpb's 434;
  auto's rule);
- first: the first candidate alone;
- evidence/subsets: the same test with the best equally weighed subset of the candidates (tasks.auto.choose_subset);
  evidence80/subsets, evidence60/subsets: the same at lower confidence (SUBSET_LEVELS); subsets: no test at all.
The fine-tuned candidate is also trained with AVERAGED seeds (its probabilities averaged), to measure what
averaging buys against its time; rules then read `+avg`. The rule with the best mean dev score becomes auto's,
unless it is within NOISE of auto's rule, TODAY (no change without evidence); a rule must hold on every dataset
measured (the adopted rule and why: the `notes` of the results file, shown under the tables)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.quality import DATASETS, PRIMARY_METRIC, RESULTS, load_split, machine, strategy_params
from benchmarks.sources import add_data_option, dataset_dir

OUT = RESULTS / "choice.json"
AVERAGED = 3  # seeds of the fine-tuned candidate averaged
NOISE = 0.01  # mean dev score a rule must gain over auto's to replace it
SUBSET_LEVELS = (0.95, 0.8, 0.6)  # confidence of the interval whose lower end must clear 0 (one-sided 97.5, 90, 80%)


DEV_FROM = "2023-05"  # cfpb_payday_2023: the training months from May on are its dev rows (see rows_for)


def rows_for(name: str, seed: int, dev_count: int, data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and dev rows of `seed`. cfpb has no rows outside its training months to spare, and its test
    months come after them, so its dev rows are the last training months (May and June 2023, every row) and its
    training rows the months before: a later period, as a user's model meets it."""
    train = load_split(name, seed, data).train
    if name == "cfpb_payday_2023":
        later = train["date_received"].str[:7] >= DEV_FROM
        return train[~later].reset_index(drop=True), train[later].reset_index(drop=True)
    return train, dev_rows(name, seed, train, dev_count, data)


def dev_rows(name: str, seed: int, train: pd.DataFrame, rows: int, data: Path) -> pd.DataFrame:
    """`rows` rows of the dataset's published training split that are not training rows for `seed`."""
    dataset = DATASETS[name]
    read = dataset.split.args[0]  # functools.partial(few_shot, read, k): the reader of the published splits
    pool = read(dataset_dir(data, dataset.folder)).train
    pool = pool[~pool["text"].isin(set(train["text"]))]
    return pool.sample(n=min(rows, len(pool)), random_state=seed).reset_index(drop=True)


def member_dev_probs(candidates, name: str, dev: list[str], seeds: list[int], folder: Path) -> list[np.ndarray]:
    """Candidate `name` fitted on every training row (a fine-tuning strategy once per seed), its dev probabilities."""
    from tasks import learners
    from tasks.model import Classifier
    from tasks.portfolio import aligned, unit_rows
    from tasks.training import train_strategy

    if name == "tfidf":
        learner = learners.fit_tfidf(candidates.texts, candidates.names, candidates.seed)
        return [aligned(learner.predict_proba(dev), learner.labels, candidates.labels)]
    if name == "embedding":
        from tasks.model import backbone_path, sentence_vectors

        cfg = candidates.cfg
        learner = learners.fit_embedding(candidates.sentence_vectors(), candidates.names, candidates.seed)
        vectors = unit_rows(sentence_vectors(backbone_path(cfg.backbone), dev, candidates.device,
                                             max_length=cfg.max_length, truncation=cfg.truncation))
        return [aligned(learner.predict_proba(vectors=vectors), learner.labels, candidates.labels)]
    out = []
    for seed in seeds:
        cfg = candidates.cfg.model_copy(update={"strategy": name, "validation_fraction": 0.0})
        model_dir = train_strategy(candidates.train, cfg, seed, folder / f"{name}-{seed}", None).model_dir
        classifier = Classifier(model_dir, candidates.device)
        out.append(aligned(classifier.predict_proba(dev), classifier.labels, candidates.labels))
    return out


def rules(held: dict[str, np.ndarray], targets: np.ndarray, metric: str) -> dict[str, dict[str, float]]:
    """Each rule's weights, from the out-of-fold probabilities `held`."""
    from tasks.auto import (FEW_ROWS, choose, choose_equal, choose_shrunk, choose_subset,
                            choose_with_evidence, prune, score, weight_grid)
    from tasks.calibration import log_loss

    names = list(held)
    grid, _ = choose(held, targets, metric)
    by_loss = min(weight_grid(len(names)),
                  key=lambda w: log_loss(sum(x * held[n] for x, n in zip(w, names)), targets))
    single = max(names, key=lambda n: (score(held[n], targets, metric), -log_loss(held[n], targets)))
    equal = {name: 1 / len(names) for name in names}
    evidence, _ = choose_with_evidence(held, targets, metric, seed=0)
    evidence_equal, _ = choose_with_evidence(held, targets, metric, seed=0, mixtures="equal")
    by_rows, _ = choose_equal(held, targets, metric, seed=0)
    pruned, _ = choose_equal(prune(held, targets, metric, seed=0), targets, metric, seed=0)
    shrunk_by_rows, _ = choose_shrunk(held, targets, metric, seed=0)
    first = {names[0]: 1.0}
    few_shrunk, _ = choose_shrunk(held, targets, metric, seed=0, few_rows=FEW_ROWS)
    scaled, _ = choose_shrunk(held, targets, metric, seed=0, few_rows=FEW_ROWS, scaled=True)
    pruned_shrunk, _ = choose_shrunk(prune(held, targets, metric, seed=0), targets, metric, seed=0)
    subsets = {f"evidence{'' if level == 0.95 else round(level * 100)}/subsets":
               choose_with_evidence(held, targets, metric, seed=0, mixtures="subsets", confidence=level)[0]
               for level in SUBSET_LEVELS}
    return {f"grid/{metric}": grid, "evidence": evidence, "evidence/equal": evidence_equal, "rows/equal": by_rows,
            "pruned/equal": pruned, "rows/shrunk": shrunk_by_rows,
            "few/shrunk": few_shrunk, "scaled": scaled, "pruned/shrunk": pruned_shrunk, "first": first, **subsets,
            "subsets": choose_subset(held, targets, metric)[0], "grid/log_loss": dict(zip(names, by_loss)),
            "equal": equal, "best_single": {single: 1.0},
            "shrunk": choose_shrunk(held, targets, metric, seed=0, min_rows=0)[0]}


def scores(truth: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    predicted = probs.argmax(axis=1)
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "mcc": float(matthews_corrcoef(truth, predicted))}


def run_seed(name: str, seed: int, dev_count: int, data: Path, averaged: int = AVERAGED) -> dict:
    from tasks.auto import Candidates
    from tasks.config import LEARNERS

    cfg = strategy_params("auto", {"cache_features": False})
    train, dev = rows_for(name, seed, dev_count, data)
    with tempfile.TemporaryDirectory(prefix="choice-") as folder:
        candidates = Candidates(train, cfg, seed, Path(folder), None)
        started = time.perf_counter()
        for candidate in cfg.candidates:  # under finetune.time_budget, as auto trains them on this machine
            spent = time.perf_counter() - started
            candidates.train_one(candidate, None if cfg.time_budget is None else cfg.time_budget * 60 - spent)
        codes = {label: code for code, label in enumerate(candidates.labels)}  # -1: a label new in the dev rows
        truth = np.array([codes.get(label, -1) for label in dev["label"].astype(str)])
        kept = list(candidates.probs)  # without any left out by the time budget
        tuned = [c for c in kept if c not in LEARNERS]
        dev_probs, seconds = {}, {}
        for candidate in kept:
            started = time.perf_counter()
            seeds = [seed + 1000 * i for i in range(averaged)] if candidate in tuned else [seed]
            dev_probs[candidate] = member_dev_probs(candidates, candidate, dev["text"].astype(str).tolist(), seeds,
                                                    Path(folder))
            seconds[candidate] = (time.perf_counter() - started) / len(seeds)
    out = {"seed": seed, "train_rows": len(train), "dev_rows": len(dev), "folds": len(candidates.folds),
           "left_out": [c["name"] for c in candidates.report if "left_out" in c],
           "member_seconds": seconds, "candidates": {}, "rules": {}}
    for candidate, probs in dev_probs.items():
        out["candidates"][candidate] = scores(truth, probs[0])
        if len(probs) > 1:
            out["candidates"][f"{candidate}+avg"] = scores(truth, np.mean(probs, axis=0))
    for mean_of_seeds in (False, True) if tuned and averaged > 1 else (False,):
        member = {c: (np.mean(p, axis=0) if mean_of_seeds else p[0]) for c, p in dev_probs.items()}
        for rule, weights in rules(candidates.probs, candidates.targets, cfg.choice_metric).items():
            mixed = sum(w * member[c] for c, w in weights.items() if w > 0)
            key = rule + ("+avg" if mean_of_seeds else "")
            out["rules"][key] = {**scores(truth, mixed), "weights": {c: round(w, 3) for c, w in weights.items() if w}}
    return out


def summarise(runs: list[dict], metric: str) -> dict:
    names = list(runs[0]["rules"])
    table = {name: {m: float(np.mean([r["rules"][name][m] for r in runs])) for m in ("accuracy", "macro_f1", "mcc")}
             for name in names}
    for name in names:
        table[name]["sd_" + metric] = float(np.std([r["rules"][name][metric] for r in runs], ddof=1))
    return table


def decide(table: dict, metric: str) -> str:
    """The best rule on these dev rows, against auto's (TODAY)."""
    today = TODAY
    best = max((name for name in table if not name.endswith("+avg")), key=lambda n: table[n][metric])
    if today not in table:
        return f"{best}; auto's rule, {today}, was not run on these rows"
    if table[best][metric] - table[today][metric] < NOISE:
        return f"{today} (auto's): no rule gains {NOISE:.2f} {metric} over it on these dev rows"
    return f"{best}: {table[best][metric] - table[today][metric]:+.3f} {metric} over {today} on these dev rows"


TODAY = "scaled"  # auto's rule (tasks.auto.train_auto), which another must beat by NOISE to replace


RULES = {"evidence": "grid if beyond noise of the first candidate, else it alone",
         "evidence/equal": "equal weights if beyond noise of the first candidate, else it alone",
         "rows/equal": "equal weights: on few validation rows only if beyond noise of the first candidate, on "
                       "more unless the first candidate beats them beyond noise",
         "pruned/equal": "the same, without the candidates the first beats beyond noise",
         "rows/shrunk": "on few validation rows equal weights if beyond noise of the first candidate, else it "
                        "alone; on more half grid, half equal",
         "few/shrunk": "on fewer than tasks.auto.FEW_ROWS validation rows the first candidate alone; up to "
                       "tasks.auto.MIN_HELD_ROWS equal weights if beyond noise of it, else it alone; on more half "
                       "grid, half equal",
         "scaled": "as few/shrunk, but from tasks.auto.MIN_HELD_ROWS validation rows on the grid shrunk towards "
                   "equal weights by MIN_HELD_ROWS / rows",
         "pruned/shrunk": "on few validation rows equal weights if beyond noise of the first candidate, on more half "
                          "grid, half equal, without the candidates the first beats beyond noise",
         "first": "the first candidate alone",
         "evidence/subsets": "best equally weighed subset if beyond noise of the first candidate, else it alone",
         "evidence80/subsets": "the same at 80% confidence (one-sided 90%)",
         "evidence60/subsets": "the same at 60% confidence (one-sided 80%)",
         "subsets": "best equally weighed subset",
         "equal": "equal weights", "best_single": "best single candidate", "shrunk": "half grid, half equal",
         "grid/log_loss": "grid, lowest log loss"}


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: per dataset, each rule's mean dev scores, then each candidate alone."""
    if not results:
        return []
    lines = ["## How `auto` weighs its candidates when labels are few", "",
             "Protocol in `benchmarks/choice.py`; `benchmarks/results/choice.json`. Training rows: the quality "
             "bench's for each seed; dev rows: other rows of the published training split (never the test split), "
             "where the rule is judged. Each rule weighs the candidates from their out-of-fold scores on the "
             "training rows; `+avg`: the fine-tuned candidate trained with that many seeds, probabilities averaged. "
             "Mean over seeds (sd of the dataset's metric).", ""]
    notes = results.get("notes", [])
    for name, r in results.items():
        if name == "notes":
            continue
        metric = r["metric"]
        lines += [f"### {name}: {len(r['runs'])} seeds, {r['runs'][0]['dev_rows']} dev rows", "",
                  f"`{r['command']}`, {r['date']}, {r['machine']['cores']} cores. "
                  f"Best on these rows: {decide(r['table'], metric)}.",
                  ""]
        also = [m for m in ("accuracy", "macro_f1") if m != metric]  # the other scores, beside the metric's
        lines += [f"| rule | dev {metric} | sd | " + " | ".join(f"dev {m.replace('_f1', '-F1')}" for m in also) + " |",
                  "|---|---|---|" + "---|" * len(also)]
        for rule, scores_ in r["table"].items():
            base = rule.removesuffix("+avg")
            label = RULES.get(base, f"grid, best {base.partition('/')[2]}") + (" (auto's)" if base == TODAY else "") \
                + rule[len(base):]
            lines.append(f"| {label} | {100 * scores_[metric]:.1f} | {100 * scores_['sd_' + metric]:.1f} | "
                         + " | ".join(f"{100 * scores_[m]:.1f}" for m in also) + " |")
        alone = {c for run in r["runs"] for c in run["candidates"]}
        lines += ["", f"| candidate alone | dev {metric} | train s (one seed) |", "|---|---|---|"]
        for candidate in sorted(alone):
            mean = np.mean([run["candidates"][candidate][metric] for run in r["runs"]])
            seconds = np.mean([run["member_seconds"][candidate.removesuffix("+avg")] for run in r["runs"]])
            lines.append(f"| {candidate} | {100 * mean:.1f} | {seconds:.1f} |")
        lines.append("")
    return lines + [line for note in notes for line in (note, "")]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.choice", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon_counterfactual_en_k8", choices=sorted(DATASETS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--dev-rows", type=int, default=1000)
    parser.add_argument("--averaged", type=int, default=AVERAGED, help="seeds of the fine-tuned candidate averaged")
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    metric = PRIMARY_METRIC.get(args.dataset, "accuracy")
    started = datetime.now(timezone.utc)
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(args.dataset, seed, args.dev_rows, args.data, args.averaged))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[metric]:.3f}" for k, v in runs[-1]["rules"].items()),
              file=sys.stderr, flush=True)
    table = summarise(runs, metric)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.dataset] = {
        "command": "python -m benchmarks.choice " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": started.date().isoformat(), "machine": machine(), "metric": metric, "averaged_seeds": args.averaged,
        "table": table, "decision": decide(table, metric), "runs": runs}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
