"""The SQL of the probe (issue 16): each mystery e-mail sent, and what became of its AR."""

from __future__ import annotations

from datetime import datetime
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
