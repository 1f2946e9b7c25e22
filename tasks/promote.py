"""Promote: champion and challenger scored on the same holdout, the gate, and every move of the `champion` alias.

Whoever moves the alias (the flow after a reviewer's approval or the automatic gate, `nichetune promote`,
`nichetune rollback`, or someone in the MLflow UI, noticed by `Registry.sync`), the versions end with the same
tags: who, when, why and how. The registered model's `champion_history` tag lists the champions in order, which
is what `rollback` walks back through. Moves are serialized by a lock file beside the tracking store."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tasks.config import RegisterParams
from tasks.errors import NichetuneError

CHAMPION = "champion"
PREVIOUS = "previous-champion"
HISTORY_TAG = "champion_history"  # on the registered model: JSON list of champion versions, oldest first
OUTSIDE = "unknown (alias set outside nichetune, e.g. in the MLflow UI)"


@dataclass(frozen=True)
class Comparison:
    """Champion and challenger on the same holdout rows."""

    metric: str  # the gate's primary metric
    rows: int
    challenger_version: str
    challenger: dict  # accuracy, macro_f1
    champion_version: str | None = None
    champion: dict | None = None

    @property
    def delta(self) -> float | None:
        """Challenger minus champion on the primary metric; None when there is no champion yet."""
        return None if self.champion is None else self.challenger[self.metric] - self.champion[self.metric]

    def markdown(self) -> str:
        champion = f"champion (v{self.champion_version})" if self.champion else "champion (none yet)"
        lines = [f"| metric | challenger (v{self.challenger_version}) | {champion} | difference |", "|---|---|---|---|"]
        for key in ("accuracy", "macro_f1"):
            new, old = self.challenger[key], self.champion[key] if self.champion else None
            old_text, diff = ("-", "-") if old is None else (f"{old:.4f}", f"{new - old:+.4f}")
            mark = " (primary)" if key == self.metric else ""
            lines.append(f"| {key}{mark} | {new:.4f} | {old_text} | {diff} |")
        return "\n".join(lines) + f"\n\nBoth scored on the same {self.rows} holdout rows."


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed

    def text(self) -> str:
        return "gate passed" if self.passed else "gate failed: " + "; ".join(self.reasons)


def check_gate(cfg: RegisterParams, comparison: Comparison, validation: str, drift: str) -> Gate:
    """Validation passed, no blocking drift, and at least `min_improvement` over the champion on the primary
    metric (a first model, with no champion to beat, passes on the first two alone)."""
    reasons = []
    if not validation.startswith("passed"):
        reasons.append(f"validation {validation}")
    if drift == "block":
        reasons.append("drift blocks promotion (see the window reports)")
    if comparison.delta is not None and comparison.delta < cfg.min_improvement - 1e-12:
        reasons.append(f"{comparison.metric} {comparison.challenger[comparison.metric]:.4f} vs champion "
                       f"{comparison.champion[comparison.metric]:.4f}: {comparison.delta:+.4f}, below the required "
                       f"{cfg.min_improvement:+.4f}")
    return Gate(not reasons, reasons)


def compare(registry: "Registry", version: str, holdout: pd.DataFrame, metric: str) -> Comparison:
    """Score the challenger `version` and the current champion (if any) on the same holdout rows."""
    from tasks.evaluate import score

    def scored(reference: str) -> dict:
        predicted = registry.load(reference).predict(holdout[["text"]])["prediction"].tolist()
        metrics, _ = score(holdout["label"].tolist(), predicted, majority="")
        return {key: metrics[key] for key in ("accuracy", "macro_f1")}

    champion = registry.champion()
    return Comparison(metric, len(holdout), version, scored(f"{registry.name}/{version}"),
                      champion, scored(f"{registry.name}/{champion}") if champion else None)


class Registry:
    """The `champion`, `previous-champion` and decision tags of one registered model."""

    def __init__(self, tracking_uri: str, name: str, lock_dir: Path):
        from tasks.register import registry_client

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

    def promote(self, version: str, by: str, reason: str, via: str) -> str:
        """Make `version` the champion; the old champion becomes `previous-champion`."""
        with self._locked():
            self._check_version(version)
            self._sync()
            old = self.champion()
            if old == version:
                raise NichetuneError(f"{self.name} version {version} is already the champion; nothing to do")
            self._move(version, old, self.history() + [version])
            self._tag(version, decision="approved", promoted_by=by, promoted_at=_now(), promotion_reason=reason,
                      promoted_via=via)
        return f"{self.name} version {version} is now the champion" + (f" (was version {old})" if old else "")

    def reject(self, version: str, by: str, reason: str, via: str) -> str:
        """Tag `version` as rejected, with who, when and why; the aliases do not move."""
        with self._locked():
            self._check_version(version)
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
            from tasks.register import version_numbers

            found = version_numbers(self.client, self.name)
            raise NichetuneError(f"model {self.name!r} has no version {version!r} in {self.uri} "
                                 f"(versions: {', '.join(found) or 'none'})") from None

    def _locked(self):
        from filelock import FileLock

        return FileLock(str(self.lock_path), timeout=120)


def comparison_record(comparison: Comparison, gate: Gate) -> dict:
    """What the flow logs to the challenger's MLflow run and shows the reviewer."""
    return {**asdict(comparison), "delta": comparison.delta, "gate": asdict(gate)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
