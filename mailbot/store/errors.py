"""Which database errors are *transient*: the one place that decides it.

A transient error says nothing of what was being written: the database could not do it
now (a lock held by another connection, a serialization failure or a deadlock between two
workers, a timeout, a failover that closed the connection) and the same work, done again
in a new transaction, is expected to succeed. The intake then rolls a batch back and reads
it again rather than quarantining a citizen's mail for the database's sake
(``mailbot.app.intake``). Every other error is the mail's, or a bug, and is treated as
before.

What counts:

* SQLAlchemy's ``connection_invalidated``: the connection was found dead (a disconnect).
* PostgreSQL (psycopg 3): the SQLSTATEs of ``TRANSIENT_SQLSTATES`` and the whole class 08
  (connection exceptions); among them 25006 (read_only_sql_transaction): the database
  refuses every write, a standby still in recovery or ``default_transaction_read_only``
  set during a failover or a maintenance. It clears when the primary is back (or the
  setting undone), as a lost connection does, and it is nobody's mail: ``is_read_only``
  tells it apart, for the intake counts no mail's attempt for it (``mailbot.app.intake``)
  and `mailbot status` says so (``mailbot.store.supervision.read_only``); a psycopg
  ``OperationalError`` or ``InterfaceError`` carrying no SQLSTATE at all, which is how
  psycopg reports a connection lost or closed under it. An ``OperationalError`` *with*
  another SQLSTATE (disk full 53100, out of memory 53200, an I/O error 58030) is not
  transient: it does not clear by itself.
* SQLite: the result codes SQLITE_BUSY ("database is locked": another connection holds the
  write lock past the busy timeout) and SQLITE_LOCKED ("database table is locked"), with
  their extended codes, read from ``sqlite_errorcode`` rather than from the message: a
  trigger's ``RAISE(ABORT, 'database is locked')`` has the message, not the code, and stays
  the mail's error. SQLITE_IOERR ("disk I/O error") is deliberately NOT transient: it
  means a failing disk, a full file system or a file changed under SQLite, after which
  the connection's state and the file's are in doubt; retrying the same batch forever
  would hide that. It fails as any other error (the quarantine, or the poll failing when
  even that is refused), where an operator sees it.

An exception whose cause or context (``raise ... from``, an error while rolling back
after another) is transient is transient too: a savepoint's ROLLBACK on a connection the
server closed raises a second error whose context is the first.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

import sqlalchemy as sa

from mailbot.errors import TransientStoreError

READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction
# PostgreSQL's SQLSTATEs worth a new attempt, and what to call them in a message.
TRANSIENT_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available",
    "57014": "statement canceled (a statement or lock timeout)",
    "57P01": "server shut down by an administrator (admin shutdown)",
    "57P02": "server crashed (crash shutdown)",
    "57P03": "server not accepting connections yet",
    READ_ONLY_SQLSTATE: "the database is read-only (a standby, or default_transaction_read_only)",
}
CONNECTION_CLASS = "08"  # connection_exception and all its codes
# SQLite's primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
_CHAIN_LIMIT = 16  # exceptions of a chain looked at, at most


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a database error worth a new attempt."""
    return transient_reason(exc) is not None


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is PostgreSQL refusing a write because the whole
    database is read-only (SQLSTATE 25006): no mail's error, and every write meets it."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    for error in _chain(exc):
        orig = error.orig if isinstance(error, sa.exc.DBAPIError) else error
        if isinstance(orig, psycopg.Error) and orig.sqlstate == READ_ONLY_SQLSTATE:
            return True
    return False


def transient_reason(exc: BaseException) -> str | None:
    """What made ``exc`` transient, in a few words safe for a log and a stored reason
    (a code and a name, never the driver's message, which may quote a row); None when it
    is not transient."""
    for error in _chain(exc):
        reason = _reason(error)
        if reason is not None:
            return reason
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (not a context the code set aside with
    ``raise ... from None``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def _reason(error: BaseException) -> str | None:
    """One exception's reason, without looking at its chain."""
    if isinstance(error, TransientStoreError):
        return str(error)
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return "the connection to the database was lost"
        return _driver_reason(error.orig) if error.orig is not None else None
    return _driver_reason(error)


def _driver_reason(error: BaseException) -> str | None:
    """A DBAPI driver's own exception (sqlite3, psycopg)."""
    if isinstance(error, sqlite3.Error):
        return _sqlite_reason(error)
    return _psycopg_reason(error)


def _sqlite_reason(error: sqlite3.Error) -> str | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in (SQLITE_BUSY, SQLITE_LOCKED):
        return None
    name = getattr(error, "sqlite_errorname", "SQLITE_BUSY")
    return f"the SQLite database is locked by another connection ({name})"


def _psycopg_reason(error: BaseException) -> str | None:
    # psycopg is an optional dependency: a process that never imported it has no psycopg
    # error to classify, so it is looked up, not imported.
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(error, psycopg.Error):
        return None
    sqlstate: str | None = error.sqlstate
    if sqlstate is None:
        lost = isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
        return f"the connection to the database was lost ({type(error).__name__})" if lost else None
    if sqlstate in TRANSIENT_SQLSTATES:
        return f"{TRANSIENT_SQLSTATES[sqlstate]} (SQLSTATE {sqlstate})"
    if sqlstate.startswith(CONNECTION_CLASS):
        return f"connection failure (SQLSTATE {sqlstate})"
    return None
