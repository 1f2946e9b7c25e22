"""Self-training: the model trained on the labeled rows labels the unlabeled texts it is sure of, and the strategy
trains again on both, for `self_training.rounds` rounds.

Only confident pseudo-labels are kept: a calibrated probability of at least `threshold` (so the strategy is
trained with validation rows, which fit the temperature), most confident first, and per class at most
`max_per_class` times its labeled rows in round 1, twice that in round 2 and so on, so that a big or easy class
cannot swamp the others. Each round labels the
whole pool again with the latest model (a text labeled wrongly early can be corrected) and trains from the
backbone again. Pseudo-labeled rows are marked (tasks.training.PSEUDO): they are never held out for early stopping,
calibration or `auto`'s choice, and evaluation and the gate read the holdout only.

For `auto`, `finetune.time_budget` chooses the model's members once, on the labeled rows: later rounds train the
candidates the first training kept, however long their extra rows take. Otherwise a fine-tuned member that fits the
budget on the labeled rows would drop out of a round for having more rows to learn from."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import FinetuneParams, SelfTrainingParams
from tasks.portfolio import AUTO, load_classifier
from tasks.progress import say
from tasks.training import PSEUDO, FinetuneResult

VALIDATION_FRACTION = 0.2  # when finetune.validation_fraction is 0: the threshold needs calibrated probabilities

Trainer = Callable[[pd.DataFrame, FinetuneParams, int, Path, Path | None], FinetuneResult]


def calibrated(cfg: FinetuneParams) -> FinetuneParams:
    """`cfg`, carving validation rows when it carves none: a strategy calibrates only on validation rows."""
    if cfg.strategy == AUTO or cfg.validation_fraction > 0:
        return cfg
    return cfg.model_copy(update={"validation_fraction": VALIDATION_FRACTION})


def pseudo_labels(probs: np.ndarray, labels: list[str], counts: dict[str, int], threshold: float,
                  per_class: float) -> tuple[np.ndarray, list[str]]:
    """Indices of the pool rows to keep and their labels: probability at least `threshold`, most confident first,
    at most ceil(`per_class` x labeled rows) of each label."""
    best, confidence = probs.argmax(axis=1), probs.max(axis=1)
    keep = []
    for j, label in enumerate(labels):
        mine = np.flatnonzero((best == j) & (confidence >= threshold))
        mine = mine[np.argsort(-confidence[mine], kind="stable")]
        keep.extend(mine[:math.ceil(per_class * counts.get(label, 0))].tolist())
    keep = np.array(sorted(keep), dtype=int)
    return keep, [labels[best[i]] for i in keep]


def same_members(cfg: FinetuneParams, first: FinetuneResult) -> FinetuneParams:
    """What the rounds after `first` train with: for `auto`, the candidates `first` kept and no time budget."""
    if cfg.strategy != AUTO:
        return cfg
    kept = [report["name"] for report in first.candidates if "left_out" not in report]
    return cfg.model_copy(update={"candidates": kept, "time_budget": None})


def self_train(train: pd.DataFrame, pool: list[str], cfg: FinetuneParams, st: SelfTrainingParams, seed: int,
               out_dir: Path, work_dir: Path | None, trainer: Trainer) -> tuple[FinetuneResult, dict]:
    """Train with `trainer`, then `st.rounds` rounds of pseudo-labeling `pool` and training again. Returns the
    last result and what each round added."""
    cfg = calibrated(cfg)
    labeled = train[["text", "label"]].assign(**{PSEUDO: False})
    first = result = trainer(labeled, cfg, seed, out_dir, work_dir)
    cfg = same_members(cfg, first)
    counts = labeled["label"].value_counts().to_dict()
    added: list[int] = []
    per_class: dict[str, int] = {}
    for round_number in range(1, st.rounds + 1):
        if not pool:
            break
        classifier = load_classifier(result.model_dir)
        probs = classifier.predict_proba(pool)
        keep, names = pseudo_labels(probs, classifier.labels, counts, st.threshold, st.max_per_class * round_number)
        say(f"self-training round {round_number}/{st.rounds}: {len(keep)} of {len(pool)} unlabeled texts labeled "
            f"at probability {st.threshold:g} or more")
        if not len(keep):
            break
        added.append(len(keep))
        per_class = pd.Series(names).value_counts().to_dict()
        pseudo = pd.DataFrame({"text": [pool[i] for i in keep], "label": names, PSEUDO: True})
        result = trainer(pd.concat([labeled, pseudo], ignore_index=True), cfg, seed, out_dir, work_dir)
    if result is not first:  # what the budget left out on the labeled rows stays in the model's record
        budgeted = [report for report in first.candidates if "left_out" in report]
        result = dataclasses.replace(result, candidates=[*result.candidates, *budgeted])
    return result, {"rounds": len(added), "threshold": st.threshold, "max_per_class": st.max_per_class,
                    "pseudo_labels": added, "last_round_by_class": per_class, "pool_texts": len(pool)}
