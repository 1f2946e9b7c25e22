"""Data and code versions: the DVC hash of the labeled data and the git commit of the project."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.errors import DataError


@dataclass(frozen=True)
class DataVersion:
    """The DVC identity of one data file: its content hash and whether the committed .dvc file matches it."""

    path: str  # relative to the project root
    md5: str  # DVC's hash of the content, as in the .dvc file and the remote's layout
    tracked: bool  # True when `<path>.dvc` records exactly this content

    def as_dict(self) -> dict:
        return {"path": self.path, "md5": self.md5, "tracked": self.tracked}


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes: what DVC 3 records for a single file."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_version(root: Path, rel_path: str) -> DataVersion:
    """Read-only: hash the file and compare it with its .dvc record (safe inside `dvc repro`)."""
    path = Path(root) / rel_path
    if not path.is_file():
        raise DataError(f"{rel_path}: file not found; check ingest.path or run `dvc pull {rel_path}.dvc`")
    md5 = file_md5(path)
    return DataVersion(path=rel_path, md5=md5, tracked=_recorded_md5(path) == md5)


def track(root: Path, rel_path: str) -> DataVersion:
    """Make sure the data is versioned: pull it if only its .dvc file is here, `dvc add` it if new or
    changed, and push its content to the remote so that the version can always be restored."""
    from dvc.repo import Repo

    root = Path(root)
    path = root / rel_path
    try:
        repo = Repo(str(root))
    except Exception as err:  # NotDvcRepoError and friends: say what to do instead of a traceback
        raise DataError(f"{root}: not a DVC project ({err}); run `git init && dvc init` there") from None
    from dvc.exceptions import DvcException

    with repo:
        try:
            if not path.exists() and _dvc_file(path).exists():
                repo.pull(targets=[str(_dvc_file(path))])
            if not data_version(root, rel_path).tracked:
                repo.add([str(path)])
            repo.push(targets=[str(_dvc_file(path))])
        except DvcException as err:
            raise DataError(f"{rel_path}: DVC could not version it: {' '.join(str(err).split())}") from None
    return data_version(root, rel_path)


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


def _recorded_md5(path: Path) -> str | None:
    dvc_file = _dvc_file(path)
    if not dvc_file.is_file():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")
