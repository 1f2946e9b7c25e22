"""The `nichetune.data.labeled` event reaches Prefect's event store with the dataset as its resource."""

from __future__ import annotations

import time

import httpx

from flows.events import LABELED, emit_labeled, resource_id
from tasks.ingest import BatchReport


def test_a_stored_batch_emits_nichetune_data_labeled(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    report = BatchReport("tickets.csv", "tickets", 12, 10, 2, {"empty text": 2}, {}, "utf-8",
                         "data/raw/tickets/b.parquet", "data/quarantine/tickets/b.csv", None, "abc.dir")
    assert "sent to" in emit_labeled(report)
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
