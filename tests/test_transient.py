"""Which database errors are transient (``mailbot.store.errors``): a lock, a serialization
failure, a deadlock, a connection lost are; a constraint, a value, a disk error are not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import psycopg.errors
import sqlalchemy as sa

from mailbot.app.recording import BatchWriteError
from mailbot.errors import StoreError, TransientStoreError
from mailbot.store.errors import is_transient, transient_reason

# -- the classification, alone ------------------------------------------------------------


def sqlite_lock_error(path: Path) -> sqlite3.OperationalError:
    """The error a writer gets while another connection holds the write lock (a real one:
    its result code is SQLite's own, SQLITE_BUSY)."""
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()
    raise AssertionError("the second writer was not refused")


def sqlite_trigger_error(path: Path, message: str) -> sqlite3.Error:
    """A trigger's refusal whose message says "database is locked": not a lock at all."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute(f"CREATE TRIGGER r BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, '{message}'); END")
    try:
        conn.execute("INSERT INTO t VALUES (1)")
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("the trigger did not refuse")


def wrapped(orig: BaseException, invalidated: bool = False) -> sa.exc.DBAPIError:
    """As SQLAlchemy hands a driver's error over (parameters hidden)."""
    return sa.exc.DBAPIError.instance(
        "INSERT INTO messages ...", None, orig, Exception, True, invalidated
    )


def test_sqlite_a_lock_is_transient_a_trigger_saying_so_or_a_disk_error_is_not(
    tmp_path: Path,
) -> None:
    locked = sqlite_lock_error(tmp_path / "a.db")
    assert is_transient(locked) and is_transient(wrapped(locked))
    assert transient_reason(locked) == (
        "the SQLite database is locked by another connection (SQLITE_BUSY)"
    )
    # The code, not the message, decides: a trigger can say anything.
    assert not is_transient(sqlite_trigger_error(tmp_path / "b.db", "database is locked"))
    assert not is_transient(sqlite3.OperationalError("disk I/O error"))
    assert not is_transient(wrapped(sqlite3.IntegrityError("UNIQUE constraint failed")))


TRANSIENT = ("40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "08006", "08003")
NOT_TRANSIENT = ("23505", "22001", "P0001", "53100", "58030", "25P02", "42P01")


def test_postgresql_transient_sqlstates_and_a_lost_connection_are_transient() -> None:
    for sqlstate in TRANSIENT:
        error = psycopg.errors.lookup(sqlstate)("by the test")
        assert is_transient(error) and is_transient(wrapped(error)), sqlstate
        assert f"SQLSTATE {sqlstate}" in (transient_reason(error) or "")
    for sqlstate in NOT_TRANSIENT:  # a constraint, a value, a raise, a full disk, a bug
        error = psycopg.errors.lookup(sqlstate)("by the test")
        assert not is_transient(error) and not is_transient(wrapped(error)), sqlstate
    # psycopg's own report of a connection lost or closed carries no SQLSTATE
    assert is_transient(psycopg.OperationalError("consuming input failed"))
    assert is_transient(psycopg.InterfaceError("the connection is closed"))
    assert not is_transient(psycopg.DataError("no SQLSTATE, but a value"))
    # the driver's message (it may quote a row) is never part of the reason
    reason = transient_reason(psycopg.errors.lookup("40001")("usager1@example.fr"))
    assert reason == "serialization failure (SQLSTATE 40001)"


def test_sqlalchemy_invalidation_and_chains() -> None:
    constraint = psycopg.errors.lookup("23505")("duplicate key")
    assert is_transient(wrapped(constraint, invalidated=True))  # found dead: a disconnect
    failure = wrapped(psycopg.errors.lookup("40001")("could not serialize"))
    try:
        raise BatchWriteError("the batch's rows were refused") from failure
    except BatchWriteError as exc:
        assert is_transient(exc)  # what caused it
    try:
        try:
            raise failure
        except sa.exc.DBAPIError:
            # a savepoint's ROLLBACK on the connection the server closed: its context
            raise psycopg.InterfaceError("the connection is lost") from None
    except psycopg.InterfaceError as exc:
        assert is_transient(exc)
    try:
        try:
            raise failure
        except sa.exc.DBAPIError:
            raise ValueError("a bad mail") from None  # the code set the context aside
    except ValueError as exc:
        assert not is_transient(exc)
    assert not is_transient(ValueError("a bad mail")) and not is_transient(StoreError("x"))
    assert is_transient(TransientStoreError("x"))
