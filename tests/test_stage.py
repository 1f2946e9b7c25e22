"""Stages retry on transient faults and never on user errors (bad data, params, a failed validation)."""

from __future__ import annotations

import pytest
from prefect import flow

from flows.stage import RETRIES, stage
from tasks.errors import ValidationFailed

pytestmark = pytest.mark.slow  # Prefect's test server (about 10 s to start when no earlier test started it)


def flaky(fault: Exception, fails: int) -> tuple:
    """A stage that raises `fault` on its first `fails` attempts, and counts every attempt."""
    attempts = []

    @stage(name="flaky", retry_delay_seconds=0)
    def step() -> int:
        attempts.append(1)
        if len(attempts) <= fails:
            raise fault
        return len(attempts)

    @flow
    def pipeline() -> int:
        return step()

    return pipeline, attempts


def test_a_transient_fault_is_retried_until_it_passes(prefect_harness):
    pipeline, attempts = flaky(OSError("tracking server restarting"), fails=RETRIES)
    assert pipeline() == RETRIES + 1 and len(attempts) == RETRIES + 1


def test_a_failed_validation_is_final(prefect_harness):
    pipeline, attempts = flaky(ValidationFailed("validation failed: 2 checks"), fails=1)
    with pytest.raises(ValidationFailed):
        pipeline()
    assert len(attempts) == 1


def test_a_corrupt_model_folder_is_final(prefect_harness, tmp_path):
    from tasks.errors import ModelLoadError
    from tasks.model import MODEL_CARD, Classifier

    (tmp_path / MODEL_CARD).write_text('{"labels": ["billing", ')  # truncated while it was copied
    attempts = []

    @stage(name="load-model", retry_delay_seconds=0)
    def load() -> None:
        attempts.append(1)
        Classifier(tmp_path)

    @flow
    def pipeline() -> None:
        load()

    with pytest.raises(ModelLoadError, match=rf"^{tmp_path / MODEL_CARD}: the model card cannot be loaded"):
        pipeline()
    assert len(attempts) == 1
