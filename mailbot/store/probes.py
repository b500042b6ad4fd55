"""The SQL of the probe (issue 16): each mystery e-mail sent, and what became of its AR."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import ProbeStatus
from mailbot.store.database import Store
from mailbot.store.schema import fit, messages, probes


def add(
    store: Store, run: str, mailbox: str, message_id: str, sent_at: datetime, deadline: datetime
) -> int:
    values = {
        "run": run,
        "mailbox": mailbox,
        "message_id": message_id,
        "status": ProbeStatus.AWAITING,
        "sent_at": sent_at,
        "deadline_at": deadline,
    }
    with store.engine.begin() as conn:
        result = conn.execute(probes.insert().values(fit(probes, values)))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def settle(store: Store, probe_id: int, status: ProbeStatus, **values: Any) -> None:
    """A probe's outcome: status, AR arrival, latency, problems (text), checked_at."""
    with store.engine.begin() as conn:
        conn.execute(
            probes.update()
            .where(probes.c.id == probe_id)
            .values(fit(probes, {"status": status, **values}))
        )


def received_at(store: Store, message_id: str) -> datetime | None:
    """When the watched mailbox received the probe (its row's IMAP INTERNALDATE)."""
    query = sa.select(messages.c.received_at).where(messages.c.message_id == message_id)
    with store.engine.connect() as conn:
        found: datetime | None = conn.execute(query.limit(1)).scalar()
        return found


def failing_run(store: Store, mailbox: str, before_id: int) -> tuple[datetime, datetime] | None:
    """When the run of failed probes of ``mailbox`` just before probe ``before_id`` began,
    and when its last was sent; None when the probe before it passed (or there is none).
    Rounds still awaiting (a shutdown) neither end nor extend a run."""
    mine = sa.and_(probes.c.mailbox == mailbox, probes.c.id < before_id)
    passed = sa.select(sa.func.max(probes.c.id)).where(mine, probes.c.status == ProbeStatus.PASSED)
    failed = [s for s in ProbeStatus if s.failed]
    query = sa.select(sa.func.min(probes.c.sent_at), sa.func.max(probes.c.sent_at)).where(
        mine,
        probes.c.status.in_(failed),
        probes.c.id > sa.func.coalesce(passed.scalar_subquery(), 0),
    )
    with store.engine.connect() as conn:
        first, last = conn.execute(query).one()
    if first is None:
        return None
    return _aware(first), _aware(last)


def _aware(at: datetime | str) -> datetime:
    """SQLite's min()/max() give the stored text, naive; times are stored in UTC."""
    value = datetime.fromisoformat(at) if isinstance(at, str) else at
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def latest(store: Store) -> dict[str, sa.Row[Any]]:
    """Each mailbox's most recent probe."""
    newest = (
        sa.select(probes.c.mailbox, sa.func.max(probes.c.id).label("id"))
        .group_by(probes.c.mailbox)
        .subquery()
    )
    query = sa.select(probes).join(newest, newest.c.id == probes.c.id)
    with store.engine.connect() as conn:
        return {str(r.mailbox): r for r in conn.execute(query)}
