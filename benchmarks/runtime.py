"""Benchmark: prediction with the exported ONNX folder against the torch model, on banking77.

    nichetune bench runtime [--strategy auto] [--repeats 3] [--data DIR]

A model of `--strategy` (the default's: auto, a portfolio whose TF-IDF, sentence-vector and fine-tuned members each
read every text; `full` is its fine-tuned network alone) is trained on 8 rows per intent of banking77's training split
(seed 0) and exported at each quantization, with parity check rows drawn from the rest of the training split (never
the test split). On the 3,080 test texts, each repeat runs every runtime in turn: batch
throughput in `nichetune predict`'s chunks of 512 rows, and single-text latency (median and 95th percentile of 200
calls). Figures are medians over the repeats, in one process, so that the runtimes share the machine's state; each
also comes as a ratio to torch. Label agreement with torch (fp32: the exports' parity reference) and test accuracy
come from the same predictions; on a CPU that runs bf16 fast (AMX), torch in bf16, prediction's default there, is
timed beside it. Then
`nichetune predict` itself is timed end to end (a new process: imports, loading, CSV in and out) with the model
registered in a temporary MLflow store, once per runtime. The installed size of the folder's runtime (onnxruntime,
tokenizers, NumPy in a new virtual environment) is measured with pip from the package index."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
QUANTIZATIONS = ("int8", "int8-weights", "none")
CHUNK = 512  # as tasks.predict.PROGRESS_CHUNK
CHECK_ROWS = 2000
SINGLE_CALLS = 200


def results_file(strategy: str) -> str:
    """runtime.json for the default strategy, runtime-<strategy>.json for another."""
    from tasks.config import FinetuneParams

    return "runtime.json" if strategy == FinetuneParams().strategy else f"runtime-{strategy}.json"


def train_model(banking77: Path, strategy: str, out: Path) -> tuple[Path, list[str]]:
    """A model of `strategy` on 8 rows per intent (seed 0); the training split's other texts, for parity checks."""
    from tasks.config import FinetuneParams
    from tasks.finetune import finetune

    train = pd.read_csv(banking77 / "train.csv").rename(columns={"category": "label"})
    picked = train.groupby("label", group_keys=False).sample(8, random_state=0)
    result = finetune(picked[["text", "label"]], FinetuneParams(strategy=strategy), seed=0, out_dir=out)
    rest = train.drop(picked.index).sample(CHECK_ROWS, random_state=0)
    return result.model_dir, rest["text"].tolist()


def timings(predict_proba, texts: list[str]) -> tuple[dict, np.ndarray]:
    predict_proba(texts[:64])  # warm-up
    started = time.perf_counter()
    probs = np.concatenate([predict_proba(texts[i : i + CHUNK]) for i in range(0, len(texts), CHUNK)])
    rate = len(texts) / (time.perf_counter() - started)
    latencies = []
    for text in texts[:SINGLE_CALLS]:
        started = time.perf_counter()
        predict_proba([text])
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"rows_per_s": rate, "single_ms_median": statistics.median(latencies),
            "single_ms_p95": latencies[int(0.95 * len(latencies)) - 1]}, probs


def predict_command(model_dir: Path, onnx: Path | None, test_csv: Path, folder: Path) -> float:
    """Seconds of `nichetune predict` end to end on `test_csv`, the model registered in a new SQLite store."""
    import mlflow

    from tasks.register import _log_model

    project = folder / ("onnx" if onnx else "torch")
    project.mkdir()
    shutil.copyfile(REPO / "params.yaml", project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # artifacts beside the store: without a location, a SQLite store keeps them in ./mlruns of the current folder
    experiment = mlflow.create_experiment("bench", artifact_location=(project / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        _log_model(model_dir, "bench", onnx)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nichetune"), "--quiet", "predict", str(test_csv), "--model",
                    "bench/1", "--output", str(project / "out.csv")], cwd=project, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def installed_megabytes(folder: Path) -> float | None:
    """The size of a new virtual environment holding only onnxruntime, tokenizers and NumPy, less an empty one."""
    from tasks.export import RUNTIME_PACKAGES

    sizes = []
    for name, packages in (("empty", []), ("runtime", list(RUNTIME_PACKAGES))):
        venv = folder / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        if packages:
            done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                   "--quiet", *packages], capture_output=True, text=True)
            if done.returncode != 0:
                return None
        sizes.append(sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink()))
    return round((sizes[1] - sizes[0]) / 2**20, 1)


GOAL_ROWS_PER_S, GOAL_SINGLE_P95_MS, GOAL_INSTALLED_MB = 1000, 5.0, 200  # issue 54, on 2 CPU cores
MODELS = {"auto": "the default model (`auto`: TF-IDF, sentence-vector and fine-tuned members)",
          "full": "the default's fine-tuned network alone (`full`)"}


def verdict(holds: bool) -> str:
    return "holds" if holds else "**does not hold**"


def goal_lines(results: dict | None, size: bool = True) -> list[str]:
    """The prediction goals, each from the fastest runtime that keeps parity (auto's choice) and from int8; with
    `size`, the installed runtime's too."""
    if not results:
        return []
    lines, rows = [], results["runtimes"]
    model = MODELS.get(results["strategy"], f"strategy `{results['strategy']}`")
    for name in dict.fromkeys([f"onnx {results['auto_choice']}", "onnx int8"]):
        row = rows[name]
        rate, p95 = row["rows_per_s"], row["single_ms_p95"]
        lines.append(f"- Prediction of {model} with `{name}` (same label as torch on {row['agreement']:.1f}% of the "
                     f"test texts): "
                     f"{rate:.0f} rows/s, goal {GOAL_ROWS_PER_S}: {verdict(rate >= GOAL_ROWS_PER_S)}; single text "
                     f"p95 {p95:.1f} ms, goal {GOAL_SINGLE_P95_MS:g}: {verdict(p95 < GOAL_SINGLE_P95_MS)}")
    size = results.get("runtime_installed_mb") if size else None
    if size is not None:
        lines.append(f"- The exported folder's runtime installed: {size:.0f} MB, goal under {GOAL_INSTALLED_MB}: "
                     f"{verdict(size < GOAL_INSTALLED_MB)}")
    return lines


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section: one row per runtime, then `nichetune predict` end to end."""
    if not results:
        return []
    strategy = results["strategy"]
    model = MODELS.get(strategy, f"strategy `{strategy}`")
    lines = [f"## Prediction: the exported ONNX folder against torch (runtime, `{strategy}`)", "",
             f"`{results['command']}` ({results['date']}, {results['machine']}); "
             f"`benchmarks/results/{results_file(strategy)}`; "
             f"protocol in `benchmarks/runtime.py`. {model[0].upper() + model[1:]} trained on 8 rows per intent of "
             f"banking77 ({results['train_s']:.0f} s), on the {results['rows']} test texts; medians over the repeats, "
             f"all runtimes in one process. `auto` (params `register.quantize`, `nichetune export`: the fastest that "
             f"keeps parity) chooses **{results['auto_choice']}** here (parity on {results['check_rows']} "
             "training-split check rows, speed as below). `torch` is the model in fp32, the reference of every 'same "
             "label' figure"
             + (f"; `torch {results['predict_precision']}` is how `nichetune predict` runs it on this CPU"
                if results.get("predict_precision", "fp32") != "fp32" else "") + ".", "",
             "| runtime | rows/s (chunks of 512) | × torch | single text median ms | p95 ms | test accuracy % | "
             "same label as torch % | p99 probability difference | folder MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["runtimes"].items():
        lines.append(f"| {name} | {row['rows_per_s']:.0f} | {row['speedup']:.2f} | {row['single_ms_median']:.1f} | "
                     f"{row['single_ms_p95']:.1f} | {row['accuracy']:.1f} | {row['agreement']:.1f} | "
                     f"{row['p99_diff']:.3f} | {row.get('megabytes', '')} |")
    precision = results.get("predict_precision", "fp32")
    command = ", ".join(f"{name}{f' ({precision})' if name == 'torch' and precision != 'fp32' else ''} {seconds:.1f} s "
                        f"({results['rows'] / seconds:.0f} rows/s)"
                        for name, seconds in results["predict_command_s"].items())
    lines += ["", f"`nichetune predict` on the test file end to end, as a new process (imports, model loading, CSV "
              f"in and out): {command}."]
    if results.get("runtime_installed_mb") is not None:
        lines += ["", f"The folder's runtime (onnxruntime, tokenizers, NumPy) installs into a new virtual environment "
                  f"as {results['runtime_installed_mb']:.0f} MB."]
    return lines + [""] + [line for note in results.get("notes", []) for line in (note, "")]


def main(argv: list[str] | None = None) -> None:
    from tasks.config import FinetuneParams, Strategy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=typing.get_args(Strategy), default=FinetuneParams().strategy,
                        help="the strategy to train (default: the default strategy)")
    parser.add_argument("--repeats", type=int, default=3)
    add_data_option(parser)
    args = parser.parse_args(argv)
    from tasks import onnx_runtime
    from tasks.export import choose_quantization, export_model, measure
    from tasks.model import resolve_device
    from tasks.portfolio import load_classifier
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    banking77 = dataset_dir(args.data, "banking77")
    test = pd.read_csv(banking77 / "test.csv")
    texts, truth = test["text"].tolist(), test["category"].astype(str).to_numpy()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        model_dir, check = train_model(banking77, args.strategy, scratch / "model")
        train_s = time.perf_counter() - started
        # torch in fp32 is what the exports' parity is held to; where the CPU runs bf16 fast (AMX), prediction's
        # default precision there, as `nichetune predict` runs it, is a row of its own
        runtimes, exports, export_s = {"torch": load_classifier(model_dir, resolve_device("cpu", "fp32"))}, {}, {}
        if resolve_device("cpu").precision != "fp32":
            runtimes[f"torch {resolve_device('cpu').precision}"] = load_classifier(model_dir)
        for how in QUANTIZATIONS:
            started = time.perf_counter()
            exports[how] = export_model(model_dir, scratch / f"onnx-{how}", how, check)
            export_s[how] = time.perf_counter() - started
            runtimes[f"onnx {how}"] = onnx_runtime.load(exports[how].folder)
        runs: dict[str, list[dict]] = {name: [] for name in runtimes}
        probs = {}
        for _ in range(args.repeats):
            for name, runtime in runtimes.items():
                figures, probs[name] = timings(runtime.predict_proba, texts)
                runs[name].append(figures)
        labels = np.asarray(runtimes["torch"].labels)
        rows = {}
        for name in runtimes:
            medians = {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}
            parity = measure(probs["torch"], probs[name])
            rows[name] = {**{k: round(v, 2) for k, v in medians.items()},
                          "accuracy": round(float((labels[probs[name].argmax(1)] == truth).mean()) * 100, 2),
                          "agreement": round(parity.agreement * 100, 2), "p99_diff": round(parity.p99_diff, 4)}
        for name in rows:
            rows[name]["speedup"] = round(rows[name]["rows_per_s"] / rows["torch"]["rows_per_s"], 2)
        for how, done in exports.items():
            rows[f"onnx {how}"].update(megabytes=done.megabytes, export_s=round(export_s[how], 1),
                                       check_agreement=round(done.parity.agreement * 100, 2))
        # what `auto` (tasks.export.choose_quantization) chooses, from this run's own parity and speed figures
        auto = choose_quantization({how: {"holds": exports[how].parity.holds,
                                          "rows_per_s": rows[f"onnx {how}"]["rows_per_s"]} for how in QUANTIZATIONS})
        command = {"torch": predict_command(model_dir, None, banking77 / "test.csv", scratch),
                   f"onnx {auto}": predict_command(model_dir, exports[auto].folder, banking77 / "test.csv", scratch)}
        size = installed_megabytes(scratch)
    summary = {
        "command": f"nichetune bench runtime --strategy {args.strategy} --repeats {args.repeats}",
        "strategy": args.strategy, "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores", "rows": len(texts),
        "train_s": round(train_s, 1), "check_rows": len(check), "auto_choice": auto, "runtimes": rows,
        "predict_command_s": {name: round(seconds, 2) for name, seconds in command.items()},
        "runtime_installed_mb": size, "predict_precision": resolve_device("cpu").precision, "repeats": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / results_file(args.strategy)).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "repeats"}, indent=2))


if __name__ == "__main__":
    main()
