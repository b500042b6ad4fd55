"""The SQL of supervision (issue 16): each folder's last polls (``heartbeats``) and the
counts `mailbot status` and the metrics read. Graded by ``mailbot.core.health``."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mailbot.core.clock import utcnow
from mailbot.core.statuses import ArStatus, Decision, EventKind, OutboxStatus, WorkerRole
from mailbot.store.database import Store
from mailbot.store.errors import sqlite_refusal
from mailbot.store.event_rows import dismissals
from mailbot.store.records import Dismissal
from mailbot.store.schema import events, fit, heartbeats, messages, outbox, workers


def record_poll(
    store: Store,
    mailbox: str,
    folder: str,
    holder: str,
    started_at: datetime,
    seconds: float,
    error: str | None,
    database: bool = False,
) -> None:
    """A poll of a folder ended: a success resets its error count, a failure adds one.
    A failure of the database (``database``), not of the mail server, is recorded as the
    last error but is none of the folder's IMAP errors in a row."""
    name = f"{mailbox}:{folder}"
    now = utcnow()
    values: dict[str, Any] = {
        "holder": holder,
        "started_at": started_at,
        "duration_ms": int(seconds * 1000),
        "updated_at": now,
    }
    if error is None:
        values |= {"success_at": now, "errors": 0}
    else:
        values |= {"error_at": now, "error": error}
        if not database:
            values["errors"] = heartbeats.c.errors + 1
    with store.engine.begin() as conn:
        updated = conn.execute(heartbeats.update().where(heartbeats.c.name == name).values(values))
        if updated.rowcount == 0:
            values["errors"] = 0 if error is None or database else 1
            row = {"name": name, "mailbox": mailbox, "folder": folder, **values}
            conn.execute(heartbeats.insert().values(fit(heartbeats, row)))


def folder_beats(store: Store) -> dict[tuple[str, str], sa.Row[Any]]:
    with store.engine.connect() as conn:
        return {(r.mailbox, r.folder): r for r in conn.execute(sa.select(heartbeats))}


def outbox_counts(store: Store, now: datetime) -> dict[str, Any]:
    """Pending mail and its oldest, deferred, failed (24 h) and uncertain (7 days) sends.

    The oldest waits since it was queued, or put back in the queue by an operator (a mail
    requeued after an outage is as old as its requeue). A failure counts by when it
    happened: a deferred mail fails days after it was queued (``outbox.max_queue_hours``),
    and counted by its creation it never showed in the last 24 hours."""
    pending = outbox.c.status == OutboxStatus.PENDING
    queued_at = sa.func.coalesce(outbox.c.requeued_at, outbox.c.created_at)

    def count(*where: Any) -> Any:
        return sa.select(sa.func.count()).select_from(outbox).where(*where).scalar_subquery()

    query = sa.select(
        count(pending),
        sa.select(sa.func.min(queued_at)).where(pending).scalar_subquery(),
        count(pending, outbox.c.attempts > 0),
        count(
            outbox.c.status == OutboxStatus.FAILED, outbox.c.failed_at >= now - timedelta(days=1)
        ),
        count(
            outbox.c.status == OutboxStatus.UNCERTAIN,
            outbox.c.created_at >= now - timedelta(days=7),
        ),
    )
    with store.engine.connect() as conn:
        depth, oldest, deferred, failed, uncertain = conn.execute(query).one()
    if isinstance(oldest, str):  # SQLite's min() returns the stored text
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return {
        "depth": int(depth),
        "oldest": oldest,
        "deferred": int(deferred),
        "failed": int(failed),
        "uncertain": int(uncertain),
    }


def quarantined(store: Store) -> dict[str, int]:
    query = (
        sa.select(messages.c.mailbox, sa.func.count())
        .where(messages.c.decision == Decision.QUARANTINE)
        .group_by(messages.c.mailbox)
    )
    with store.engine.connect() as conn:
        return {str(m): int(n) for m, n in conn.execute(query)}


def passed_over(
    store: Store, since: datetime | None = None, until: datetime | None = None
) -> list[sa.Row[Any]]:
    """Incoming mail passed over (since ``since``, before ``until``), newest first, that
    still waits for a person: the database refused even its quarantine row, attempt after
    attempt (``EventKind.PASSED_OVER``). Each event's detail: where the mail is (mailbox,
    folder, UIDVALIDITY, UID) and why, then the traceback. A retry that records the mail
    gives the event its row (``Transaction.resolve_passed_over``), a person who handled it
    outside mailbot dismisses it (``Transaction.dismiss_passed_over``): either way it is
    no longer waiting."""
    query = (
        sa.select(events.c.id, events.c.at, events.c.detail)
        .where(events.c.kind == EventKind.PASSED_OVER, events.c.message_pk.is_(None))
        .order_by(events.c.id.desc())
    )
    if since is not None:
        query = query.where(events.c.at >= since)
    if until is not None:
        query = query.where(events.c.at < until)
    with store.engine.connect() as conn:
        found: list[sa.Row[Any]] = list(conn.execute(query))
        closed = dismissals(conn) if found else {}
    return [row for row in found if row.id not in closed]


def passed_over_event(store: Store, event_id: int) -> tuple[sa.Row[Any], Dismissal | None] | None:
    """One ``passed_over`` event, waiting or not (``message_pk``: the row that records the
    mail since a retry), and its dismissal if a person closed it; None if there is none."""
    query = sa.select(events).where(events.c.id == event_id, events.c.kind == EventKind.PASSED_OVER)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
        if row is None:
            return None
        return row, dismissals(conn, event_id).get(event_id)


def ar_counts(store: Store) -> dict[str, int]:
    """Messages by AR status (sent, failed, uncertain…), as far as retention keeps them."""
    query = (
        sa.select(messages.c.ar_status, sa.func.count())
        .where(messages.c.ar_status.in_([s.value for s in ArStatus]))
        .group_by(messages.c.ar_status)
    )
    with store.engine.connect() as conn:
        return {str(s): int(n) for s, n in conn.execute(query)}


def running_since(store: Store, now: datetime) -> datetime | None:
    """When the longest-running live worker started (None: no worker runs now)."""
    query = sa.select(sa.func.min(workers.c.started_at)).where(
        workers.c.role == WorkerRole.WORKER, workers.c.expires_at > now
    )
    with store.engine.connect() as conn:
        since = conn.execute(query).scalar()
    if isinstance(since, str):  # SQLite's min() returns the stored text
        since = datetime.fromisoformat(since)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=now.tzinfo)
    return since


def reachable(store: Store) -> bool:
    """Whether the database answers (the worker's readiness)."""
    try:
        with store.engine.connect() as conn:
            conn.execute(sa.select(1))
    except sa.exc.SQLAlchemyError:
        return False
    return True


def read_only(store: Store) -> str | None:
    """Why the database refuses writes, or None when it takes them.
    PostgreSQL in recovery (a standby, a failover not finished) or with
    ``default_transaction_read_only`` answers every read, so `mailbot status` read its
    figures as usual while no worker could record a mail (issue: IT review, round 2).
    Asked of a new transaction, as a worker's would be. SQLite's file, ``-wal`` or
    ``-shm`` that the worker may not write (``store.errors.sqlite_refusal``): read from
    the files, not by trying a write, which would tell this process's rights (root's,
    a monitoring agent's), not the worker's, and wait behind the worker's write lock."""
    if store.engine.dialect.name == "sqlite":
        path = store.engine.url.database
        if path in (None, "", ":memory:"):
            return None
        file = Path(str(path)).resolve()
        found = sqlite_refusal(file)
        return None if found is None else f"the SQLite database {file} refuses writes: {found}"
    if store.engine.dialect.name != "postgresql":
        return None
    query = sa.text("SELECT current_setting('transaction_read_only'), pg_is_in_recovery()")
    with store.engine.connect() as conn:
        read_only_now, recovery = conn.execute(query).one()
    if recovery:
        return "the server is a standby in recovery (pg_is_in_recovery)"
    if read_only_now == "on":
        return "default_transaction_read_only is on"
    return None
