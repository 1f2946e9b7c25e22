"""Ingest: read the labeled file named in params into the pipeline's standard columns, with its DVC version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.config import IngestParams
from tasks.errors import DataError
from tasks.versioning import DataVersion, data_version

DATASET_FILE = "dataset.parquet"
VERSION_FILE = "data_version.json"
READERS = {  # file suffix -> reader; every column is read as text so that nothing is silently converted
    ".csv": lambda path: pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig"),
    ".tsv": lambda path: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig"),
    ".jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
}


@dataclass(frozen=True)
class IngestResult:
    dataset: Path  # parquet with columns text, label and (when params name one) timestamp
    version: DataVersion
    rows: int


def read_labeled(path: Path, cfg: IngestParams) -> pd.DataFrame:
    """Read a labeled file and return the columns text, label (and timestamp) as params map them."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(READERS)}")
    try:
        frame = reader(path)
    except Exception as err:
        raise DataError(f"{path}: cannot be read ({' '.join(str(err).split())}); check the file's format") from None
    wanted = {"text": cfg.text_column, "label": cfg.label_column}
    if cfg.timestamp_column:
        wanted["timestamp"] = cfg.timestamp_column
    missing = [column for column in wanted.values() if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {', '.join(map(repr, missing))} not found; the file has "
            f"{', '.join(map(repr, frame.columns))}; set ingest.text_column/label_column/timestamp_column"
        )
    out = pd.DataFrame({name: frame[column] for name, column in wanted.items()})
    out["text"] = out["text"].astype("string").str.strip()
    out["label"] = out["label"].astype("string").str.strip().replace("", pd.NA)  # a blank cell is no label
    if "timestamp" in out:
        out["timestamp"] = _parse_timestamps(out["timestamp"], path, cfg.timestamp_column)
    return out


def run(cfg: IngestParams, root: Path, out_dir: Path) -> IngestResult:
    """Read the labeled data, record its DVC version, and write the standard dataset for later stages."""
    version = data_version(root, cfg.path)
    frame = read_labeled(Path(root) / cfg.path, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_dir / DATASET_FILE, index=False)
    (out_dir / VERSION_FILE).write_text(json.dumps(version.as_dict(), indent=2))
    return IngestResult(dataset=out_dir / DATASET_FILE, version=version, rows=len(frame))


def _parse_timestamps(values: pd.Series, path: Path, column: str) -> pd.Series:
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & values.notna() & (values.astype("string").str.strip() != "")
    if bad.any():
        row = int(bad.idxmax()) + 2  # +1 for the header, +1 for counting from one
        raise DataError(f"{path}: row {row}: {column}={values[bad].iloc[0]!r} is not a date; fix or empty it")
    return parsed


def main() -> None:
    """`python -m tasks.ingest`: the dvc.yaml stage."""
    from tasks.stage import stage_main

    stage_main(lambda params, paths: run(params.ingest, paths.root, paths.stage("ingest")))


if __name__ == "__main__":
    main()
