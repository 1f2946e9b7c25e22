"""Benchmark: what the unlabeled texts are worth, judged on dev rows: self-training's threshold and rounds, and
domain adaptation's objective.

    python -m benchmarks.selftrain --dataset amazon_counterfactual_en_k8 [--seeds 16] [--dev-rows 1000]
        [--settings off 0.9/1/1 0.7/2/2 tsdae mlm+0.7/2/2 ...] [--candidates tfidf] [--data DIR]

For each seed, the labeled and dev rows are the choice bench's (benchmarks.choice.rows_for: other rows of the
training split, never the test split), and the unlabeled pool is the rest of the training split without its
labels, as in the quality bench's `+self` rows, less the dev texts. Each setting `threshold/rounds/max_per_class`
trains params.yaml's `auto` with that self-training on the pool (benchmarks.quality.nichetune); an objective
(`mlm`, `tsdae`, `simcse`) trains it from the backbone adapted with params.yaml's adapt settings on the pool and
the labeled rows' texts (adapt.corpus; the dev texts stay out, as a holdout's do); `objective+t/r/c` does both;
`off` trains it on the labeled rows alone. Every setting is scored on the dev rows with the dataset's primary metric
(benchmarks.quality.PRIMARY_METRIC). `--candidates` cuts auto's portfolio: under tasks.auto.FEW_ROWS validation
rows auto keeps its first candidate alone, so there `--candidates tfidf` trains the same model in seconds instead
of minutes; on more rows it measures a smaller portfolio than the product's."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NoReturn

from benchmarks.choice import rows_for
from benchmarks.quality import (PRIMARY_METRIC, RESULTS, SELF_ROUNDS, load_split, machine, metrics, nichetune,
                                strategy_params, unlabeled_settings)
from benchmarks.sources import DEFAULT_DATA, add_data_option

OUT = RESULTS / "selftrain.json"
SETTINGS = ("off", "0.9/1/1", "0.9/3/2", "0.7/1/2", "0.7/2/2", "0.7/3/2", "0.7/3/1")
OBJECTIVES = ("mlm", "tsdae", "simcse")


def parse(setting: str):
    """`off`, or `threshold/rounds/max_per_class` as a SelfTrainingParams."""
    from tasks.config import SelfTrainingParams

    if setting == "off":
        return None
    try:
        threshold, rounds, cap = setting.split("/")
        return SelfTrainingParams(threshold=float(threshold), rounds=int(rounds), max_per_class=float(cap))
    except ValueError:
        refuse(setting)


def parse_setting(setting: str) -> tuple[str, object]:
    """A setting as (adapt objective or none, SelfTrainingParams or None): `off`, `threshold/rounds/max_per_class`,
    an objective, or `objective+threshold/rounds/max_per_class`."""
    objective, plus, rounds = setting.partition("+")
    if not plus:
        objective, rounds = (setting, "off") if setting in OBJECTIVES else ("none", setting)
    elif objective not in OBJECTIVES or rounds == "off":
        refuse(setting)
    return objective, parse(rounds)


def refuse(setting: str) -> NoReturn:
    raise SystemExit(f"--settings {setting}: write off, threshold/rounds/max_per_class (for example 0.7/2/2), an "
                     f"objective ({', '.join(OBJECTIVES)}) or both (tsdae+0.7/2/2)") from None


def setting_name(rounds) -> str:
    """A setting's name in the results: `threshold/rounds/max_per_class`."""
    return f"{rounds.threshold:g}/{rounds.rounds}/{rounds.max_per_class:g}"


def run_seed(name: str, seed: int, dev_count: int, settings: list[str], candidates: list[str] | None,
             data: Path) -> dict:
    train, dev = rows_for(name, seed, dev_count, data)
    taken = set(dev["text"]) | set(train["text"])
    pool = tuple(text for text in load_split(name, seed, data).pool if text not in taken)
    params = strategy_params("auto", {"candidates": candidates} if candidates else None)
    metric, majority = PRIMARY_METRIC.get(name, "accuracy"), train["label"].value_counts().idxmax()
    out = {"seed": seed, "pool": len(pool), "labeled": len(train), "dev": len(dev), "scores": {},
           "pseudo_labels": {}}
    for setting in settings:
        objective, rounds = parse_setting(setting)
        if objective == "none" and rounds is None:
            run = nichetune(train, dev, seed, params=params)
        else:
            uses = [objective] * (objective != "none") + ["self"] * (rounds is not None)
            setting = "+".join([objective] * (objective != "none") + [setting_name(rounds)] * (rounds is not None))
            unlabeled = unlabeled_settings(uses)
            run = nichetune(train, dev, seed, params=params, pool=pool,
                            unlabeled={**unlabeled, "self_training": rounds or unlabeled["self_training"]})
            if rounds is not None:
                out["pseudo_labels"][setting] = run.pseudo_labels
        out["scores"][setting] = round(metrics(dev["label"].tolist(), run.predictions, majority)[metric], 4)
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon_counterfactual_en_k8")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--dev-rows", type=int, default=1000)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--candidates", nargs="+", help="auto's candidates (default: params.yaml's)")
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    for setting in args.settings:
        parse_setting(setting)  # a mistyped setting fails before the first seed trains
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    runs = [run_seed(args.dataset, seed, args.dev_rows, args.settings, args.candidates, args.data or DEFAULT_DATA)
            for seed in range(args.seeds)]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    given = argv if argv is not None else sys.argv[1:]
    results[args.dataset] = {"command": " ".join(["python -m benchmarks.selftrain", *given]),
                             "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                             "metric": PRIMARY_METRIC.get(args.dataset, "accuracy"), "runs": runs}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def bench_setting() -> str:
    """What the quality bench's `+self` rows train with: params.yaml's self_training section (SELF_ROUNDS rounds
    where it leaves self-training off)."""
    return setting_name(unlabeled_settings(["self"])["self_training"])


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: per dataset and setting, the dev score and its difference from the labeled
    rows alone, seed by seed."""
    if not results:
        return []
    today = bench_setting()
    lines = ["## Unlabeled texts on dev rows: self-training's threshold and rounds, adaptation's objective", "",
             "Protocol in `benchmarks/selftrain.py`; `benchmarks/results/selftrain.json`. A self-training setting is "
             "the calibrated probability a pseudo-label needs / the rounds of pseudo-labeling and training again / "
             "max_per_class (round r keeps at most r x max_per_class x a class's labeled rows); an objective (mlm, "
             "tsdae, simcse) is domain adaptation with params.yaml's adapt settings on the pool and the labeled "
             "rows' texts. Dev rows are training-split rows no model saw; the pool is the rest of the training "
             f"split. The quality bench's `+self` rows train with {today} "
             f"(params.yaml's self_training section, with {SELF_ROUNDS} rounds where it leaves self-training off).", ""]
    for name, table in results.items():
        if name == "notes":
            continue
        runs, metric = table["runs"], table["metric"]
        rows = f", {runs[0]['labeled']:,} labeled and {runs[0]['dev']:,} dev rows" if "labeled" in runs[0] else ""
        lines += [f"### {name}: {len(runs)} seed{'s' * (len(runs) != 1)}, pools of {runs[0]['pool']:,} texts{rows}", "",
                  f"`{table['command']}`, {table['date']}, {table['machine']['cores']} cores.", "",
                  f"| setting | dev {metric} % | minus off, mean ± sd | seeds better / worse | "
                  "seeds with a pseudo-label | pseudo-labels per seed |",
                  "|---|---|---|---|---|---|"]
        for setting in runs[0]["scores"]:
            scores = [run["scores"][setting] for run in runs]
            gains = [run["scores"][setting] - run["scores"].get("off", run["scores"][setting]) for run in runs]
            added = [sum(run["pseudo_labels"].get(setting) or []) for run in runs]
            label = setting + (" (`+self`)" if setting == today else "")
            spread = f" ± {statistics.stdev(gains) * 100:.1f}" if len(gains) > 1 else ""
            labeled = "- | -" if "/" not in setting else f"{sum(a > 0 for a in added)} | {statistics.mean(added):.0f}"
            lines.append(f"| {label} | {statistics.mean(scores) * 100:.1f} | "
                         f"{statistics.mean(gains) * 100:+.1f}{spread} | "
                         f"{sum(g > 0.0005 for g in gains)} / {sum(g < -0.0005 for g in gains)} | "
                         f"{labeled} |")
        lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
