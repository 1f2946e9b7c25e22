"""How every pipeline stage runs as a Prefect task: never cached, retried on transient faults only."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import NichetuneError

RETRIES = 2  # a transient fault (a full disk being cleared, a tracking server restarting) gets two more tries
RETRY_DELAY_SECONDS = 10


def retry_transient(_task, _task_run, state) -> bool:
    """Retry anything but a user error: bad data, params or a failed validation are final (NichetuneError)."""
    return not isinstance(state.result(raise_on_failure=False), NichetuneError)


# Stages read files and write files; their results are small records. Nothing is cached between runs,
# because a retrain must really retrain.
stage = task(cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
             retry_condition_fn=retry_transient)
