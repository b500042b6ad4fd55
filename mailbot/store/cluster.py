"""The SQL of several workers on one database (issue 16): leases, live workers, and the
sole-worker lock of SQLite. What the rows mean is ``mailbot.core.leases``; who renews and
takes them is ``mailbot.app.cluster``.

Times are the workers' clocks (UTC): hosts sharing a database must keep them in sync
(NTP), as a lease's expiry compares them.
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.core.clock import utcnow
from mailbot.core.leases import Holder
from mailbot.core.statuses import AT_MOST_ONCE, OutboxStatus, WorkerRole
from mailbot.errors import ClusterError
from mailbot.store.database import Store
from mailbot.store.records import OutboxItem, outbox_item
from mailbot.store.schema import leases, outbox, workers

# A send claimed by a process that never registered as a worker (a CLI command, the
# console) is recovered as uncertain only after this long: it may still be in SMTP.
UNREGISTERED_GRACE = timedelta(minutes=10)
FORGET_AFTER = timedelta(days=1)


class SoleWorkerLock:
    """SQLite serves one worker: an exclusive lock on a file beside the database, which
    the kernel releases when the process dies (kill -9 included)."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".worker-lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "unknown"
            handle.close()
            raise ClusterError(
                f"another mailbot worker ({other}) is already running on the SQLite database "
                f"{self.path.with_name(self.path.name.removesuffix('.worker-lock'))}: SQLite "
                "serves one worker only. Stop it first, or use PostgreSQL to run several "
                "workers (docs/deploy.md)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def sole_worker_lock(store: Store) -> SoleWorkerLock | None:
    """The lock a SQLite database file needs (None: PostgreSQL, or SQLite in memory)."""
    url = sa.make_url(store.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return SoleWorkerLock(Path(url.database or ""))


class Cluster:
    """One worker's view of the shared tables: its own row, and the leases it holds."""

    def __init__(self, store: Store, holder: Holder, lease_seconds: float) -> None:
        self.store = store
        self.holder = holder
        self.lease = timedelta(seconds=lease_seconds)

    def register(self) -> None:
        """Record (or renew) this worker as alive until now + lease; forget the workers
        dead for a day (each start is a new row)."""
        now = utcnow()
        with self.store.transaction() as tx:
            tx.conn.execute(workers.delete().where(workers.c.expires_at < now - FORGET_AFTER))
            renewed = tx.conn.execute(
                workers.update()
                .where(workers.c.id == self.holder.id)
                .values(expires_at=now + self.lease)
            )
            if renewed.rowcount == 0:
                tx.conn.execute(
                    workers.insert().values(
                        id=self.holder.id,
                        role=self.holder.role,
                        host=self.holder.host[:255],
                        pid=self.holder.pid,
                        version=self.holder.version,
                        schema=self.holder.schema,
                        started_at=now,
                        expires_at=now + self.lease,
                    )
                )

    def unregister(self) -> None:
        """A clean stop: release every lease and the worker row, so others take over at once."""
        with self.store.transaction() as tx:
            tx.conn.execute(leases.delete().where(leases.c.holder == self.holder.id))
            tx.conn.execute(workers.delete().where(workers.c.id == self.holder.id))

    def live_workers(self, now: datetime | None = None) -> int:
        with self.store.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                workers.c.role == WorkerRole.WORKER, workers.c.expires_at > (now or utcnow())
            )
            return int(conn.execute(query).scalar_one())

    def acquire(self, name: str) -> bool:
        """Take lease ``name`` if it is free or expired, or renew it if it is ours."""
        now = utcnow()
        try:
            with self.store.transaction() as tx:
                return self._acquire(tx.conn, name, now)
        except sa.exc.IntegrityError:
            return False  # another worker inserted it at the same moment

    def _acquire(self, conn: Connection, name: str, now: datetime) -> bool:
        row = conn.execute(
            sa.select(leases.c.holder, leases.c.expires_at, leases.c.fence)
            .where(leases.c.name == name)
            .with_for_update()
        ).first()
        values = {"expires_at": now + self.lease}
        if row is None:
            conn.execute(leases.insert().values(name=name, **self._taken(now, 1), **values))
            return True
        if row.holder == self.holder.id:
            conn.execute(leases.update().where(leases.c.name == name).values(**values))
            return True
        if row.expires_at > now:
            return False
        conn.execute(
            leases.update()
            .where(leases.c.name == name)
            .values(**self._taken(now, int(row.fence) + 1), **values)
        )
        return True

    def _taken(self, now: datetime, fence: int) -> dict[str, object]:
        return {
            "holder": self.holder.id,
            "version": self.holder.version,
            "schema": self.holder.schema,
            "fence": fence,
            "acquired_at": now,
        }

    def renew(self, name: str) -> bool:
        """Push our lease's expiry forward; False if it is no longer ours."""
        with self.store.transaction() as tx:
            done = tx.conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.holder == self.holder.id)
                .values(expires_at=utcnow() + self.lease)
            )
            return bool(done.rowcount == 1)

    def release(self, name: str) -> None:
        with self.store.transaction() as tx:
            tx.conn.execute(
                leases.delete().where(leases.c.name == name, leases.c.holder == self.holder.id)
            )

    def orphaned_sends(self) -> list[tuple[OutboxItem, str | None]]:
        """Mails to citizens left 'sending' by a worker that is dead (its row expired), or
        by an unregistered process long ago: nobody will finish them. Each with its claimer
        as read (``claimed_by``), which the recovery's write checks again. (Internal mail
        left so goes back to the queue instead: ``Transaction.requeue_stalled``.)"""
        now = utcnow()
        alive = sa.select(workers.c.id).where(workers.c.expires_at > now)
        known = sa.select(workers.c.id)
        query = (
            sa.select(outbox)
            .where(
                outbox.c.status == OutboxStatus.SENDING,
                outbox.c.kind.in_(AT_MOST_ONCE),
                sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by.not_in(alive)),
                sa.or_(
                    outbox.c.claimed_by.in_(known),
                    outbox.c.claimed_at.is_(None),
                    outbox.c.claimed_at < now - UNREGISTERED_GRACE,
                ),
            )
            .order_by(outbox.c.id)
        )
        with self.store.engine.connect() as conn:
            return [(outbox_item(row, raw=False), row.claimed_by) for row in conn.execute(query)]


def running_worker(conn: Connection, now: datetime) -> str | None:
    """A worker that looks alive now (its row or a lease it holds not expired), named for
    an operator (host, pid, version); None when none does. A command that must not run
    beside a worker (``mailbot restored``) refuses then; on PostgreSQL this is all it can
    tell, SQLite's sole-worker lock says it surely (``SoleWorkerLock``)."""
    held = conn.execute(
        sa.select(leases.c.name, leases.c.version, workers.c.host, workers.c.pid)
        .outerjoin(workers, workers.c.id == leases.c.holder)
        .where(leases.c.expires_at > now)
        .order_by(leases.c.name)
        .limit(1)
    ).first()
    if held is not None:
        return f"a worker, {_named(held)}, holds the lease {held.name}"
    alive = conn.execute(
        sa.select(workers.c.version, workers.c.host, workers.c.pid)
        .where(workers.c.role == WorkerRole.WORKER, workers.c.expires_at > now)
        .order_by(workers.c.started_at)
        .limit(1)
    ).first()
    if alive is not None:
        return f"a worker, {_named(alive)}, is running"
    return None


def _named(row: Any) -> str:
    """A worker as an operator finds it: its host, pid and version."""
    return f"{row.host or 'a host'} pid {row.pid or '?'} (mailbot {row.version})"
