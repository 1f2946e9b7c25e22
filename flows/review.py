"""The end of a training run: champion and challenger on the same holdout, the gate, then the reviewer.

With `register.approval: reviewer` the flow pauses with a Prefect input form (approve or reject, reviewer name,
comment) that shows the comparison; `auto` promotes a version that passes the gate. A version that fails the
gate is tagged rejected with the reason and never reaches the reviewer."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from prefect.input import RunInput
from pydantic import Field

from flows.stage import stage
from flows.summary import artifact_key, holdout_text
from tasks import promote
from tasks.config import Params, Paths
from tasks.errors import GateFailed, NichetuneError
from tasks.register import Registration, tracking_uri

POLL_SECONDS = 5  # how often a paused flow asks the server whether the reviewer has answered


class ReviewDecision(RunInput):
    """The form a reviewer fills in on the paused flow run in the Prefect UI."""

    decision: Literal["approve", "reject"]
    # pattern: the server refuses a name or reason of blanks, as `nichetune promote` does
    reviewer: str = Field(pattern=r"\S", description="your name: recorded on the model version")
    comment: str = Field(pattern=r"\S", description="why: recorded on the model version")


def registry_for(params: Params, paths: Paths) -> promote.Registry:
    """The registered model of this project, with its promotion lock beside the tracking store."""
    return promote.Registry(tracking_uri(paths), params.register.model_name, paths.mlflow_db.parent)


@stage(name="compare")
def compare_task(params: Params, paths: Paths, registration: Registration, holdout: str) -> dict:
    """Score challenger and champion on the same holdout, apply the gate, log both to the challenger's run."""
    from prefect.artifacts import create_markdown_artifact

    registry = registry_for(params, paths)
    noticed = registry.sync()  # a champion set in the MLflow UI since the last run is recorded first
    if noticed:
        print(noticed)
    baseline = {key: registration.metrics[f"majority_{key}"] for key in ("accuracy", "macro_f1")}
    comparison = promote.compare(registry, registration.version, pd.read_parquet(holdout),
                                 params.register.primary_metric, params.base.seed, baseline)
    gate = promote.check_gate(params.register, comparison, registration.tags["validation_status"],
                              registration.tags["drift_status"], registration.tags.get(promote.EPSILON_TAG))
    record = promote.comparison_record(comparison, gate)
    registry.client.log_dict(registration.run_id, record, promote.COMPARISON_ARTIFACT)
    registry.client.set_model_version_tag(registry.name, registration.version, "gate", gate.text())
    markdown = review_markdown(registration, comparison, gate)
    create_markdown_artifact(markdown=markdown, description="Champion against challenger, and the gate",
                             key=artifact_key("review", registry.name))
    return {"comparison": comparison, "record": record, "markdown": markdown, "table": comparison.markdown(),
            "passed": gate.passed, "gate": gate.text()}


def review_markdown(registration: Registration, comparison: promote.Comparison, gate: promote.Gate) -> str:
    tags = registration.tags
    return "\n".join([
        f"## {registration.model_name} version {registration.version}: {gate.text()}", "",
        f"- holdout: {holdout_text(registration.metrics)}", "",
        comparison.markdown(), "",
        f"- data version `{tags['data_version']}`, {tags['data_rows']} rows; strategy `{tags['strategy']}`",
        f"- validation: {tags['validation_status']}; drift over time windows: {tags['drift_status']}",
        f"- MLflow run `{registration.run_id}` (reports, explanations and drift windows are its artifacts)",
    ])


def decide(params: Params, paths: Paths, registration: Registration, review: dict) -> dict:
    """Reject on a failed gate; else promote (auto) or pause for the reviewer's form (reviewer). Either way
    the gate is checked again at the moment of approval, against whoever is champion then."""
    registry, version = registry_for(params, paths), registration.version
    if not review["passed"]:
        return _outcome("rejected", registry.reject(version, "gate", review["gate"], via="gate"))
    if params.register.approval == "auto":
        return _approve(params, registry, version, "gate", review["gate"], "flow (approval: auto)", review)
    if not _has_server():
        return _outcome("awaiting review", (
            f"{registry.name} version {version} passed the gate and awaits a reviewer: run "
            f"`nichetune promote --version {version} --reviewer NAME --reason TEXT`, or start `nichetune ui` "
            f"and set PREFECT_API_URL so that the next run pauses for the form in the Prefect UI"))
    return _ask_reviewer(params, registry, version, review)


def _ask_reviewer(params: Params, registry: promote.Registry, version: str, review: dict) -> dict:
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    form = ReviewDecision.with_initial_data(description=review["markdown"])  # decision and reviewer stay required
    print(f"{registry.name} version {version} passed the gate; waiting for a reviewer: open {_run_url()} and "
          f"click Resume to fill in the form (this run waits up to {params.register.review_timeout} s)")
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=params.register.review_timeout,
                                poll_interval=POLL_SECONDS)
    except FlowPauseTimeout:
        _resume_after_timeout()
        if "decision" not in registry.client.get_model_version(registry.name, version).tags:  # none from the CLI
            registry.client.set_model_version_tag(registry.name, version, "decision", "review timed out")
        return _outcome("review timed out", f"no reviewer answered within {params.register.review_timeout} s; "
                        f"version {version} stays a challenger (nichetune promote can still approve it)")
    by, reason = " ".join(answer.reviewer.split()), answer.comment.strip()
    if answer.decision == "approve":
        return _approve(params, registry, version, by, reason, "flow (reviewer form)", review)
    try:
        return _outcome("rejected", registry.reject(version, by, reason, via="flow (reviewer form)"))
    except NichetuneError as refused:  # made the champion from the command line while the form was open
        return _outcome("not rejected", str(refused))


def _approve(params: Params, registry: promote.Registry, version: str, by: str, reason: str, via: str,
             review: dict) -> dict:
    """The approval's outcome; a refusal (the gate at this moment, a decision made meanwhile from the command
    line, a model that no longer loads) ends the run with its reason, not as a failed run."""
    try:
        return _outcome("promoted", promote.approve(registry, version, params.register, by, reason, via,
                                                    known=review["comparison"]))
    except GateFailed as failed:
        return _outcome("rejected", str(failed))
    except NichetuneError as refused:
        if registry.champion() == version:
            return _outcome("promoted", f"{registry.name} version {version} was made the champion meanwhile "
                            "from the command line; nothing more to do")
        return _outcome("not promoted", str(refused))


def _resume_after_timeout() -> None:
    """Take this run out of its expired pause. Prefect fails a run that ends while its pause has expired ("The
    flow was paused and never resumed"); this one did what it should (the version stays a challenger), so it
    goes on to finish. Forced: the server refuses any other move out of an expired pause."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(FlowRunContext.get().flow_run.id, Running(), force=True)


def _run_url() -> str:
    """This flow run's page in the Prefect UI."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or str(PREFECT_API_URL.value()).removesuffix("/api")
    return f"{ui}/runs/flow-run/{FlowRunContext.get().flow_run.id}"


def _has_server() -> bool:
    """A Prefect server whose UI a reviewer can open; the temporary in-process one has none."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _outcome(decision: str, message: str) -> dict:
    print(message)
    return {"decision": decision, "message": message}
