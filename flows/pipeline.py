"""The training pipeline as one Prefect flow: it only calls the stage functions of `tasks/` in order."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from prefect import flow

from flows import summary
from flows.review import compare_task, decide
from flows.slots import training_turn
from flows.stage import stage
from tasks import evaluate, finetune, ingest, register, split, validate
from tasks.batches import RAW_DIR
from tasks.config import Params, Paths, load_params
from tasks.errors import NichetuneError
from tasks.layout import CACHE_DIR, MARKDOWN_FILE


class _UserErrorsWithoutTraceback(logging.Filter):
    """Bad data or params are the user's to fix: log the message Prefect records, without a stack trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], NichetuneError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_tracebacks_of_user_errors() -> None:
    """Install the filter on Prefect's run loggers (called once by the CLI, not at import)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_UserErrorsWithoutTraceback())


@stage(name="ingest")
def ingest_task(params: Params, paths: Paths) -> ingest.IngestResult:
    """Store `ingest.path` as a new DVC-versioned batch when it is new, then assemble every stored batch."""
    result = ingest.run(params.ingest, params.validate.labels, paths.root, paths.stage("ingest"))
    if result.ingested:
        print(result.ingested.text())
    batches = len(result.version["batches"])
    print(f"dataset {params.ingest.dataset}: {result.rows} rows in {batches} batch{'es' * (batches != 1)}, "
          f"DVC version {result.version['md5']}")
    if result.pool_rows:
        pool = result.version["unlabeled"]
        print(f"unlabeled texts of {params.ingest.dataset}: {result.pool_rows} in {len(pool['batches'])} "
              f"batch{'es' * (len(pool['batches']) != 1)}, DVC version {result.pool_version}")
    return result


@stage(name="validate")
def validate_task(params: Params, dataset: Path, paths: Paths) -> validate.ValidationResult:
    """Run the Great Expectations suite; the summary becomes a markdown artifact in the Prefect UI, and a
    failure stops the flow with it."""
    from prefect.artifacts import create_markdown_artifact

    markdown = paths.stage("validate") / MARKDOWN_FILE
    markdown.unlink(missing_ok=True)
    try:
        result = validate.run(params.validate, dataset, markdown.parent, source=str(RAW_DIR / params.ingest.dataset))
        print(result.warnings())  # what passed only because its severity is warn, in the run's log
        return result
    finally:  # passed or failed, the reviewer sees the same table
        if markdown.exists():
            create_markdown_artifact(markdown=markdown.read_text(),
                                     key=summary.artifact_key("validation", params.ingest.dataset),
                                     description="Great Expectations summary of the training data")


@stage(name="split")
def split_task(params: Params, dataset: Path, paths: Paths) -> split.SplitResult:
    """Hold out the most recent rows (or a stratified share); say which holdout labels no training row has."""
    result = split.run(params.split, params.base.seed, dataset, paths.stage("split"))
    if result.unseen_text():
        print(result.unseen_text())  # in the run's log, as validation's warnings
    return result


@stage(name="finetune")
def finetune_task(params: Params, train: Path, paths: Paths) -> finetune.FinetuneResult:
    """Fine-tune the backbone on the training rows."""
    return finetune.run(params, train, paths)


@stage(name="evaluate")
def evaluate_task(params: Params, model_dir: Path, splits: split.SplitResult, paths: Paths) -> evaluate.EvalResult:
    """Score the holdout and write the per-class and Evidently reports."""
    return evaluate.run(params.evaluate, model_dir, splits.train, splits.holdout, paths.stage("evaluate"),
                        params.base.seed)


@stage(name="register")
def register_task(params: Params, paths: Paths) -> register.Registration:
    """Log the run to MLflow and register the model version under the `challenger` alias."""
    return register.run(params, paths)


# Set by `nichetune up` for the runs it serves: the project folders it serves (os.pathsep between them)
SERVED_ROOTS_ENV = "NICHETUNE_SERVED_ROOTS"


def check_served_root(root: str, dataset: str | None = None) -> None:
    """A run of the deployment `nichetune-train/train-<dataset>` carries the project folder it was triggered for.
    Two projects on one Prefect server whose datasets share a name share that deployment, so a run triggered for
    one (while its `nichetune up` was stopped) can be picked up by the other's: it must not train there."""
    served = [folder for folder in os.environ.get(SERVED_ROOTS_ENV, "").split(os.pathsep) if folder]
    if served and str(Path(root).resolve()) not in served:
        raise NichetuneError(f"this run was triggered for the project in {Path(root).resolve()}, but the "
                             f"`nichetune up` that picked it up serves {', '.join(served)} (both name their "
                             f"deployment nichetune-train/train-{dataset or '<dataset>'}); start `nichetune up` in "
                             f"{Path(root).resolve()} to train it, or give one project another ingest.dataset")


@flow(name="nichetune-train", log_prints=True)
def train_pipeline(root: str = ".", params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict:
    """Labeled file -> validated data -> fine-tuned model -> evaluation -> registered challenger -> gate ->
    the reviewer's decision (or the automatic one)."""
    params = load_params(Path(root) / params_file, overrides)
    check_served_root(root, params.ingest.dataset)
    paths = Paths.of(Path(root), params)
    with training_turn(params.ingest.dataset):
        splits = prepare_data(params, paths)
        tuned = finetune_task(params, splits.train, paths)
        registration = evaluate_and_register(params, paths, tuned.model_dir, splits)
        review = compare_task(params, paths, registration, str(splits.holdout))
        per_class = summary.per_class_table(paths)  # read now: the next run may overwrite the workdir
    return decide_and_publish(params, paths, registration, review, per_class)


def prepare_data(params: Params, paths: Paths) -> split.SplitResult:
    """The first steps of every training flow: ingest, validate, split."""
    ingested = ingest_task(params, paths)
    validate_task(params, ingested.dataset, paths)
    return split_task(params, ingested.dataset, paths)


def evaluate_and_register(params: Params, paths: Paths, model_dir: Path,
                          splits: split.SplitResult) -> register.Registration:
    """Score the trained model on the holdout and register it as the challenger."""
    evaluate_task(params, model_dir, splits, paths)
    return register_task(params, paths)


def decide_and_publish(params: Params, paths: Paths, registration: register.Registration, review: dict,
                       per_class: list[dict]) -> dict:
    """The last steps of every training flow: the gate's or the reviewer's decision, then the run summary."""
    outcome = decide(params, paths, registration, review)
    summary.publish(params, paths, registration, review, outcome, per_class)
    suggested = suggest_task(params, paths) if params.suggest.after_review else None
    return {**registration.as_dict(), "gate": review["gate"], **outcome, "suggested": suggested}


@stage(name="suggest")
def suggest_task(params: Params, paths: Paths) -> str | None:
    """The next texts to label for the champion of this moment (suggest.after_review): files for the labeling
    tools and a table artifact in the Prefect UI. Without a pool, a champion or a text left to suggest, it says
    why and the flow ends as it would have."""
    import pandas as pd
    from prefect.artifacts import create_table_artifact

    from tasks.predict import model_uri
    from tasks.suggest import suggest

    dataset, cfg = params.ingest.dataset, params.suggest
    try:
        done = suggest(paths.root, dataset, model_uri(None, params.register.model_name),
                       register.tracking_uri(paths), cfg.strategy, cfg.n, cfg.shortlist, params.base.seed,
                       paths.workdir / "suggestions", params.ingest, paths.workdir / CACHE_DIR)
    except NichetuneError as err:  # no pool, no champion, nothing left: the flow's outcome stands
        print(f"no texts suggested to label next: {err}")
        return None
    folder = done.files["csv"].parent
    rows = pd.read_csv(done.files["csv"], keep_default_na=False).to_dict("records")
    create_table_artifact(table=rows, key=summary.artifact_key("suggestions", dataset),
                          description=f"{done.rows} texts to label next ({done.strategy}, {done.model}); files for "
                                      f"Label Studio and Argilla in {folder}")
    print(f"{done.rows} texts to label next ({done.strategy}, {done.model}) in {folder}")
    return str(folder)
