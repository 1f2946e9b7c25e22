"""Register: one MLflow run with params, metrics, reports and tags, and a registered model version aliased
`challenger`. The tracking store is the project's SQLite file unless MLFLOW_TRACKING_URI names a server."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib.metadata import version as installed
from pathlib import Path

import pandas as pd

from tasks.config import Params, Paths
from tasks.layout import (HOLDOUT_ARTIFACT, HOLDOUT_FILE, LOG_FILE, METRICS_FILE, MODEL_DIR,  # noqa: F401
                          REGISTERED_FILE, REPORTS_DIR, SUMMARY_FILE, VERSION_FILE)
from tasks.tracking import first_line, registry_client, version_numbers  # noqa: F401 (also imported from here)
from tasks.tracking import tracking_store as _tracking
from tasks.versioning import git_commit

ADAPTED_ARTIFACT = "adapted_backbone"  # in a run whose backbone was adapted on unlabeled texts: that backbone
# tags saying what unlabeled texts a version was trained with (only those that apply are set)
UNLABELED_TAGS = ("unlabeled_pool_version", "unlabeled_texts", "adapt_objective", "adapt_steps", "adapt_texts",
                  "adapt_corpus", "self_training_rounds", "self_training_pseudo_labels")
# finetune.privacy: what a privately trained version carries (tasks.privacy.Budget.record), under these tags
PRIVACY_TAGS = {"privacy_epsilon": "spent_epsilon", "privacy_target_epsilon": "epsilon", "privacy_delta": "delta",
                "privacy_max_grad_norm": "max_grad_norm", "privacy_noise_multiplier": "noise_multiplier",
                "privacy_sample_rate": "sample_rate", "privacy_steps": "steps_taken",
                "privacy_accountant": "accountant"}
log = logging.getLogger(__name__)
RUNTIME_PACKAGES = ["torch", "transformers", "pandas", "numpy", "mlflow"]  # what the logged model imports
TORCH_PACKAGES = ("torch", "transformers")  # not needed where the registered version predicts with ONNX Runtime
ONNX_DIR = "onnx"  # register.runtime onnx: the exported model the registered version predicts with


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str
    alias: str
    run_id: str
    tracking_uri: str
    metrics: dict
    tags: dict

    def as_dict(self) -> dict:
        return asdict(self)


def tracking_uri(paths: Paths) -> str:
    """MLFLOW_TRACKING_URI when set (a team server), else SQLite inside the project's workdir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow_db}"


def run_tags(params: Params, paths: Paths, stage_outputs: dict) -> dict:
    """What ties a model version to its inputs: data version, code commit, params hash, device."""
    data = stage_outputs["data_version"]
    return {
        "data_version": str(data["md5"]),
        "data_path": data["path"],
        "data_tracked_by_dvc": str(data["tracked"]).lower(),
        "data_rows": str(data["rows"]),
        "git_commit": git_commit(paths.root),
        "params_hash": params.digest(),
        "strategy": params.finetune.strategy,
        "backbone": params.finetune.backbone,
        "device": stage_outputs["training"]["device"],
        "model_choice": model_choice(stage_outputs["training"]),
        "candidate_scores": candidate_scores(stage_outputs["training"]),
        "temperature": f"{stage_outputs['training'].get('temperature', 1.0):.4f}",
        "seed": str(params.base.seed),
        "primary_metric": params.register.primary_metric,
        "primary_metric_value": f"{stage_outputs['metrics'][params.register.primary_metric]:.4f}",
        "validation_status": validation_status(stage_outputs["validation_summary"]),
        "drift_status": str(stage_outputs["metrics"].get("drift_status", "not measured")),
        **unlabeled_tags(stage_outputs["training"].get("unlabeled") or {}),
        **privacy_tags(stage_outputs["training"].get("privacy") or {}),
    }


def privacy_tags(record: dict) -> dict:
    """`private` (true or false) and, for a private training, its budget and the epsilon it spent."""
    if not record:
        return {"private": "false"}
    return {"private": "true", **{tag: f"{record[key]:.6g}" if isinstance(record[key], float) else str(record[key])
                                  for tag, key in PRIVACY_TAGS.items()}}


def unlabeled_tags(unlabeled: dict) -> dict:
    """What the unlabeled texts did in the training (FinetuneResult.unlabeled) as UNLABELED_TAGS, those present."""
    adapted, rounds = unlabeled.get("adapt") or {}, unlabeled.get("self_training") or {}
    values = dict(zip(UNLABELED_TAGS, (
        unlabeled.get("pool_version"), unlabeled.get("pool_rows"), adapted.get("objective"), adapted.get("steps"),
        adapted.get("texts"), adapted.get("corpus"), rounds.get("rounds"), _total(rounds.get("pseudo_labels")))))
    return {key: str(value) for key, value in values.items() if value is not None}


def _total(counts) -> int | None:
    """A count given as a number, or per round (a list) or per class (a dict), in any nesting: the sum."""
    if counts is None or isinstance(counts, (int, float)):
        return counts
    return sum(_total(value) or 0 for value in (counts.values() if isinstance(counts, dict) else counts))


def adapted_folder(training: dict) -> Path | None:
    """The domain-adapted backbone the model was trained from (its cache folder), None when the backbone was not
    adapted or the cache was cleared since (the model folder keeps its own copy either way)."""
    path = (training.get("unlabeled") or {}).get("adapt", {}).get("path")
    if path and not Path(path).is_dir():
        log.warning("the adapted backbone %s is gone from the cache; the model folder still holds a copy", path)
    return Path(path) if path and Path(path).is_dir() else None


def model_choice(training: dict) -> str:
    """What the model is made of: the strategy, or for auto each chosen candidate with its weight."""
    weights = training.get("choice", {}).get("weights")
    if not weights:
        return training["strategy"]
    return " + ".join(f"{name} {weight:.1f}" for name, weight in weights.items())


def candidate_scores(training: dict) -> str:
    """Strategy auto: each candidate's validation accuracy and macro-F1, for people; "" for other strategies."""
    return ", ".join(f"{c['name']} left out by finetune.{c['left_out']} (it would take about "
                     f"{c['projected_seconds'] / 60:.0f} min)" if "left_out" in c
                     else f"{c['name']} {c['accuracy']:.3f} / {c['macro_f1']:.3f}"
                     for c in training.get("candidates", []))


def candidate_metrics(training: dict) -> dict:
    """Strategy auto: each candidate's validation scores, as MLflow metrics."""
    return {f"candidate_{c['name']}_{metric}": c[metric] for c in training.get("candidates", [])
            if "left_out" not in c for metric in ("accuracy", "macro_f1", "log_loss")}


def validation_status(summary: dict) -> str:
    """"passed", "passed with N warnings" or "failed" (a failed suite normally stops the flow earlier)."""
    if not summary.get("success"):
        return "failed"
    warned = sum(not check["success"] for check in summary.get("checks", []))
    return f"passed with {warned} warning{'s' * (warned != 1)}" if warned else "passed"


def read_stage_outputs(paths: Paths) -> dict:
    """The records earlier stages left on disk (the same files whether the flow or `dvc repro` ran them)."""
    read = lambda path: json.loads(path.read_text())  # noqa: E731
    return {
        "data_version": read(paths.stage("ingest") / VERSION_FILE),
        "training": read(paths.stage("finetune") / LOG_FILE),
        "metrics": read(paths.stage("evaluate") / METRICS_FILE),
        "model_dir": paths.stage("finetune") / MODEL_DIR,
        "reports": paths.stage("evaluate") / REPORTS_DIR,
        "holdout": paths.stage("split") / HOLDOUT_FILE,
        "validation": paths.stage("validate"),
        "validation_summary": read(paths.stage("validate") / SUMMARY_FILE),
    }


def run(params: Params, paths: Paths) -> Registration:
    """Log everything about this training to MLflow and register the model as the new challenger."""
    import mlflow

    _quiet_mlflow()
    outputs = read_stage_outputs(paths)
    uri = tracking_uri(paths)
    tags = run_tags(params, paths, outputs)
    name = params.register.model_name
    with _tracking(uri), mlflow.start_run(
        run_name=f"{name}-{tags['data_version'][:8]}",
        experiment_id=_experiment_id(params.register.experiment, uri, paths),
    ) as active:
        mlflow.log_params(_flatten(params.as_dict()))
        mlflow.log_metrics({k: v for k, v in outputs["metrics"].items() if isinstance(v, (int, float))})
        training = outputs["training"]
        mlflow.log_metrics({"train_seconds": training["seconds"], **candidate_metrics(training)})
        if training.get("candidates"):  # strategy auto: what each candidate scored and what was chosen
            mlflow.log_dict({"candidates": training["candidates"], "choice": training["choice"]}, "auto_choice.json")
        mlflow.set_tags(tags)
        mlflow.log_artifacts(str(outputs["reports"]), "reports")
        adapted = adapted_folder(training)
        if adapted is not None:
            mlflow.log_artifacts(str(adapted), ADAPTED_ARTIFACT)
        mlflow.log_artifacts(str(outputs["validation"]), "validation")
        # A later approval re-checks the gate against whoever is champion then, on these same rows.
        mlflow.log_artifact(str(outputs["holdout"]), HOLDOUT_ARTIFACT.rpartition("/")[0])
        onnx = _export_onnx(params, outputs, paths.stage("register") / ONNX_DIR, tags)
        info = _log_model(outputs["model_dir"], name, onnx)
    client = registry_client(uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, params.register.alias, version)
    for key, value in {**tags, **_metric_tags(outputs["metrics"])}.items():
        client.set_model_version_tag(name, version, key, value)
    registration = Registration(name, version, params.register.alias, active.info.run_id, uri,
                                outputs["metrics"], tags)
    out = paths.stage("register")
    out.mkdir(parents=True, exist_ok=True)
    (out / REGISTERED_FILE).write_text(json.dumps(registration.as_dict(), indent=2))
    return registration


def _export_onnx(params: Params, outputs: dict, out: Path, tags: dict) -> Path | None:
    """register.runtime onnx: the model exported (tasks.export) and checked on the holdout rows, for the
    registered model to predict with; what it chose and how closely it follows torch become run tags."""
    import shutil

    import mlflow

    from tasks.export import export_model

    if params.register.runtime != "onnx":
        return None
    shutil.rmtree(out, ignore_errors=True)  # a rerun of the stage writes it afresh
    texts = pd.read_parquet(outputs["holdout"])["text"].astype(str).tolist()
    done = export_model(outputs["model_dir"], out, params.register.quantize, texts,
                        source={"data_version": tags["data_version"], "strategy": tags["strategy"]})
    onnx_tags = {"runtime": "onnx", "onnx_quantization": done.quantization}
    if done.parity is not None:
        onnx_tags["onnx_agreement"] = f"{done.parity.agreement:.4f}"
        mlflow.log_metrics({"onnx_agreement": done.parity.agreement, "onnx_p99_probability_diff": done.parity.p99_diff})
    tags.update(onnx_tags)
    mlflow.set_tags(onnx_tags)
    return done.folder


def _log_model(model_dir: Path, name: str, onnx: Path | None = None):
    import mlflow

    from tasks.export import RUNTIME_PACKAGES as ONNX_PACKAGES
    from tasks.predict import TextClassifierModel  # its module loads mlflow.pyfunc: only when a model is logged

    artifacts = {"model_dir": str(model_dir)} if onnx is None else {"model_dir": str(model_dir), "onnx_dir": str(onnx)}
    # served with ONNX Runtime, the model never imports torch: `mlflow models serve` builds an environment without it
    packages = (RUNTIME_PACKAGES if onnx is None else
                [package for package in RUNTIME_PACKAGES if package not in TORCH_PACKAGES] + list(ONNX_PACKAGES))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TextClassifierModel(),
        artifacts=artifacts,
        code_paths=[str(Path(__file__).parent)],  # the `tasks` package travels with the model
        pip_requirements=[f"{package}=={installed(package)}" for package in dict.fromkeys(packages)],
        input_example=pd.DataFrame({"text": ["where is my order?"]}),
        registered_model_name=name,
    )


def _experiment_id(name: str, uri: str, paths: Paths) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    local = uri == f"sqlite:///{paths.mlflow_db}"
    location = paths.mlflow_artifacts.as_uri() if local else None  # a server decides its own artifact store
    return client.create_experiment(name, artifact_location=location)


def _metric_tags(metrics: dict) -> dict:
    """Rounded for people; the majority-class baseline in full, since the gate compares against it."""
    rounded = {key: f"{metrics[key]:.4f}" for key in ("accuracy", "macro_f1", "ece") if key in metrics}
    return {**rounded, **{key: repr(metrics[key]) for key in ("majority_accuracy", "majority_macro_f1")}}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _DropPickleNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing a Python object as `python_model`" not in record.getMessage()


def _quiet_mlflow() -> None:
    logging.getLogger("mlflow.pyfunc").addFilter(_DropPickleNotice())


def main() -> None:
    """`python -m tasks.register`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main("register")


if __name__ == "__main__":
    main()
