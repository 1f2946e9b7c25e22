"""`nichetune up`: everything one machine needs, on 127.0.0.1, until Ctrl-C.

It starts the Prefect server and UI and the MLflow tracking server and UI (SQLite, artifacts on disk), serves one
training deployment per params file (dataset) with an event trigger on `nichetune.data.labeled` for that
dataset (later triggers wait for the training before them, none is dropped; a run waiting for its reviewer
holds nothing up), and watches `data/incoming/` for files to ingest (under `data/incoming/unlabeled/`: texts
without labels, which join the unlabeled pool and start no training)."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path

from flows.incoming import INCOMING, RESERVED, UNLABELED_DIR, IncomingWatcher
from flows.slots import create_training_slots
from flows.ui import Servers, stop_on_signals
from tasks.config import Params, Paths
from tasks.errors import NichetuneError

HEARTBEAT_SECONDS = 30  # how often a served run tells the server it lives (Prefect's shortest interval)
# A run silent this long is marked crashed: five missed heartbeats, room for a busy 2-core machine to send them late
SILENT_FOR = timedelta(seconds=150)
SILENT_RUNS_AUTOMATION = "nichetune: mark runs that stopped sending heartbeats as crashed"


def deployment_for(params: Params, paths: Paths, params_file: Path, overrides: list[str]):
    """The training flow of one dataset, triggered by its labeled-data events. It has no deployment
    concurrency limit: Prefect frees such a slot when a run pauses and then aborts the run, so a run waiting
    for its reviewer would crash. One training at a time comes from the dataset's training slot instead."""
    from prefect.deployments.runner import EntrypointType
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.events import LABELED, resource_id
    from flows.pipeline import train_pipeline

    dataset = params.ingest.dataset
    return train_pipeline.to_deployment(
        name=f"train-{dataset}",
        parameters={"root": str(paths.root), "params_file": str(params_file), "overrides": overrides},
        triggers=[DeploymentEventTrigger(name=f"new labeled data for {dataset}", expect={LABELED},
                                         match={"prefect.resource.id": resource_id(dataset)})],
        description=f"Retrain {params.register.model_name} when labeled data for {dataset} arrives",
        tags=["nichetune", dataset],
        entrypoint_type=EntrypointType.MODULE_PATH,  # the installed package, wherever the project lives
    )


def check_projects(projects: list[tuple[Params, Paths, Path]]) -> None:
    """Each params file must name its own dataset and its own workdir (stage outputs would collide), and no
    dataset may be named as a folder the incoming watcher keeps for itself."""
    for params, _, file in projects:
        if params.ingest.dataset in RESERVED:
            raise NichetuneError(f"{file}: dataset {params.ingest.dataset!r} is the name of a folder of "
                                 f"{INCOMING}/ ({', '.join(RESERVED)}); give ingest.dataset another name")
    for kind, key in (("dataset", lambda p: p[0].ingest.dataset), ("workdir", lambda p: p[1].workdir)):
        seen: dict = {}
        for project in projects:
            if key(project) in seen:
                raise NichetuneError(f"{project[2]} and {seen[key(project)]} use the same {kind} "
                                     f"{key(project)}; give each params file its own ingest.dataset and base.workdir")
            seen[key(project)] = project[2]


def up(projects: list[tuple[Params, Paths, Path]], overrides: list[str], prefect_port: int, mlflow_port: int,
       interval: float) -> None:
    """Start the servers, serve the deployments and watch the incoming folder until Ctrl-C or SIGTERM."""
    check_projects(projects)
    servers = Servers(projects[0][1], prefect_port, mlflow_port)
    stop_on_signals()
    watcher = None
    try:
        servers.wait_until_healthy()
        # Runs started here, their flow-run subprocesses and the events the watcher emits all go to these servers.
        os.environ["PREFECT_API_URL"] = f"{servers.prefect}/api"
        os.environ["MLFLOW_TRACKING_URI"] = servers.mlflow
        from prefect.runner import Runner
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.pipeline import SERVED_ROOTS_ENV

        os.environ[SERVED_ROOTS_ENV] = os.pathsep.join(sorted({str(paths.root) for _, paths, _ in projects}))

        with temporary_settings(updates={PREFECT_API_URL: f"{servers.prefect}/api"}):
            # What `prefect.serve` does, with the ready line in between: the deployments and their triggers exist
            # before anything is ingested, so the first file's event already finds its trigger.
            create_training_slots([params.ingest.dataset for params, _, _ in projects])
            crash_silent_runs()
            os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)  # the served runs' processes
            # No cap on runs: queued runs wait for their training slot, paused ones for their reviewer.
            runner = Runner(limit=None)
            for params, paths, file in projects:
                runner.add_deployment(deployment_for(params, paths, file, overrides))
            watcher = IncomingWatcher([(params, paths) for params, paths, _ in projects], interval)
            watcher.start()
            stop_runner_on_signals(runner)
            print(ready_message(servers, projects), flush=True)
            asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass
    finally:
        if watcher is not None:
            watcher.stop()
        servers.stop()
        print("nichetune up: stopped the servers, the deployments and the incoming-folder watcher", flush=True)


def crash_silent_runs(within: timedelta = SILENT_FOR) -> None:
    """Prefect's automation for zombie runs ("Detect zombie flows" in its docs), created once per server: a run
    that sent a heartbeat and then nothing, neither another heartbeat nor a final state, for `within`, is marked
    crashed. Its process died without a word (killed with `nichetune up` itself, or the machine lost power);
    without this the Prefect UI would show it running for good. A run waiting for its reviewer keeps sending
    heartbeats from its live process."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(SILENT_RUNS_AUTOMATION):
            return
    finals = ("Completed", "Failed", "Cancelled", "Crashed")
    Automation(
        name=SILENT_RUNS_AUTOMATION,
        description="A flow run that stopped sending heartbeats: its process died without reporting.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in finals)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1, within=within),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {within.total_seconds():.0f} s: its process stopped "
                                            "without reporting (killed, or the machine stopped)")],
    ).create()


def stop_runner_on_signals(runner) -> None:
    """Ctrl-C and a closed terminal stop the runner the way Prefect's runner stops on SIGTERM: the runs in
    progress are cancelled, and their processes end (freeing their training slots) while the servers still
    answer. Interrupted at once instead, a run would leave its slot taken and show as running for good. A second
    Ctrl-C stops at once."""
    def stop(signum, _frame) -> None:
        if not runner.stopping:
            print(f"nichetune up: {signal.Signals(signum).name} received; cancelling the runs in progress, then "
                  "stopping the servers (Ctrl-C again to stop at once)", flush=True)
        runner.handle_sigterm()

    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)


def ready_message(servers: Servers, projects: list[tuple[Params, Paths, Path]]) -> str:
    folder = projects[0][1].root / INCOMING
    lines = [f"Prefect UI: {servers.prefect}", f"MLflow UI:  {servers.mlflow}"]
    for params, _, file in projects:
        lines.append(f"Deployment nichetune-train/train-{params.ingest.dataset} ({file.name}): runs on "
                     f"nichetune.data.labeled for dataset {params.ingest.dataset}, training one at a time")
    lines += [
        f"Watching {folder}/ (files there go to dataset {projects[0][0].ingest.dataset}; "
        f"files in {folder}/<dataset>/ to that dataset)",
        f"Watching {folder / UNLABELED_DIR}/ the same way for unlabeled texts: they join the dataset's unlabeled "
        "pool and start no training",
        f"In another shell: export PREFECT_API_URL={servers.prefect}/api MLFLOW_TRACKING_URI={servers.mlflow}",
        "Ready. Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
