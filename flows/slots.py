"""One training of a dataset at a time: the dataset's training slot, a Prefect global concurrency limit that
`nichetune up` creates, and what to do with a slot whose holder was killed.

A run holds the slot under a lease it renews while it trains. Prefect keeps leases in the server's memory unless
told otherwise: a server that stops (a `nichetune run`'s temporary one stops with it) forgets them, and a slot
taken by a run killed meanwhile would stay taken for good, every later run of the dataset waiting for a training
that is not there. nichetune's servers keep leases on disk (tasks.runtime.SERVER_DEFAULTS): a lease outlives its
server and expires once its holder stops renewing it, and Prefect's repossessor then frees the slot. A temporary
server runs no repossessor, and a slot counted without a lease has none to expire: on a server on this machine,
`free_stale_slot` does what the repossessor would."""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from uuid import UUID

# A run acquiring the slot raises the count a moment before its lease is written: two looks this far apart,
# both finding the slot taken with no live lease, rule that moment out
RECHECK_SECONDS = 2.0
# A waiting run looks this often whether the run it waits for still lives
WAIT_SECONDS = 30.0


def training_slot(dataset: str) -> str:
    """The global concurrency limit (one slot) that `nichetune up` creates for each dataset it serves."""
    return f"nichetune-train-{dataset}"


def create_training_slots(datasets: list[str]) -> None:
    """One slot per dataset; an existing one is reset to one slot and freed if no live run holds it (the
    server was just started, so nothing it ran is running)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for dataset in datasets:
            name = training_slot(dataset)
            try:
                client.read_global_concurrency_limit_by_name(name)
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            free_stale_slot(client, dataset)


@contextmanager
def training_turn(dataset: str):
    """One training of `dataset` at a time wherever the server has its slot (`nichetune up` creates it; with
    no slot, as under `nichetune run` on a machine that never ran `up`, there is nobody to wait for). The slot
    covers every stage that writes or reads the workdir; the wait for a reviewer comes after it, so a paused run
    holds no slot, queued runs train meanwhile, and the paused run keeps its whole review_timeout."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run
    from prefect.settings import get_current_settings

    name = training_slot(dataset)
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        yield
        return
    # A temporary server (no API URL set) runs no repossessor: a waiting run frees a killed run's slot itself
    temporary = get_current_settings().api.url is None
    # The lease names this run: a waiting run can say whom it waits for, and a slot left by a killed run leads
    # to that run
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None
    with ExitStack() as held:
        told = False
        while True:
            with get_client(sync_client=True) as client:
                if temporary:
                    free_stale_slot(client, dataset)
                limit = client.read_global_concurrency_limit_by_name(name)
                if limit.active_slots >= limit.limit and not told:
                    print(f"another run of dataset {dataset}{_holder_names(client, limit.id)} is training; "
                          "this run waits for its turn")
                    told = True
            try:
                # A failed lease renewal (a server restart) must not abort an hour of training: it only risks a
                # second training of the same dataset starting meanwhile.
                held.enter_context(concurrency(name, occupy=1, timeout_seconds=WAIT_SECONDS, strict=True,
                                               holder=holder, raise_on_lease_renewal_failure=False))
                break
            except TimeoutError:  # not yet: look again whether the holder still lives
                continue
        yield


def free_stale_slot(client, dataset: str) -> bool:
    """Free the dataset's slot when it is taken and no live lease on this machine holds it, twice
    RECHECK_SECONDS apart: its run was killed. The expired leases that held it are revoked (the repossessor
    would otherwise free the slot a second time) and their runs, if Prefect still shows them running, marked
    crashed. Only for a server on this machine, whose leases are under this PREFECT_HOME."""
    name = training_slot(dataset)
    for look in range(2):
        if look:
            time.sleep(RECHECK_SECONDS)
        limit = client.read_global_concurrency_limit_by_name(name)
        live = _live_leases(limit.id) if limit.active_slots else []
        if not limit.active_slots or live is None or live:
            return False
    holders = _revoke_expired_leases(limit.id)
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    crashed = [_crash(client, run_id) for run_id in holders]
    runs = ", ".join(run for run in crashed if run) or "a run that is no longer running"
    print(f"the training slot of dataset {dataset} was held by {runs}, which stopped without freeing it "
          "(killed, or its server stopped first); freed it")
    return True


def _storage():
    """This machine's concurrency lease storage, or None where leases are not kept on disk (a user's choice of
    another storage: then only the server can tell which leases are live)."""
    from prefect.server.concurrency.lease_storage import get_concurrency_lease_storage
    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    storage = get_concurrency_lease_storage()
    return storage if isinstance(storage, ConcurrencyLeaseStorage) else None


def _leases(limit_id: UUID) -> list | None:
    """Every lease on disk that holds the limit, live or expired; None when leases are not on disk."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    storage = _storage()
    if storage is None or not storage.storage_path.exists():
        return None if storage is None else []
    found = []
    for path in storage.storage_path.glob("*.json"):
        try:
            lease = run_coro_as_sync(storage.read_lease(UUID(path.stem)))
        except ValueError:  # the expiration index, not a lease
            continue
        if lease is not None and limit_id in lease.resource_ids:
            found.append(lease)
    return found


def _live_leases(limit_id: UUID) -> list | None:
    leases = _leases(limit_id)
    now = datetime.now(timezone.utc)
    return None if leases is None else [lease for lease in leases if lease.expiration > now]


def _revoke_expired_leases(limit_id: UUID) -> list[UUID]:
    """Revoke the limit's expired leases; the flow runs that held them."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    storage, holders, now = _storage(), [], datetime.now(timezone.utc)
    for lease in _leases(limit_id) or []:
        if lease.expiration > now:
            continue
        run_coro_as_sync(storage.revoke_lease(lease.id))
        holder = lease.metadata.holder if lease.metadata else None
        if holder is not None and holder.type == "flow_run":
            holders.append(holder.id)
    return holders


def _holder_names(client, limit_id: UUID) -> str:
    """' (flow run NAME)' for the run that holds the slot, where this machine keeps its lease."""
    names = []
    for lease in _live_leases(limit_id) or []:
        holder = lease.metadata.holder if lease.metadata else None
        if holder is not None and holder.type == "flow_run":
            run = _read_run(client, holder.id)
            names.append(f"'{run.name}'" if run else str(holder.id))
    return f" (flow run {', '.join(names)})" if names else ""


def _read_run(client, run_id: UUID):
    """The flow run, or None where Prefect has no such run (its database was reset)."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_flow_run(run_id)
    except ObjectNotFound:
        return None


def _crash(client, run_id: UUID) -> str | None:
    """Mark a run that Prefect still shows running as crashed; its name, or None if Prefect has no such run."""
    from prefect.states import Crashed

    run = _read_run(client, run_id)
    if run is None:
        return None
    if run.state is not None and not run.state.is_final():
        client.set_flow_run_state(run_id, Crashed(message="its process stopped without reporting (killed, or its "
                                                          "server stopped first); the training slot was freed"),
                                  force=True)
    return f"flow run '{run.name}'"
