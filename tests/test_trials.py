"""Parallel trials: the grid and its errors, then the trials flow on a real two-worker Dask cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tasks.config import MAX_TRIALS, TrialsParams, load_params
from tasks.errors import ParamsError
from tests.conftest import cfpb_sample, make_project, project_params


def params_with(tmp_path: Path, trials: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"trials": trials}, sort_keys=False))
    return path


def test_the_grid_expands_to_its_cartesian_product_in_order(tmp_path):
    from flows.trials import expand

    grid = {"finetune.learning_rate": [0.001, 0.003], "finetune.strategy": ["lora", "head", "full"]}
    params = load_params(params_with(tmp_path, {"grid": grid}))
    said = []
    trials = expand(params, say=said.append)
    assert [t.trial_id for t in trials] == [f"trial-{i:02d}" for i in range(1, 6)]
    assert trials[1].overrides == {"finetune.learning_rate": 0.001, "finetune.strategy": "head"}
    assert trials[1].params.finetune.strategy == "head" and trials[1].params.finetune.learning_rate == 0.001
    assert trials[4].params.finetune.learning_rate == 0.003 and trials[4].params.finetune.strategy == "full"
    assert trials[4].params.trials.grid == grid  # a trial's params still show the whole search
    assert trials[0].params.finetune.epochs == params.finetune.epochs  # other keys are the project's
    # the head trains the same model at any learning_rate (it reads head_learning_rate): trained once
    assert said == ["trials: finetune.learning_rate=0.003 finetune.strategy=head left out: it would train the same "
                    "model as finetune.learning_rate=0.001 finetune.strategy=head (strategy head does not read "
                    "finetune.learning_rate)"]


def test_each_strategy_reads_the_keys_it_is_said_not_to_ignore():
    """unread_keys against what the training code reads: the adapters' keys, freezing, layer-wise rates."""
    from tasks.strategies import STRATEGIES, unread_keys

    assert unread_keys("auto") == set()
    assert {"learning_rate", "lora_r", "freeze_layers", "layer_lr_decay", "pair_loss_weight"} <= unread_keys("head")
    assert "lora_r" not in unread_keys("lora") and "lora_r" in unread_keys("ia3")
    assert "ia3_target_modules" not in unread_keys("ia3")
    assert "freeze_layers" not in unread_keys("freeze") and "freeze_layers" in unread_keys("full")
    assert "word_embeddings" not in unread_keys("full") and "word_embeddings" not in unread_keys("gradual_unfreeze")
    assert {"word_embeddings"} <= unread_keys("freeze") & unread_keys("lora") & unread_keys("head")
    assert "layer_lr_decay" in unread_keys("lora") and "layer_lr_decay" not in unread_keys("gradual_unfreeze")
    for name in STRATEGIES:  # every strategy reads the keys every training reads
        assert not {"epochs", "batch_size", "head_learning_rate"} & unread_keys(name)


@pytest.mark.parametrize("grid, message", [
    ({"finetune.lr": [0.1]}, r"trials\.grid: unknown key 'finetune\.lr'; grid keys are finetune\.KEY, .*learning_rate"),
    ({"nosuch.key": [1]}, r"trials\.grid: unknown key 'nosuch\.key'"),
    ({"split.holdout_fraction": [0.1, 0.2]}, r"'split\.holdout_fraction' cannot vary between trials"),
    ({"finetune.strategy": ["lora", "bogus"]}, r"trials\.grid: finetune\.strategy = 'bogus' is not allowed: .*'lora'"),
    ({"finetune.learning_rate": [0.01, -1]}, r"finetune\.learning_rate = -1 is not allowed: .*greater than 0"),
    ({"finetune.epochs": []}, r"finetune\.epochs = \[\]: list each value once"),
    ({"finetune.epochs": [2, 2]}, r"finetune\.epochs = \[2, 2\]: list each value once"),
    ({"finetune.epochs": [1, 2, 3, 4], "finetune.batch_size": [4, 8, 16], "finetune.lora_r": [2, 4, 8]},
     rf"trials\.grid expands to 36 trials \(4 x 3 x 3\); at most {MAX_TRIALS}: shorten a list"),
])
def test_a_bad_grid_fails_at_load_with_one_line_naming_it(tmp_path, grid, message):
    with pytest.raises(ParamsError, match=message) as caught:
        load_params(params_with(tmp_path, {"grid": grid}))
    assert str(caught.value).startswith(str(tmp_path / "params.yaml")) and "\n" not in str(caught.value)


def test_set_overrides_reach_the_trials_section(tmp_path):
    params = load_params(params_with(tmp_path, {}), ["trials.address=tcp://127.0.0.1:8786", "trials.workers=3",
                                                     "trials.grid={finetune.epochs: [1, 2]}"])
    assert params.trials.address == "tcp://127.0.0.1:8786" and params.trials.workers == 3
    assert params.trials.combinations() == [{"finetune.epochs": 1}, {"finetune.epochs": 2}]


def test_trials_train_beside_the_splits_unlabeled_pool(tmp_path):
    from flows.trials import TRAIN_FILE, VALIDATION_FILE, carve
    from tasks.finetune import read_unlabeled
    from tasks.layout import POOL_FILE

    split = tmp_path / "split"
    split.mkdir()
    labels = ["billing", "delivery"] * 4
    pd.DataFrame({"text": [f"labeled {i}" for i in range(8)], "label": labels}).to_parquet(split / "train.parquet")
    pool = pd.DataFrame({"text": ["never labeled one", "never labeled two"]})
    pool.to_parquet(split / POOL_FILE)
    carved = carve(split / "train.parquet", 0.25, 0, tmp_path / "trials")
    assert carved["train"].name == TRAIN_FILE and carved["validation"].name == VALIDATION_FILE
    params = load_params(params_with(tmp_path, {}))
    unlabeled = read_unlabeled(params, carved["train"].parent, tmp_path / "ingest")
    assert unlabeled.texts == pool["text"].tolist()  # self-training and adaptation see the same pool as a run


def test_the_best_trial_is_the_highest_and_the_first_on_a_tie():
    from flows.trials import best_of

    records = [{"trial_id": f"t{i}", "validation": {"macro_f1": f1, "accuracy": 0.5}}
               for i, f1 in enumerate([0.4, 0.7, 0.7, 0.1])]
    assert best_of(records, "macro_f1")["trial_id"] == "t1"
    assert best_of(records, "accuracy")["trial_id"] == "t0"


def test_the_command_checks_its_options_before_any_work(tmp_path, capsys):
    from flows.cli import main

    path = params_with(tmp_path, {})
    with pytest.raises(SystemExit) as stopped:
        main(["trials", "--params", str(path), "--workers", "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: {path}: trials.workers = 0 is not allowed: "
                                               "Input should be greater than or equal to 1")


def test_a_remote_scheduler_needs_a_prefect_server_its_workers_can_reach():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.trials import workers_can_report

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        workers_can_report(TrialsParams(address="tcp://127.0.0.1:8786"))  # this machine's temporary server
        workers_can_report(TrialsParams(address="localhost:8786"))
        with pytest.raises(ParamsError, match=r"'tcp://10\.1\.2\.3:8786' is on another machine.*PREFECT_API_URL"):
            workers_can_report(TrialsParams(address="tcp://10.1.2.3:8786"))
    with temporary_settings(updates={PREFECT_API_URL: "http://10.1.2.4:4200/api"}):
        workers_can_report(TrialsParams(address="tcp://10.1.2.3:8786"))


def test_the_local_cluster_listens_on_this_machine_only():
    import ipaddress

    import psutil
    from distributed import LocalCluster

    from flows.trials import dask_runner

    kwargs = {**dask_runner(TrialsParams()).cluster_kwargs, "n_workers": 0}  # the scheduler and its web server
    with LocalCluster(**kwargs) as cluster:
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert cluster.scheduler.http_server is not None and listening
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening


def _pinned_threads() -> tuple[int, int]:
    from flows.trials import pin_to_worker_share
    from tasks import cores

    share = pin_to_worker_share()
    with cores.claim():  # as the trial's training holds one
        return len(share), cores.share()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning needs CPU affinity (Linux)")
def test_a_pinned_trial_keeps_its_share_while_another_process_computes(monkeypatch):
    """The pin divides the host among the workers; a training beside it (a claim of another process) must not
    halve the pinned trial's threads again."""
    from distributed import Client, LocalCluster

    from tasks import cores

    monkeypatch.delenv(cores.THREADS_ENV, raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client, cores.claim():  # this process computes meanwhile
        pinned, threads = client.submit(_pinned_threads, pure=False).result()
    assert threads == pinned == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- the flow on a two-worker Dask cluster


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_backbone, prefect_harness, dask_cluster):
    from flows.trials import run_trials

    params = project_params(str(tiny_backbone), finetune={"head_learning_rate": 0.1},
                            evaluate={"drift_report": False, "window": None, "explain_samples": 0})
    params["trials"] = {"grid": {"finetune.strategy": ["head", "lora", "full"]}, "validation_fraction": 0.25}
    root = make_project(tmp_path_factory.mktemp("trials") / "project", cfpb_sample(), params)
    result = run_trials(root=str(root), overrides=[f"trials.address={dask_cluster.scheduler_address}"])
    return root, result, dask_cluster


@pytest.mark.slow  # trains on a Dask cluster
def test_every_trial_ran_on_the_dask_workers(searched):
    root, result, cluster = searched
    summary = json.loads((root / "outputs" / "trials" / "trials.json").read_text())
    assert [t["trial_id"] for t in summary["trials"]] == ["trial-01", "trial-02", "trial-03"]
    assert [t["overrides"] for t in summary["trials"]] == [{"finetune.strategy": s} for s in ("head", "lora", "full")]
    for trial in summary["trials"]:
        assert 0 <= trial["validation"]["macro_f1"] <= 1
        assert (root / "outputs" / "trials" / trial["trial_id"] / "model" / "nichetune.json").is_file()
    workers = set(cluster.scheduler_info["workers"])
    used = {trial["worker"] for trial in summary["trials"]}
    assert used == workers and len(used) == 2  # both workers of the cluster, none in the flow's process
    assert all(trial["torch_threads"] == len(trial["cores"]) for trial in summary["trials"])
    shares = {tuple(trial["cores"]) for trial in summary["trials"]}  # the cores each worker was pinned to
    if len(os.sched_getaffinity(0)) >= 2:  # two workers on one machine: each its own share, no overlap
        assert len(shares) == 2
        first, second = shares
        assert not set(first) & set(second)


@pytest.mark.slow  # trains on a Dask cluster
def test_the_registered_version_is_the_best_trial(searched):
    root, result, _ = searched
    summary = json.loads((root / "outputs" / "trials" / "trials.json").read_text())
    scores = [t["validation"]["macro_f1"] for t in summary["trials"]]
    assert len(set(scores)) > 1  # the trials differ, so the choice means something
    best = summary["trials"][scores.index(max(scores))]  # the first of the highest
    assert result["best_trial"] == summary["best"] == best["trial_id"]
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    version = client.get_model_version_by_alias("complaints", "challenger")
    assert str(version.version) == result["version"]
    assert version.tags["trial_id"] == best["trial_id"]
    assert json.loads(version.tags["trial_overrides"]) == best["overrides"]
    assert version.tags["strategy"] == best["overrides"]["finetune.strategy"]
    assert client.get_run(result["run_id"]).data.params["finetune.strategy"] == best["overrides"]["finetune.strategy"]
    assert result["decision"] == "promoted"  # register.approval: auto, a first model


@pytest.mark.slow  # trains on a Dask cluster
def test_trials_were_chosen_on_validation_rows_never_the_holdout(searched):
    from flows.trials import score

    root, result, _ = searched
    out = root / "outputs"
    ids = lambda name: set(pd.read_parquet(out / name)["id"])  # noqa: E731
    validation, holdout = ids("trials/validation.parquet"), ids("split/holdout.parquet")
    assert validation and validation <= ids("split/train.parquet") and not validation & holdout
    assert not validation & ids("trials/train.parquet")
    summary = json.loads((out / "trials" / "trials.json").read_text())
    for trial in summary["trials"]:  # the recorded scores are those of the validation rows
        assert score(out / "trials" / trial["trial_id"] / "model",
                     out / "trials" / "validation.parquet") == pytest.approx(trial["validation"])
    assert result["metrics"]["holdout_rows"] == len(holdout)
