"""Which database errors are *transient*: the one place that decides it.

A transient error says nothing of what was being written: the database could not do it
now (a lock held by another connection, a serialization failure or a deadlock between two
workers, a timeout, a failover that closed the connection) and the same work, done again
in a new transaction, is expected to succeed. The intake then rolls a batch back and reads
it again rather than quarantining a citizen's mail for the database's sake
(``mailbot.app.intake``, ``mailbot.app.mail_failures``). Every other error is the mail's,
or a bug, and is treated as before.

What counts:

* SQLAlchemy's ``connection_invalidated``: the connection was found dead (a disconnect).
* PostgreSQL (psycopg 3): the SQLSTATEs of ``TRANSIENT_SQLSTATES`` and the whole class 08
  (connection exceptions); among them 25006 (read_only_sql_transaction): the database
  refuses every write, a standby still in recovery or ``default_transaction_read_only``
  set during a failover or a maintenance. It clears when the primary is back (or the
  setting undone), as a lost connection does, and it is nobody's mail: ``is_read_only``
  tells it apart, for the intake counts no mail's attempt for it (``mailbot.app.mail_failures``)
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
* SQLite's SQLITE_READONLY ("attempt to write a readonly database", with its extended
  codes): the file, its ``-wal`` or its ``-shm`` cannot be opened for writing — left
  owned by root by a command run as root while the worker runs as its own user, a mode
  0444, an immutable attribute, a file system remounted read-only. Every mail meets it
  and none is its cause, as PostgreSQL's 25006: it is transient in this module's sense
  (the work rolled back whole and done again later, nothing quarantined) and read-only
  (``is_read_only``: no mail's attempt counted, else the mail at the head of each folder
  would be quarantined, then passed over, by three polls of an outage nobody's mail
  caused). Unlike a standby it does not clear by itself: someone must mend the files.
  ``is_lasting`` says so, for the loops to log it at ERROR (each poll cycle, each try to
  register) rather than once at WARNING, and its reason names the file and what to check
  (``sqlite_refusal``: which file, whose, what mode), as `mailbot status` (CRITICAL) and
  `check --connect` do from the files alone (``mailbot.store.supervision.read_only``).
  The file's path comes from the engine (``Store``'s ``handle_error``: ``DATABASE_FILE``
  set on the driver's exception), the driver's error does not carry it. The connection
  that met it is discarded there too: SQLite opened the file read-only and keeps it so,
  so a pooled connection would refuse writes after the files are mended, until a restart.

An exception whose cause or context (``raise ... from``, an error while rolling back
after another) is transient is transient too: a savepoint's ROLLBACK on a connection the
server closed raises a second error whose context is the first.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

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
SQLITE_READONLY = 8
# The attribute ``Store`` sets on a SQLite driver error: the database file's path.
DATABASE_FILE = "mailbot_database_file"
_CHAIN_LIMIT = 16  # exceptions of a chain looked at, at most


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a database error worth a new attempt."""
    return transient_reason(exc) is not None


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the whole database refusing writes:
    PostgreSQL's SQLSTATE 25006, or SQLite's SQLITE_READONLY. No mail's error, and every
    write meets it."""
    psycopg = sys.modules.get("psycopg")
    for error in _chain(exc):
        orig = error.orig if isinstance(error, sa.exc.DBAPIError) else error
        if _sqlite_read_only(orig):
            return True
        postgresql = psycopg is not None and isinstance(orig, psycopg.Error)
        if postgresql and getattr(orig, "sqlstate", None) == READ_ONLY_SQLSTATE:
            return True
    return False


def is_lasting(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a refusal that will not clear by itself:
    SQLite's SQLITE_READONLY (a file's owner, mode or mount, for someone to mend). The
    loops log it at ERROR, not once at WARNING as an outage that passes."""
    for error in _chain(exc):
        orig = error.orig if isinstance(error, sa.exc.DBAPIError) else error
        if _sqlite_read_only(orig):
            return True
    return False


def _sqlite_read_only(error: BaseException | None) -> bool:
    code = getattr(error, "sqlite_errorcode", None) if isinstance(error, sqlite3.Error) else None
    return code is not None and code & 0xFF == SQLITE_READONLY


def sqlite_refusal(path: Path) -> str | None:
    """Why the worker cannot write the SQLite database at ``path``, as far as its files
    tell, naming them by their names in its directory (None: nothing found). Read from
    the files alone, so that `mailbot status`, run by another user (a monitoring agent),
    says what the worker meets. The worker is taken to run as the database file's owner
    (docs/deploy.md): a ``-wal`` or ``-shm`` another user owns (left by a command run as
    root) and may not share, a file its owner may not write (mode 0444), a read-only
    mount; and, asked by the owner or by root, a file this process may not write (an
    immutable attribute: ``chattr +i``)."""
    try:
        owner = path.stat().st_uid
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "its file system is mounted read-only"
    except OSError:
        return None  # not there (yet): nothing refuses
    asked_by_owner = os.geteuid() in (0, owner)
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            info = file.stat()
        except OSError:
            continue  # no -wal/-shm: the first to open the database creates them
        mode = f"{stat.S_IMODE(info.st_mode):04o}"
        if info.st_uid != owner and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return (
                f"{file.name} belongs to {_user(info.st_uid)} (mode {mode}), not to"
                f" {_user(owner)}, the owner of {path.name}"
            )
        if owner != 0 and not info.st_mode & stat.S_IWUSR:
            return f"{file.name} is read-only (mode {mode})"
        if asked_by_owner and not os.access(file, os.W_OK):
            return f"{file.name} cannot be written (an immutable attribute? lsattr shows it)"
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


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
        if _sqlite_read_only(error.orig):  # its connection invalidated too (``Store``)
            return _driver_reason(error.orig) if error.orig is not None else None
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
    if _sqlite_read_only(error):
        return _read_only_reason(error)
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


def _read_only_reason(error: sqlite3.Error) -> str:
    """SQLITE_READONLY in words an operator acts on: the file, what its files tell
    (``sqlite_refusal``), and what to check."""
    name = getattr(error, "sqlite_errorname", "SQLITE_READONLY")
    file = getattr(error, DATABASE_FILE, None)
    found = sqlite_refusal(Path(file)) if file else None
    where = f" {file}" if file else ""
    return (
        f"the SQLite database{where} refuses writes ({name}{': ' + found if found else ''});"
        " check that the worker's user owns the database file and its -wal and -shm files"
        " and may write them, and that the file system is mounted read-write"
    )
