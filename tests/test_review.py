"""The reviewer's sign-off through Prefect's real pause and resume: the flow pauses with a form that shows the
comparison, approval makes the version champion, rejection tags it, and both are recorded on the version."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.input.run_input import keyset_from_paused_state, read_flow_run_input

from flows.pipeline import train_pipeline
from tests.conftest import cfpb_sample, make_project, project_params

pytestmark = pytest.mark.slow  # whole flows that pause for a reviewer on Prefect's test server


def paused_run(timeout: float = 240):
    """The flow run waiting for a reviewer, once it pauses."""
    deadline = time.monotonic() + timeout
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=paused)
        if runs:
            return runs[0]
        time.sleep(1)
    raise AssertionError("the flow never paused for the reviewer")


def run_in_background(root) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(train_pipeline(root=str(root))), daemon=True)
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_backbone):
    params = project_params(str(tiny_backbone), register={"model_name": "reviewed", "experiment": "tests",
                                                          "approval": "reviewer"})
    return make_project(tmp_path_factory.mktemp("review") / "project", cfpb_sample(), params)


def form_of(run, timeout: float = 60):
    """The paused run's form, once the flow has saved it: the flow pauses first and saves its form's schema and
    text just after, and a reviewer in the UI sees the form only then."""
    keyset = keyset_from_paused_state(run.state)
    deadline = time.monotonic() + timeout
    while read_flow_run_input(keyset["schema"], flow_run_id=run.id) is None:
        assert time.monotonic() < deadline, "the paused flow never saved its form"
        time.sleep(0.5)
    return read_flow_run_input(keyset["description"], flow_run_id=run.id)


def review(root, answer: dict) -> tuple[dict, str]:
    """Run the flow, wait for its pause, answer the form; returns the flow's result and the form's text."""
    thread, result = run_in_background(root)
    run = paused_run()
    description = form_of(run)
    resume_flow_run(run.id, run_input=answer)
    thread.join(timeout=240)
    if thread.is_alive():
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        raise AssertionError(f"the flow did not finish after the reviewer answered; its run is {state!r}")
    assert result, "the flow finished without a result"
    return result, description


def test_approval_in_the_form_makes_the_version_champion(project, prefect_harness):
    result, form = review(project, {"decision": "approve", "reviewer": "ana", "comment": "looks right"})
    assert "| macro_f1 (primary) |" in form and "champion (none yet)" in form and "gate passed" in form
    assert "- holdout: macro-F1 " in form and "(95% CI " in form and " rows), accuracy " in form
    assert result["decision"] == "promoted"
    client = MlflowClient(result["tracking_uri"], registry_uri=result["tracking_uri"])
    version = client.get_model_version_by_alias("reviewed", "champion")
    assert str(version.version) == result["version"] == "1"
    assert version.tags["promoted_by"] == "ana" and version.tags["promotion_reason"] == "looks right"
    assert version.tags["promoted_via"] == "flow (reviewer form)"
    assert "challenger" in version.aliases


def test_rejection_in_the_form_tags_the_version_and_keeps_the_champion(project, prefect_harness):
    result, form = review(project, {"decision": "reject", "reviewer": "ben", "comment": "too few refunds rows"})
    assert "champion (v1)" in form
    assert "by a paired bootstrap over these 25 rows" in form  # whether the gap is beyond noise, in words
    assert result["decision"] == "rejected" and result["version"] == "2"
    client = MlflowClient(result["tracking_uri"], registry_uri=result["tracking_uri"])
    assert str(client.get_model_version_by_alias("reviewed", "champion").version) == "1"
    rejected = client.get_model_version("reviewed", "2")
    assert rejected.tags["decision"] == "rejected" and rejected.tags["rejected_by"] == "ben"
    assert rejected.tags["rejection_reason"] == "too few refunds rows"
    assert "challenger" in rejected.aliases  # the newest version stays the challenger
