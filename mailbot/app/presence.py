"""Who else has a message open in the console: each page view (and the page's periodic
refresh) records the agent with the time, and a record older than VIEWING_SECONDS no
longer counts. Nothing else depends on it: it only warns two agents about to answer the
same citizen (the reply itself is protected by its idempotency key and the check of
replies made since the page was opened)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.core.clock import Clock, utcnow
from mailbot.store import Store
from mailbot.store import console as stored

VIEWING_SECONDS = 120  # the page refreshes its record every 45 s
KEPT = timedelta(days=1)  # older records are deleted


@dataclass(frozen=True)
class Viewer:
    agent: str
    seen_at: datetime


def opened(store: Store, agent_id: str, message_pk: int, clock: Clock = utcnow) -> None:
    """Record that the agent has the message open now."""
    now = clock()
    with store.transaction() as tx:
        stored.touch_viewing(tx.conn, message_pk, agent_id, now)
        stored.forget_viewings(tx.conn, now - KEPT)


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
