"""The incoming folder: a labeling tool writes files into `data/incoming/`, each one is ingested as a new batch
(which emits `nichetune.data.labeled`, the training deployment's trigger) and moved to `processed/`, or to
`failed/` beside a `.error.txt` that says why. Nothing dropped there is deleted."""

from __future__ import annotations

import shutil
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

from tasks.config import Params, Paths
from tasks.errors import NichetuneError

INCOMING = Path("data") / "incoming"
PROCESSED, FAILED = "processed", "failed"
SKIPPED_SUFFIXES = (".part", ".tmp", ".crdownload", "~")  # a file still being written under a temporary name


class IncomingWatcher(threading.Thread):
    """Polls the folder; a file is taken once its size and modification time are unchanged between two polls.
    Files at the top level belong to the first dataset; files in `<dataset>/` to that dataset."""

    def __init__(self, projects: list[tuple[Params, Paths]], interval: float = 2.0):
        super().__init__(name="nichetune-incoming", daemon=True)
        self.projects = {params.ingest.dataset: (params, paths) for params, paths in projects}
        self.default = projects[0][0].ingest.dataset
        self.folder = projects[0][1].root / INCOMING
        self.interval = interval
        self.seen: dict[Path, tuple[int, float]] = {}
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
        for path, dataset in self.candidates():
            try:
                stat = path.stat()
            except FileNotFoundError:  # renamed or removed since the listing: nothing to take
                self.seen.pop(path, None)
                continue
            if self.seen.get(path) != (stat.st_size, stat.st_mtime):
                self.seen[path] = (stat.st_size, stat.st_mtime)  # new or still growing: look again next time
                continue
            del self.seen[path]
            try:
                lines.append(self.take(path, dataset))
            except Exception as err:  # a failure we did not foresee must not stop the watcher
                traceback.print_exc()
                said = " ".join(str(err).split())  # one line, whatever the exception printed
                lines.append(self.fail(path, f"{path}: unexpected {type(err).__name__}: {said} (traceback above in "
                                             f"this log); move the file back into {INCOMING}/ to retry"))
            print(lines[-1], flush=True)
        return lines

    def candidates(self) -> list[tuple[Path, str]]:
        if not self.folder.is_dir():
            return []
        found = []
        for entry in sorted(self.folder.iterdir()):
            if entry.is_dir() and entry.name not in (PROCESSED, FAILED):
                found += [(path, entry.name) for path in sorted(entry.iterdir()) if _ready_name(path)]
            elif _ready_name(entry):
                found.append((entry, self.default))
        return found

    def take(self, path: Path, dataset: str) -> str:
        """Ingest one file and move it out of the way; a bad file goes to failed/ with its one-line reason."""
        from flows.events import emit_labeled
        from tasks.ingest import ingest_batch

        try:
            if dataset not in self.projects:
                served = ", ".join(sorted(self.projects))
                raise NichetuneError(f"{path}: no served dataset named {dataset!r} (served: {served}); move the "
                                     f"file to data/incoming/ or to one of those folders")
            params, paths = self.projects[dataset]
            report = ingest_batch(params.ingest, params.validate.labels, paths.root, path, dataset)
        except NichetuneError as err:
            return self.fail(path, str(err))
        event = emit_labeled(report) if report.batch else "already ingested: no event"
        moved = _move(path, self.folder / PROCESSED)
        return f"incoming: {path.name} -> dataset {dataset}: {report.text().splitlines()[0]}; {event}; kept in {moved}"

    def fail(self, path: Path, reason: str) -> str:
        """Move a file that was not ingested to failed/, beside a one-line `.error.txt` that says why."""
        if not path.exists():
            return f"incoming: {path.name} not ingested: {reason} (the file is gone from {path.parent})"
        moved = _move(path, self.folder / FAILED)
        moved.with_name(moved.name + ".error.txt").write_text(f"{reason}\n")
        return f"incoming: {path.name} not ingested: {reason} (kept in {moved})"


def _ready_name(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and not path.name.endswith(SKIPPED_SUFFIXES)


def _move(path: Path, folder: Path) -> Path:
    """Move under a UTC-time prefix, so that two files of the same name never overwrite each other."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"{stamp}-{path.name}"
    shutil.move(str(path), target)
    return target
