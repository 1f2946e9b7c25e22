"""What a training run shows in the Prefect UI when it ends: a markdown summary and a per-class table."""

from __future__ import annotations

import re

import pandas as pd

from tasks.config import Params, Paths
from tasks.layout import PER_CLASS_FILE, REPORTS_DIR
from tasks.metrics import with_interval
from tasks.register import UNLABELED_TAGS, Registration

MLFLOW_UI = "http://127.0.0.1:5000"  # where `nichetune ui` and `nichetune up` serve a local store


def artifact_key(kind: str, dataset: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]", "-", f"{kind}-{dataset}".lower())


def run_link(registration: Registration) -> str:
    """The MLflow run's page: on the tracking server when there is one, else where `nichetune ui` serves it."""
    from mlflow import MlflowClient

    base = registration.tracking_uri if registration.tracking_uri.startswith("http") else MLFLOW_UI
    experiment = MlflowClient(registration.tracking_uri).get_run(registration.run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{registration.run_id}"


def model_line(tags: dict) -> str:
    """The strategy, and for auto what it chose and how each candidate scored on the validation rows."""
    line = f"strategy `{tags['strategy']}`"
    if tags.get("candidate_scores"):
        line += (f", chose {tags['model_choice']}; validation accuracy / macro-F1 of each candidate: "
                 f"{tags['candidate_scores']}")
    temperature = float(tags.get("temperature", 1))
    line += (f"; probabilities calibrated with temperature {temperature:.2f}" if temperature != 1.0 else
             "; probabilities not calibrated (no validation rows: finetune.validation_fraction is 0)")
    if tags.get("runtime") == "onnx":  # register.runtime: predict and serve run the exported graphs
        agreement = f", same label as torch on {float(tags['onnx_agreement']):.1%} of the holdout" \
            if "onnx_agreement" in tags else ""
        line += f"; predicts with ONNX Runtime (weights: {tags['onnx_quantization']}{agreement})"
    return line


def unlabeled_lines(tags: dict) -> list[str]:
    """How many unlabeled texts the training drew on, from which pool version, and what domain adaptation and
    self-training did with them: one line, or none when it used no unlabeled text and adapted on nothing."""
    if not any(key in tags for key in UNLABELED_TAGS):
        return []
    pooled = tags.get("unlabeled_texts", "0") != "0"
    parts = [f"{tags['unlabeled_texts']} texts in pool version `{tags.get('unlabeled_pool_version', '?')}`"] \
        if pooled else ["no unlabeled pool"]
    if "adapt_objective" in tags:
        corpus = "the pool"
        if tags.get("adapt_corpus") == "pool+training":
            corpus = "the pool and the training rows" if pooled else "the training rows"
        parts.append(f"domain adaptation `{tags['adapt_objective']}`, {tags.get('adapt_steps', '?')} steps on "
                     f"{tags.get('adapt_texts', '?')} texts from {corpus}")
    if "self_training_rounds" in tags:
        parts.append(f"self-training {tags['self_training_rounds']} rounds, "
                     f"{tags.get('self_training_pseudo_labels', '?')} pseudo-labels")
    return ["- **Unlabeled texts**: " + "; ".join(parts)]


def privacy_line(tags: dict) -> str:
    """The privacy budget a private training spent, and its DP-SGD settings; or that it was not private."""
    if tags.get("private") != "true":
        return "- **Privacy**: not trained privately (finetune.privacy.epsilon is null)"
    return (f"- **Privacy**: trained with differential privacy (Opacus, {tags['privacy_accountant']} accountant): "
            f"epsilon {float(tags['privacy_epsilon']):.2f} spent of {tags['privacy_target_epsilon']}, delta "
            f"{tags['privacy_delta']}; clipping norm {tags['privacy_max_grad_norm']}, noise multiplier "
            f"{float(tags['privacy_noise_multiplier']):.3f}, sample rate {float(tags['privacy_sample_rate']):.4f}, "
            f"{tags['privacy_steps']} steps")


def summary_markdown(params: Params, paths: Paths, registration: Registration, review: dict,
                     outcome: dict) -> str:
    tags, metrics = registration.tags, registration.metrics
    name, version = registration.model_name, registration.version
    return "\n".join([
        f"# {params.ingest.dataset}: {name} version {version} — {outcome['decision']}", "",
        f"- **Data**: DVC version `{tags['data_version']}`, {tags['data_rows']} rows (`{tags['data_path']}`)",
        f"- **Validation**: {tags['validation_status']} (Great Expectations; see the validation artifact)",
        f"- **Holdout**: {holdout_text(metrics)}; always the majority class: accuracy "
        f"{metrics['majority_accuracy']:.3f}; {calibration_text(metrics)}",
        f"- **Model**: {model_line(tags)}",
        *unlabeled_lines(tags),
        privacy_line(tags),
        f"- **Drift over time windows**: {tags['drift_status']}",
        f"- **Gate**: {review['gate']}; **decision**: {outcome['message']}", "",
        "## Against the champion", "", review["table"], "",
        "## Links", "",
        f"- MLflow run: [{registration.run_id}]({run_link(registration)}) (reports, explanations, drift windows)",
        f"- Registered model: `models:/{name}/{version}` (aliases: {params.register.alias}"
        f"{', champion' if outcome['decision'] == 'promoted' else ''})",
        f"- Reports on disk: `{paths.stage('evaluate') / REPORTS_DIR}`",
    ])


def holdout_text(metrics: dict) -> str:
    """"macro-F1 0.710 (95% CI 0.640-0.780, 57 rows), accuracy ...": the evaluate stage's scores and intervals."""
    bounds = lambda key: (metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high"))  # noqa: E731
    return ", ".join(f"{name} {with_interval(metrics[key], *bounds(key), metrics.get('holdout_rows'))}"
                     for key, name in (("macro_f1", "macro-F1"), ("accuracy", "accuracy")))


def calibration_text(metrics: dict) -> str:
    """The expected calibration error, and before temperature scaling when the model was scaled."""
    text = f"calibration error {metrics.get('ece', float('nan')):.3f}"
    if metrics.get("temperature", 1.0) != 1.0 and "ece_uncalibrated" in metrics:
        text += f" ({metrics['ece_uncalibrated']:.3f} before temperature scaling at T={metrics['temperature']:.2f})"
    return text


def per_class_table(paths: Paths) -> list[dict]:
    """The evaluate stage's per-class metrics, as the rows of a table artifact."""
    per_class = pd.read_csv(paths.stage("evaluate") / REPORTS_DIR / PER_CLASS_FILE).round(4)
    return per_class.to_dict(orient="records")


def publish(params: Params, paths: Paths, registration: Registration, review: dict, outcome: dict,
            per_class: list[dict]) -> None:
    """The run's summary (markdown) and per-class metrics (table) as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    dataset = params.ingest.dataset
    create_markdown_artifact(markdown=summary_markdown(params, paths, registration, review, outcome),
                             key=artifact_key("summary", dataset), description="nichetune training run summary")
    create_table_artifact(table=per_class, key=artifact_key("per-class", dataset),
                          description="Holdout precision, recall, F1 and support per class")
