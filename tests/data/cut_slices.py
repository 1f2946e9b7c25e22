"""Cut the small slices of public data that the tests read from the full datasets.

    python tests/data/cut_slices.py [--data DIR] [--out DIR]

--data holds the full datasets as their PROVENANCE.md files describe them (default ../shared/data beside the
checkout); --out receives banking77/ and cfpb_payday_2023/ (default tests/data). The selection is fixed, so the
same full files always give the same slices (tests/test_data_slices.py checks it where the full files exist).

- banking77/train.csv, test.csv: every row of the first ten intents in sorted (code-point) order, in the
  published order and columns. The quick quality benchmark and tests/test_behaviour.py sample from all of an
  intent's rows, so these ten intents give the same samples as the full files.
- cfpb_payday_2023/complaints.csv: for each of the four most common issues, every 7th complaint in date order,
  up to 40 (the fourth issue has 39); then every complaint of the three rarest issues (8 rows in all), which the
  quality benchmark merges into "other". Rows are grouped by issue, most common first, each issue in date order;
  columns complaint_id, date_received, text, issue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.sources import DEFAULT_DATA

HERE = Path(__file__).resolve().parent
BANKING77_INTENTS = 10
CFPB_ISSUES, CFPB_PER_ISSUE, CFPB_STRIDE = 4, 40, 7  # tests.conftest.cfpb_sample takes its rows from these
CFPB_RARE_ISSUES = 3
CFPB_COLUMNS = ["complaint_id", "date_received", "text", "issue"]


def banking77_slice(folder: Path) -> dict[str, pd.DataFrame]:
    """train and test rows of the first BANKING77_INTENTS intents, keyed by file name."""
    train = pd.read_csv(folder / "train.csv")
    intents = sorted(train["category"].unique())[:BANKING77_INTENTS]
    frames = {"train.csv": train, "test.csv": pd.read_csv(folder / "test.csv")}
    return {name: frame[frame["category"].isin(intents)] for name, frame in frames.items()}


def cfpb_slice(folder: Path) -> pd.DataFrame:
    """Thinned rows of the most common issues, then all rows of the rarest, grouped by issue."""
    frame = pd.read_csv(folder / "complaints.csv")
    counts = frame["issue"].value_counts()
    common = [frame[frame["issue"] == issue].iloc[::CFPB_STRIDE].head(CFPB_PER_ISSUE)
              for issue in counts.index[:CFPB_ISSUES]]
    rare = [frame[frame["issue"] == issue] for issue in counts.index[-CFPB_RARE_ISSUES:]]
    return pd.concat(common + rare)[CFPB_COLUMNS]


def cut(data: Path, out: Path) -> list[Path]:
    """Write every slice under `out`; the paths written."""
    files = {out / "banking77" / name: frame for name, frame in banking77_slice(data / "banking77").items()}
    files[out / "cfpb_payday_2023" / "complaints.csv"] = cfpb_slice(data / "cfpb_payday_2023")
    for path, frame in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    return list(files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the full datasets (default ../shared/data beside the checkout)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the slices go (default tests/data)")
    args = parser.parse_args(argv)
    for path in cut(args.data, args.out):
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
