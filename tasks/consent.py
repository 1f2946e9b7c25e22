"""Consent: a dataset marked "not for training" keeps everything handed in, but no run trains on it. The mark is
a small git-tracked file, data/consent/<dataset>.json (reason, user, UTC time), so that it travels with the
project and its history says who marked and who lifted it."""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tasks.batches import checked_dataset_name
from tasks.errors import DataError

CONSENT_DIR = Path("data/consent")


@dataclass(frozen=True)
class Mark:
    """A dataset marked not for training: why, by whom, since when (ISO 8601, UTC)."""

    dataset: str
    reason: str
    user: str
    since: str

    def lift_hint(self) -> str:
        return f"`nichetune consent {self.dataset} --allow` lifts it"

    def refusal(self) -> str:
        """The pipeline's one line: which dataset, since when, why, that nothing was trained, how to lift it."""
        return (f"dataset {self.dataset} is marked not for training since {self.since} by {self.user} "
                f"(reason: {self.reason}); nothing was trained; {self.lift_hint()} if consent is given")

    def notice(self) -> str:
        """What an ingest into a marked dataset says: the file is kept, but not trained on."""
        return (f"  not for training: dataset {self.dataset} is marked since {self.since} ({self.reason}); the "
                f"rows are stored, but no run trains on them until {self.lift_hint()}")


def mark_file(dataset: str) -> Path:
    """The mark's path relative to the project root."""
    return CONSENT_DIR / f"{checked_dataset_name(dataset)}.json"


def mark_of(root: Path, dataset: str) -> Mark | None:
    """The dataset's mark, or None when it may be trained on."""
    path = Path(root) / mark_file(dataset)
    if not path.is_file():
        return None
    try:
        return Mark(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        raise DataError(f"{path}: not a consent mark (expected JSON with dataset, reason, user, since); restore it "
                        f"from git, or mark the dataset again with `nichetune consent {dataset} --not-for-training "
                        "--reason TEXT`") from None


def refuse_if_marked(root: Path, dataset: str) -> None:
    """Raise the refusal of a dataset marked not for training."""
    mark = mark_of(root, dataset)
    if mark:
        raise DataError(mark.refusal())


def mark(root: Path, dataset: str, reason: str, user: str | None = None) -> Mark:
    """Mark the dataset not for training (a mark already there is replaced: the latest reason counts)."""
    if not reason.strip():
        raise DataError(f"dataset {dataset}: marking it not for training needs a reason (--reason TEXT), recorded "
                        "for whoever lifts the mark")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    made = Mark(checked_dataset_name(dataset), " ".join(reason.split()), user or current_user(), now)
    path = Path(root) / mark_file(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(made), indent=2) + "\n", encoding="utf-8")
    return made


def allow(root: Path, dataset: str) -> Mark | None:
    """Lift the dataset's mark; returns the mark lifted, None when there was none."""
    lifted = mark_of(root, dataset)
    (Path(root) / mark_file(dataset)).unlink(missing_ok=True)
    return lifted


def current_user() -> str:
    """Who runs the command, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no password entry, as in some containers
        return "unknown"


def marked_text(made: Mark) -> str:
    """What `nichetune consent --not-for-training` prints."""
    return (f"dataset {made.dataset} is marked not for training since {made.since} by {made.user} "
            f"(reason: {made.reason}); runs refuse it until {made.lift_hint()}\n"
            f"commit the mark: git add {mark_file(made.dataset)} && git commit -m 'consent: {made.dataset} not for "
            "training'")


def allowed_text(dataset: str, lifted: Mark | None) -> str:
    """What `nichetune consent --allow` prints."""
    if lifted is None:
        return f"dataset {dataset} was not marked; nothing changed"
    return (f"dataset {dataset} may be trained on again (the mark of {lifted.since} by {lifted.user} is lifted)\n"
            f"commit the change: git rm --cached --quiet --ignore-unmatch {mark_file(dataset)} && git commit -m "
            f"'consent: {dataset} allowed'")
