"""`nichetune up` as a user sees it: files dropped into data/incoming/ trigger training runs through the real
Prefect server (one run at a time, none dropped), and a headless Chromium finds the flow run, its summary
artifact and the new model version in the Prefect and MLflow UIs. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
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
    params = project_params(str(tiny_backbone), ingest={**project_params("")["ingest"], "path": None})
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


def flow_runs(prefect: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: f"{prefect}/api"}):
        with get_client(sync_client=True) as client:
            return client.read_flow_runs()


def both_finished(prefect: str) -> list | None:
    runs = flow_runs(prefect)
    return runs if len(runs) == 2 and all(run.state.is_final() for run in runs) else None


def test_two_labeled_files_trigger_two_runs_one_at_a_time(stack):
    incoming = stack["root"] / "data" / "incoming"
    log = stack["log"]
    stack["rows"].iloc[:100].to_csv(incoming / "first.csv", index=False)
    wait_for(lambda: "incoming: first.csv -> dataset complaints" in log.read_text(), 120, "first.csv's ingest", log)
    wait_for(lambda: any(run.state.is_running() for run in flow_runs(stack["prefect"])), 180, "the first run", log)
    stack["rows"].iloc[100:].to_csv(incoming / "second.csv", index=False)  # arrives while the first trains
    runs = wait_for(lambda: both_finished(stack["prefect"]), 420, "both triggered runs to finish", log)
    assert [run.state.is_completed() for run in runs] == [True, True], [run.state for run in runs]
    first, second = sorted(runs, key=lambda run: run.start_time)
    assert second.created < first.end_time  # triggered while the first was still training ...
    assert second.start_time >= first.end_time  # ... and started after it: one run at a time, none dropped
    processed = sorted(path.name for path in (incoming / "processed").iterdir())
    assert [name.split("-", 1)[1] for name in processed] == ["first.csv", "second.csv"]
    assert not [path for path in incoming.iterdir() if path.is_file()]
    assert log.read_text().count("event nichetune.data.labeled for nichetune.dataset.complaints") == 2


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


def test_ctrl_c_stops_everything_it_started(stack):
    process = stack["process"]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=90) == 0
    assert "stopped the servers" in stack["log"].read_text()
    for url in (stack["prefect"], stack["mlflow"]):
        port = int(url.rsplit(":", 1)[1])
        wait_for(lambda: _free(port), 30, f"the server on port {port} to stop")


def _free(port: int) -> bool:
    """Nothing listens there any more (a bind could still fail for a minute on connections in TIME_WAIT)."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0
