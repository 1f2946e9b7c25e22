"""Which stage reads and writes which file: one table that the stage commands, the flow, register and the
benchmarks read, and that tests hold dvc.yaml to. Plain strings only: importing it loads no stage."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# File and folder names inside each stage's output folder (`Paths.stage(name)`, i.e. <workdir>/<stage>).
DATASET_FILE = "dataset.parquet"  # ingest: every stored batch of the dataset, assembled
VERSION_FILE = "data_version.json"  # ingest: the DVC version, batches and row count of that dataset
POOL_FILE = "unlabeled.parquet"  # ingest: the unlabeled texts (pool); split: the pool less every labeled text
SUMMARY_FILE = "summary.json"  # validate: every check's outcome
MARKDOWN_FILE = "summary.md"  # validate: the same as a table, for the Prefect UI
DOCS_DIR = "data_docs"  # validate: Great Expectations Data Docs
TRAIN_FILE = "train.parquet"  # split
HOLDOUT_FILE = "holdout.parquet"  # split
MODEL_DIR = "model"  # finetune: head, tokenizer, model card, adapter or changed backbone
LOG_FILE = "training.json"  # finetune: what the training did (FinetuneResult)
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"  # register, in each version's MLflow run: what a gate check re-scores
METRICS_FILE = "metrics.json"  # evaluate: the holdout metrics that register logs and the gate compares
REPORTS_DIR = "reports"  # evaluate: per-class CSV, images, drift reports, explanations
PER_CLASS_FILE = "per_class.csv"  # evaluate, inside REPORTS_DIR: precision, recall, F1 and support per label
REGISTERED_FILE = "registered.json"  # register: the model version it registered

# Directly under base.workdir, outside every stage's outputs: kept across runs, never tracked by DVC.
CACHE_DIR = "cache"  # finetune: frozen layers' outputs per dataset version; suggest: the pool's sentence vectors
CHECKPOINT_DIR = "checkpoints"  # finetune: the last finished epoch, for a retried run to resume from


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as `dvc.yaml` runs it: `python -m <module>` calls `function(params, paths)`."""

    name: str
    run: str  # "module:function"; the function takes (Params, Paths) and returns what the command prints
    inputs: tuple[str, ...]  # other stages' outputs it reads, relative to base.workdir
    outputs: tuple[str, ...]  # what it writes, relative to base.workdir (dvc.yaml's outs and metrics)
    params: tuple[str, ...]  # the params.yaml sections or SECTION.KEY values that change what it does
    sources: tuple[str, ...] = ()  # what it reads outside the workdir, relative to the project root

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]

    def function(self) -> Callable:
        """The stage function, imported now (the table itself imports no stage)."""
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("ingest", "tasks.ingest:run_stage", (), ("ingest",), ("ingest",),
          sources=("data/raw/${ingest.dataset}", "data/unlabeled/${ingest.dataset}")),
    # split waits for validate: a dataset that fails validation is never split or trained on
    Stage("validate", "tasks.validate:run_stage", ("ingest",), ("validate",), ("validate",)),
    Stage("split", "tasks.split:run_stage", ("ingest", "validate"), ("split",), ("base.seed", "split")),
    # finetune reads the split's rows and unlabeled texts, and the pool's DVC version that ingest recorded
    Stage("finetune", "tasks.finetune:run_stage", ("split", "ingest"), ("finetune",),
          ("base.seed", "finetune", "adapt", "self_training")),
    Stage("evaluate", "tasks.evaluate:run_stage", ("finetune", "split"),
          (f"evaluate/{REPORTS_DIR}", f"evaluate/{METRICS_FILE}"), ("base.seed", "evaluate")),
    # register also records every param on the MLflow run; only the register section changes what it does
    Stage("register", "tasks.register:run", (f"evaluate/{REPORTS_DIR}", f"evaluate/{METRICS_FILE}", "ingest",
                                            "finetune", "split", "validate"), ("register",), ("register",)),
)}


def stage(name: str) -> Stage:
    """The table's row for `name`; an unknown name lists the known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}") from None
