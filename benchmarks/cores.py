"""Benchmark: two nichetune processes on one machine, each taking every core against sharing them (tasks.cores):
two trainings, and a user's predict beside a training.

    nichetune bench cores [--repeats 2] [--data DIR]

The training: the default's fine-tuning (`full`, auto's fine-tuned candidate) for 2 epochs on 16 banking77 training
rows of each of 20 intents, in a new process. Each repeat runs, in turn: the training alone; two trainings started
together, each told to take every core (NICHETUNE_THREADS set to the machine's cores, how nichetune ran before
tasks.cores); and two started together with the shared count (the default). Each figure is the wall time until both
ended, as a ratio to one alone in the same repeat (2.0: no worse than running them one after the other).

The predict: what `nichetune predict` does with a registered model (tasks.predict: a claim on the cores, the pyfunc
loaded, banking77's 3,080 test texts in chunks), with the default strategy's model trained once on the same rows,
through each runtime (`register.runtime` torch, and onnx with the quantization export chose). Each repeat runs the
predict alone, then the predict and a training started together, taking every core and sharing them; the figures
are each process's wall time as a ratio to its time alone in the same repeat. Medians over repeats."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.sources import add_data_option, dataset_dir

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
INTENTS, ROWS, EPOCHS = 20, 16, 2


def training_rows(banking77: Path):
    """The rows every training of this benchmark reads: `ROWS` of each of the first `INTENTS` intents."""
    import pandas as pd

    train = pd.read_csv(banking77 / "train.csv").rename(columns={"category": "label"})
    intents = sorted(train["label"].unique())[:INTENTS]
    rows = train[train["label"].isin(intents)].groupby("label", group_keys=False).sample(ROWS, random_state=0)
    return rows[["text", "label"]]


def job(banking77: Path, out: Path) -> None:
    """One training (the process a benchmark run starts)."""
    from benchmarks import quality
    from tasks.config import FinetuneParams
    from tasks.finetune import finetune
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    cfg = FinetuneParams(strategy=quality.tuned_strategy(), epochs=EPOCHS)
    finetune(training_rows(banking77), cfg, seed=0, out_dir=out)


def predict_job(banking77: Path, model: Path) -> None:
    """One `nichetune predict` of banking77's test texts with `model` (a folder of model_dir, and onnx_dir when
    the runtime is onnx), as tasks.predict.predict_file runs it once the registry has handed over the pyfunc."""
    from types import SimpleNamespace

    import pandas as pd

    from tasks import cores
    from tasks.predict import TextClassifierModel, predict_in_chunks
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    texts = pd.read_csv(banking77 / "test.csv")["text"].astype(str).tolist()
    artifacts = {name: str(model / name) for name in ("model_dir", "onnx_dir") if (model / name).is_dir()}
    pyfunc = TextClassifierModel()
    with cores.claim():
        pyfunc.load_context(SimpleNamespace(artifacts=artifacts))
        predict_in_chunks(SimpleNamespace(predict=lambda frame: pyfunc.predict(None, frame)), texts)


def prepare_models(banking77: Path, folder: Path) -> dict[str, Path]:
    """Per runtime, the folder a predict job reads: the default strategy's model on the training job's rows, and
    its ONNX export."""
    import pandas as pd

    from benchmarks import quality
    from tasks.config import FinetuneParams
    from tasks.export import export_model
    from tasks.finetune import finetune
    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()
    result = finetune(training_rows(banking77), FinetuneParams(**quality.project_finetune()), seed=0,
                      out_dir=folder / "trained")
    models = {runtime: folder / runtime for runtime in ("torch", "onnx")}
    for model in models.values():
        model.mkdir()
        (model / "model_dir").symlink_to(result.model_dir)
    check = pd.read_csv(banking77 / "test.csv")["text"].astype(str).tolist()[:300]
    export_model(result.model_dir, models["onnx"] / "onnx_dir", check_texts=check)
    return models


def run_together(commands: list[list[str]], env: dict, folder: Path) -> list[float]:
    """Each process's seconds from the moment all were started together to its exit."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    logs = [(folder / f"process{i}.log").open("w") for i in range(len(commands))]
    children = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
                for command, log in zip(commands, logs)]
    ended: list[float | None] = [None] * len(children)
    while None in ended:
        for i, child in enumerate(children):
            if ended[i] is None and child.poll() is not None:
                ended[i] = time.perf_counter() - started
        time.sleep(0.02)
    for i, (child, log) in enumerate(zip(children, logs)):
        log.close()
        if child.returncode != 0:
            last = (folder / f"process{i}.log").read_text().strip().splitlines()[-1:]
            raise RuntimeError(f"{' '.join(commands[i][2:])} failed: {last}")
    return ended


def training(banking77: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cores", "--job", str(out), "--data", str(banking77.parent)]


def predicting(banking77: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cores", "--predict", str(model), "--data", str(banking77.parent)]


def together(count: int, banking77: Path, folder: Path, env: dict) -> float:
    """Seconds until `count` trainings started at once have all ended."""
    return max(run_together([training(banking77, folder / f"job{i}") for i in range(count)], env, folder))


def beside(banking77: Path, models: dict[str, Path], folder: Path, alone_s: float, shared: dict,
           every_core: dict) -> dict:
    """Per runtime: the predict alone, then beside a training, each taking every core and sharing them."""
    found = {}
    for runtime, model in models.items():
        alone = run_together([predicting(banking77, model)], shared, folder / f"{runtime}-alone")[0]
        row = {"predict_alone_s": round(alone, 1)}
        for name, env in (("every_core", every_core), ("shared", shared)):
            scenario = folder / f"{runtime}-{name}"
            predict_s, train_s = run_together([predicting(banking77, model), training(banking77, scenario / "job")],
                                              env, scenario)
            row.update({f"{name}_predict_s": round(predict_s, 1), f"{name}_train_s": round(train_s, 1),
                        f"{name}_predict_ratio": round(predict_s / alone, 2),
                        f"{name}_train_ratio": round(train_s / alone_s, 2)})
        found[runtime] = row
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # internal: one training into this folder
    parser.add_argument("--predict", type=Path, help=argparse.SUPPRESS)  # internal: one predict with this model
    add_data_option(parser)
    args = parser.parse_args(argv)
    banking77 = dataset_dir(args.data, "banking77")
    if args.job:
        job(banking77, args.job)
        return
    if args.predict:
        predict_job(banking77, args.predict)
        return
    from tasks import cores

    shared = {k: v for k, v in os.environ.items() if k != cores.THREADS_ENV}
    every_core = {**shared, cores.THREADS_ENV: str(cores.given())}
    repeats = []
    with tempfile.TemporaryDirectory() as models_folder:
        models = prepare_models(banking77, Path(models_folder))
        quantization = json.loads((models["onnx"] / "onnx_dir" / "model.json").read_text())["quantization"]
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                alone = together(1, banking77, Path(folder) / "alone", shared)
                old = together(2, banking77, Path(folder) / "old", every_core)
                new = together(2, banking77, Path(folder) / "new", shared)
                predict = beside(banking77, models, Path(folder), alone, shared, every_core)
            repeats.append({"alone_s": round(alone, 1), "two_every_core_s": round(old, 1),
                            "two_shared_s": round(new, 1), "every_core_ratio": round(old / alone, 2),
                            "shared_ratio": round(new / alone, 2), "predict": predict})
    summary = {"command": f"nichetune bench cores --repeats {args.repeats}", "date": time.strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()}, {cores.given()} cores",
               "median_alone_s": statistics.median(r["alone_s"] for r in repeats),
               "median_every_core_ratio": statistics.median(r["every_core_ratio"] for r in repeats),
               "median_shared_ratio": statistics.median(r["shared_ratio"] for r in repeats),
               "onnx_quantization": quantization,
               "predict": {runtime: {key: statistics.median(r["predict"][runtime][key] for r in repeats)
                                     for key in repeats[0]["predict"][runtime]} for runtime in models},
               "repeats": repeats}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cores.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def section(results: dict | None) -> list[str]:
    """The BENCHMARKS.md section."""
    if not results:
        return []
    runs = "; ".join(f"alone {r['alone_s']:.0f} s, every core {r['two_every_core_s']:.0f} s, shared "
                     f"{r['two_shared_s']:.0f} s" for r in results["repeats"])
    return ["## Two processes on one machine: trainings, and a predict beside a training (cores)", "",
            f"`{results['command']}` ({results['date']}, {results['machine']}); `benchmarks/results/cores.json`; "
            "protocol in `benchmarks/cores.py`. Wall time until both of two trainings started together ended, as a "
            "ratio to one training alone (2.0: as fast as one after the other).", "",
            "| two trainings | × one alone (median) |", "|---|---|",
            f"| each takes every core (before) | {results['median_every_core_ratio']:.2f} |",
            f"| cores shared (tasks.cores, the default) | **{results['median_shared_ratio']:.2f}** |", "",
            f"One training alone: {results['median_alone_s']:.0f} s (median). Runs: {runs}.", "",
            *predict_lines(results)] + [line for note in results.get("notes", []) for line in (note, "")]


def predict_lines(results: dict) -> list[str]:
    """The table of a predict beside a training, where the run measured it."""
    if not results.get("predict"):
        return []
    lines = ["A user's predict (banking77's 3,080 test texts, the default strategy's model) and a training started "
             "together; each one's wall time as a ratio to it alone (1.0: not slowed at all).", "",
             "| runtime | predict alone | every core: predict × | every core: training × | shared: predict × | "
             "shared: training × |", "|---|---|---|---|---|---|"]
    for runtime, row in results["predict"].items():
        quantization = {"none": "float"}.get(results.get("onnx_quantization"), results.get("onnx_quantization"))
        name = f"onnx ({quantization} graphs)" if runtime == "onnx" else runtime
        lines.append(f"| {name} | {row['predict_alone_s']:.0f} s | {row['every_core_predict_ratio']:.2f} | "
                     f"{row['every_core_train_ratio']:.2f} | **{row['shared_predict_ratio']:.2f}** | "
                     f"**{row['shared_train_ratio']:.2f}** |")
    return lines + [""]


if __name__ == "__main__":
    main()
