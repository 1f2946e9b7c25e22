"""Benchmark: the temperature fitted on auto's validation rows, with and without a prior on log T, judged on dev rows.

    python -m benchmarks.temperature --dataset amazon_counterfactual_en_k8 [--seeds 10] [--dev-rows 1000] [--data DIR]

For each seed, the training and dev rows are the choice bench's (benchmarks.choice.rows_for: other rows of the
training split, never the test split; cfpb's later training months). Auto's first candidate, TF-IDF, is scored
out-of-fold on the training rows exactly as auto scores it (tasks.auto.Candidates): under tasks.auto.FEW_ROWS
validation rows it is auto's whole model, and on more it stands in for the mixture. A temperature is fitted on
those out-of-fold probabilities by tasks.calibration.fit_temperature with each prior of PRIORS (None: the log loss
alone), and the TF-IDF learner fitted on every training row is calibrated with it on the dev rows. Lower dev log
loss and expected calibration error are better; `T = 1` is no calibration at all."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.choice import member_dev_probs, rows_for
from benchmarks.quality import RESULTS, machine, strategy_params
from benchmarks.sources import add_data_option

OUT = RESULTS / "temperature.json"
PRIORS = (None, 4.0, 2.0, 1.0, 0.5)  # standard deviations of the normal prior on log T


def run_seed(name: str, seed: int, dev_count: int, data: Path) -> dict:
    from tasks.auto import Candidates
    from tasks.calibration import apply_temperature, fit_temperature, log_loss
    from tasks.evaluate import calibration_bins

    cfg = strategy_params("auto", {"cache_features": False, "candidates": ["tfidf"]})
    train, dev = rows_for(name, seed, dev_count, data)
    with tempfile.TemporaryDirectory(prefix="temperature-") as folder:
        candidates = Candidates(train, cfg, seed, Path(folder), None)
        candidates.train_one("tfidf", None)
        codes = {label: code for code, label in enumerate(candidates.labels)}
        known = dev["label"].astype(str).isin(codes).to_numpy()  # a label new in the dev rows has no column
        truth = np.array([codes[label] for label in dev["label"].astype(str)[known]])
        probs = member_dev_probs(candidates, "tfidf", dev["text"].astype(str).tolist(), [seed], Path(folder))[0]
    held, targets = candidates.probs["tfidf"], candidates.targets
    out = {"seed": seed, "validation_rows": len(targets), "dev_rows": int(known.sum()), "priors": {}}
    for prior in ("T = 1", *PRIORS):
        temperature = 1.0 if prior == "T = 1" else fit_temperature(held, targets, prior_sd=prior)
        calibrated = apply_temperature(probs[known], temperature)
        ece, _ = calibration_bins(calibrated.max(axis=1), calibrated.argmax(axis=1) == truth)
        out["priors"][str(prior)] = {"temperature": round(temperature, 4), "dev_ece": round(ece, 4),
                                     "dev_log_loss": round(log_loss(calibrated, truth), 4)}
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon_counterfactual_en_k8")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--dev-rows", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    runs = [run_seed(args.dataset, seed, args.dev_rows, args.data) for seed in range(args.seeds)]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    given = argv if argv is not None else sys.argv[1:]
    results[args.dataset] = {"command": " ".join(["python -m benchmarks.temperature", *given]),
                             "date": time.strftime("%Y-%m-%d"), "machine": machine(), "runs": runs}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: per dataset and prior, the fitted temperatures and the dev rows' calibration."""
    if not results:
        return []
    from tasks.calibration import LIMITS, PRIOR_SD

    lines = ["## Temperature on few validation rows", "",
             "Protocol in `benchmarks/temperature.py`; `benchmarks/results/temperature.json`. The prior is a normal "
             f"distribution on log T around 0 (T = 1) of the standard deviation shown; auto's is {PRIOR_SD:g} "
             "(tasks.calibration.PRIOR_SD). Dev rows are training-split rows no model saw. Means over seeds; a "
             f"temperature at a limit is within 1% of {LIMITS[0]:g} or {LIMITS[1]:g}.", ""]
    for name, table in results.items():
        if name == "notes":
            continue
        runs = table["runs"]
        rows = sorted({run["validation_rows"] for run in runs})
        held = str(rows[0]) if len(rows) == 1 else f"{rows[0]} to {rows[-1]}"
        lines += [f"### {name}: {len(runs)} seeds, {held} validation rows", "",
                  f"`{table['command']}`, {table['date']}, {table['machine']['cores']} cores.", "",
                  "| prior sd on log T | temperature (median, range) | at a limit | dev log loss | dev ECE % |",
                  "|---|---|---|---|---|"]
        for prior in runs[0]["priors"]:
            fitted = [run["priors"][prior] for run in runs]
            temperatures = [f["temperature"] for f in fitted]
            at_limit = sum(min(abs(t / limit - 1) for limit in LIMITS) < 0.01 for t in temperatures)
            label = {"T = 1": "no temperature (T = 1)", "None": "none: the log loss alone"}.get(prior) or \
                f"{float(prior):g}" + (" (auto's)" if float(prior) == PRIOR_SD else "")
            lines.append(f"| {label} | {statistics.median(temperatures):.2f} ({min(temperatures):.2f} to "
                         f"{max(temperatures):.2f}) | {at_limit} | "
                         f"{statistics.mean(f['dev_log_loss'] for f in fitted):.4f} | "
                         f"{statistics.mean(f['dev_ece'] for f in fitted) * 100:.1f} |")
        lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
