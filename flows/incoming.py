"""The incoming folder: a labeling tool writes files into `data/incoming/`, each one is ingested as a new batch
(which emits `nichetune.data.labeled`, the training deployment's trigger) and moved to `processed/`, or to
`failed/` beside a `.error.txt` that says why. Files in `data/incoming/unlabeled/` are texts without labels:
they join the dataset's unlabeled pool and start no training. Nothing dropped there is deleted."""

from __future__ import annotations

import os
import shutil
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

from tasks.batches import LABELED, UNLABELED, Store
from tasks.config import Params, Paths
from tasks.errors import NichetuneError

INCOMING = Path("data") / "incoming"
PROCESSED, FAILED = "processed", "failed"
UNLABELED_DIR = "unlabeled"  # data/incoming/unlabeled/[<dataset>/]: texts for the unlabeled pool
RESERVED = (PROCESSED, FAILED, UNLABELED_DIR)  # folders of data/incoming that no dataset may be named
SKIPPED_SUFFIXES = (".part", ".tmp", ".crdownload", "~")  # a file still being written under a temporary name
SKIPPED_PREFIXES = (".", "~$")  # hidden files, and the owner file Excel keeps beside a workbook it has open
STABLE_CHECKS = 2  # looks in a row that must find the same size and modification time before a file is taken


class IncomingWatcher(threading.Thread):
    """Polls the folder; a file is taken once its size and modification time are unchanged across two more
    polls. Files at the top level belong to the first dataset; files in `<dataset>/` to that dataset; the same
    under `unlabeled/` for unlabeled texts. Symbolic links are not followed (they could point anywhere on the
    machine): they go to failed/."""

    def __init__(self, projects: list[tuple[Params, Paths]], interval: float = 2.0):
        super().__init__(name="nichetune-incoming", daemon=True)
        self.projects = {params.ingest.dataset: (params, paths) for params, paths in projects}
        self.default = projects[0][0].ingest.dataset
        self.folder = projects[0][1].root / INCOMING
        self.interval = interval
        self.seen: dict[Path, tuple[tuple[int, int], int]] = {}  # (size, mtime in ns), looks unchanged
        self.halt = threading.Event()

    def run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        while not self.halt.wait(self.interval):
            self.scan()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)

    def scan(self) -> list[str]:
        """Take every file that has stopped changing; returns one line per file taken."""
        lines = []
        candidates = self.candidates()
        listed = {path for path, _, _ in candidates}
        self.seen = {path: state for path, state in self.seen.items() if path in listed}  # gone: forget it
        for path, dataset, store in candidates:
            if not self.settled(path):
                continue
            try:
                lines.append(self.take(path, dataset, store))
            except Exception as err:  # a failure we did not foresee must not stop the watcher
                traceback.print_exc()
                said = " ".join(str(err).split())  # one line, whatever the exception printed
                lines.append(self.fail(path, f"{path}: unexpected {type(err).__name__}: {said} (traceback above in "
                                             f"this log); move the file back into {INCOMING}/ to retry"))
            print(lines[-1], flush=True)
        return lines

    def settled(self, path: Path) -> bool:
        """Whether the file has kept its size and modification time for STABLE_CHECKS looks in a row."""
        try:
            stat = path.lstat()
        except FileNotFoundError:  # renamed or removed since the listing: nothing to take
            return False
        state = (stat.st_size, stat.st_mtime_ns)
        last, unchanged = self.seen.get(path, (None, -1))
        unchanged = unchanged + 1 if state == last else 0  # new or still growing: start counting again
        if unchanged < STABLE_CHECKS:
            self.seen[path] = (state, unchanged)
            return False
        del self.seen[path]
        return True

    def candidates(self) -> list[tuple[Path, str, Store]]:
        """(file, dataset, labeled or unlabeled) of every file in the folder that may be taken."""
        found = self._files(self.folder, LABELED, skip=RESERVED)
        return found + self._files(self.folder / UNLABELED_DIR, UNLABELED)

    def _files(self, folder: Path, store: Store, skip: tuple[str, ...] = ()) -> list[tuple[Path, str, Store]]:
        if not folder.is_dir() or folder.is_symlink():
            return []
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and entry.name not in skip:
                found += [(path, entry.name, store) for path in sorted(entry.iterdir()) if _ready_name(path)]
            elif _ready_name(entry):
                found.append((entry, self.default, store))
        return found

    def take(self, path: Path, dataset: str, store: Store = LABELED) -> str:
        """Ingest one file and move it out of the way; a bad file goes to failed/ with its one-line reason."""
        from flows.events import emit_labeled
        from tasks.ingest import ingest_batch

        try:
            if dataset not in self.projects:
                served = ", ".join(sorted(self.projects))
                raise NichetuneError(f"{path}: no served dataset named {dataset!r} (served: {served}); move the "
                                     f"file to data/incoming/ or to one of those folders")
            params, paths = self.projects[dataset]
            _check_plain_file(path, params.ingest.incoming_max_mb)
            report = ingest_batch(params.ingest, params.validate.labels, paths.root, path, dataset, store=store)
        except NichetuneError as err:
            return self.fail(path, str(err))
        if not store.labeled:
            event = "unlabeled texts: no event, no training"
        elif report.not_for_training:
            event = f"dataset {dataset} is marked not for training: no event"
        else:
            event = emit_labeled(report) if report.events else "already ingested: no event"
        moved = _move(path, self.folder / PROCESSED)
        where = f"dataset {dataset}" if store.labeled else f"the unlabeled pool of {dataset}"
        return f"incoming: {path.name} -> {where}: {report.text().splitlines()[0]}; {event}; kept in {moved}"

    def fail(self, path: Path, reason: str) -> str:
        """Move a file that was not ingested to failed/, beside a one-line `.error.txt` that says why."""
        if not os.path.lexists(path):
            return f"incoming: {path.name} not ingested: {reason} (the file is gone from {path.parent})"
        moved = _move(path, self.folder / FAILED)
        moved.with_name(moved.name + ".error.txt").write_text(f"{reason}\n")
        return f"incoming: {path.name} not ingested: {reason} (kept in {moved})"


def _ready_name(path: Path) -> bool:
    plain = path.is_symlink() or path.is_file()  # a link is taken only to be moved to failed/, never read
    return plain and not path.name.startswith(SKIPPED_PREFIXES) and not path.name.endswith(SKIPPED_SUFFIXES)


def _check_plain_file(path: Path, max_mb: float) -> None:
    """Refuse a symbolic link (never followed) and a file over `ingest.incoming_max_mb`."""
    if path.is_symlink():
        raise NichetuneError(f"{path}: a symbolic link, which the incoming folder does not follow; copy the file "
                             f"itself into {INCOMING}/")
    size_mb = path.stat().st_size / 1e6
    if size_mb > max_mb:
        raise NichetuneError(f"{path}: {size_mb:.1f} MB, over ingest.incoming_max_mb = {max_mb:g}; split the "
                             f"export or raise that limit, then move it back into {INCOMING}/")


def _move(path: Path, folder: Path) -> Path:
    """Move under a UTC-time prefix, so that two files of the same name never overwrite each other."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"{stamp}-{path.name}"
    shutil.move(str(path), target)
    return target
