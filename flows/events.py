"""Prefect events that nichetune emits, for automations (a deployment trigger retrains on new labeled data)."""

from __future__ import annotations

import os

from tasks.ingest import BatchReport

LABELED = "nichetune.data.labeled"


def resource_id(dataset: str) -> str:
    """The resource an event is about: one dataset (one niche task)."""
    return f"nichetune.dataset.{dataset}"


def emit_labeled(report: BatchReport) -> str:
    """Announce a stored batch: new DVC version and counts. Returns a line saying where the event went."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    event = emit_event(
        event=LABELED,
        resource={"prefect.resource.id": resource_id(report.dataset), "prefect.resource.name": report.dataset},
        payload={"dataset": report.dataset, "data_version": report.data_version, "batch": report.batch,
                 "rows_read": report.rows_read, "accepted": report.accepted, "quarantined": report.quarantined},
    )
    EventsWorker.drain_all(timeout=30)  # delivered before the command returns, not in an exit hook
    where = os.environ.get("PREFECT_API_URL") or "Prefect's local database (no PREFECT_API_URL set)"
    return f"event {LABELED} for {resource_id(report.dataset)} sent to {where}" if event else "event not sent"
