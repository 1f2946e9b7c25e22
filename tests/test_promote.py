"""Promotion: the gate, and champion moves through a real MLflow registry on SQLite (promote, reject, rollback,
an alias set outside nichetune, two promotions racing as two real `nichetune promote` processes)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import mlflow
import pandas as pd
import pytest

from tasks.config import FinetuneParams, Paths, RegisterParams, load_params
from tasks.errors import GateFailed, NichetuneError
from tasks.evaluate import score
from tasks.finetune import finetune
from tasks.metrics import bootstrap_ci, paired_bootstrap
from tasks.model import Classifier
from tasks.promote import (CHAMPION, HISTORY_TAG, OUTSIDE, PREVIOUS, Comparison, Registry, approve, check_gate,
                            compare, comparison_record, recheck, reviewer_identity, stated_reason)
from tasks.register import HOLDOUT_ARTIFACT, _experiment_id, _log_model, _tracking, tracking_uri
from tests.conftest import cfpb_sample, make_project, project_params
from tests.test_cli import COMMAND
from tests.test_metrics import banking77, predictions

NAME = "complaints"


def comparison(challenger: float, champion: float | None, metric: str = "macro_f1") -> Comparison:
    old = None if champion is None else {"accuracy": champion, "macro_f1": champion}
    return Comparison(metric, 50, "2", {"accuracy": challenger, "macro_f1": challenger},
                      None if champion is None else "1", old)


@pytest.mark.parametrize("challenger, champion, needed, passes", [
    (0.80, 0.70, 0.0, True),     # better
    (0.70, 0.80, 0.0, False),    # worse
    (0.75, 0.75, 0.0, True),     # equal, no improvement required
    (0.75, 0.75, 0.01, False),   # equal, an improvement required
    (0.755, 0.75, 0.01, False),  # better, but by less than required
    (0.60, None, 0.05, True),    # the first model: nothing to beat
])
def test_the_gate_compares_the_primary_metric_with_the_champion(challenger, champion, needed, passes):
    gate = check_gate(RegisterParams(min_improvement=needed), comparison(challenger, champion), "passed", "ok")
    assert gate.passed is passes
    assert (gate.reasons == []) is passes
    if not passes:
        assert "macro_f1" in gate.reasons[0] and "below the required" in gate.reasons[0]


@pytest.fixture(scope="module")
def paired() -> dict:
    """Paired bootstraps of real models' labels on the 400 banking77 test rows: a model against itself (within
    noise) and one trained on all rows against one trained on 8 per intent (better beyond noise)."""
    truth, strong, weak = banking77("test")["label"].tolist(), predictions(1000), predictions(8)
    return {"same": paired_bootstrap(truth, weak, weak, seed=7),
            "better": paired_bootstrap(truth, strong, weak, seed=7),
            "worse": paired_bootstrap(truth, weak, strong, seed=7)}


@pytest.mark.parametrize("found, required, passes", [
    ("same", False, True),     # within noise, only reported
    ("same", True, False),     # within noise, a significant gain required
    ("better", True, True),    # better beyond noise
])
def test_a_gain_within_noise_fails_the_gate_only_when_a_significant_gain_is_required(paired, found, required,
                                                                                      passes):
    scored = {metric: paired[found][metric]["difference"] + 0.8 for metric in ("accuracy", "macro_f1")}
    tested = replace(comparison(0.8, 0.8), challenger=scored, paired=paired[found], rows=400)
    gate = check_gate(RegisterParams(require_significant=required), tested, "passed", "ok")
    assert gate.passed is passes, gate.text()
    if not passes:
        assert gate.reasons == ["macro_f1 difference from champion v1 +0.0000 is within noise (95% CI +0.0000 to "
                                "+0.0000 on 400 rows) and register.require_significant is true"]
    words = tested.noise()
    assert ("within noise" in words) is (found == "same")
    assert found == "same" or words.startswith("The challenger is better than the champion on macro_f1 beyond noise")


@pytest.mark.parametrize("found, needed, verdict", [("worse", 0.0, "beyond noise"), ("same", 0.01, "within noise")])
def test_a_challenger_short_of_the_champion_is_rejected_saying_whether_the_rows_can_tell(paired, found, needed,
                                                                                       verdict):
    scored = {metric: paired[found][metric]["difference"] + 0.8 for metric in ("accuracy", "macro_f1")}
    tested = replace(comparison(0.8, 0.8), challenger=scored, paired=paired[found], rows=400)
    (reason,) = check_gate(RegisterParams(min_improvement=needed), tested, "passed", "ok").reasons
    low, high = paired[found]["macro_f1"]["ci_low"], paired[found]["macro_f1"]["ci_high"]
    assert f"({verdict}: 95% CI {low:+.4f} to {high:+.4f} on 400 rows), below the required {needed:+.4f}" in reason


def test_blocking_drift_and_failed_validation_fail_the_gate_even_when_better():
    cfg, better = RegisterParams(), comparison(0.9, 0.5)
    assert check_gate(cfg, better, "passed with 2 warnings", "warn").passed
    blocked = check_gate(cfg, better, "passed", "block")
    assert not blocked.passed and "drift blocks promotion" in blocked.text()
    failed = check_gate(cfg, better, "failed", "ok")
    assert not failed.passed and failed.reasons == ["validation failed"]


def test_a_model_no_better_than_the_majority_class_never_passes():
    cfg, majority = RegisterParams(), {"accuracy": 0.4, "macro_f1": 0.15}
    first = replace(comparison(0.15, None), baseline=majority)  # a first model: nothing else to beat
    gate = check_gate(cfg, first, "passed", "ok")
    assert not gate.passed and "no better than always predicting the majority class (0.1500)" in gate.text()
    assert check_gate(cfg, replace(comparison(0.16, None), baseline=majority), "passed", "ok").passed
    worse_than_ever = replace(comparison(0.0, None, metric="accuracy"), baseline=majority)
    assert not check_gate(RegisterParams(min_improvement=-1), worse_than_ever, "passed", "ok").passed


def test_drift_that_could_not_be_measured_blocks_only_when_the_params_say_so():
    better = comparison(0.9, 0.5)
    assert check_gate(RegisterParams(), better, "passed", "not measured").passed
    blocked = check_gate(RegisterParams(unmeasured_drift="block"), better, "passed", "not measured")
    assert blocked.reasons == ["drift was not measured in any time window and register.unmeasured_drift is block"]
    assert check_gate(RegisterParams(unmeasured_drift="block"), better, "passed", "none").passed  # no windows


def test_a_tracking_server_login_is_the_recorded_reviewer(monkeypatch):
    server, local = "http://127.0.0.1:5000", "sqlite:///mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert reviewer_identity(server, "ana") == "ana"
    with pytest.raises(NichetuneError, match="--reviewer NAME is required"):
        reviewer_identity(server, None)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert reviewer_identity(server, None) == "bob" and reviewer_identity(server, "bob") == "bob"
    with pytest.raises(NichetuneError, match="--reviewer 'ana' is not the MLflow login 'bob'"):
        reviewer_identity(server, "ana")
    assert reviewer_identity(local, "ana") == "ana"  # a local file store authenticates nobody


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_backbone):
    """A project whose registry holds four versions of a tiny model trained on real complaints."""
    root = make_project(tmp_path_factory.mktemp("promote") / "project", cfpb_sample(per_class=8),
                        project_params(str(tiny_backbone)))
    params = load_params(root / "params.yaml")
    paths = Paths.of(root, params)
    train = cfpb_sample(per_class=8).rename(columns={"issue": "label"})
    model = finetune(train, FinetuneParams(backbone=str(tiny_backbone), strategy="head", epochs=30,
                                          learning_rate=0.05), seed=3,
                     out_dir=tmp_path_factory.mktemp("model")).model_dir
    uri = tracking_uri(paths)
    paths.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
    holdout = cfpb_sample(per_class=4, classes=4).rename(columns={"issue": "label"})
    for _ in range(4):
        register_version(paths, model, holdout)
    return root, paths, model, train


def register_version(paths: Paths, model, holdout: pd.DataFrame, **tags: str) -> str:
    """A version as the register stage leaves it: the model, its holdout rows and the tags the gate reads."""
    uri = tracking_uri(paths)
    folder = paths.workdir / "holdouts"
    folder.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(folder / "holdout.parquet")
    with _tracking(uri), mlflow.start_run(experiment_id=_experiment_id("tests", uri, paths)):
        info = _log_model(model, NAME)
        mlflow.log_artifact(str(folder / "holdout.parquet"), HOLDOUT_ARTIFACT.rpartition("/")[0])
    version = str(info.registered_model_version)
    majority, _ = score(holdout["label"].tolist(), [holdout["label"].mode()[0]] * len(holdout), "")
    recorded = {"validation_status": "passed", "drift_status": "ok", "majority_accuracy": repr(majority["accuracy"]),
                "majority_macro_f1": repr(majority["macro_f1"]), "seed": "7", **tags}
    for key, value in recorded.items():
        mlflow.MlflowClient(uri).set_model_version_tag(NAME, version, key, value)
    return version


DECISION_TAGS = ("decision", "rejected_by", "rejected_at", "rejection_reason", "rejected_via", "rolled_back_by",
                 "rolled_back_at", "rollback_reason")


@pytest.fixture
def registry(project, tmp_path):
    """A fresh start for each test: no aliases, no history, no decision tags."""
    _, paths, _, _ = project
    registry = Registry(tracking_uri(paths), NAME, paths.mlflow_db.parent)
    for alias in (CHAMPION, PREVIOUS):
        if registry._alias(alias):
            registry.client.delete_registered_model_alias(NAME, alias)
    registry.client.delete_registered_model_tag(NAME, HISTORY_TAG) if HISTORY_TAG in \
        registry.client.get_registered_model(NAME).tags else None
    for found in registry.client.search_model_versions(f"name = '{NAME}'"):
        for key in set(DECISION_TAGS) & set(found.tags):
            registry.client.delete_model_version_tag(NAME, found.version, key)
    return registry


def tags(registry: Registry, version: str) -> dict:
    return registry.client.get_model_version(NAME, version).tags


def test_promotion_moves_champion_and_previous_champion_and_records_who_when_why(registry):
    assert registry.promote("1", "ana", "first model", via="test") == f"{NAME} version 1 is now the champion"
    assert registry.champion() == "1" and registry._alias(PREVIOUS) is None
    message = registry.promote("2", "ben", "better on August", via="test")
    assert message.endswith("(was version 1)")
    assert registry.champion() == "2" and registry._alias(PREVIOUS) == "1"
    assert registry.history() == ["1", "2"]
    recorded = tags(registry, "2")
    assert recorded["decision"] == "approved" and recorded["promoted_by"] == "ben"
    assert recorded["promotion_reason"] == "better on August" and recorded["promoted_via"] == "test"
    assert pd.Timestamp(recorded["promoted_at"]).tzinfo is not None


def test_promoting_the_champion_again_or_an_unknown_version_is_a_clear_error(registry):
    registry.promote("1", "ana", "first", via="test")
    with pytest.raises(NichetuneError, match="version 1 is already the champion"):
        registry.promote("1", "ana", "again", via="test")
    with pytest.raises(NichetuneError, match=r"has no version '9'.*versions: 1, 2, 3, 4"):
        registry.promote("9", "ana", "typo", via="test")


def test_rejection_tags_the_version_and_moves_no_alias(registry):
    registry.promote("1", "ana", "first", via="test")
    registry.reject("3", "ben", "worse on refunds", via="test")
    assert registry.champion() == "1" and registry.history() == ["1"]
    recorded = tags(registry, "3")
    assert recorded["decision"] == "rejected" and recorded["rejected_by"] == "ben"
    assert recorded["rejection_reason"] == "worse on refunds"


def test_rollback_walks_back_through_the_champion_history(registry):
    for version in ("1", "2", "3"):
        registry.promote(version, "ana", f"v{version}", via="test")
    assert registry.rollback("ben", "complaints about refunds") == (
        f"{NAME}: champion rolled back from version 3 to version 2")
    assert registry.champion() == "2" and registry._alias(PREVIOUS) == "1" and registry.history() == ["1", "2"]
    assert tags(registry, "3")["decision"] == "rolled back"
    assert tags(registry, "3")["rollback_reason"] == "complaints about refunds"
    assert tags(registry, "2")["promoted_via"] == "rollback"
    registry.rollback("ben", "again")
    assert registry.champion() == "1" and registry._alias(PREVIOUS) is None
    with pytest.raises(NichetuneError, match="no previous champion to roll back to"):
        registry.rollback("ben", "once more")


def test_an_alias_set_in_the_mlflow_ui_ends_in_the_same_tags(registry):
    registry.promote("1", "ana", "first", via="test")
    registry.client.set_registered_model_alias(NAME, CHAMPION, "4")  # the UI's REST call, made the same way
    assert registry.sync() == f"{NAME} version 4 was made champion outside nichetune; recorded"
    assert registry.history() == ["1", "4"] and registry._alias(PREVIOUS) == "1"
    recorded = tags(registry, "4")
    assert recorded["promoted_by"] == OUTSIDE and recorded["promoted_via"] == "mlflow-ui"
    assert {"decision", "promoted_at", "promotion_reason"} <= set(recorded)
    assert registry.sync() is None  # recorded once
    registry.rollback("ben", "not reviewed")
    assert registry.champion() == "1"


@pytest.mark.slow  # two CLI subprocesses
def test_two_promotions_racing_leave_a_consistent_history(project, registry):
    root, _, _, _ = project
    registry.promote("1", "ana", "first", via="test")
    racers = [subprocess.Popen([*COMMAND, "promote", "--version", version, "--reviewer", f"r{version}",
                                "--reason", "race"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for version in ("2", "3")]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    history = registry.history()
    assert history[0] == "1" and sorted(history[1:]) == ["2", "3"]
    first, second = history[1:]
    assert registry.champion() == second and registry._alias(PREVIOUS) == first
    assert f"(was version {first})" in outputs[int(second) - 2][0]  # the later one saw the earlier one


def test_compare_scores_champion_and_challenger_on_the_same_holdout_rows(project, registry):
    _, _, model, train = project
    holdout = cfpb_sample(per_class=4, classes=4).rename(columns={"issue": "label"})
    first = compare(registry, "1", holdout, "macro_f1", seed=7)
    assert first.champion is None and first.delta is None and first.rows == len(holdout)
    assert first.paired is None and first.noise() is None  # nothing to compare with
    predicted = Classifier(model).predict(holdout["text"].tolist())
    direct, _ = score(holdout["label"].tolist(), predicted, "")
    assert first.challenger == pytest.approx({**{k: direct[k] for k in ("accuracy", "macro_f1")},
                                              **bootstrap_ci(holdout["label"].tolist(), predicted, seed=7)})
    registry.promote("1", "ana", "first", via="test")
    second = compare(registry, "2", holdout, "macro_f1", seed=7)  # the same weights: no difference
    assert second.champion_version == "1" and second.delta == pytest.approx(0.0)
    assert second.champion == second.challenger  # the same draws of the same rows
    assert second.paired["macro_f1"] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "within_noise": True,
                                         "resamples": 1000}
    table = second.markdown()
    assert "| macro_f1 (primary) |" in table and f"same {len(holdout)} holdout rows" in table
    assert "+0.0000 (+0.0000 to +0.0000) |" in table and "95% bootstrap intervals" in table
    assert "**The difference on macro_f1 is within noise" in table and "cannot tell the challenger from" in table
    record = json.loads(json.dumps(comparison_record(second, check_gate(RegisterParams(), second, "passed", "ok"))))
    assert record["paired"]["macro_f1"]["within_noise"] is True and record["noise"] == second.noise()
    assert record["challenger"]["macro_f1_ci_low"] <= record["challenger"]["macro_f1"]


@pytest.mark.slow  # CLI subprocesses
def test_the_cli_rolls_back_rejects_and_refuses_an_unknown_version_in_one_line(project, registry):
    root, _, _, _ = project
    for version in ("1", "2"):
        registry.promote(version, "ana", f"v{version}", via="test")
    cli = lambda *args: subprocess.run([*COMMAND, *args], cwd=root, capture_output=True, text=True,  # noqa: E731
                                       timeout=120)
    done = cli("rollback", "--reviewer", "ben", "--reason", "routing complaints")
    assert done.returncode == 0 and "rolled back from version 2 to version 1" in done.stdout
    assert registry.champion() == "1" and tags(registry, "2")["rolled_back_by"] == "ben"
    done = cli("promote", "--version", "3", "--reviewer", "ben", "--reason", "worse", "--reject")
    assert done.returncode == 0 and tags(registry, "3")["rejected_via"] == "nichetune promote --reject"
    done = cli("promote", "--version", "12", "--reviewer", "ben", "--reason", "typo")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "has no version '12'" in done.stderr
    done = cli("promote", "--version", "3", "--reviewer", "ben", "--reason", "  ")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--reason is empty" in done.stderr
    done = cli("rollback", "--reviewer", "ben", "--reason", "first try", "--set", "register.model_name=untrained")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "holds no registered model 'untrained' yet: `nichetune run` registers one" in done.stderr


def test_approval_checks_the_gate_again_against_the_champion_of_that_moment(project, registry):
    _, _, _, _ = project
    holdout = registry.holdout(registry.client.get_model_version(NAME, "2").run_id)
    stale = compare(registry, "2", holdout, "macro_f1", seed=7)  # scored while there was no champion
    assert stale.champion_version is None
    registry.promote("1", "ana", "first", via="test")  # meanwhile another reviewer made v1 the champion
    strict = RegisterParams(min_improvement=0.01)  # v2 has v1's weights: it cannot be 0.01 better
    with pytest.raises(GateFailed, match=r"version 2 was not promoted: .*vs champion v1 .*below the required"):
        approve(registry, "2", strict, "ben", "looked better yesterday", via="test", known=stale)
    assert registry.champion() == "1" and tags(registry, "2")["decision"] == "rejected"
    assert "checked again at approval" in tags(registry, "2")["rejection_reason"]
    assert tags(registry, "2")["gate"].startswith("gate failed: ") and tags(registry, "2")["gate"].endswith(
        "(checked again at approval)")  # the tag the review read at training time no longer says passed
    assert approve(registry, "3", RegisterParams(), "ben", "as good", via="test", known=stale).endswith(
        "(was version 1)")  # equal is enough when no improvement is required


def test_approval_can_require_a_gain_beyond_noise_over_the_champion(project, registry):
    registry.promote("1", "ana", "first", via="test")
    recorded = comparison_record(*recheck(registry, "2", RegisterParams()))  # the same weights as the champion
    before = Comparison(**{key: recorded[key] for key in Comparison.__dataclass_fields__ if key != "paired"})
    assert before.paired is None  # as recorded before paired tests: recheck scores the pair again
    again, gate = recheck(registry, "2", RegisterParams(), known=before)
    assert again.paired["macro_f1"]["within_noise"] and gate.passed  # only reported by default
    with pytest.raises(GateFailed, match=r"version 2 was not promoted: .*within noise .*require_significant"):
        approve(registry, "2", RegisterParams(require_significant=True), "ben", "looks better", via="test",
                known=again)
    assert registry.champion() == "1" and "within noise" in tags(registry, "2")["rejection_reason"]


def test_a_model_that_never_predicts_right_is_refused_whoever_approves(project, registry):
    _, paths, model, _ = project
    never = cfpb_sample(per_class=4, classes=4).assign(label="a label this model has never seen")
    version = register_version(paths, model, never.rename(columns={"issue": "original"}))
    with pytest.raises(GateFailed, match="no better than always predicting the majority class"):
        approve(registry, version, RegisterParams(approval="auto"), "gate", "auto", via="test")
    assert registry.champion() is None and tags(registry, version)["decision"] == "rejected"


def test_an_unloadable_champion_is_reported_and_does_not_block_the_next_version(project, registry):
    _, paths, model, _ = project
    broken = register_version(paths, model, cfpb_sample(per_class=4, classes=4).rename(columns={"issue": "label"}))
    registry.promote(broken, "ana", "about to break", via="test")
    model_id = registry.client.get_model_version(NAME, broken).source.rsplit("/", 1)[-1]  # models:/m-...
    model_files = [path for path in paths.mlflow_artifacts.rglob("nichetune.json") if model_id in str(path)]
    assert model_files, model_id
    for card in model_files:
        card.write_text(card.read_text()[:10])  # a truncated model card
    holdout = registry.holdout(registry.client.get_model_version(NAME, "1").run_id)
    found = compare(registry, "1", holdout, "macro_f1", seed=7)
    assert found.champion_version == broken and found.champion is None and "nichetune.json" in found.champion_error
    comparison, gate = recheck(registry, "1", RegisterParams(), found)
    assert gate.passed, gate.text()
    assert "could not be scored" in comparison.markdown()
    assert f"| champion (v{broken}, not scored) |" in comparison.markdown()


def model_files(registry: Registry, paths: Paths, version: str) -> list:
    """The files of `version`'s logged model in the local artifact store."""
    model_id = registry.client.get_model_version(NAME, version).source.rsplit("/", 1)[-1]  # models:/m-...
    found = [path.parent for path in paths.mlflow_artifacts.rglob("MLmodel") if model_id in str(path)]
    assert found, model_id
    return found


def test_a_version_whose_files_are_gone_is_never_promoted_and_as_champion_blocks_nothing(project, registry):
    import shutil

    _, paths, model, _ = project
    holdout = cfpb_sample(per_class=4, classes=4).rename(columns={"issue": "label"})
    gone = register_version(paths, model, holdout)
    for folder in model_files(registry, paths, gone):
        shutil.rmtree(folder)
    with pytest.raises(NichetuneError, match=f"version {gone} cannot become the champion: its model does not load"):
        approve(registry, gone, RegisterParams(), "ana", "looked fine at training", via="test")
    assert registry.champion() is None
    registry.promote(gone, "ana", "before its files went", via="test")  # e.g. promoted, then the store lost it
    found = compare(registry, "1", holdout, "macro_f1", seed=7)
    assert found.champion_version == gone and found.champion is None and found.champion_error
    registry.promote("1", "ben", "replaces the lost one", via="test")
    with pytest.raises(NichetuneError, match=f"version {gone} cannot be the champion again"):
        registry.rollback("ben", "back to the lost one")
    assert registry.champion() == "1"


def test_a_version_a_reviewer_rejected_or_rolled_back_is_promoted_only_on_reconsideration(project, registry):
    registry.promote("1", "ana", "first", via="test")
    with pytest.raises(NichetuneError, match="version 1 is the champion: `nichetune rollback`"):
        registry.reject("1", "ben", "changed my mind", via="test")
    registry.reject("2", "ben", "worse on refunds", via="test")
    with pytest.raises(NichetuneError, match="version 2 was rejected by ben: worse on refunds; .* --reconsider"):
        approve(registry, "2", RegisterParams(), "ana", "I disagree", via="test")
    assert tags(registry, "2")["rejected_by"] == "ben"  # the refusal leaves the reviewer's decision as it was
    assert approve(registry, "2", RegisterParams(), "ana", "after a second look", via="test", reconsider=True)
    assert registry.champion() == "2" and tags(registry, "2")["decision"] == "approved"
    registry.rollback("ben", "routing complaints")
    with pytest.raises(NichetuneError, match="version 2 was rolled back by ben: routing complaints"):
        registry.promote("2", "ana", "again", via="test")
    registry.reject("3", "gate", "gate failed: below the champion", via="gate")  # not a person's decision
    assert approve(registry, "3", RegisterParams(), "ana", "as good now", via="test").endswith("(was version 1)")


def test_a_blank_reviewer_or_reason_is_refused():
    with pytest.raises(NichetuneError, match="--reviewer NAME is required"):
        reviewer_identity("sqlite:///mlflow.db", "   ")
    with pytest.raises(NichetuneError, match="--reason is empty"):
        stated_reason(" \t")
    assert stated_reason(" worse on refunds ") == "worse on refunds"


def test_a_form_answered_after_a_decision_from_the_command_line_ends_with_that_decision(project, registry):
    from flows.review import _approve

    root, _, _, _ = project
    params = load_params(root / "params.yaml")
    review = {"comparison": None}
    registry.promote("2", "ana", "from the command line", via="nichetune promote")
    done = _approve(params, registry, "2", "ben", "approve in the form", "flow (reviewer form)", review)
    assert done["decision"] == "promoted" and "meanwhile from the command line" in done["message"]
    assert tags(registry, "2")["promoted_by"] == "ana"
    registry.reject("3", "ana", "worse", via="nichetune promote --reject")
    done = _approve(params, registry, "3", "ben", "approve in the form", "flow (reviewer form)", review)
    assert done["decision"] == "not promoted" and "rejected by ana: worse" in done["message"]
    assert registry.champion() == "2"


@pytest.mark.slow  # a flow on Prefect's test server that waits for its pause to expire
def test_a_review_that_times_out_leaves_a_completed_run_and_any_decision_made_meanwhile(project, registry,
                                                                                         prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.review import _ask_reviewer

    root, _, _, _ = project
    loaded = load_params(root / "params.yaml")
    params = loaded.model_copy(update={"register_": loaded.register.model_copy(update={"review_timeout": 1})})
    registry.reject("4", "ana", "decided from the command line", via="nichetune promote --reject")

    @flow
    def waits(version: str) -> dict:
        return _ask_reviewer(params, registry, version, {"markdown": "a comparison"})

    for version in ("3", "4"):
        state = waits(version, return_state=True)
        assert state.is_completed(), state
        assert state.result()["decision"] == "review timed out"
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(state.state_details.flow_run_id).state.is_completed()
    assert tags(registry, "3")["decision"] == "review timed out"
    assert tags(registry, "4")["decision"] == "rejected"  # the reviewer's decision stands


def test_a_champion_move_that_waits_too_long_for_the_lock_is_one_clear_error(registry, monkeypatch):
    from filelock import FileLock

    import tasks.promote

    monkeypatch.setattr(tasks.promote, "LOCK_SECONDS", 0.2)
    with FileLock(str(registry.lock_path)):  # another command moving the champion
        with pytest.raises(NichetuneError, match="another promote, reject or rollback of complaints has held this "
                                                 "lock for over 0.2 s; try again"):
            registry.promote("1", "ana", "first", via="test")
    assert registry.champion() is None
