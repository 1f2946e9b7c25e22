"""The `nichetune.data.labeled` event reaches Prefect's event store with the dataset as its resource; a stored batch
whose event was never sent is announced by the next ingest."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import httpx
import pandas as pd

from flows.events import LABELED, emit_labeled, resource_id
from tasks.config import IngestParams
from tasks.ingest import BatchReport, ingest_batch
from tests.conftest import make_project, project_params

pytestmark = pytest.mark.slow  # Prefect's test server and its event store


def test_a_stored_batch_emits_nichetune_data_labeled(prefect_harness, caplog):
    from prefect.settings import PREFECT_API_URL

    report = BatchReport("tickets.csv", "tickets", 12, 10, 2, {"empty text": 2}, {}, "utf-8",
                         "data/raw/tickets/b.parquet", "data/quarantine/tickets/b.csv", None, "abc.dir")
    assert "sent to" in emit_labeled(report)
    # waiting for the event is ingest's own business: no "Still processing items" warning under its report
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    query = {"filter": {"event": {"name": [LABELED]}, "any_resource": {"id": [resource_id("tickets")]}}}
    for _ in range(50):  # the server writes events asynchronously
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=query).json()["events"]
        if found:
            break
        time.sleep(0.2)
    event = found[0]
    assert event["resource"]["prefect.resource.id"] == "nichetune.dataset.tickets"
    assert event["payload"] == {"dataset": "tickets", "data_version": "abc.dir", "batch": "data/raw/tickets/b.parquet",
                                "rows_read": 12, "accepted": 10, "quarantined": 2}


def labeled_events(dataset: str) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    query = {"filter": {"event": {"name": [LABELED]}, "any_resource": {"id": [resource_id(dataset)]}}}
    return httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=query).json()["events"]


def test_a_batch_whose_event_was_never_sent_is_announced_by_the_next_ingest(prefect_harness, tmp_path):
    project = make_project(tmp_path / "project", pd.DataFrame({"a": [1]}), project_params("unused"))
    cfg = IngestParams(path=None, dataset="outbox")
    exports = [tmp_path / name for name in ("first.csv", "second.csv")]
    exports[0].write_text("text,label\nmy parcel is late,delivery\n")
    exports[1].write_text("text,label\ncharged twice,billing\n")
    first = ingest_batch(cfg, [], project, exports[0])  # the process dies here: no event sent
    second = ingest_batch(cfg, [], project, exports[1])
    assert len(second.events) == 2
    assert "(and for 1 earlier batch(es) not announced before)" in emit_labeled(second)
    for _ in range(50):
        found = labeled_events("outbox")
        if len(found) == 2:
            break
        time.sleep(0.2)
    assert sorted(event["payload"]["batch"] for event in found) == sorted([first.batch, second.batch])
    assert not list(Path(second.events[0]).parent.iterdir())  # sent: the outbox is empty
    third = ingest_batch(cfg, [], project, exports[1])
    assert third.events == () and third.already_ingested_as == second.batch


def test_a_batch_the_pipeline_ingests_itself_is_not_announced_later(tmp_path):
    from tasks.ingest import run

    project = make_project(tmp_path / "project", pd.DataFrame({"text": ["my parcel is late"], "label": ["delivery"]}),
                           project_params("unused"))
    cfg = IngestParams(path="data/labeled.csv", dataset="pipeline")
    result = run(cfg, [], project, tmp_path / "out")
    assert result.ingested.batch and result.ingested.events == ()  # the run trains on it: nothing to trigger


def test_a_run_that_stops_sending_heartbeats_is_marked_crashed_and_a_finished_one_is_not(prefect_harness):
    """`nichetune up`'s automation on Prefect's own heartbeat events, with a short silence to wait for."""
    from datetime import timedelta

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.states import Completed, Running

    from flows.up import SILENT_RUNS_AUTOMATION, crash_silent_runs

    @flow
    def served() -> None:
        pass

    crash_silent_runs(within=timedelta(seconds=10))  # the least Prefect takes
    crash_silent_runs()  # a second start of `up` on the same server adds none
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(SILENT_RUNS_AUTOMATION)
        try:
            silent, finished = client.create_flow_run(served), client.create_flow_run(served)
            for run in (silent, finished):
                client.set_flow_run_state(run.id, Running(), force=True)
                emit_event("prefect.flow-run.heartbeat",
                           resource={"prefect.resource.id": f"prefect.flow-run.{run.id}"})
            EventsWorker.drain_all(timeout=30)
            client.set_flow_run_state(finished.id, Completed(), force=True)  # the server emits its final state
            deadline = time.monotonic() + 90
            while client.read_flow_run(silent.id).state.type != StateType.CRASHED and time.monotonic() < deadline:
                time.sleep(1)
            crashed = client.read_flow_run(silent.id).state
            assert crashed.type == StateType.CRASHED and "no heartbeat for 10 s" in crashed.message
            assert client.read_flow_run(finished.id).state.type == StateType.COMPLETED
        finally:  # the harness serves the later tests: a 10 s silence would crash a flow paused for its reviewer
            client.delete_automation(automation.id)
