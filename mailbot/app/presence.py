"""Who else has a message open in the console: each page view (and the page's periodic
refresh) records the agent with the time, and a record older than VIEWING_SECONDS no
longer counts. Nothing else depends on it: it only warns two agents about to answer the
same citizen (the reply itself is protected by its idempotency key and the check of
replies made since the page was opened). So it is skipped, the page shown all the same,
while the database refuses writes (a failover, a maintenance: ``opened``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.core.clock import Clock, utcnow
from mailbot.store import Store
from mailbot.store import console as stored
from mailbot.store.errors import is_read_only, transient_reason

log = logging.getLogger(__name__)

VIEWING_SECONDS = 120  # the page refreshes its record every 45 s
KEPT = timedelta(days=1)  # older records are deleted


@dataclass(frozen=True)
class Viewer:
    agent: str
    seen_at: datetime


def opened(store: Store, agent_id: str, message_pk: int, clock: Clock = utcnow) -> bool:
    """Record that the agent has the message open now; False when the database refuses
    writes (read-only: a standby during a failover, a maintenance). Reading the page is
    what the agent came for: the record only feeds a colleague's warning, so a refused
    one is a debug line, not the page's failure (it was a 500 on every view)."""
    now = clock()
    try:
        with store.transaction() as tx:
            stored.touch_viewing(tx.conn, message_pk, agent_id, now)
            stored.forget_viewings(tx.conn, now - KEPT)
    except Exception as exc:
        if not is_read_only(exc):
            raise
        log.debug(
            "presence not recorded: the database refuses writes",
            extra={"reason": transient_reason(exc)},
        )
        return False
    return True


def forget_old(store: Store, now: datetime) -> None:
    """Delete the records older than KEPT (the retention purge): which agent had which
    citizen's mail open, and when, serves only the warning above; a page view deletes them
    too, but a console no longer used kept them until the message's own purge."""
    with store.transaction() as tx:
        stored.forget_viewings(tx.conn, now - KEPT)


def others(store: Store, agent_id: str, message_pk: int, clock: Clock = utcnow) -> list[Viewer]:
    """The colleagues who have had the message open within VIEWING_SECONDS."""
    since = clock() - timedelta(seconds=VIEWING_SECONDS)
    return [
        Viewer(row.agent, row.seen_at)
        for row in stored.viewers(store.engine, message_pk, since)
        if row.agent != agent_id
    ]
