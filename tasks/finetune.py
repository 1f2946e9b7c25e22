"""The fine-tune stage: train the model that `finetune.strategy` names on the split's training rows and save it
to <workdir>/finetune/model. One strategy trains in `tasks.training`; `auto` (a portfolio) in `tasks.auto`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.auto import train_auto
from tasks.config import FinetuneParams, Params, Paths
from tasks.layout import TRAIN_FILE
from tasks.portfolio import AUTO
from tasks.training import FinetuneResult, train_strategy


def finetune(train: pd.DataFrame, cfg: FinetuneParams, seed: int, out_dir: Path,
             work_dir: Path | None = None) -> FinetuneResult:
    """Train on the training rows (columns text, label) and save the classifier to `out_dir`/model.
    `work_dir` holds the feature cache and the checkpoints; None keeps neither."""
    if cfg.strategy == AUTO:
        return train_auto(train, cfg, seed, out_dir, work_dir)
    return train_strategy(train, cfg, seed, out_dir, work_dir)


def run(cfg: FinetuneParams, seed: int, train_path: Path, out_dir: Path,
        work_dir: Path | None = None) -> FinetuneResult:
    """Read the training rows and fine-tune; `work_dir` (base.workdir) keeps the cache and checkpoints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return finetune(pd.read_parquet(train_path), cfg, seed, out_dir, work_dir)


def run_stage(params: Params, paths: Paths) -> FinetuneResult:
    """The dvc.yaml stage: fine-tune on the split's training rows; the cache and checkpoints go to the workdir."""
    return run(params.finetune, params.base.seed, paths.stage("split") / TRAIN_FILE, paths.stage("finetune"),
               paths.workdir)


def main() -> None:
    """`python -m tasks.finetune`: the dvc.yaml stage (and the way to try the stage alone on a GPU box)."""
    from tasks.stage import stage_main

    stage_main("finetune")


if __name__ == "__main__":
    main()
