"""How a nichetune command ends when it is told to stop, and what one killed outright leaves behind.

SIGTERM (`kill`, a service manager) and SIGHUP (its terminal closed) end a command through Python's exit, as Ctrl-C
does, so that its clean-up runs: Prefect first marks the flow run crashed, then its exit handler stops the temporary
Prefect server the command started. Python's default for both ends the process at once, and the server, a process
of its own, would go on running with no one to use it. A command killed outright (SIGKILL, the kernel's
out-of-memory killer) runs no clean-up at all: the next command stops the server it left."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

# in every process a nichetune command starts, so in the environment of Prefect's temporary server: the command's
# process id. A server whose starter is gone serves no one
STARTER_ENV = "NICHETUNE_SERVER_STARTER"
EPHEMERAL_ENV = "PREFECT__SERVER_EPHEMERAL"  # what Prefect sets for its temporary server, and for nothing else


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit(128 + the signal's number), the shell's code for a process a signal
    ended; a signal ignored when the command started (SIGHUP under `nohup`) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return  # Python takes signal handlers from the main thread only (a command run from a test's thread)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _exit)


def _exit(signum: int, _frame) -> None:
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"nichetune: stopped by {name}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def stopped_by_ctrl_c() -> None:
    """End the command as SIGTERM does, with the shell's code for Ctrl-C (SIGINT)."""
    _exit(signal.SIGINT, None)


def mark_servers_started_here() -> None:
    """Name this process as the starter of any temporary Prefect server it starts (they inherit the
    environment)."""
    os.environ[STARTER_ENV] = str(os.getpid())


def stop_orphaned_servers() -> list[int]:
    """Stop every temporary Prefect server of this user whose starting nichetune command is gone (its process no
    longer runs); returns their process ids. A server a live command uses is left alone. Reads /proc: elsewhere
    than Linux it finds none."""
    stopped = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            environment = dict(item.split("=", 1) for item in (entry / "environ").read_bytes()
                               .decode("utf-8", "replace").split("\0") if "=" in item)
            starter = environment.get(STARTER_ENV)
            # a starter's process id taken by a later process keeps its server: left running, never wrongly stopped
            if environment.get(EPHEMERAL_ENV) != "1" or not starter or Path(f"/proc/{starter}").exists():
                continue
            os.kill(int(entry.name), signal.SIGTERM)
            stopped.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile, or not readable
            continue
    for pid in stopped:
        print(f"nichetune: stopped Prefect's temporary server (process {pid}) that a nichetune command killed "
              f"outright had left running", file=sys.stderr)
    return stopped
