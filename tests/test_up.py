"""`nichetune up` as a user sees it, with a reviewer signing off: files dropped into data/incoming/ trigger
training runs through the real Prefect server (one training at a time, none dropped), each run pauses for the
reviewer's form without holding anything up, the form approves, and a headless Chromium finds the flow run,
its summary artifact and the new model version in the Prefect and MLflow UIs. Screenshots go to
test-output/screenshots/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, cfpb_sample, make_project, project_params
from tests.test_cli import COMMAND

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # no calls out of this offline machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout: float, what: str, log: Path | None = None):
    """Poll until `check` returns something true; on timeout, fail with the end of `nichetune up`'s log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    tail = "\n".join(log.read_text().splitlines()[-80:]) if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" +
                         (f"; the last lines of {log}:\n{tail}" if log else ""))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_backbone):
    """A project served by `nichetune up` on free ports, with its own Prefect home; stopped with Ctrl-C."""
    rows = cfpb_sample(per_class=40)
    params = project_params(str(tiny_backbone), ingest={**project_params("")["ingest"], "path": None},
                            register={**project_params("")["register"], "approval": "reviewer"})
    root = make_project(tmp_path_factory.mktemp("up") / "project", rows.iloc[:0], params)
    ports = free_port(), free_port()
    log = root.parent / "up.log"
    env = {**os.environ, "PREFECT_HOME": str(root.parent / "prefect-home")}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    with log.open("w") as out:
        process = subprocess.Popen([*COMMAND, "up", "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1]),
                                    "--interval", "1"], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   text=True)
    try:
        wait_for(lambda: "Ready. Ctrl-C stops everything." in log.read_text(), 240, "nichetune up to be ready", log)
        yield {"root": root, "rows": rows, "prefect": f"http://127.0.0.1:{ports[0]}",
               "mlflow": f"http://127.0.0.1:{ports[1]}", "process": process, "log": log}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def prefect_client(prefect: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: f"{prefect}/api"}):
        with get_client(sync_client=True) as client:
            yield client


def flow_runs(prefect: str) -> list:
    with prefect_client(prefect) as client:
        return client.read_flow_runs()


def in_state(prefect: str, count: int, check) -> list | None:
    """All `count` runs once every one of them passes `check` (a state test), in the order they started."""
    runs = flow_runs(prefect)
    if len(runs) == count and all(check(run.state) for run in runs):
        return sorted(runs, key=lambda run: run.start_time)
    return None


def task_times(prefect: str, run) -> dict:
    """Each stage of a flow run: (start, end)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(prefect) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return {task.name.rsplit("-", 1)[0]: (task.start_time, task.end_time) for task in tasks}


def state_of(prefect: str, run):
    with prefect_client(prefect) as client:
        return client.read_flow_run(run.id).state


def approve(prefect: str, run, reviewer: str) -> None:
    from prefect.flow_runs import resume_flow_run

    with prefect_client(prefect):
        resume_flow_run(run.id, run_input={"decision": "approve", "reviewer": reviewer, "comment": "checked"})


def test_runs_train_one_at_a_time_and_wait_for_their_reviewer_holding_no_slot(stack):
    from mlflow import MlflowClient

    from flows.slots import training_slot

    incoming, log, prefect = stack["root"] / "data" / "incoming", stack["log"], stack["prefect"]
    stack["rows"].iloc[:100].to_csv(incoming / "first.csv", index=False)
    wait_for(lambda: "incoming: first.csv -> dataset complaints" in log.read_text(), 120, "first.csv's ingest", log)
    wait_for(lambda: any(run.state.is_running() for run in flow_runs(prefect)), 180, "the first run", log)
    stack["rows"].iloc[100:].to_csv(incoming / "second.csv", index=False)  # arrives while the first trains
    first, second = wait_for(lambda: in_state(prefect, 2, lambda state: state.is_paused()), 420,
                             "both runs to pause for their reviewer", log)
    # Prefect frees a deployment's concurrency slot when its run pauses, and its engine then aborts the run at
    # the next lease renewal, minutes later: the deployment has no such limit, and the training slot is free.
    with prefect_client(prefect) as client:
        assert client.read_deployment(first.deployment_id).global_concurrency_limit is None
        assert client.read_global_concurrency_limit_by_name(training_slot("complaints")).active_slots == 0
    first_stages, second_stages = task_times(prefect, first), task_times(prefect, second)
    assert second.created < first_stages["compare"][1]  # triggered while the first was still training ...
    assert second_stages["ingest"][0] >= first_stages["compare"][1]  # ... and trained after it
    processed = sorted(path.name for path in (incoming / "processed").iterdir())
    assert [name.split("-", 1)[1] for name in processed] == ["first.csv", "second.csv"]
    assert log.read_text().count("event nichetune.data.labeled for nichetune.dataset.complaints") == 2

    approve(prefect, first, "ana")
    wait_for(lambda: state_of(prefect, first).is_completed(), 120, "the first run to finish after approval", log)
    one = MlflowClient(stack["mlflow"], registry_uri=stack["mlflow"]).get_model_version("complaints", "1")
    assert one.tags["decision"] == "approved" and one.tags["promoted_by"] == "ana"
    stack["waiting"] = second


def heartbeats(prefect: str, run) -> int:
    import httpx

    query = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                        "any_resource": {"id": [f"prefect.flow-run.{run.id}"]}}}
    answer = httpx.post(f"{prefect}/api/events/filter", json=query)
    answer.raise_for_status()
    return answer.json()["total"]


def test_a_run_waiting_for_its_reviewer_sends_heartbeats_that_the_silent_runs_automation_watches(stack):
    from flows.up import SILENT_RUNS_AUTOMATION

    prefect, waiting = stack["prefect"], stack["waiting"]
    with prefect_client(prefect) as client:
        assert len(client.read_automations_by_name(SILENT_RUNS_AUTOMATION)) == 1
    sent = heartbeats(prefect, waiting)
    assert sent >= 1
    wait_for(lambda: heartbeats(prefect, waiting) > sent, 75, "another heartbeat from the paused run", stack["log"])
    assert state_of(prefect, waiting).is_paused()


def test_the_prefect_and_mlflow_uis_show_the_run_its_summary_and_the_model(stack):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian's chromium is needed for the UI test: apt-get install chromium")
    runs = wait_for(lambda: [run for run in flow_runs(stack["prefect"]) if run.state.is_completed()], 60,
                    "a completed run", stack["log"])
    run = max(runs, key=lambda run: run.end_time)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack['prefect']}/runs/flow-run/{run.id}")
        page.get_by_text(run.name).first.wait_for(timeout=60_000)
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("summary-complaints").first.wait_for(timeout=60_000)
        page.get_by_text("per-class-complaints").first.wait_for(timeout=10_000)
        page.screenshot(path=SCREENSHOTS / "prefect-flow-run-artifacts.png")
        page.get_by_text("summary-complaints").first.click()
        page.get_by_text("Against the champion").first.wait_for(timeout=60_000)
        page.screenshot(path=SCREENSHOTS / "prefect-summary-artifact.png")
        page.goto(f"{stack['mlflow']}/#/models/complaints")
        page.get_by_text("Version 2").first.wait_for(timeout=60_000)
        assert page.get_by_text("champion").count() >= 1
        page.screenshot(path=SCREENSHOTS / "mlflow-registered-model.png")
        browser.close()


def test_a_paused_run_holds_no_deployment_lease_and_its_approval_is_gated_anew(stack):
    """The second run has waited for its reviewer since before the UI test. Prefect's flow engine renews a
    deployment concurrency lease 225 s after a run starts, and aborts the run when that renewal fails, as it did
    for a paused run that had held a deployment slot. The engine renews only a lease recorded in the run's state,
    so no state of this run may carry one (waiting out the 225 s here would add minutes to every CI run)."""
    from mlflow import MlflowClient

    from tasks.promote import mlflow_dict

    prefect, log, second = stack["prefect"], stack["log"], stack["waiting"]
    with prefect_client(prefect) as client:
        states = client.read_flow_run_states(second.id)
    assert {state.type.value for state in states} >= {"RUNNING", "PAUSED"}
    assert all(state.state_details.deployment_concurrency_lease_id is None for state in states)
    assert state_of(prefect, second).is_paused() and "lease renewal failed" not in log.read_text()
    approve(prefect, second, "ben")  # judged by the gate against the champion the first approval made
    wait_for(lambda: state_of(prefect, second).is_completed(), 120, "the second run to finish", log)
    client = MlflowClient(stack["mlflow"], registry_uri=stack["mlflow"])
    two = client.get_model_version("complaints", "2")
    assert mlflow_dict(client, two.run_id, "comparison.json")["champion_version"] is None  # none when trained
    assert mlflow_dict(client, two.run_id, "comparison_at_approval.json")["champion_version"] == "1"
    assert two.tags["decision"] in {"approved", "rejected"}
    assert (two.tags.get("promoted_by") == "ben") == (two.tags["decision"] == "approved")


def test_the_log_shows_the_runs_not_each_request_and_mlflow_starts_no_job_runner(stack):
    """Two training runs made hundreds of requests to MLflow; the log a user watches keeps to what happened.
    MLflow's job runner and its queue consumers (GenAI jobs nichetune never sends) would hold over 1 GB."""
    import psutil

    text = stack["log"].read_text()
    assert "complaints version 2" in text  # the runs' own lines are there
    assert "/api/2.0/mlflow/" not in text and "StarletteDeprecationWarning" not in text
    commands = [" ".join(child.cmdline()) for child in psutil.Process(stack["process"].pid).children(recursive=True)]
    assert any("mlflow server" in command for command in commands)
    assert not [command for command in commands if "huey" in command or "_job_runner" in command]


def test_ctrl_c_cancels_the_run_in_progress_and_stops_everything_it_started(stack):
    """Ctrl-C while a run trains: the run is cancelled and frees its training slot before the servers stop, or
    the next `nichetune up` or `nichetune run` of the dataset would wait for it for good."""
    from flows.slots import training_slot
    from tests.test_slots import slot

    process, log, prefect = stack["process"], stack["log"], stack["prefect"]
    stack["rows"].iloc[:60].assign(text=lambda rows: rows["text"] + " (again)").to_csv(
        stack["root"] / "data" / "incoming" / "third.csv", index=False)

    def training() -> bool:
        with prefect_client(prefect) as client:
            return client.read_global_concurrency_limit_by_name(training_slot("complaints")).active_slots == 1

    wait_for(training, 180, "the third run to take the training slot", log)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0
    text = log.read_text()
    assert "SIGINT received; cancelling the runs in progress" in text and "Cancelled flow run" in text
    assert "stopped the servers" in text
    for url in (stack["prefect"], stack["mlflow"]):
        port = int(url.rsplit(":", 1)[1])
        wait_for(lambda: _free(port), 30, f"the server on port {port} to stop")
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    lines = slot({**env, "PREFECT_HOME": str(stack["root"].parent / "prefect-home")}, dataset="complaints")
    assert lines[0] == "0"  # the slot is free ...
    assert sum(line.endswith(" CANCELLED") for line in lines) == 1  # ... and the run shows as cancelled
    assert not [line for line in lines[1:] if line.endswith(" RUNNING")]


def _free(port: int) -> bool:
    """Nothing listens there any more (a bind could still fail for a minute on connections in TIME_WAIT)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0
