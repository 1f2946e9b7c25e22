"""How many threads a nichetune process computes with: the cores it was given (its CPU affinity, and a container's
CPU quota), shared with the other nichetune processes computing on the machine at that moment.

Two trainings that each use every core slow each other far beyond 2x (PyTorch's OpenMP threads spin while they
wait for a core the other process holds). So each computing process holds a claim, a locked file in a folder of
this user's temporary directory, and takes its even share of the cores; a long computation (training, a large
predict) asks again as it goes, so a watcher-triggered run that starts beside a user's predict halves both and
the first to finish gives its cores back. A claim dies with its process: the lock goes with it.
NICHETUNE_THREADS=N fixes the count for a process (a scheduler that assigns cores itself)."""

from __future__ import annotations

import fcntl
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

THREADS_ENV = "NICHETUNE_THREADS"
REFRESH_S = 1.0  # how often a running computation looks at the claims again


def claims_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / f"nichetune-cores-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def given() -> int:
    """The cores this process may run on: its affinity, capped by a cgroup v2 CPU quota (docker --cpus)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def active() -> int:
    """Claims held by live processes; a claim whose process is gone (its lock free) is removed."""
    count = 0
    for path in claims_dir().glob("*.claim"):
        try:
            with path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)  # nobody holds it: a process that died without removing it
        except BlockingIOError:
            count += 1
        except OSError:
            continue
    return count


def share() -> int:
    """The threads this process should compute with now."""
    fixed = os.environ.get(THREADS_ENV, "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    return max(1, given() // max(1, active()))


class Threads:
    """Torch's thread count, set to this process's share when it changed (looked at once a second at most)."""

    def __init__(self):
        self.checked = 0.0
        self.current = None

    def refresh(self, force: bool = False) -> int | None:
        torch = sys.modules.get("torch")  # a process that never loaded torch (ONNX prediction) has nothing to set
        now = time.monotonic()
        if torch is not None and (force or now - self.checked >= REFRESH_S):
            self.checked = now
            threads = share()
            if threads != self.current:
                torch.set_num_threads(threads)
                self.current = threads
        return self.current


_held: list = []  # this process's open claim file while it computes (nested claims share it)
_threads = Threads()


def refresh() -> None:
    """Inside a claim: torch's thread count set to this process's share again, at most once a second."""
    if _held:
        _threads.refresh()


@contextmanager
def claim():
    """Count this process among those computing until the block ends, and keep torch at its share meanwhile."""
    if _held:  # nested: the outer claim stands
        yield
        return
    folder = claims_dir()
    pending = folder / f"{os.getpid()}.pending"
    handle = pending.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # locked before it is visible, so nobody takes it for a dead claim
    path = pending.rename(folder / f"{os.getpid()}.claim")
    _held.append(handle)
    _threads.refresh(force=True)
    try:
        yield
    finally:
        _held.remove(handle)
        path.unlink(missing_ok=True)
        handle.close()
