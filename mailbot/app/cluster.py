"""Several workers on one database (issue 16): which folders and jobs this worker may work on.

The ``Keeper`` holds this worker's leases (``mailbot.core.leases``): every tick it renews
its row in ``workers`` and the leases it holds, takes the free or expired ones (up to a
fair share while other workers are alive), and recovers as uncertain the sends a dead
worker left half done. The pollers ask ``holds(name)`` before they read a folder; the
transaction that records a mail checks the lease again (the fence on ``Store``).

On SQLite only one worker may run: the keeper takes the sole-worker lock first and
refuses to start (ClusterError) while another holds it. A transient database error at the
start (another process holding SQLite's write lock past the busy timeout, a failover) is
TransientStoreError, the start undone: the worker tries again, ``poll --once`` fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

from mailbot import __version__
from mailbot.app.delivery_recovery import recover_orphans, requeue_stalled
from mailbot.core.leases import Fence, Holder, Timing, fair_share
from mailbot.core.statuses import WorkerRole
from mailbot.errors import TransientStoreError
from mailbot.logs import RepeatedFailures
from mailbot.store import Store
from mailbot.store.cluster import Cluster, sole_worker_lock
from mailbot.store.errors import is_lasting, transient_reason

log = logging.getLogger(__name__)


def this_worker(holder_id: str, store: Store, role: WorkerRole = WorkerRole.WORKER) -> Holder:
    """This process as the other workers see it (the id is the outbox's claimer id)."""
    return Holder(
        id=holder_id,
        role=role,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        schema=Store.head_version() or "",
    )


def _nothing(_name: str) -> None:
    return None


class Keeper:
    """Takes, renews and gives back this worker's leases; see the module docstring."""

    def __init__(
        self,
        store: Store,
        holder: Holder,
        names: Iterable[str],
        lease_seconds: float,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.names = list(dict.fromkeys(names))
        self.timing = Timing(lease_seconds)
        self.cluster = Cluster(store, holder, lease_seconds)
        self.stop = stop
        self.held: set[str] = set()
        self.renewed_at = 0.0  # monotonic time of the last tick that reached the database
        # Told of each lease taken (the worker catches up a report a dead holder missed).
        self.on_taken: Callable[[str], object] = _nothing
        self._lock = sole_worker_lock(store)
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        self._closing = threading.Event()  # close(): the thread ends, whatever ``stop``
        # How long ``close`` waits for a tick under way (a database call) to end.
        self.join_seconds = self.timing.tick + 5
        self.started = False

    def start(self, background: bool = True) -> None:
        """Refuse a second worker on SQLite, register, take what is free; then keep at it
        on a thread of its own (``run``, and ``poll --once``: a worker whose row is not
        renewed is dead to the others, which take its sends in flight for uncertain)."""
        if self._lock is not None:
            self._lock.acquire()
        self.store.fence = Fence(self.cluster.holder.id, self.timing.lease)
        try:
            self.tick()
        except Exception as exc:
            self._undo_start()
            reason = transient_reason(exc)
            if reason is None:
                raise
            raise TransientStoreError(
                f"the database could not register this worker now ({reason}); nothing was"
                " read nor sent"
            ) from exc
        self.started = True
        if background:
            self._thread.start()

    def _undo_start(self) -> None:
        """A start that failed: what it took given back as far as the database allows
        (leases it could not give back expire), the fence and the sole-worker lock."""
        try:
            self.cluster.unregister()
        except Exception:
            log.debug("could not give back a failed start's leases; they expire")
        self.held.clear()
        self.store.fence = None
        if self._lock is not None:
            self._lock.release()

    def holds(self, name: str) -> bool:
        return name in self.held

    @property
    def current(self) -> bool:
        """Whether this worker's row was renewed within its lease (readiness)."""
        return time.monotonic() - self.renewed_at < self.timing.lease

    def tick(self) -> None:
        self.cluster.register()
        self.renewed_at = time.monotonic()
        for name in sorted(self.held):
            if not self.cluster.renew(name):
                self.held.discard(name)
                log.warning("lease lost", extra={"lease": name})
        recovered = recover_orphans(self.store, self.cluster.orphaned_sends())
        if recovered:
            log.error("a dead worker's sends marked uncertain", extra={"outbox": recovered})
        requeue_stalled(self.store)  # internal mail nobody is sending: each a WARNING
        share = fair_share(len(self.names), self.cluster.live_workers())
        for name in self.names:
            if len(self.held) >= share:
                break
            if name not in self.held and self.cluster.acquire(name):
                self.held.add(name)
                log.info("lease taken", extra={"lease": name})
                self.on_taken(name)

    def _run(self) -> None:
        failures = RepeatedFailures(
            log,
            "lease renewal failed, trying again",
            "lease renewal works again",
            transient_reason,
            lasting=is_lasting,
        )
        while not self._closing.wait(self.timing.tick) and not self.stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a database hiccup: the leases run out if it lasts
                failures.failed(exc)
            else:
                failures.succeeded()

    def close(self) -> None:
        """A clean stop: give the leases back at once, so another worker need not wait.

        Not while a tick is still under way (its database call hangs past ``join_seconds``):
        it could take a lease again after they were given back, and nobody would renew
        or free it but its expiry; left as they are, every lease runs out a lease later."""
        if not self.started:
            return  # never started, or its start was undone
        self.started = False
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(self.join_seconds)
        if self._thread.is_alive():
            log.warning("the lease keeper did not stop: the leases are left to expire")
        else:
            self._give_back()
        self.held.clear()
        self.store.fence = None
        if self._lock is not None:
            self._lock.release()

    def _give_back(self) -> None:
        try:
            self.cluster.unregister()
        except Exception as exc:
            reason = transient_reason(exc)  # read-only or unreachable: the reason is enough
            if reason is None:
                log.warning("could not give the leases back; they expire", exc_info=True)
            else:
                log.warning("could not give the leases back; they expire", extra={"reason": reason})
