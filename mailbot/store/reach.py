"""Whether the database answers, for `mailbot check --connect`: opened as the worker opens
it, its schema version read and compared with this mailbot's; nothing migrated, nothing
written, and a SQLite file that does not exist yet is not created (the worker's first
start creates it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from mailbot.errors import StoreError
from mailbot.store import fresh
from mailbot.store.database import Store
from mailbot.store.engines import shown_url
from mailbot.store.supervision import read_only

# libpq's advice: a connect_timeout under 2 s is taken as 2.
MIN_CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class DatabaseState:
    """What the check found: ``version`` None with ``empty`` is a new database (or, with
    ``missing``, a SQLite file not created yet); ``newer`` says why this mailbot cannot use
    a database a newer one migrated; ``read_only`` why it refuses writes."""

    where: str
    version: str | None
    head: str | None
    empty: bool = False
    missing: bool = False
    newer: str | None = None
    read_only: str | None = None


def with_connect_timeout(url: str, seconds: float) -> str:
    """``url`` whose connection attempt gives up after ``seconds`` (PostgreSQL's
    ``connect_timeout``, whole seconds): a firewall that drops packets would otherwise hold
    the check for the system's TCP timeout, minutes. One the URL already sets is kept."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return url
    timeout = max(MIN_CONNECT_TIMEOUT, math.ceil(seconds))
    return parsed.update_query_dict({"connect_timeout": str(timeout)}).render_as_string(
        hide_password=False
    )


def database_state(url: str, timeout: float) -> DatabaseState:
    """The database's schema version, this mailbot's head, and what keeps a worker from
    using it; StoreError naming the database (its password hidden) and the driver's reason
    when it does not answer."""
    where, head = shown_url(url), Store.head_version()
    parsed = sa.make_url(url)
    path = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and path not in (None, "", ":memory:")
    if on_disk and not Path(str(path)).exists():
        return DatabaseState(where, None, head, empty=True, missing=True)
    store = Store(with_connect_timeout(url, timeout), migrate=False)
    try:
        with store.engine.connect() as conn:
            empty = fresh.is_empty(conn)
        version = store.schema_version()
        return DatabaseState(
            where,
            version,
            head,
            empty=empty,
            newer=store.newer_schema(version),
            read_only=read_only(store),
        )
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        why = detail[0] if detail else type(exc).__name__
        raise StoreError(f"cannot read the database {where}: {why}") from None
    finally:
        store.close()
