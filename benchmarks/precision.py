"""Benchmark: bf16 autocast against fp32 on the CPU (`finetune.precision`), for training speed, prediction speed
and quality on dev rows.

    python -m benchmarks.precision [--seeds 5] [--dev-rows 2000] [--sets banking77:6 amazon_counterfactual_en:64]
                                   [--data DIR]

On a CPU that multiplies bf16 in hardware (tasks.model.cpu_bf16_unit: Intel AMX, or AVX-512 BF16 as on AMD Zen 4)
`precision: auto` trains and predicts under bf16 autocast; elsewhere it stays fp32, and this benchmark says so and
stops (bf16 emulated there is slower). Each unit's results go to their own file, precision-<unit>.json. For each set
(dataset:k, k rows per class of its training split, seed s) both precisions train strategy `full` as auto's
fine-tuned member does (params.yaml's finetune section, a 20% validation carve for early stopping and the
temperature); each model then predicts `--dev-rows` other rows of the training split (never the test split) in
the precision it was trained in, and in fp32. Recorded per run: dev accuracy, macro-F1 and MCC, training samples
per second, prediction rows per second, and the share of dev rows whose label the model's own precision and fp32
agree on. The precisions alternate within each seed, in one process."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from sklearn.metrics import matthews_corrcoef

from benchmarks.quality import BF16_UNITS, RESULTS, strategy_params
from benchmarks.words import JUDGED_BY, measure_sets, rows_and_dev

PRECISIONS = ("fp32", "auto")  # auto: bf16 on this CPU (checked before any run)


def run_seed(name: str, k: int, seed: int, dev_count: int, data: Path) -> list[dict]:
    from tasks.metrics import score
    from tasks.model import Classifier, resolve_device
    from tasks.training import train_strategy

    train, dev = rows_and_dev(name, k, seed, dev_count, data)
    truth, texts = dev["label"].astype(str).tolist(), dev["text"].astype(str).tolist()
    rows = []
    for precision in PRECISIONS:
        cfg = strategy_params("full", {"validation_fraction": 0.2, "precision": precision})
        with tempfile.TemporaryDirectory() as out:
            result = train_strategy(train, cfg, seed, Path(out))
            own = Classifier(result.model_dir, resolve_device("cpu", precision))
            own.predict_proba(texts[:64])  # warm-up: the first batches pay for allocation
            started = time.perf_counter()
            probs = own.predict_proba(texts)
            rows_per_s = len(texts) / (time.perf_counter() - started)
            exact = Classifier(result.model_dir, resolve_device("cpu", "fp32")).predict_proba(texts)
        predicted = [own.labels[i] for i in probs.argmax(axis=1)]
        metrics, _ = score(truth, predicted, train["label"].value_counts().idxmax())
        rows.append({"set": f"{name}:{k}", "seed": seed, "precision": result.device.split("/")[1],
                     "dev_accuracy": round(metrics["accuracy"], 4), "dev_macro_f1": round(metrics["macro_f1"], 4),
                     "dev_mcc": round(float(matthews_corrcoef(truth, predicted)), 4),
                     "same_label_as_fp32": round(float((probs.argmax(1) == exact.argmax(1)).mean()), 4),
                     "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                     "samples_per_second": round(result.samples_per_second, 1), "rows_per_second": round(rows_per_s)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    from tasks.model import cpu_bf16_unit

    unit = cpu_bf16_unit()
    return measure_sets("python -m benchmarks.precision", __doc__, RESULTS / f"precision-{unit}.json", run_seed,
                        lambda results: section([results]), argv, require_bf16_units)


def require_bf16_units() -> None:
    from tasks.model import cpu_bf16_unit

    if cpu_bf16_unit() is None:
        raise SystemExit("this CPU multiplies bf16 in software only: precision auto stays fp32 here, so there is "
                         "nothing to compare; run this benchmark on a CPU with AMX (Intel Xeon 4th generation or "
                         "later) or AVX-512 BF16 (AMD Zen 4 or later)")


def results_files() -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(RESULTS.glob("precision-*.json"))]


def section(runs: list[dict]) -> list[str]:
    """A table per CPU's bf16 unit, a line per set: each precision's mean dev score, the paired differences, and
    the speeds (medians)."""
    runs = [results for results in runs if results]
    if not runs:
        return []
    lines = ["## bf16 on the CPU (precision)", ""]
    for results in runs:
        lines += table(results)
    return lines


def table(results: dict) -> list[str]:
    unit = results["machine"]["cpu_bf16"]
    where = f"{results['machine']['arch']}, {results['machine']['cores']} cores, {BF16_UNITS[unit]}"
    lines = [f"### {BF16_UNITS[unit]}", "",
             f"`{results['command']}` ({results['date']}, {where}); `benchmarks/results/precision-{unit}.json`; "
             "protocol in `benchmarks/precision.py`. Strategy `full` as auto's "
             f"member trains it, in each precision; scored on {results['dev_rows']:,} other rows of each training "
             "split (never the test split), predicted in the precision it was trained in.", "",
             "| set | figure | fp32 | bf16 | bf16 - fp32, per seed | training samples/s fp32 | bf16 | "
             "prediction rows/s fp32 | bf16 | bf16's labels as fp32's |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["set"] for row in results["rows"]):
        runs = {precision: sorted((row for row in results["rows"] if row["set"] == name
                                   and row["precision"] == precision), key=lambda row: row["seed"])
                for precision in ("fp32", "bf16")}
        key = "dev_" + JUDGED_BY[name.split(":")[0]]
        mean = {precision: 100 * statistics.mean(row[key] for row in runs[precision]) for precision in runs}
        gaps = [100 * (fast[key] - exact[key]) for exact, fast in zip(runs["fp32"], runs["bf16"])]
        median = {(precision, figure): statistics.median(row[figure] for row in runs[precision])
                  for precision in runs for figure in ("samples_per_second", "rows_per_second")}
        agreement = min(row["same_label_as_fp32"] for row in runs["bf16"])
        lines.append(f"| {name} | {key[4:]} | {mean['fp32']:.1f} | {mean['bf16']:.1f} | "
                     f"{', '.join(f'{gap:+.1f}' for gap in gaps)} | "
                     f"{median['fp32', 'samples_per_second']:.1f} | {median['bf16', 'samples_per_second']:.1f} | "
                     f"{median['fp32', 'rows_per_second']:.0f} | {median['bf16', 'rows_per_second']:.0f} | "
                     f"at least {agreement:.1%} |")
    lines.append("")
    return lines + [line for note in results.get("notes", []) for line in (note, "")]


if __name__ == "__main__":
    main()
