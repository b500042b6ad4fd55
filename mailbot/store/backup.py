"""``mailbot backup``: a consistent copy of a SQLite database while workers write to it.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the pages under the
database's own locking, so the copy is a state the database was in, WAL included. The copy
is written beside its destination and renamed at the end: an interrupted backup never
leaves a half file under the final name. PostgreSQL has its own tool: ``pg_dump``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from mailbot.errors import MailbotError
from mailbot.store.database import Store

PG_DUMP_HINT = (
    "PostgreSQL is backed up with its own tool, e.g. "
    "`pg_dump --format=custom --file=mailbot.dump DATABASE` (docs/deploy.md)"
)


def backup(store: Store, destination: Path) -> int:
    """Copy the SQLite database to ``destination`` (which must not exist); its size."""
    url = sa.make_url(store.url)
    if url.get_backend_name() != "sqlite":
        raise MailbotError(f"mailbot backup copies SQLite databases; {PG_DUMP_HINT}")
    if not url.database or url.database == ":memory:":
        raise MailbotError("an in-memory database cannot be backed up")
    if destination.exists():
        raise MailbotError(f"{destination} already exists: choose a new name")
    partial = destination.with_name(destination.name + ".partial")
    try:
        source = sqlite3.connect(url.database, timeout=30)
        try:
            target = sqlite3.connect(partial)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        os.replace(partial, destination)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise MailbotError(f"backup to {destination} failed: {exc}") from None
    return destination.stat().st_size
