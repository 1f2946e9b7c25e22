"""Data and code versions: the DVC hash of the labeled data and the git commit of the project."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from tasks.errors import DataError

LOCK_POLL = 0.5  # seconds between tries for DVC's repository lock


def folder_version(root: Path, rel_path: str) -> dict:
    """Read-only (safe inside `dvc repro`): the DVC hash recorded for a folder, and whether the record still
    lists as many files as the folder holds (batches are only ever added, so a new file means untracked)."""
    record = _dvc_record(Path(root) / rel_path)
    files = [p for p in (Path(root) / rel_path).rglob("*") if p.is_file()]
    return {"path": rel_path, "md5": record.get("md5"), "tracked": record.get("nfiles") == len(files)}


def _open_repo(root: Path):
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except Exception as err:  # NotDvcRepoError and friends: say what to do instead of a traceback
        raise DataError(f"{root}: not a DVC project ({err}); run `git init && dvc init` there") from None
    repo.scm_context.quiet = True  # callers print which records to commit, in one line
    return repo


def track_folders(root: Path, rel_paths: list[str], lock_wait: float = 600) -> dict[str, str]:
    """`dvc add` and `dvc push` each folder; returns each folder's new DVC hash. While another DVC command
    holds the repository's lock, wait for it up to `lock_wait` seconds (DVC alone gives up after 3)."""
    from dvc.exceptions import DvcException
    from dvc.lock import LockError

    if not rel_paths:
        return {}
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            _add_and_push(root, rel_paths)
            break
        except LockError:  # raised before DVC changes anything, so trying again is safe
            if time.monotonic() >= deadline:
                raise DataError(f"{Path(root) / '.dvc' / 'tmp' / 'lock'}: another DVC command held the repository "
                                f"for over {lock_wait:g} s; let it finish (or, if none is running, delete that "
                                "file) and ingest again: the batch is stored and will be versioned then") from None
            time.sleep(LOCK_POLL)
        except (DvcException, OSError) as err:
            raise DataError(f"{', '.join(rel_paths)}: DVC could not version it: {' '.join(str(err).split())}") from None
    return {path: _dvc_record(Path(root) / path).get("md5") for path in rel_paths}


def _add_and_push(root: Path, rel_paths: list[str]) -> None:
    with _open_repo(root) as repo:
        repo.add([str(Path(root) / path) for path in rel_paths])
        repo.push(targets=[str(_dvc_file(Path(root) / path)) for path in rel_paths])


def pull_if_missing(root: Path, rel_path: str) -> None:
    """Fetch a DVC-tracked file that only its .dvc record stands for here (a fresh clone)."""
    from dvc.exceptions import DvcException

    path = Path(root) / rel_path
    if path.exists() or not _dvc_file(path).exists():
        return
    with _open_repo(root) as repo:
        try:
            repo.pull(targets=[str(_dvc_file(path))])
        except DvcException as err:
            raise DataError(f"{rel_path}: `dvc pull` failed: {' '.join(str(err).split())}") from None


def git_commit(root: Path) -> str:
    """The project's HEAD commit, with '-dirty' when tracked files have uncommitted changes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _dvc_file(path: Path) -> Path:
    return path.with_name(path.name + ".dvc")


def _dvc_record(path: Path) -> dict:
    dvc_file = _dvc_file(path)
    if not dvc_file.is_file():
        return {}
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return outs[0]
