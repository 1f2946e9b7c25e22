"""The SetFit baseline of the quality benchmark, resumable: SetFit's contrastive phase on a few thousand long
texts takes hours on a laptop's CPU (cfpb_payday_2023: 86,520 pairs), so it keeps a checkpoint in a work folder
every `checkpoint_every_s` seconds, and the same call after a kill resumes from the last complete one, to the
same result (the Hugging Face trainer restores the weights, optimizer, schedule, random state and its place in
the pair order). The folder is removed once the model is trained."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # the trainer writes it last: a checkpoint holding it is complete


@dataclass(frozen=True)
class SetFitRun:
    model: object  # the trained setfit.SetFitModel
    predictions: list[str]
    seconds: float  # training wall time; a resumed run adds its earlier runs' up to their last checkpoint
    resumed_from_step: int | None  # the checkpoint a killed run left, or None


class TrainingClock(TrainerCallback, ExportableState):
    """Asks for a checkpoint every `every_s` seconds and stores in it the training seconds so far (those of
    earlier runs included), so that a resumed run's seconds add up the runs, as they do for nichetune_*."""

    def __init__(self, every_s: float, earlier_s: float = 0.0):
        self.every_s, self.earlier_s = every_s, earlier_s
        self.started = self.last_save = time.perf_counter()

    def seconds(self) -> float:
        return self.earlier_s + time.perf_counter() - self.started

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.last_save >= self.every_s:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.perf_counter()

    def state(self) -> dict:
        return {"args": {"every_s": self.every_s}, "attributes": {"seconds": self.seconds()}}


def last_checkpoint(folder: Path) -> tuple[Path, float] | None:
    """The newest complete checkpoint in `folder` and the training seconds it records; partial ones (a kill
    while saving) are removed."""
    found = None
    for checkpoint in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name.split("-")[-1])):
        try:
            saved = json.loads((checkpoint / STATE_FILE).read_text())
            found = checkpoint, saved["stateful_callbacks"][TrainingClock.__name__]["attributes"]["seconds"]
        except (OSError, ValueError, KeyError):
            shutil.rmtree(checkpoint)
    return found


def train_setfit(train: pd.DataFrame, test: pd.DataFrame, seed: int, num_iterations: int, work_dir: Path,
                 checkpoint_every_s: float = 600.0, backbone: Path | None = None) -> SetFitRun:
    """SetFit (the `setfit` package) on `backbone` (default the packaged MiniLM) with the paper's defaults:
    `num_iterations` pair iterations per row, batch 16, one epoch, body learning rate 2e-5, logistic-regression
    head. Checkpoints go to `work_dir`, which should belong to this seed, these rows and `num_iterations` alone."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from tasks.model import backbone_path

    work_dir.mkdir(parents=True, exist_ok=True)
    resume = last_checkpoint(work_dir)
    model = SetFitModel.from_pretrained(backbone or backbone_path("minilm"))
    args = TrainingArguments(output_dir=str(work_dir), save_strategy="no", save_total_limit=1,
                             num_iterations=num_iterations, batch_size=16, num_epochs=1, body_learning_rate=2e-5,
                             seed=seed, report_to="none", show_progress_bar=False)
    clock = TrainingClock(checkpoint_every_s, earlier_s=resume[1] if resume else 0.0)
    rows = Dataset.from_pandas(train[["text", "label"]].reset_index(drop=True))
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[clock])
    texts, labels = train["text"].tolist(), train["label"].tolist()
    # What setfit's Trainer.train() does, whose embedding phase cannot be told to resume: pairs, body, head.
    pairs, loss = trainer.get_dataset(texts, labels, args=args)
    trainer.st_trainer.train_dataset, trainer.st_trainer.loss = pairs, loss
    trainer.st_trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    trainer.train_classifier(texts, labels, args=args)
    seconds = clock.seconds()
    shutil.rmtree(work_dir)  # trained: the checkpoints have done their job
    return SetFitRun(model, [str(label) for label in model.predict(test["text"].tolist())], seconds,
                     int(resume[0].name.split("-")[-1]) if resume else None)
