"""Split: the most recent rows are the holdout when there are timestamps; a stratified split otherwise. The
unlabeled pool loses every text that is labeled, so that a holdout text is never trained on in any form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.config import Params, Paths, SplitParams
from tasks.ingest import KEY, POOL_COLUMNS, same_text
from tasks.layout import DATASET_FILE, HOLDOUT_FILE, POOL_FILE, TRAIN_FILE


@dataclass(frozen=True)
class SplitResult:
    train: Path
    holdout: Path
    train_rows: int
    holdout_rows: int
    by_time: bool  # True: the holdout is the most recent share; False: stratified at random
    pool: Path | None = None  # parquet: the unlabeled texts training may use (POOL_COLUMNS)
    pool_rows: int = 0  # kept
    pool_excluded: int = 0  # left out: labeled texts (train or holdout) and repeats; kept + excluded = pool read
    holdout_only: tuple[str, ...] = ()  # labels the holdout has and the training rows lack

    def unseen_text(self) -> str | None:
        """In one line, the labels no model trained here can predict, when the holdout has any."""
        if not self.holdout_only:
            return None
        shown = ", ".join(repr(label) for label in self.holdout_only[:5])
        more = f" and {len(self.holdout_only) - 5} more" if len(self.holdout_only) > 5 else ""
        return (f"split: {len(self.holdout_only)} label{'s' * (len(self.holdout_only) > 1)} of the holdout "
                f"{'have' if len(self.holdout_only) > 1 else 'has'} no training rows ({shown}{more}): the model "
                "cannot predict them, and its holdout scores count them as errors; label more texts of them")


def split_frame(frame: pd.DataFrame, cfg: SplitParams, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Return (train, holdout, by_time) for a dataset with columns text, label and maybe timestamp."""
    n_holdout = max(1, round(len(frame) * cfg.holdout_fraction))
    if "timestamp" in frame and frame["timestamp"].notna().all():
        ordered = frame.sort_values("timestamp", kind="stable")
        return ordered.iloc[:-n_holdout], ordered.iloc[-n_holdout:], True
    counts = frame["label"].value_counts()
    can_stratify = counts.min() >= 2 and min(n_holdout, len(frame) - n_holdout) >= len(counts)
    stratify = frame["label"] if can_stratify else None
    train, holdout = train_test_split(frame, test_size=n_holdout, random_state=seed, stratify=stratify)
    return train, holdout, False


def unlabeled_pool(pool: pd.DataFrame, labeled: pd.DataFrame) -> pd.DataFrame:
    """The pool less every text that is labeled (the same original, or the same text as stored: a suggested text
    comes back from the labeling tool PII masked), each remaining text once."""
    kept = pool[~same_text(pool, labeled)]
    return kept.drop_duplicates(subset=KEY, keep="first")


def run(cfg: SplitParams, seed: int, dataset: Path, out_dir: Path, pool: Path | None = None) -> SplitResult:
    """Split the ingested dataset and write train and holdout parquet files, and the unlabeled texts training
    may use (`pool`: the ingest stage's pool file beside `dataset` unless given; none there reads as empty)."""
    frame = pd.read_parquet(dataset)
    train, holdout, by_time = split_frame(frame, cfg, seed)
    pool = dataset.with_name(POOL_FILE) if pool is None else pool
    read = pd.read_parquet(pool, columns=list(POOL_COLUMNS)) if pool.is_file() else pd.DataFrame(
        {column: pd.Series(dtype=object) for column in POOL_COLUMNS})
    usable = unlabeled_pool(read, frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    train.to_parquet(out_dir / TRAIN_FILE, index=False)
    holdout.to_parquet(out_dir / HOLDOUT_FILE, index=False)
    usable.to_parquet(out_dir / POOL_FILE, index=False)
    unseen = tuple(sorted(set(holdout["label"]) - set(train["label"])))
    return SplitResult(out_dir / TRAIN_FILE, out_dir / HOLDOUT_FILE, len(train), len(holdout), by_time,
                       out_dir / POOL_FILE, len(usable), len(read) - len(usable), unseen)


def run_stage(params: Params, paths: Paths) -> SplitResult:
    """The dvc.yaml stage: split the assembled dataset."""
    return run(params.split, params.base.seed, paths.stage("ingest") / DATASET_FILE, paths.stage("split"))


def main() -> None:
    """`python -m tasks.split`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main("split")


if __name__ == "__main__":
    main()
