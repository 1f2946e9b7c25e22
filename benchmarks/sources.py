"""Where the benchmarks read their public datasets, and where a user without them gets them.

Every benchmark takes `--data DIR`, the folder that holds one subfolder per dataset in the layout of SOURCES;
the default is ../shared/data beside the checkout. tests/data holds small slices of banking77 and
cfpb_payday_2023 in the same layout (enough for `nichetune bench quality --quick --data tests/data`)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# folder under --data -> where to get it and which files it needs (each folder's PROVENANCE.md has the rest)
SOURCES = {
    "banking77": "github.com/PolyAI-LDN/task-specific-datasets, banking_data/train.csv and test.csv (CC BY 4.0)",
    "cfpb_payday_2023": "consumerfinance.gov/data-research/consumer-complaints, payday, title and personal loans "
                        "with a narrative, January-August 2023, as complaints.csv with the columns complaint_id, "
                        "date_received (YYYY-MM-DD), text, issue (public domain)",
    "amazon_counterfactual_en": "github.com/amazon-science/amazon-multilingual-counterfactual-dataset, "
                                "data/EN_train.tsv and EN_test.tsv (CC BY-NC 4.0)",
}


def dataset_dir(data: Path, name: str) -> Path:
    """The folder of dataset `name` under `data`; a one-line exit saying where to get it when it is missing."""
    folder = data / name
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: no such dataset folder; get {name} from {SOURCES[name]}, "
                         f"or give --data DIR holding {name}/")
    return folder


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """The `--data DIR` option every benchmark takes."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"the folder holding the datasets, one subfolder each (default {DEFAULT_DATA})")
