"""One training of a dataset at a time, and a slot whose run was killed: each run is its own process with the
temporary Prefect server `nichetune run` starts, all on one Prefect home (its database and its leases), as on a
user's machine after `nichetune up` created the dataset's slot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasks.runtime import SERVER_DEFAULTS
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# A training run of dataset "tickets" in a process of its own: it takes the slot, writes `started`, then trains
# until `release` exists, or is killed (SIGKILL) when asked to.
RUN = """
import os, signal, sys, time
from pathlib import Path
from prefect import flow
from flows.slots import training_turn

@flow(name="nichetune-train")
def train(folder: str, die: bool):
    from prefect.runtime import flow_run
    with training_turn("tickets"):
        (Path(folder) / f"started-{flow_run.name}").write_text("")
        print("training", flush=True)
        if die:
            os.kill(os.getpid(), signal.SIGKILL)
        while not (Path(folder) / "release").exists():
            time.sleep(0.2)

train(sys.argv[1], sys.argv[2] == "die")
"""

SLOT = """
import sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from flows.slots import create_training_slots, training_slot
action, dataset = sys.argv[1:]
if action == "create":
    create_training_slots([dataset])
with get_client(sync_client=True) as client:
    if action == "leak":  # a count raised with no lease, as a server that kept leases in memory left it
        client.update_global_concurrency_limit(training_slot(dataset), GlobalConcurrencyLimitUpdate(active_slots=1))
    print(client.read_global_concurrency_limit_by_name(training_slot(dataset)).active_slots)
    for run in client.read_flow_runs():
        print(run.name, run.state.type.value)
"""


@pytest.fixture
def home(tmp_path):
    """A Prefect home of its own with the dataset's slot, as `nichetune up` leaves it."""
    env = {**{key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}, **SERVER_DEFAULTS,
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(REPO)}
    assert slot(env, "create")[0] == "0"
    yield {"env": env, "folder": tmp_path}
    stop_servers_of(env["PREFECT_HOME"])


def stop_servers_of(prefect_home: str) -> None:
    """Stop what is left running on this Prefect home: the temporary server of a run killed outright outlives the
    run (its parent), as it would on a user's machine."""
    needle = f"PREFECT_HOME={prefect_home}\0".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "environ").read_bytes() + b"\0":
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue


def slot(env: dict, action: str = "read", dataset: str = "tickets") -> list[str]:
    """The slot's count, then each flow run's name and state."""
    done = subprocess.run([sys.executable, "-c", SLOT, action, dataset], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:-1]


def start_run(home: dict, how: str, log: str) -> subprocess.Popen:
    with (home["folder"] / log).open("w") as out:
        return subprocess.Popen([sys.executable, "-c", RUN, str(home["folder"]), how], env=home["env"],
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def wait_for_start(home: dict, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = sorted(path.name.removeprefix("started-") for path in home["folder"].glob("started-*"))
        if len(started) >= count:
            return started
        time.sleep(0.2)
    raise AssertionError("no run started training")


def age_leases(home: Path) -> int:
    """Move every lease's expiry into the past: what the five minutes after its holder's death do."""
    folder, past = home / "prefect-home" / "concurrency_leases", datetime.now(timezone.utc) - timedelta(seconds=1)
    aged = 0
    for path in folder.glob("*.json"):
        lease = json.loads(path.read_text())
        if "resource_ids" in lease:
            lease["expiration"] = past.isoformat()
            aged += 1
        else:  # the expiration index
            lease = {key: past.isoformat() for key in lease}
        path.write_text(json.dumps(lease))
    return aged


def test_a_run_killed_while_training_leaves_a_slot_the_next_run_frees(home):
    killed = start_run(home, "die", "killed.log")
    assert killed.wait(timeout=120) == -9
    name = wait_for_start(home)[0]
    assert slot(home["env"])[:1] == ["1"]  # its lease goes on holding the slot until it expires
    assert age_leases(home["folder"]) == 1

    (home["folder"] / "release").write_text("")  # the next run trains and finishes
    done = subprocess.run([sys.executable, "-c", RUN, str(home["folder"]), "train"], env=home["env"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"the training slot of dataset tickets was held by flow run '{name}', which stopped without freeing it"
            in done.stdout)
    lines = slot(home["env"])
    assert lines[0] == "0"
    assert f"{name} CRASHED" in lines  # Prefect no longer shows it running


def test_a_count_left_without_a_lease_is_freed_by_the_next_run(home):
    assert slot(home["env"], "leak")[0] == "1"
    (home["folder"] / "release").write_text("")
    done = subprocess.run([sys.executable, "-c", RUN, str(home["folder"]), "train"], env=home["env"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was held by a run that is no longer running, which stopped without freeing it" in done.stdout
    assert slot(home["env"])[0] == "0"


def test_a_run_waits_for_a_live_run_and_names_it(home):
    first = start_run(home, "train", "first.log")
    name = wait_for_start(home)[0]
    second = start_run(home, "train", "second.log")
    try:
        waits = f"another run of dataset tickets (flow run '{name}') is training; this run waits for its turn"
        deadline = time.monotonic() + 120
        while waits not in (home["folder"] / "second.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert waits in (home["folder"] / "second.log").read_text()
        assert len(list(home["folder"].glob("started-*"))) == 1  # the live run keeps its slot
        (home["folder"] / "release").write_text("")
        assert first.wait(timeout=60) == 0
        assert second.wait(timeout=120) == 0
    finally:
        for process in (first, second):
            process.kill()
    assert "freed it" not in (home["folder"] / "second.log").read_text()
    assert len(wait_for_start(home, 2)) == 2 and slot(home["env"])[0] == "0"
