"""Prefect events that nichetune emits, for automations (a deployment trigger retrains on new labeled data)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tasks.ingest import BatchReport

LABELED = "nichetune.data.labeled"


def resource_id(dataset: str) -> str:
    """The resource an event is about: one dataset (one niche task)."""
    return f"nichetune.dataset.{dataset}"


def emit_labeled(report: BatchReport) -> str:
    """Announce each stored batch the report carries in its outbox (an earlier one whose event was never sent
    comes first), or the report's own batch: new DVC version and counts. An outbox file is deleted once its
    event is sent. Returns a line saying where the events went."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    outbox = [Path(path) for path in report.events]
    payloads = [json.loads(path.read_text()) for path in outbox] or [report.payload()]
    sent = [emit_event(event=LABELED, payload=payload,
                       resource={"prefect.resource.id": resource_id(payload["dataset"]),
                                 "prefect.resource.name": payload["dataset"]})
            for payload in payloads]
    # delivered before the command returns, not in an exit hook; the worker's "Still processing items" warning
    # would only say that this wait has begun
    draining = logging.getLogger(EventsWorker.__name__)
    level = draining.level
    draining.setLevel(logging.ERROR)
    try:
        EventsWorker.drain_all(timeout=30)
    finally:
        draining.setLevel(level)
    for path, event in zip(outbox, sent):
        if event:
            path.unlink(missing_ok=True)
    if not all(sent):
        return f"event {LABELED} not sent for {sum(not event for event in sent)} batch(es); the next ingest sends it"
    where = os.environ.get("PREFECT_API_URL") or "Prefect's local database (no PREFECT_API_URL set)"
    earlier = f" (and for {len(sent) - 1} earlier batch(es) not announced before)" if len(sent) > 1 else ""
    return f"event {LABELED} for {resource_id(report.dataset)} sent to {where}{earlier}"
