"""Promote: champion and challenger scored on the same holdout, the gate, and every move of the `champion` alias.

Whoever moves the alias (the flow after a reviewer's approval or the automatic gate, `nichetune promote`,
`nichetune rollback`, or someone in the MLflow UI, noticed by `Registry.sync`), the versions end with the same
tags: who, when, why and how. The registered model's `champion_history` tag lists the champions in order, which
is what `rollback` walks back through. Moves are serialized by a lock file beside the tracking store."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tasks.config import RegisterParams
from tasks.errors import GateFailed, ModelLoadError, NichetuneError
from tasks.metrics import CONFIDENCE, QUALITY, bootstrap_ci, paired_bootstrap, score
from tasks.monitor import UNMEASURED
from tasks.tracking import registry_client, version_numbers

CHAMPION = "champion"
PREVIOUS = "previous-champion"
HISTORY_TAG = "champion_history"  # on the registered model: JSON list of champion versions, oldest first
OUTSIDE = "unknown (alias set outside nichetune, e.g. in the MLflow UI)"
GATE_TAGS = ("validation_status", "drift_status", "majority_accuracy", "majority_macro_f1", "seed")  # by register
ANY = object()  # promote() without a champion to expect
EPSILON_TAG = "privacy_epsilon"  # by register, on a privately trained version: the epsilon it spent
COMPARISON_ARTIFACT = "comparison.json"  # the training run's champion-against-challenger record
LOCK_SECONDS = 120  # how long a champion move waits for another to finish


@dataclass(frozen=True)
class Comparison:
    """Champion and challenger on the same holdout rows."""

    metric: str  # the gate's primary metric
    rows: int
    challenger_version: str
    challenger: dict  # accuracy, macro_f1 and their bootstrap intervals (accuracy_ci_low, ...)
    champion_version: str | None = None
    champion: dict | None = None
    baseline: dict | None = None  # always predicting the training rows' majority class, on the same rows
    champion_error: str | None = None  # why the champion could not be scored (a corrupt or missing model)
    paired: dict | None = None  # per metric: difference, ci_low, ci_high, within_noise (a paired bootstrap)

    @property
    def delta(self) -> float | None:
        """Challenger minus champion on the primary metric; None when there is no champion yet."""
        return None if self.champion is None else self.challenger[self.metric] - self.champion[self.metric]

    def noise(self) -> str | None:
        """In plain words: can these rows tell challenger and champion apart on the primary metric?"""
        found = (self.paired or {}).get(self.metric)
        if found is None:
            return None
        span = (f"{found['difference']:+.4f}, {CONFIDENCE:.0%} CI {found['ci_low']:+.4f} to {found['ci_high']:+.4f} "
                f"by a paired bootstrap over these {self.rows} rows")
        if found["within_noise"]:
            return (f"The difference on {self.metric} is within noise ({span}): this holdout cannot tell the "
                    "challenger from the champion.")
        better = "better" if found["ci_low"] > 0 else "worse"
        return f"The challenger is {better} than the champion on {self.metric} beyond noise ({span})."

    def markdown(self) -> str:
        champion = ("champion (none yet)" if self.champion_version is None else
                    f"champion (v{self.champion_version})" if self.champion else
                    f"champion (v{self.champion_version}, not scored)")
        lines = [f"| metric | challenger (v{self.challenger_version}) | {champion} | difference |", "|---|---|---|---|"]
        for key in QUALITY:
            old_text, diff = "-", "-"
            if self.champion:
                old_text, diff = _cell(self.champion, key), f"{self.challenger[key] - self.champion[key]:+.4f}"
            if (self.paired or {}).get(key):
                diff += f" ({self.paired[key]['ci_low']:+.4f} to {self.paired[key]['ci_high']:+.4f})"
            mark = " (primary)" if key == self.metric else ""
            lines.append(f"| {key}{mark} | {_cell(self.challenger, key)} | {old_text} | {diff} |")
        if f"{self.metric}_ci_low" in self.challenger:
            lines.append(f"\nIn brackets: {CONFIDENCE:.0%} bootstrap intervals over the rows (for the difference, "
                         "the same draws for both models).")
        if self.noise():
            lines.append(f"\n**{self.noise()}**")
        if self.baseline:
            mark = f"{self.baseline[self.metric]:.4f} on {self.metric}"
            lines.append(f"\nAlways predicting the majority class would score {mark}.")
        if self.champion_error:
            lines.append(f"\nThe champion (v{self.champion_version}) could not be scored: {self.champion_error}")
        return "\n".join(lines) + f"\n\nScored on the same {self.rows} holdout rows."


def _cell(scores: dict, key: str) -> str:
    """A score and its bootstrap interval, when it has one (a comparison recorded before intervals has none)."""
    low, high = scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high")
    return f"{scores[key]:.4f}" + ("" if low is None or high is None else f" ({low:.4f}-{high:.4f})")


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed

    def text(self) -> str:
        return "gate passed" if self.passed else "gate failed: " + "; ".join(self.reasons)


def check_gate(cfg: RegisterParams, comparison: Comparison, validation: str, drift: str,
               epsilon: str | None = None) -> Gate:
    """Validation passed, no blocking drift (nor unmeasured drift when `unmeasured_drift: block`), better than
    always predicting the majority class, at least `min_improvement` over the champion on the primary metric (a
    first model, or one whose champion cannot be loaded, has no champion to beat) and, with
    `require_significant`, a difference from the champion beyond noise. With `max_epsilon`, trained privately
    within it: `epsilon` is the version's spent-epsilon tag (None: not trained privately)."""
    reasons = []
    if cfg.max_epsilon is not None and epsilon is None:
        reasons.append(f"not trained privately, and register.max_epsilon is {cfg.max_epsilon:g}")
    elif cfg.max_epsilon is not None and float(epsilon) > cfg.max_epsilon:
        reasons.append(f"trained privately with epsilon {float(epsilon):.2f}, above register.max_epsilon "
                       f"{cfg.max_epsilon:g}")
    if not validation.startswith("passed"):
        reasons.append(f"validation {validation}")
    if drift == "block":
        reasons.append("drift blocks promotion (see the window reports)")
    if drift == UNMEASURED and cfg.unmeasured_drift == "block":
        reasons.append("drift was not measured in any time window and register.unmeasured_drift is block")
    metric, new = comparison.metric, comparison.challenger[comparison.metric]
    if comparison.baseline is not None and new <= comparison.baseline[metric] + 1e-12:
        reasons.append(f"{metric} {new:.4f} is no better than always predicting the majority class "
                       f"({comparison.baseline[metric]:.4f})")
    paired = (comparison.paired or {}).get(metric)
    if comparison.delta is not None and comparison.delta < cfg.min_improvement - 1e-12:
        noise = ""
        if paired:  # a reviewer reads a small loss on few rows very differently from a real one
            verdict = "within noise" if paired["within_noise"] else "beyond noise"
            noise = (f" ({verdict}: {CONFIDENCE:.0%} CI {paired['ci_low']:+.4f} to {paired['ci_high']:+.4f} on "
                     f"{comparison.rows} rows)")
        reasons.append(f"{metric} {new:.4f} vs champion v{comparison.champion_version} "
                       f"{comparison.champion[metric]:.4f}: {comparison.delta:+.4f}{noise}, below the required "
                       f"{cfg.min_improvement:+.4f}")
    if cfg.require_significant and paired and paired["within_noise"]:
        reasons.append(f"{metric} difference from champion v{comparison.champion_version} "
                       f"{paired['difference']:+.4f} is within noise ({CONFIDENCE:.0%} CI {paired['ci_low']:+.4f} to "
                       f"{paired['ci_high']:+.4f} on {comparison.rows} rows) and register.require_significant is true")
    return Gate(not reasons, reasons)


def compare(registry: "Registry", version: str, holdout: pd.DataFrame, metric: str, seed: int,
            baseline: dict | None = None) -> Comparison:
    """Score the challenger `version` and the current champion (if any) on the same holdout rows, each with its
    bootstrap interval, and their difference by a paired bootstrap; `seed` (the version's base.seed) draws the
    rows. A champion that cannot be loaded is reported, not raised: it must not block every later version."""
    truth = holdout["label"].tolist()

    def predicted(reference: str) -> list:
        return registry.load(f"{registry.name}/{reference}").predict(holdout[["text"]])["prediction"].tolist()

    def scored(labels: list, other: list | None = None) -> dict:
        """A model's scores over the labels of the truth and both models' predictions: a champion trained on
        a label since retired would otherwise average over one label more than the challenger."""
        metrics, _ = score(truth, labels, majority="", also=set(other or ()))
        return {**{key: metrics[key] for key in QUALITY}, **bootstrap_ci(truth, labels, seed, also=other)}

    from tasks.predict import ModelNotFound

    challenger, champion = predicted(version), registry.champion()
    if champion is None or champion == version:
        return Comparison(metric, len(holdout), version, scored(challenger), baseline=baseline)
    try:
        old = predicted(champion)
    except (ModelLoadError, ModelNotFound) as err:  # a damaged model folder, or its artifacts gone
        return Comparison(metric, len(holdout), version, scored(challenger), champion, None, baseline, str(err))
    return Comparison(metric, len(holdout), version, scored(challenger, old), champion, scored(old, challenger),
                      baseline, paired=paired_bootstrap(truth, challenger, old, seed))


def recheck(registry: "Registry", version: str, cfg: RegisterParams, known: Comparison | None = None
            ) -> tuple[Comparison, Gate]:
    """The gate as it stands now: `known` is reused while the champion it was scored against is still the
    champion (and it holds the paired test); otherwise both are scored again on the version's own holdout rows
    (logged with its run), drawn with the version's own seed."""
    recorded = registry.client.get_model_version(registry.name, version)
    tags = recorded.tags
    missing = [key for key in GATE_TAGS if key not in tags]
    if missing:
        raise NichetuneError(f"{registry.name} version {version} has no recorded evaluation (tags "
                             f"{', '.join(missing)}): only versions registered by `nichetune run` can be promoted")
    baseline = {key: float(tags[f"majority_{key}"]) for key in ("accuracy", "macro_f1")}
    stale = known is None or known.challenger_version != version or known.champion_version != registry.champion()
    if stale or (known.champion is not None and known.paired is None):
        known = compare(registry, version, registry.holdout(recorded.run_id), cfg.primary_metric,
                        int(tags["seed"]), baseline)
    known = replace(known, metric=cfg.primary_metric, baseline=baseline)
    return known, check_gate(cfg, known, tags["validation_status"], tags["drift_status"], tags.get(EPSILON_TAG))


def approve(registry: "Registry", version: str, cfg: RegisterParams, by: str, reason: str, via: str,
            known: Comparison | None = None, reconsider: bool = False) -> str:
    """Promote `version` if it passes the gate against the champion of this moment; otherwise tag it rejected
    by the gate and raise GateFailed. A champion that moves while the gate is checked means checking again. The
    version must load: a comparison recorded at training time does not prove its files are still there. A
    version a person rejected or rolled back needs `reconsider` (Registry.promote)."""
    registry._check_version(version)
    if registry.champion() == version:
        raise NichetuneError(f"{registry.name} version {version} is already the champion; nothing to do")
    refusal = registry.decided_against(version)
    if refusal and not reconsider:
        raise NichetuneError(reconsider_text(registry.name, version, refusal))
    registry.check_loadable(version, "become the champion")
    for _ in range(3):
        comparison, gate = recheck(registry, version, cfg, known)
        registry.client.set_model_version_tag(registry.name, version, "gate", f"{gate.text()} (checked again at "
                                              "approval)")
        registry.client.log_dict(registry.client.get_model_version(registry.name, version).run_id,
                                 comparison_record(comparison, gate), "comparison_at_approval.json")
        if not gate.passed:
            registry.reject(version, "gate", f"{gate.text()} (checked again at approval)", via=via)
            raise GateFailed(f"{registry.name} version {version} was not promoted: {gate.text()}")
        try:
            return registry.promote(version, by, reason, via, expect_champion=comparison.champion_version,
                                    reconsider=reconsider)
        except ChampionMoved:
            known = None
    raise NichetuneError(f"{registry.name}: the champion kept moving while version {version} was checked; "
                         "try again")


def reconsider_text(name: str, version: str, refusal: str) -> str:
    return (f"{name} version {version} was {refusal}; to promote it all the same, run `nichetune promote` again "
            "with --reconsider")


class ChampionMoved(Exception):
    """The champion changed between the gate check and the move (another reviewer was faster)."""


class Registry:
    """The `champion`, `previous-champion` and decision tags of one registered model."""

    def __init__(self, tracking_uri: str, name: str, lock_dir: Path):
        self.uri, self.name = tracking_uri, name
        self.client = registry_client(tracking_uri)
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = lock_dir / f"promote-{name}.lock"

    def load(self, reference: str):
        """The pyfunc model `NAME/VERSION` or `NAME@ALIAS`, from this registry."""
        from tasks.predict import load_registered

        return load_registered(f"models:/{reference}", self.uri)[0]

    def champion(self) -> str | None:
        return self._alias(CHAMPION)

    def history(self) -> list[str]:
        return json.loads(self.client.get_registered_model(self.name).tags.get(HISTORY_TAG, "[]"))

    def recorded_comparison(self, version: str) -> Comparison | None:
        """The comparison the training run logged for `version` (comparison.json), if it has one."""
        from mlflow.exceptions import MlflowException

        self._check_version(version)
        run_id = self.client.get_model_version(self.name, version).run_id
        try:
            record = mlflow_dict(self.client, run_id, COMPARISON_ARTIFACT)
        except (MlflowException, OSError):
            return None
        fields = {key: record.get(key) for key in Comparison.__dataclass_fields__}
        return Comparison(**fields)

    def holdout(self, run_id: str) -> pd.DataFrame:
        """The holdout rows a version was evaluated on, as its registration logged them."""
        import tempfile

        from tasks.layout import HOLDOUT_ARTIFACT

        with tempfile.TemporaryDirectory() as folder:
            return pd.read_parquet(self.client.download_artifacts(run_id, HOLDOUT_ARTIFACT, folder))

    def promote(self, version: str, by: str, reason: str, via: str, expect_champion: str | None | object = ANY,
                reconsider: bool = False) -> str:
        """Make `version` the champion; the old champion becomes `previous-champion`. With `expect_champion`,
        raise ChampionMoved when the champion is no longer that version (the gate was checked against it). A
        version a person rejected or rolled back is promoted only when `reconsider` says so on purpose (a
        rejection by the gate is not such a decision: the gate is checked again anyway)."""
        with self._locked():
            self._check_version(version)
            self._sync()
            old = self.champion()
            if expect_champion is not ANY and old != expect_champion and old != version:
                raise ChampionMoved(old)
            if old == version:
                raise NichetuneError(f"{self.name} version {version} is already the champion; nothing to do")
            refusal = self.decided_against(version)
            if refusal and not reconsider:
                raise NichetuneError(reconsider_text(self.name, version, refusal))
            self._move(version, old, self.history() + [version])
            self._tag(version, decision="approved", promoted_by=by, promoted_at=_now(), promotion_reason=reason,
                      promoted_via=via)
        return f"{self.name} version {version} is now the champion" + (f" (was version {old})" if old else "")

    def reject(self, version: str, by: str, reason: str, via: str) -> str:
        """Tag `version` as rejected, with who, when and why; the aliases do not move, so the champion itself
        cannot be rejected (a rollback or another version's promotion replaces it)."""
        with self._locked():
            self._check_version(version)
            self._sync()
            if self.champion() == version:
                raise NichetuneError(f"{self.name} version {version} is the champion: `nichetune rollback` gives the "
                                     "alias back to the one before, or promote another version")
            self._tag(version, decision="rejected", rejected_by=by, rejected_at=_now(), rejection_reason=reason,
                      rejected_via=via)
        return f"{self.name} version {version} rejected: {reason}"

    def rollback(self, by: str, reason: str) -> str:
        """Give the champion alias back to the previous champion; the rolled-back version is tagged."""
        with self._locked():
            self._sync()
            history = self.history()
            if len(history) < 2:
                raise NichetuneError(f"{self.name} has no previous champion to roll back to "
                                     f"(champion history: {history or 'empty'})")
            current, restored = history[-1], history[-2]
            self.check_loadable(restored, "be the champion again")
            trimmed = history[:-1]
            self._move(restored, trimmed[-2] if len(trimmed) > 1 else None, trimmed)
            self._tag(current, decision="rolled back", rolled_back_by=by, rolled_back_at=_now(),
                      rollback_reason=reason)
            self._tag(restored, decision="approved", promoted_by=by, promoted_at=_now(),
                      promotion_reason=f"rollback: {reason}", promoted_via="rollback")
        return f"{self.name}: champion rolled back from version {current} to version {restored}"

    def sync(self) -> str | None:
        """Record a champion alias moved outside nichetune (the MLflow UI); returns what was recorded."""
        with self._locked():
            return self._sync()

    def decided_against(self, version: str) -> str | None:
        """How a person ruled `version` out ("rejected by ana: worse on refunds", "rolled back by ben: ..."),
        or None."""
        tags = self.client.get_model_version(self.name, version).tags
        if tags.get("decision") == "rejected" and tags.get("rejected_by", "gate") != "gate":
            return f"rejected by {tags['rejected_by']}: {tags.get('rejection_reason', '')}"
        if tags.get("decision") == "rolled back":
            return f"rolled back by {tags.get('rolled_back_by', '?')}: {tags.get('rollback_reason', '')}"
        return None

    def check_loadable(self, version: str, to: str) -> None:
        """Raise a NichetuneError unless `version`'s model loads from this registry (its files can be gone
        from the artifact store, or damaged, long after it was registered)."""
        from tasks.predict import ModelNotFound

        try:
            self.load(f"{self.name}/{version}")
        except (ModelLoadError, ModelNotFound) as err:
            raise NichetuneError(f"{self.name} version {version} cannot {to}: its model does not load ("
                                 f"{' '.join(str(err).split())})") from None

    def _sync(self) -> str | None:
        champion, history = self.champion(), self.history()
        if champion is None or (history and history[-1] == champion):
            return None
        self._move(champion, history[-1] if history else None, history + [champion])
        self._tag(champion, decision="approved", promoted_by=OUTSIDE, promoted_at=_now(),
                  promotion_reason="champion alias set outside nichetune; recorded when noticed",
                  promoted_via="mlflow-ui")
        return f"{self.name} version {champion} was made champion outside nichetune; recorded"

    def _move(self, champion: str, previous: str | None, history: list[str]) -> None:
        self.client.set_registered_model_alias(self.name, CHAMPION, champion)
        if previous:
            self.client.set_registered_model_alias(self.name, PREVIOUS, previous)
        elif self._alias(PREVIOUS):
            self.client.delete_registered_model_alias(self.name, PREVIOUS)
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))

    def _tag(self, version: str, **tags: str) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)

    def _alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def _check_version(self, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.name, version)
        except MlflowException:
            found = version_numbers(self.client, self.name)
            raise NichetuneError(f"model {self.name!r} has no version {version!r} in {self.uri} "
                                 f"(versions: {', '.join(found) or 'none'})") from None

    @contextmanager
    def _locked(self):
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(self.lock_path), timeout=LOCK_SECONDS):
                yield
        except Timeout:
            raise NichetuneError(f"{self.lock_path}: another promote, reject or rollback of {self.name} has held "
                                 f"this lock for over {LOCK_SECONDS} s; try again (the lock frees itself when that "
                                 "command ends)") from None


def reviewer_identity(uri: str, stated: str | None) -> str:
    """Who signs: the login a tracking server authenticates (MLFLOW_TRACKING_USERNAME) when there is one,
    since a typed name proves nothing; else the name the reviewer gives."""
    login = os.environ.get("MLFLOW_TRACKING_USERNAME") if uri.startswith(("http://", "https://")) else None
    stated = " ".join((stated or "").split()) or None  # a name of blanks signs nothing
    if login and stated and stated != login:
        raise NichetuneError(f"--reviewer {stated!r} is not the MLflow login {login!r} this change is made as; "
                             "leave --reviewer out (the login is recorded) or log in as that reviewer")
    if not (login or stated):
        raise NichetuneError("--reviewer NAME is required: no tracking server login identifies you")
    return login or stated


def stated_reason(reason: str, option: str = "--reason") -> str:
    """The reason as recorded; a blank one is refused, since the tags are what an audit reads later."""
    if not reason.strip():
        raise NichetuneError(f"{option} is empty: say why, in a few words (it is recorded on the version)")
    return reason.strip()


def comparison_record(comparison: Comparison, gate: Gate) -> dict:
    """What the flow logs to the challenger's MLflow run and shows the reviewer."""
    return {**asdict(comparison), "delta": comparison.delta, "noise": comparison.noise(), "gate": asdict(gate)}


def mlflow_dict(client, run_id: str, path: str) -> dict:
    """A JSON artifact of an MLflow run."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, path, folder)).read_text())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
