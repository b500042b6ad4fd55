"""``mailbot backup``: a consistent copy of a SQLite database while workers write to it.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the pages under the
database's own locking, so the copy is a state the database was in, WAL included. The copy
is written beside its destination and renamed at the end: an interrupted backup never
leaves a half file under the final name. The copy is readable by its owner only, whatever
the umask of whoever runs it: it holds citizens' mail (the service's own files follow its
``UMask=0027``; an operator's shell usually has 022, which would make it world-readable).
PostgreSQL has its own tool: ``pg_dump``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from mailbot.errors import MailbotError
from mailbot.store.database import Store

# The umask: the dump holds citizens' data, and pg_dump writes it 0644 under the usual 022
# (a `mailbot backup` copy is 0600 whatever the umask).
PG_DUMP_HINT = (
    "PostgreSQL is backed up with its own tool, e.g. "
    "`(umask 077; pg_dump --format=custom --file=mailbot.dump DATABASE)` (docs/deploy.md)"
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
        _create_private(partial)
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
    except FileExistsError:
        raise MailbotError(
            f"{partial} already exists (another backup running, or one interrupted): "
            "remove it or choose a new name"
        ) from None
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise MailbotError(f"backup to {destination} failed: {exc}") from None
    return destination.stat().st_size


def _create_private(path: Path) -> None:
    """An empty file only its owner can read, made here so that SQLite writes into it
    (SQLite would create it with the umask's mode); never one that exists already."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
