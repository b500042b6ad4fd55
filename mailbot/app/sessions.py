"""The console's sessions ended before their expiry. A session lives in a signed cookie, so
clearing the browser's copy at logout leaves any copy taken before valid until it expires
(up to 12 hours): each session carries a random id, ending it records the id in the
database (shared by every process serving the console), and a request carrying a recorded
id is logged out. The rows are kept until the session would have expired anyway, then
``mailbot purge`` deletes them."""

from __future__ import annotations

from datetime import datetime

from mailbot.store import Store
from mailbot.store import console as stored


def end(store: Store, session_id: str, expires_at: datetime) -> None:
    """Refuse the session from now on, in every process, until ``expires_at``."""
    with store.transaction() as tx:
        stored.end_session(tx.conn, session_id, expires_at)


def ended(store: Store, session_id: str) -> bool:
    """Whether the session was ended (logout, or replaced by a new login)."""
    return stored.session_ended(store.engine, session_id)


def forget_expired(store: Store, now: datetime) -> int:
    """Delete the ended sessions past their expiry (their cookies are refused anyway)."""
    with store.transaction() as tx:
        return stored.forget_ended_sessions(tx.conn, now)
