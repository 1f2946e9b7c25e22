"""Benchmark: active learning as a simulation, accuracy against labels for each way of choosing what to label.

    nichetune bench active [--datasets banking77 cfpb_payday_2023] [--strategies diverse uncertainty random]
                           [--seeds 5] [--rounds 17] [--step 50] [--start 2] [--shortlist N] [--dev FRACTION]
                           [--finetune KEY=VALUE ...] [--data DIR]

Each seed starts from 2 labeled texts per class (`--start`) drawn from the training split (the rest of the split is
the pool, its labels hidden), trains the default strategy (params.yaml's finetune section, or `--finetune`
overrides) and scores accuracy on the test split. Each round, tasks.suggest.rank picks `--step` texts of the pool
with the model just trained, exactly as `nichetune suggest` would (the labeled texts count as taken for `diverse`;
the pool's sentence vectors are computed once, before the first round's suggestion is timed, and kept, as
`nichetune suggest` keeps them in outputs/cache; that one pass is recorded as `pool_vectors_s`),
their labels are revealed from the data, and the model is trained again from the backbone on every label so far.
banking77: the published train and test splits; cfpb_payday_2023: January-June complaints as train, July-August as
test (benchmarks/quality.py). Time per round (suggest, then retrain) is measured too; a round is what a user waits
for between labeling sessions. `--dev 0.2` scores a fifth of each class of the training split instead of the test
split (never labeled), to choose suggest's settings (`--shortlist`, params.yaml's by default) without the test
split. Results: benchmarks/results/active.json (`--out`) and beside it a PNG per dataset of mean accuracy against
labels, one line per strategy."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.sources import add_data_option

RESULTS = Path(__file__).parent / "results"
DATASETS = {"banking77": "banking77_k8", "cfpb_payday_2023": "cfpb_payday_2023"}  # the quality table's splits
START_PER_CLASS = 2
GOAL_LABELS, GOAL_RANDOM_LABELS = 600, 1000  # diverse reaches random's accuracy at 1,000 labels with at most 600
GOAL_ROUND_S = 180
DIVERSE_PICK = "k-means"  # how tasks.suggest's diverse strategy chooses among its shortlist (earlier results: k-center)


def published(dataset: str, data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from benchmarks import quality

    spec = quality.DATASETS[DATASETS[dataset]]
    if dataset == "banking77":
        split = quality.read_banking77(data / spec.folder)
    else:
        split = spec.split(data / spec.folder, 0)
    return split.train[["text", "label"]].reset_index(drop=True), split.test[["text", "label"]]


def simulate(dataset: str, strategy: str, seed: int, rounds: int, step: int, cfg, data: Path,
             start: int, shortlist: int, dev: float) -> list[dict]:
    """One seed of one strategy: accuracy, labels and seconds after each round (round 0: the start). `dev` > 0:
    that fraction of each class of the training split is scored instead of the test split, and never labeled."""
    from tasks.finetune import finetune
    from tasks.portfolio import load_classifier
    from tasks.suggest import needs_vectors, pool_vectors, rank

    train, test = published(dataset, data)
    if dev > 0:  # to choose suggest's settings without looking at the test split
        test = train.groupby("label", group_keys=False).sample(frac=dev, random_state=seed)
        train = train.drop(index=test.index)
    labeled = train.groupby("label", group_keys=False).sample(start, random_state=seed).index.tolist()
    history = []
    cache = Path(tempfile.mkdtemp(prefix="nichetune-active-cache-"))  # outputs/cache of a user's project
    for round_ in range(rounds + 1):
        rows = train.loc[labeled]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            model_dir = finetune(rows, cfg, seed=seed, out_dir=Path(out)).model_dir
            classifier = load_classifier(model_dir)
            train_s = time.perf_counter() - started
            predicted = classifier.predict(test["text"].astype(str).tolist())
            accuracy = float(np.mean(np.asarray(predicted) == test["label"].to_numpy()))
            suggest_s, vectors_s = 0.0, None
            if round_ < rounds:
                pool = train.drop(index=labeled)
                frame = pd.DataFrame({"nichetune_id": pool.index.astype(str), "text": pool["text"].astype(str),
                                      "key": pool.index.astype(str)})
                reads = needs_vectors(classifier, strategy)
                if reads and round_ == 0:  # once per pool: the first suggestion on it computes and keeps them
                    started = time.perf_counter()
                    pool_vectors(frame, classifier, cache)
                    vectors_s = round(time.perf_counter() - started, 1)
                started = time.perf_counter()
                vectors = pool_vectors(frame, classifier, cache) if reads else None
                picked = rank(frame, classifier, strategy, step, shortlist,
                              seed * 1000 + round_, vectors)
                labeled += [int(i) for i in picked.frame["nichetune_id"]]
                suggest_s = time.perf_counter() - started
        history.append({"round": round_, "labels": len(rows), "accuracy": round(accuracy, 4),
                        "train_s": round(train_s, 1), "suggest_s": round(suggest_s, 1),
                        **({"pool_vectors_s": vectors_s} if vectors_s is not None else {})})
        print(f"{dataset} {strategy} seed {seed} round {round_}: {len(rows)} labels, accuracy {accuracy:.3f}, "
              f"train {train_s:.0f} s, suggest {suggest_s:.0f} s", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--strategies", nargs="+", default=["diverse", "uncertainty", "random"],
                        choices=["diverse", "uncertainty", "random"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=17, help="default: from 2 per class to past 1,000 labels")
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--start", type=int, default=START_PER_CLASS,
                        help="labeled texts per class at the start; a later start times a round with more labels")
    parser.add_argument("--shortlist", type=int, help="diverse: suggest.shortlist (default: params.yaml's)")
    parser.add_argument("--dev", type=float, default=0.0,
                        help="score on this fraction of the training split instead of the test split (0 to <1), to "
                             "choose settings")
    parser.add_argument("--finetune", nargs="*", default=[], metavar="KEY=VALUE",
                        help="finetune settings instead of params.yaml's, e.g. strategy=head epochs=30")
    parser.add_argument("--out", type=Path, default=RESULTS / "active.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep --out's other runs: these replace only its runs of the same dataset, strategy and "
                             "seed (the same finetune settings, step, start and split are required)")
    add_data_option(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.dev < 1:
        parser.error(f"--dev {args.dev}: a fraction of the training split from 0 to below 1")
    from benchmarks import quality
    from tasks.config import FinetuneParams
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    project = quality.project_params()
    settings = project["finetune"]
    args.shortlist = args.shortlist or project["suggest"]["shortlist"]
    settings.update({key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.finetune)})
    overrides = {key: settings[key] for key in (item.split("=", 1)[0] for item in args.finetune)}
    cfg = FinetuneParams(**settings)
    options = sys.argv[1:] if argv is None else argv  # `python -m benchmarks.active` passes none
    summary = {"command": " ".join(["nichetune bench active", *options]), "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
               "finetune": {k: v for k, v in settings.items() if k in ("strategy", "epochs", "learning_rate")},
               "overrides": overrides, "step": args.step,
               "start_per_class": args.start, "shortlist": args.shortlist, "pick": DIVERSE_PICK,
               "scored_on": "dev" if args.dev else "test",
               "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        same = ("finetune", "overrides", "step", "start_per_class", "scored_on")
        if any(earlier.get(key) != summary[key] for key in same):
            parser.error(f"--merge: {args.out} was measured with other settings ({', '.join(same)}); write a new --out")
        planned = {(d, st, seed) for d in args.datasets for st in args.strategies for seed in range(args.seeds)}
        summary["runs"] = [{"shortlist": earlier["shortlist"], "pick": pick(earlier), "command": earlier["command"],
                            **run}
                           for run in earlier["runs"] if (run["dataset"], run["strategy"], run["seed"]) not in planned]
        summary["notes"] = earlier.get("notes", [])
    for dataset in args.datasets:
        for seed in range(args.seeds):
            for strategy in args.strategies:
                history = simulate(dataset, strategy, seed, args.rounds, args.step, cfg, args.data, args.start,
                                   args.shortlist, args.dev)
                summary["runs"].append({"dataset": dataset, "strategy": strategy, "seed": seed,
                                        "shortlist": args.shortlist, "pick": DIVERSE_PICK,
                                        "command": summary["command"],
                                        "history": history})
                # written after every run: an interrupted hour-long run keeps what it measured
                args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for dataset in args.datasets:
        plot(summary, dataset, args.out.with_name(f"{args.out.stem}_{dataset}.png"))


def pick(results: dict) -> str:
    """How `diverse` chose among its shortlist in a run: results from before the k-means pick used k-center."""
    return results.get("pick", "k-center")


def curves(results: dict, dataset: str) -> dict[str, list[tuple[int, float, int]]]:
    """Per strategy: (labels, mean accuracy, seeds) at each round, over the seeds that reached it."""
    out = {}
    for strategy in dict.fromkeys(run["strategy"] for run in results["runs"] if run["dataset"] == dataset):
        histories = [run["history"] for run in results["runs"]
                     if run["dataset"] == dataset and run["strategy"] == strategy]
        rounds = max(len(h) for h in histories)
        out[strategy] = [(int(statistics.median(h[r]["labels"] for h in histories if len(h) > r)),
                          statistics.mean(h[r]["accuracy"] for h in histories if len(h) > r),
                          sum(len(h) > r for h in histories)) for r in range(rounds)]
    return out


def plot(results: dict, dataset: str, path: Path) -> None:
    from tasks.plots import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for strategy, points in curves(results, dataset).items():
        axes.plot([p[0] for p in points], [p[1] * 100 for p in points], marker="o", markersize=3, label=strategy)
    axes.set_xlabel("labeled texts")
    axes.set_ylabel(f"{results.get('scored_on', 'test')} accuracy (%)")
    changed = ", ".join(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                        for key, value in (results.get("overrides") or {}).items())
    axes.set_title(f"{dataset}: active learning, {results['finetune'].get('strategy', 'default')} strategy"
                   + (f"\n({changed})" if changed else ""), fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def labels_to_reach(points: list[tuple[int, float, int]], accuracy: float) -> int | None:
    return next((labels for labels, mean, _ in points if mean >= accuracy), None)


def trained_with(results: dict) -> str:
    """What the run changed from params.yaml's finetune section, as the section's and goal lines' reader needs."""
    overrides = results.get("overrides") or {}
    return (", with " + ", ".join(f"`{key}: {value}`" for key, value in overrides.items())) if overrides else ""


def goal_lines(results: dict | None) -> list[str]:
    if not results or results.get("scored_on") == "dev":  # the goals are read on the test split
        return []
    lines = []
    for dataset in dict.fromkeys(run["dataset"] for run in results["runs"]):
        found = curves(results, dataset)
        if "random" not in found or "diverse" not in found:
            continue
        target = next(((labels, mean) for labels, mean, _ in found["random"] if labels >= GOAL_RANDOM_LABELS), None)
        if target is None:
            lines.append(f"- Active learning on {dataset}: random did not reach {GOAL_RANDOM_LABELS} labels in "
                         "this run; goal not measured")
            continue
        needed = labels_to_reach(found["diverse"], target[1])
        holds = needed is not None and needed <= GOAL_LABELS
        lines.append(f"- Active learning on {dataset}{trained_with(results)}: random reached {target[1] * 100:.1f}% "
                     f"at {target[0]} labels; "
                     f"diverse reached it at {needed if needed is not None else 'more than the run'} labels, goal at "
                     f"most {GOAL_LABELS}: {'holds' if holds else '**does not hold**'}")
    # a round: suggesting with one model, then training the next on the new labels
    pairs = [(before["suggest_s"] + after["train_s"], after["labels"]) for run in results["runs"]
             if run["dataset"] == "banking77" for before, after in zip(run["history"], run["history"][1:])]
    if pairs:
        median, worst = statistics.median(s for s, _ in pairs), max(s for s, _ in pairs)
        labels = [n for _, n in pairs]
        lines.append(f"- A round on banking77{trained_with(results) or ' with the default strategy'} (suggest, then "
                     f"retrain), rounds reaching "
                     f"{min(labels)} to {max(labels)} labels: median {median:.0f} s, longest {worst:.0f} s, goal "
                     f"under {GOAL_ROUND_S}: {'holds' if worst < GOAL_ROUND_S else '**does not hold**'}")
    return lines


def section(results: dict | None, round_results: dict | None = None, dev_runs: list[dict] | None = None) -> list[str]:
    """The BENCHMARKS.md section: the curves of `results`, `round_results`, a run that times rounds of the
    default strategy with more labels (`--start`), and `dev_runs`, settings compared on dev rows, where there are."""
    if not results:
        return []
    commands = "; ".join(f"`{command}`" for command in dict.fromkeys(run.get("command", results["command"])
                                                                     for run in results["runs"]))
    shortlists = sorted({f"{run.get('pick', pick(results))}, `suggest.shortlist` "
                         f"{run.get('shortlist', results['shortlist'])}" for run in results["runs"]
                         if run["strategy"] == "diverse"})
    lines = ["## Active learning: accuracy against labels (active)", "",
             f"{commands} ({results['date']}, {results['machine']}); `benchmarks/results/active.json`; "
             f"protocol in `benchmarks/active.py`. Strategy trained each round: {results['finetune']}"
             f"{trained_with(results)}; "
             f"{results['step']} texts added per round"
             + (f"; diverse with {'; '.join(shortlists)}" if shortlists else "") + ".",
             ""]
    for dataset in dict.fromkeys(run["dataset"] for run in results["runs"]):
        found = curves(results, dataset)
        lines += [f"![{dataset}](benchmarks/results/active_{dataset}.png)", "",
                  "| labels | " + " | ".join(found) + " |", "|---|" + "---|" * len(found)]
        for r in range(max(len(points) for points in found.values())):
            cells = [f"{points[r][1] * 100:.1f} ({points[r][2]} seeds)" if r < len(points) else ""
                     for points in found.values()]
            labels = next(points[r][0] for points in found.values() if r < len(points))
            lines.append(f"| {labels} | " + " | ".join(cells) + " |")
        lines.append("")
    trained = [h["train_s"] for run in results["runs"] for h in run["history"][1:]]
    suggested = [h["suggest_s"] for run in results["runs"] for h in run["history"][:-1]]
    if trained and suggested:
        lines += [f"Per round, median: suggesting {statistics.median(suggested):.0f} s, then retraining "
                  f"{statistics.median(trained):.0f} s.", ""]
    lines += [line for note in results.get("notes", []) for line in (note, "")]
    return lines + round_lines(round_results) + dev_lines(dev_runs or [])


DEV_LABELS = (404, 604, 804, 1004)  # the label counts the dev table shows


def dev_lines(runs: list[dict]) -> list[str]:
    """Settings chosen on dev rows (`--dev`): per strategy and shortlist, dev accuracy at a few label counts and
    its mean over every round after the start (the area under the learning curve, which the choice reads)."""
    if not runs:
        return []
    curves_by = {}
    for results in runs:
        for dataset in dict.fromkeys(run["dataset"] for run in results["runs"]):
            for strategy, points in curves(results, dataset).items():
                shortlist = f" ({pick(results)}), shortlist {results['shortlist']}" if strategy == "diverse" else ""
                curves_by[(dataset, f"{strategy}{shortlist}")] = (points, results)
    lines = ["Chosen on dev rows (`--dev`: a fifth of each class of the training split, never labeled, scored "
             "instead of the test split): " + "; ".join(sorted({f"`{r['command']}` ({r['date']})"
                                                              for _, r in curves_by.values()})) + ".", "",
             "| dataset | strategy | " + " | ".join(f"{n} labels" for n in DEV_LABELS) + " | mean over rounds |",
             "|---|---|" + "---|" * (len(DEV_LABELS) + 1)]
    for (dataset, name), (points, _) in curves_by.items():
        at = {labels: mean for labels, mean, _ in points}
        cells = [f"{at[n] * 100:.1f}" if n in at else "-" for n in DEV_LABELS]
        after_start = [mean for _, mean, _ in points[1:]]
        seeds = min(count for _, _, count in points)
        lines.append(f"| {dataset} | {name} ({seeds} seeds) | " + " | ".join(cells)
                     + f" | {statistics.mean(after_start) * 100:.1f} |")
    return lines + [""] + [line for results in runs for note in results.get("notes", []) for line in (note, "")]


def round_lines(results: dict | None) -> list[str]:
    if not results:
        return []
    rounds = [f"trained on {before['labels']} labels in {before['train_s']:.0f} s, "
              + (f"computed the pool's sentence vectors once in {before['pool_vectors_s']:.0f} s (kept for every "
                 "later suggestion), " if "pool_vectors_s" in before else "")
              + f"suggested {results['step']} in {before['suggest_s']:.0f} s, trained again on {after['labels']} in "
              f"{after['train_s']:.0f} s"
              for run in results["runs"] for before, after in zip(run["history"], run["history"][1:])]
    return [f"A round of the default strategy ({results['finetune']['strategy']}{trained_with(results)}) with more "
            f"labels: `{results['command']}` ({results['date']}, {results['machine']}); "
            f"`benchmarks/results/active_round.json`: " + "; ".join(rounds) + ".", ""] + [
            line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
