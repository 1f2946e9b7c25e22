"""Where a dataset's batches live and what they are called: a name made of the order of arrival and a hash of
the rows, so that two clones that ingest the same rows hold the same files (the same DVC version); and the
outbox of events for stored batches that were not sent yet."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tasks.config import IngestParams
from tasks.errors import DataError

RAW_DIR = Path("data/raw")
QUARANTINE_DIR = Path("data/quarantine")
OUTBOX = Path(".dvc") / "tmp" / "nichetune-outbox"  # events of stored batches not yet sent, in this clone only
BATCH_NAME = re.compile(r"(?P<sequence>\d{6,})-[0-9a-f]{12}")  # arrival number, then the content's hash
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class Store:
    """Where one kind of batch lives: labeled rows, or unlabeled texts (the pool). Each kind has its own
    arrival numbers and its own record of files already ingested."""

    kind: str  # "labeled" or "unlabeled"
    batches: Path  # <batches>/<dataset>/<batch id>.parquet
    quarantine: Path  # <quarantine>/<dataset>/<batch id>.csv

    @property
    def labeled(self) -> bool:
        return self.kind == "labeled"

    @property
    def folders(self) -> tuple[Path, Path]:
        return self.batches, self.quarantine


LABELED = Store("labeled", RAW_DIR, QUARANTINE_DIR)
# Folders of their own beside data/raw: no dataset name can collide with them.
UNLABELED = Store("unlabeled", Path("data/unlabeled"), Path("data/unlabeled_quarantine"))
POOL_DIR = UNLABELED.batches


def checked_dataset_name(dataset: str) -> str:
    """A dataset name held to the rule of `ingest.dataset` (it names folders and files)."""
    try:
        IngestParams(dataset=dataset, path=None)
    except ValidationError:
        raise DataError(f"dataset {dataset!r}: not a dataset name; use letters, digits, '_', '.' and '-', starting "
                        "with a letter or digit (the rule of ingest.dataset)") from None
    return dataset


def content_digests(source: Path) -> tuple[str, ...]:
    """The file's identity: a hash of its bytes with CRLF line ends read as LF (the same rows saved on Windows
    are the same rows), then, for batches stored before that rule, the hash of its bytes as they are."""
    raw = source.read_bytes()
    same_rows = raw.replace(b"\r\n", b"\n") if source.suffix.lower() in TEXT_SUFFIXES else raw
    digests = [hashlib.sha256(content).hexdigest()[:12] for content in (same_rows, raw)]
    return tuple(dict.fromkeys(digests))


def batch_files(root: Path, dataset: str, store: Store = LABELED) -> list[Path]:
    """The dataset's stored batches of one kind in the order they were ingested."""
    return sorted((Path(root) / store.batches / dataset).glob("*.parquet"), key=arrival)


def arrival(path: Path) -> tuple:
    """Where a batch file comes in the order of arrival: `<number>-<hash>`, after the `<UTC time>-<hash>`
    names of batches stored before numbering (those sort by their time)."""
    numbered = BATCH_NAME.fullmatch(path.stem)
    return (1, int(numbered["sequence"]), "") if numbered else (0, 0, path.stem)


def next_sequence(root: Path, dataset: str, store: Store = LABELED) -> int:
    """The arrival number of the dataset's next batch (a batch id names its stored rows and its quarantine)."""
    names = {path.stem for folder in store.folders
             for path in (Path(root) / folder / dataset).glob("*.*") if not path.name.startswith(".")}
    numbers = [int(match["sequence"]) for match in map(BATCH_NAME.fullmatch, names) if match]
    return max([len(names), *numbers]) + 1


def batch_with_digest(root: Path, dataset: str, digests: tuple[str, ...], store: Store = LABELED) -> str | None:
    """The first stored or quarantined batch made from a file with one of these digests, relative to root."""
    found = [path for folder in store.folders for digest in digests
             for path in (Path(root) / folder / dataset).glob(f"*-{digest}.*")]
    return str(min(found, key=arrival).relative_to(root)) if found else None


def post_event(root: Path, dataset: str, batch_id: str, payload: dict) -> None:
    """Put a stored batch's event in the outbox; `flows.events.emit_labeled` deletes it once sent."""
    path = Path(root) / OUTBOX / dataset / f"{batch_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def pending_events(root: Path, dataset: str, version: str | None) -> tuple[str, ...]:
    """The outbox files of the dataset, oldest first, each with the DVC version its batch is part of."""
    files = sorted((Path(root) / OUTBOX / dataset).glob("*.json"), key=arrival)
    for path in files:
        payload = json.loads(path.read_text())
        if payload["data_version"] is None:
            path.write_text(json.dumps({**payload, "data_version": version}))
    return tuple(str(path) for path in files)
