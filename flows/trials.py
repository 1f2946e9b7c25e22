"""Parallel trials: one fine-tuning run per combination of `trials.grid`, each a mapped Prefect task on a Dask
cluster; the best on validation rows carved from the training rows (never the holdout) is evaluated on the
holdout, registered as the challenger and reviewed, exactly as `nichetune-train` does with its one model.

Scale by config: `trials.address` names a running Dask scheduler (its workers must see the project folder at
the same path, e.g. a shared file system); without one, a LocalCluster of `trials.workers` processes starts on
this machine for the run and stops with it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from flows import summary
from flows.pipeline import decide_and_publish, evaluate_and_register, prepare_data
from flows.review import compare_task, registry_for
from flows.summary import artifact_key
from tasks import finetune
from tasks.config import Params, Paths, TrialsParams, load_params, trial_params
from tasks.cores import THREADS_ENV
from tasks.errors import ParamsError
from tasks.layout import LOG_FILE, MODEL_DIR, POOL_FILE
from tasks.register import Registration
from tasks.strategies import unread_keys
from tasks.training import carve_validation

TRIALS_DIR = "trials"  # under base.workdir: one folder per trial, the carved rows and trials.json
TRAIN_FILE = "train.parquet"  # the training rows less the validation rows: what every trial trains on
VALIDATION_FILE = "validation.parquet"
RESULTS_FILE = "trials.json"
RECORD_FILE = "trial.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # scheduler hosts whose workers share this machine
# The LocalCluster scheduler's web server (its dashboard, with bokeh installed) on this machine only: Dask's
# default listens on every interface, where anyone on the network could watch the trials' tasks.
DASHBOARD_ADDRESS = "127.0.0.1:8787"  # a busy port is swapped for a free one


@dataclass(frozen=True)
class Trial:
    trial_id: str  # trial-01, ... in grid order (the order that breaks ties)
    overrides: dict[str, Any]  # {"finetune.KEY": value}
    params: Params  # the project's params with the overrides applied


def expand(params: Params, say=lambda line: None) -> list[Trial]:
    """One trial per combination of `trials.grid` (already checked when the params were loaded), but none that
    would train the same model as an earlier one (it differs only in keys its strategy never reads: `say` is told
    which); none with finetune.privacy, whose budget is for one training."""
    if any(trial_params(params, overrides).finetune.privacy.enabled for overrides in params.trials.combinations()):
        raise ParamsError("nichetune trials: finetune.privacy is on, but every trial trains on the same rows (the "
                          "trials together spend the budget once each) and the best is chosen on validation rows "
                          "outside it; choose settings on public data, then `nichetune run` once")
    kept, seen = [], {}
    for overrides in params.trials.combinations():
        trial = trial_params(params, overrides)
        name = trial.finetune.strategy
        unread = unread_keys(name)
        same = (name, tuple(sorted((key, str(value)) for key, value in overrides.items()
                                   if key.split(".", 1)[1] not in unread)))
        if same in seen:
            ignored = sorted(key for key in overrides if key.split(".", 1)[1] in unread)
            say(f"trials: {_named(overrides)} left out: it would train the same model as {_named(seen[same])} "
                f"(strategy {name} does not read {', '.join(ignored)})")
            continue
        seen[same] = overrides
        kept.append(Trial(f"trial-{len(kept) + 1:02d}", overrides, trial))
    return kept


def _named(overrides: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in overrides.items())


def carve(train_path: Path, fraction: float, seed: int, out_dir: Path) -> dict:
    """Split the training rows into the rows trials train on and the stratified, seeded validation rows they
    are scored on, with the split's unlabeled pool beside them; the holdout is never read here."""
    rows = pd.read_parquet(train_path)
    keep, held = carve_validation(rows["text"].astype(str).tolist(), rows["label"].tolist(), fraction, seed)
    if not held:
        raise ParamsError(f"trials.validation_fraction = {fraction} leaves no validation rows out of "
                          f"{len(rows)} training rows; raise it")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows.iloc[keep].to_parquet(out_dir / TRAIN_FILE, index=False)
    rows.iloc[held].to_parquet(out_dir / VALIDATION_FILE, index=False)
    pool = train_path.with_name(POOL_FILE)  # the split's pool holds no labeled text, validation rows' included
    if pool.is_file():  # finetune reads the unlabeled texts beside the rows it trains on
        shutil.copyfile(pool, out_dir / POOL_FILE)
    return {"train": out_dir / TRAIN_FILE, "validation": out_dir / VALIDATION_FILE,
            "train_rows": len(keep), "validation_rows": len(held)}


def score(model_dir: Path, validation_path: Path) -> dict:
    """Accuracy and macro-F1 of a trial's model on the validation rows."""
    from tasks.evaluate import score as quality
    from tasks.portfolio import load_classifier

    rows = pd.read_parquet(validation_path)
    predicted = load_classifier(model_dir).predict(rows["text"].astype(str).tolist())
    metrics, _ = quality(rows["label"].tolist(), predicted, majority="")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def best_of(records: list[dict], metric: str) -> dict:
    """The trial with the highest validation `metric`; on a tie, the first in grid order."""
    return max(records, key=lambda record: (record["validation"][metric], -records.index(record)))


def pin_to_worker_share() -> list[int] | None:
    """On a Dask worker, pin this thread to the worker's share of the host's cores, so that workers sharing a
    machine do not oversubscribe it (`tasks.model.resolve_device` gives torch one thread per pinned core).
    None where there is no Dask worker or no CPU affinity (e.g. macOS): nothing changes."""
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
    except ValueError:
        return None
    if not hasattr(os, "sched_setaffinity"):
        return None
    workers = get_client().scheduler_info(n_workers=-1)["workers"]
    here = sorted(address for address, info in workers.items() if info["host"] == workers[worker.address]["host"])
    threads = sum(workers[address]["nthreads"] for address in here)
    cores = sorted(os.sched_getaffinity(os.getpid()))  # the process's cores, whatever this thread had before
    per_thread = max(1, len(cores) // threads)
    start = sum(workers[address]["nthreads"] for address in here[: here.index(worker.address)]) * per_thread
    share = [cores[(start + i) % len(cores)] for i in range(per_thread * workers[worker.address]["nthreads"])]
    os.sched_setaffinity(0, share)  # 0: this thread, the one the trial runs in
    # the pin already divides the host among the workers: the trial's training must not halve it again for the
    # claims of the workers beside it (tasks.cores), so its thread count is fixed, unless whoever started the
    # worker fixed it already
    os.environ.setdefault(THREADS_ENV, str(per_thread))
    return share


def run_trial(trial: Trial, train_path: Path, validation_path: Path, paths: Paths) -> dict:
    """Fine-tune with the trial's params into `<workdir>/trials/<trial id>/` and score the validation rows."""
    import torch

    from tasks.runtime import quiet_offline_defaults

    quiet_offline_defaults()  # a remote worker did not start from the nichetune command
    try:
        from distributed import get_worker

        worker = get_worker().address
    except ValueError:
        worker = None
    cores = pin_to_worker_share()
    out = paths.stage(TRIALS_DIR) / trial.trial_id
    started = time.perf_counter()
    result = finetune.run(trial.params, train_path, paths, out)
    validation = score(result.model_dir, validation_path)
    record = {"trial_id": trial.trial_id, "overrides": trial.overrides, "worker": worker, "cores": cores,
              "torch_threads": torch.get_num_threads(), "validation": validation,
              "seconds": round(time.perf_counter() - started, 2), "best_epoch": result.best_epoch,
              "folder": str(out)}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return record


def adopt(record: dict, paths: Paths) -> None:
    """Copy the chosen trial's folder into `<workdir>/finetune/`, where evaluate and register read a model."""
    target = paths.stage("finetune")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(record["folder"], target)
    log = target / LOG_FILE
    training = json.loads(log.read_text())
    log.write_text(json.dumps({**training, "model_dir": str(target / MODEL_DIR), "trial": record}, indent=2))


def trial_table(records: list[dict], metric: str, best: str) -> str:
    """The trials as text: id, overrides, validation metrics, the worker each ran on; the best is starred."""
    lines = [f"{'':2}{'trial':<10}{'accuracy':>9}{'macro-F1':>9}  {'worker':<22}overrides"]
    for record in records:
        mark = "* " if record["trial_id"] == best else "  "
        overrides = " ".join(f"{key}={value}" for key, value in record["overrides"].items()) or "(none)"
        lines.append(f"{mark}{record['trial_id']:<10}{record['validation']['accuracy']:>9.3f}"
                     f"{record['validation']['macro_f1']:>9.3f}  {record['worker'] or 'in process':<22}{overrides}")
    lines.append(f"* the best by validation {metric}: {best}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the Prefect tasks and the flow


@task(name="carve-validation", cache_policy=NO_CACHE)
def carve_task(params: Params, train: Path, paths: Paths) -> dict:
    """Carve the validation rows from the training rows; earlier trials' folders are removed first."""
    out = paths.stage(TRIALS_DIR)
    shutil.rmtree(out, ignore_errors=True)  # a smaller grid than last time must not leave stale trials
    return carve(train, params.trials.validation_fraction, params.base.seed, out)


@task(name="finetune-trial", cache_policy=NO_CACHE, task_run_name="finetune-{trial.trial_id}")
def finetune_trial(trial: Trial, train: Path, validation: Path, paths: Paths) -> dict:
    """One trial on a Dask worker: fine-tune with its overrides, score the validation rows."""
    return run_trial(trial, train, validation, paths)


@task(name="choose-trial", cache_policy=NO_CACHE)
def choose_task(params: Params, records: list[dict], carved: dict, paths: Paths) -> dict:
    """Pick the best trial by validation metric, write trials.json and the table artifact, adopt its model."""
    from prefect.artifacts import create_table_artifact

    metric = params.trials.metric
    best = best_of(records, metric)
    summary = {"metric": metric, "best": best["trial_id"], "chosen_on": "validation rows carved from the training "
               "rows (the holdout is only used after the choice)", "train_rows": carved["train_rows"],
               "validation_rows": carved["validation_rows"], "trials": records}
    (paths.stage(TRIALS_DIR) / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    create_table_artifact(
        table=[{"trial": r["trial_id"], **{k: str(v) for k, v in r["overrides"].items()},
                f"validation {metric}": round(r["validation"][metric], 4), "worker": r["worker"] or "in process",
                "best": r["trial_id"] == best["trial_id"]} for r in records],
        key=artifact_key("trials", params.register.model_name),
        description=f"Every trial's overrides and validation {metric}; the best is registered")
    print(trial_table(records, metric, best["trial_id"]))
    adopt(best, paths)
    return best


@task(name="tag-trial", cache_policy=NO_CACHE)
def tag_task(params: Params, paths: Paths, registration: Registration, best: dict) -> None:
    """Name the trial on the registered version, and keep every trial's result in its MLflow run."""
    registry = registry_for(params, paths)
    metric = params.trials.metric
    tags = {"trial_id": best["trial_id"], "trial_overrides": json.dumps(best["overrides"], sort_keys=True),
            f"trial_validation_{metric}": f"{best['validation'][metric]:.4f}"}
    for key, value in tags.items():
        registry.client.set_model_version_tag(registry.name, registration.version, key, value)
    registry.client.log_artifact(registration.run_id, str(paths.stage(TRIALS_DIR) / RESULTS_FILE))


def workers_can_report(cfg: TrialsParams) -> None:
    """Fail before any work when a scheduler on another machine is named but no Prefect server is: its
    workers could not reach this run's temporary server."""
    from prefect.settings import PREFECT_API_URL

    if cfg.address and not PREFECT_API_URL.value():
        host = urlparse(cfg.address if "://" in cfg.address else f"tcp://{cfg.address}").hostname
        if host not in {*LOOPBACK, socket.gethostname()}:
            raise ParamsError(f"trials.address = {cfg.address!r} is on another machine, whose workers cannot reach "
                              f"this run's temporary Prefect server: set PREFECT_API_URL to a server they can reach")


@contextmanager
def api_for_workers():
    """Tasks submitted in this block report to this process's Prefect API. Without PREFECT_API_URL that is
    a temporary server here, which Dask workers would not find: each would start its own (slow, and it times
    out on a busy machine), so they are handed this one's address; remote workers need a real server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one Prefect started for this run (a singleton); started if not yet
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def quiet_dask() -> None:
    """Dask's INFO lines (scheduler, nanny, connections) would drown the flow's log; its warnings still show."""
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by the worker processes at start
    logging.getLogger("distributed").setLevel(logging.WARNING)


def dask_runner(cfg: TrialsParams) -> DaskTaskRunner:
    """The scheduler at `trials.address`, else a LocalCluster of `trials.workers` single-thread processes."""
    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": DASHBOARD_ADDRESS})


@flow(name="nichetune-trial-runs", log_prints=True, validate_parameters=False)
def trial_runs(trials: list, carved: dict, paths: Paths) -> list[dict]:
    """Each trial's fine-tuning, in parallel on the Dask cluster this flow is given (`trials_pipeline` gives
    it the one params.yaml names, whoever starts the run: the CLI or a deployment)."""
    with api_for_workers():
        futures = finetune_trial.map(trials, unmapped(carved["train"]), unmapped(carved["validation"]),
                                     unmapped(paths))
    return futures.result()


@flow(name="nichetune-trials", log_prints=True)
def trials_pipeline(root: str = ".", params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Labeled file -> validated data -> one fine-tuning per trial, in parallel on the Dask cluster of
    `trials.address` (else a LocalCluster of `trials.workers`) -> the best on validation rows -> evaluation on
    the holdout -> registered challenger -> gate -> the reviewer's decision."""
    params = load_params(Path(root) / params_file, overrides)
    paths = Paths.of(Path(root), params)
    trials = expand(params, say=print)
    workers_can_report(params.trials)
    splits = prepare_data(params, paths)
    carved = carve_task(params, splits.train, paths)
    quiet_dask()
    records = trial_runs.with_options(task_runner=dask_runner(params.trials))(trials, carved, paths)
    best = choose_task(params, records, carved, paths)
    chosen = next(trial.params for trial in trials if trial.trial_id == best["trial_id"])
    registration = evaluate_and_register(chosen, paths, paths.stage("finetune") / MODEL_DIR, splits)
    tag_task(chosen, paths, registration, best)
    review = compare_task(chosen, paths, registration, str(splits.holdout))
    result = decide_and_publish(chosen, paths, registration, review, summary.per_class_table(paths))
    return {**result, "best_trial": best["trial_id"], "trials": records,
            "trials_file": str(paths.stage(TRIALS_DIR) / RESULTS_FILE)}


def run_trials(root: str = ".", params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Run the trials flow (`nichetune trials`), with its params checked before a temporary Prefect server
    starts for nothing."""
    params = load_params(Path(root) / params_file, overrides)
    expand(params)
    workers_can_report(params.trials)
    return trials_pipeline(root=root, params_file=params_file, overrides=overrides)
