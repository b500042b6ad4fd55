"""A transient database error is the database's, not the mail's: nothing is quarantined.

A lock held too long, a serialization failure, a deadlock, a connection a failover closed:
the batch is rolled back whole (no row, no AR queued, the UID mark unmoved), the poll fails
with TransientStoreError at WARNING, and the next poll records the same mail, answered
once. A mail that meets such an error at every read is quarantined at the third, so that
its folder goes on. The failures are real: another SQLite connection holding the write
lock, a PostgreSQL trigger raising SQLSTATE 40001 for one mail, a backend terminated in
the middle of a batch; the servers too (Dovecot, aiosmtpd, `mailbot poll`/`run`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
import sqlalchemy as sa
from pg import fresh_database, read_only
from poison import citizen
from refusals import allow_rows, query, refuse_rows
from servers import DovecotServer, MailUser, SmtpServer
from test_batch import ROOT, WHERE, last_uid, mails, recorded
from test_e2e import write_config
from test_logs import fields
from test_poison import (
    ars_to,
    cli,
    no_python_traceback,
    start_worker,
    stop_worker,
    wait_until,
)

from mailbot.app import intake, mail_failures, supervision
from mailbot.app.context import App, build_app
from mailbot.app.recording import BatchWriteError
from mailbot.core.statuses import Health
from mailbot.errors import ClusterError, StoreError, TransientStoreError
from mailbot.mail.smtp import FileTransport
from mailbot.store import Store
from mailbot.store import engines as store_engines
from mailbot.store.errors import is_read_only, is_transient, transient_reason

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


TRANSIENT = (
    *("40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "08006", "08003"),
    "25006",  # read_only_sql_transaction: a standby, default_transaction_read_only
)
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


def test_a_read_only_database_is_transient_and_told_apart() -> None:
    """SQLSTATE 25006 (read_only_sql_transaction) was an error like any other: the worker
    quarantined the mail, then logged a traceback per job per cycle. It is transient, and
    ``is_read_only`` says it is the whole database's, through SQLAlchemy and a chain."""
    error = psycopg.errors.lookup("25006")("cannot execute INSERT in a read-only transaction")
    assert transient_reason(wrapped(error)) == (
        "the database is read-only (a standby, or default_transaction_read_only) (SQLSTATE 25006)"
    )
    assert is_read_only(error) and is_read_only(wrapped(error))
    try:
        try:
            raise wrapped(error)
        except sa.exc.DBAPIError as first:
            raise StoreError("the quarantine row refused too") from first
    except StoreError as chained:
        assert is_read_only(chained)
    for sqlstate in ("40001", "08006", "25P02", "23505"):
        assert not is_read_only(wrapped(psycopg.errors.lookup(sqlstate)("x"))), sqlstate
    assert not is_read_only(psycopg.OperationalError("consuming input failed"))


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


# -- the intake, on a real PostgreSQL ------------------------------------------------------


def fail_rows(url: str, uid: int, on: str = "INSERT") -> None:
    """Make PostgreSQL fail the row of the mail with this UID with a serialization failure
    (SQLSTATE 40001), every time, but for its quarantine row."""
    Store(url).close()  # the schema first
    query(
        url,
        "CREATE FUNCTION flaky() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.uid = {uid} AND NEW.decision <> 'quarantine' THEN RAISE EXCEPTION "
        "'could not serialize access (by the test)' USING ERRCODE = '40001'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    query(
        url, f"CREATE TRIGGER flaky BEFORE {on} ON messages FOR EACH ROW EXECUTE FUNCTION flaky()"
    )


def heal(url: str) -> None:
    query(url, "DROP TRIGGER flaky ON messages")


def kill_once(url: str, uid: int) -> None:
    """The first INSERT of this UID's row terminates its own backend: the server closes the
    connection in the middle of the batch, as a failover or an administrator would."""
    Store(url).close()
    query(url, "CREATE SEQUENCE killed")
    query(
        url,
        "CREATE FUNCTION kill() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.uid = {uid} AND nextval('killed') = 1 THEN "
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    query(url, "CREATE TRIGGER kill BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION kill()")


@pytest.fixture
def pg(postgres: str, request: pytest.FixtureRequest) -> str:
    return fresh_database(postgres, "t", request.node.nodeid)


@pytest.fixture
def app(pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    # One part per batch however loaded the machine: a part cut after its second (a slow
    # mail under load) commits the mails before the failing one, which these tests count.
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 3600.0)
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=pg)
    yield built
    built.store.close()


def queued_uids(url: str) -> list[int]:
    rows = query(url, "SELECT m.uid FROM outbox o JOIN messages m ON m.id = o.message_pk")
    return sorted(uid for (uid,) in rows)


def test_a_serialization_failure_rolls_the_batch_back_and_the_next_poll_records_it(
    app: App, pg: str
) -> None:
    assert app.pipeline.start_folder(*WHERE) == 0
    fail_rows(pg, 3)
    with pytest.raises(TransientStoreError) as raised:
        app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    message = str(raised.value)
    assert message.startswith("mailbox general, folder INBOX: the database could not record UID 3")
    assert "serialization failure (SQLSTATE 40001)" in message and "usager3" not in message
    # nothing of the batch: no row (mails 1 and 2 neither), no AR queued, the mark unmoved
    assert recorded(pg) == [] and queued_uids(pg) == [] and last_uid(pg) == 0
    heal(pg)
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert [o.decision for o in outcomes] == ["acknowledge"] * 5
    numbers = [int(ref.rsplit("-", 1)[1]) for _, _, ref in recorded(pg) if ref]
    assert numbers == [1, 2, 3, 4, 5]  # the rolled-back batch used up no reference
    assert queued_uids(pg) == [1, 2, 3, 4, 5] and last_uid(pg) == 5
    assert app.pipeline.transient_failures == {}


def test_a_read_only_database_fails_the_poll_and_counts_no_attempt_of_the_mail(
    app: App, pg: str
) -> None:
    """The database refuses every write (SQLSTATE 25006): the poll fails, transient, saying
    so, and no attempt is counted against the mail at the head of the folder: polls failing
    past TRANSIENT_ATTEMPTS neither quarantine nor pass it over (before, the first poll
    already quarantined it, its quarantine refused: StoreError). Writable again, the
    same poll records every mail once."""
    assert app.pipeline.start_folder(*WHERE) == 0
    read_only(pg)
    try:
        for _ in range(mail_failures.TRANSIENT_ATTEMPTS + 1):
            with pytest.raises(TransientStoreError) as raised:
                app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
            message = str(raised.value)
            assert "could not record UID 1 now (the database is read-only" in message
            assert "SQLSTATE 25006" in message and "attempt" not in message
        assert app.pipeline.transient_failures == {}
    finally:
        read_only(pg, on=False)
    assert recorded(pg) == [] and queued_uids(pg) == [] and last_uid(pg) == 0
    assert query(pg, "SELECT transient_uid, transient_count FROM folders") == [(None, 0)]
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
    assert [o.decision for o in outcomes] == ["acknowledge"] * 3
    assert queued_uids(pg) == [1, 2, 3]
    assert query(pg, "SELECT count(*) FROM events WHERE kind = 'passed_over'") == [(0,)]


def test_a_mail_failing_every_time_is_quarantined_at_the_third_attempt(app: App, pg: str) -> None:
    fail_rows(pg, 3)
    for attempt in (1, 2):
        with pytest.raises(TransientStoreError, match=f"attempt {attempt} of 3"):
            app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
        assert recorded(pg) == []
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert [o.decision for o in outcomes] == ["acknowledge"] * 2 + ["quarantine"] + [
        "acknowledge"
    ] * 2
    (row,) = query(pg, "SELECT reasons FROM messages WHERE uid = 3")
    assert (
        "quarantined after 3 database errors in a row: serialization failure (SQLSTATE 40001)"
        in row.reasons
    )
    assert queued_uids(pg) == [1, 2, 4, 5] and last_uid(pg) == 5
    assert app.pipeline.transient_failures == {}


def test_a_mail_whose_quarantine_is_refused_at_the_third_attempt_is_passed_over(
    app: App, pg: str
) -> None:
    """Failing every time, the mail is quarantined at the third attempt; should the database
    refuse its quarantine row too (a constraint, a value it cannot store: not transient),
    its count must not start again, or the mail would be read for ever and its folder
    never go past it. It is passed over at that attempt, its location and why in an event
    (its folder's mark past it, nothing queued for it), which `mailbot status` counts."""
    assert app.pipeline.start_folder(*WHERE) == 0
    fail_rows(pg, 3)
    refuse_rows(pg, 3, quarantine_too=True)  # its quarantine row refused (not transient)
    for attempt in (1, 2):
        with pytest.raises(TransientStoreError, match=f"attempt {attempt} of 3"):
            app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
        assert recorded(pg) == [] and last_uid(pg) == 0
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert [(o.uid, o.decision) for o in outcomes] == [
        (1, "acknowledge"),
        (2, "acknowledge"),
        (3, "passed-over"),
        (4, "acknowledge"),
        (5, "acknowledge"),
    ]
    assert [uid for uid, *_ in recorded(pg)] == [1, 2, 4, 5]
    assert queued_uids(pg) == [1, 2, 4, 5] and last_uid(pg) == 5
    (event,) = query(pg, "SELECT message_pk, detail FROM events WHERE kind = 'passed_over'")
    assert event.message_pk is None
    assert event.detail.startswith("general/INBOX UIDVALIDITY 1 UID 3: ")
    assert "quarantined after 3 database errors in a row" in event.detail
    assert "usager3" not in event.detail
    counted = "SELECT transient_uid, transient_count FROM folders WHERE mailbox = 'general'"
    assert query(pg, counted) == [(None, 0)] and app.pipeline.transient_failures == {}
    found = supervision.status(app.config, app.store)
    (passed,) = found.figures.passed_over
    assert passed.startswith("general/INBOX UIDVALIDITY 1 UID 3: error:quarantined after 3")
    (check,) = [c for c in found.checks if c.what == "mail passed over (7 d)"]
    assert check.state is Health.WARNING


def test_a_mail_passed_over_stays_passed_over_when_a_later_mail_fails_in_its_part(
    pg: str, tmp_path: Path
) -> None:
    """A cron of ``poll --once`` (a new process each time: no count in memory). Mail 2's
    quarantine row is refused at every poll; mail 4 meets a serialization failure every
    time. At the third poll mail 2 is passed over, but mail 4, in the same part, rolled
    that part back whole, the passing over with it, and wrote its own count over mail 2's
    in the folder's row: mail 2 started again from its first attempt, and so on for ever,
    the folder stuck below mail 2 and mail 4 never quarantined. Passed over, mail 2 is
    committed before the next mail is read: the next polls count mail 4's attempts alone,
    and quarantine it at its third."""
    refuse_rows(pg, 2, quarantine_too=True)
    fail_rows(pg, 4)
    polls: list[object] = []
    for _poll in range(5):
        app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=pg)
        try:
            start = app.pipeline.start_folder(*WHERE)
            found = app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
            polls.append([(o.uid, str(o.decision)) for o in found])
        except StoreError as exc:
            polls.append("transient" if isinstance(exc, TransientStoreError) else "refused")
        finally:
            app.store.close()
    assert polls == [
        "refused",
        "refused",
        "transient",  # mail 2 passed over, then mail 4's first attempt
        "transient",
        [(3, "acknowledge"), (4, "quarantine"), (5, "acknowledge")],
    ]
    assert [uid for uid, *_ in recorded(pg)] == [1, 3, 4, 5] and last_uid(pg) == 5
    (event,) = query(pg, "SELECT detail FROM events WHERE kind = 'passed_over'")
    assert event.detail.startswith("general/INBOX UIDVALIDITY 1 UID 2: ")
    assert queued_uids(pg) == [1, 3, 5]


def test_two_mails_failing_every_time_in_one_part_are_both_quarantined_by_a_cron(
    pg: str, tmp_path: Path
) -> None:
    """A cron of ``poll --once`` (no count in memory); mails 2 and 4 meet a serialization
    failure every time (a statement timeout on two huge mails would too). Mail 2 is
    quarantined at its third attempt, but mail 4, in the same part, rolled the part back,
    the quarantine with it, and its count took mail 2's place in the folder's row: mail 2
    started again from its first attempt, and so on for ever. A mail recorded after
    counted attempts commits at once: mail 4's attempts are counted next, alone."""
    Store(pg).close()
    query(
        pg,
        "CREATE FUNCTION flaky() RETURNS trigger AS $$ BEGIN "
        "IF NEW.uid IN (2, 4) AND NEW.decision <> 'quarantine' THEN RAISE EXCEPTION "
        "'could not serialize access (by the test)' USING ERRCODE = '40001'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    query(
        pg, "CREATE TRIGGER flaky BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION flaky()"
    )
    polls: list[object] = []
    for _poll in range(6):
        app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=pg)
        try:
            start = app.pipeline.start_folder(*WHERE)
            found = app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
            polls.append([(o.uid, str(o.decision)) for o in found])
        except TransientStoreError:
            polls.append("transient")
        finally:
            app.store.close()
    assert polls == [
        "transient",
        "transient",
        "transient",  # mail 2 quarantined, then mail 4's first attempt
        "transient",
        [(3, "acknowledge"), (4, "quarantine"), (5, "acknowledge")],
        [],
    ]
    assert [(uid, d) for uid, d, _ in recorded(pg)] == [
        (1, "acknowledge"),
        (2, "quarantine"),
        (3, "acknowledge"),
        (4, "quarantine"),
        (5, "acknowledge"),
    ]
    assert last_uid(pg) == 5


def test_a_connection_closed_mid_batch_fails_the_poll_and_the_next_records_all(
    app: App, pg: str
) -> None:
    kill_once(pg, 3)
    with pytest.raises(TransientStoreError, match="mailbox general, folder INBOX"):
        app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert recorded(pg) == [] and queued_uids(pg) == []
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 6)))  # a new connection
    assert [o.decision for o in outcomes] == ["acknowledge"] * 5
    assert queued_uids(pg) == [1, 2, 3, 4, 5]


def test_a_retry_meeting_a_transient_error_leaves_the_mail_quarantined_as_it_was(
    app: App, pg: str
) -> None:
    refuse_rows(pg, 1)  # the mail's own error: quarantined
    (mail,) = mails(range(1, 2))
    (outcome,) = app.pipeline.process_batch(*WHERE, [mail])
    assert outcome.decision == "quarantine" and outcome.message_pk is not None
    pk = outcome.message_pk
    allow_rows(pg)
    before = query(pg, f"SELECT decision, reasons FROM messages WHERE id = {pk}")
    events = query(pg, f"SELECT kind, detail FROM events WHERE message_pk = {pk}")
    fail_rows(pg, 1, on="UPDATE")
    with pytest.raises(TransientStoreError, match=f"#{pk} .*stays quarantined as it was"):
        app.pipeline.process(*WHERE, mail, existing=pk)
    assert query(pg, f"SELECT decision, reasons FROM messages WHERE id = {pk}") == before
    assert query(pg, f"SELECT kind, detail FROM events WHERE message_pk = {pk}") == events
    assert queued_uids(pg) == [] and app.pipeline.transient_failures == {}
    heal(pg)
    assert app.pipeline.process(*WHERE, mail, existing=pk).decision == "acknowledge"
    assert queued_uids(pg) == [1]


# -- end to end: Dovecot, aiosmtpd, `mailbot poll --once` and `mailbot run` --------------


@pytest.fixture
def etrangers(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def warnings(err: str, msg: str) -> list[str]:
    return [line for line in err.splitlines() if f'msg="{msg}"' in line]


def test_poll_once_fails_with_the_error_then_answers_each_mail_once(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg)
    fail_rows(pg, 2)
    imap_user.deliver([citizen(n, f"Demande {n}") for n in (1, 2, 3)])
    result = cli(config, "poll", "--once", "--acknowledge-existing")
    assert result.returncode == 1, result.stderr
    (line,) = warnings(result.stderr, "mailbox failed, database busy or unreachable")
    assert "level=warning" in line and "mailbox=general" in line
    assert "could not record UID 2 now (serialization failure (SQLSTATE 40001)" in line
    assert "traceback=" not in result.stderr and no_python_traceback(result.stderr)
    assert "usager2@" not in result.stderr
    assert query(pg, "SELECT count(*) FROM messages")[0][0] == 0  # nothing quarantined
    assert smtp_server.messages == []  # and nothing sent
    heal(pg)
    again = cli(config, "poll", "--once")
    assert again.returncode == 0, again.stderr
    for n in (1, 2, 3):
        assert ars_to(smtp_server, f"usager{n}@example.fr") == 1
    decisions = [d for (d,) in query(pg, "SELECT decision FROM messages ORDER BY uid")]
    assert decisions == ["acknowledge"] * 3


def test_the_worker_keeps_polling_and_quarantines_a_mail_failing_three_times(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg)
    fail_rows(pg, 2)
    imap_user.deliver([citizen(n, f"Demande {n}") for n in (1, 2, 3)])
    log = tmp_path / "worker.log"
    worker = start_worker(config, log)
    try:
        wait_until(
            lambda: (
                ars_to(smtp_server, "usager1@example.fr") == 1
                and ars_to(smtp_server, "usager3@example.fr") == 1
            ),
            what="the ARs of the mails around the failing one",
        )
    finally:
        assert stop_worker(worker) == 0, log.read_text()
    err = log.read_text()
    retried = warnings(err, "database busy or unreachable, polling again later")
    assert len(retried) == 2, err  # two failed polls, the third quarantined the mail
    assert "attempt 1 of 3" in retried[0] and "attempt 2 of 3" in retried[1]
    assert "level=warning" in retried[0] and "traceback=" not in retried[0]
    assert "poll cycle failed" not in err and "usager2@" not in err
    rows = query(pg, "SELECT uid, decision, reasons FROM messages ORDER BY uid")
    assert [(r.uid, r.decision) for r in rows] == [
        (1, "acknowledge"),
        (2, "quarantine"),
        (3, "acknowledge"),
    ]
    assert "quarantined after 3 database errors in a row" in rows[1].reasons
    assert ars_to(smtp_server, "usager2@example.fr") == 0
    assert len(smtp_server.messages) == 2  # one AR each, never two


def test_run_on_a_read_only_database_warns_once_then_records_the_mail_once_writable(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """The IT review's failover: PostgreSQL turned read-only under a running worker. Each
    job logged a whole traceback every cycle (the mail quarantined, its quarantine refused,
    "poll cycle failed", "poll not recorded", the leases, delivery: 340 KB a minute). Now
    each loop says it once, a WARNING naming the reason, its repeats at DEBUG; `mailbot
    status` says the database is read-only; writable again, the mail that came meanwhile
    is acknowledged once, never quarantined."""
    polling = {"interval_seconds": 2, "max_backoff_seconds": 2}
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg, polling=polling)
    imap_user.deliver([citizen(1, "Demande 1")])
    log = tmp_path / "worker.log"
    worker = start_worker(config, log, verbose=True)

    def read_only_lines() -> list[dict[str, str]]:
        lines = [fields(line) for line in log.read_text().splitlines()]
        said = ("error", "reason")  # a repeat names its error only
        return [line for line in lines if any("read-only" in line.get(k, "") for k in said)]

    def repeated(mailbox: str) -> int:
        return sum(
            1
            for line in read_only_lines()
            if line.get("msg") == "database busy or unreachable, polling again later"
            and line.get("mailbox") == mailbox
            and line.get("level") == "debug"
        )

    try:
        wait_until(lambda: ars_to(smtp_server, "usager1@example.fr") == 1, what="the first AR")
        read_only(pg)
        try:
            imap_user.deliver([citizen(2, "Demande 2")])
            wait_until(lambda: repeated("general") >= 3, what="three polls failing again")
            status = cli(config, "status")
            assert status.returncode == 2, status.stdout
            assert "CRITICAL: database read-only: default_transaction_read_only is on" in (
                status.stdout
            )
        finally:
            read_only(pg, on=False)
        wait_until(lambda: ars_to(smtp_server, "usager2@example.fr") == 1, what="the AR")
    finally:
        assert stop_worker(worker) == 0, log.read_text()
    err = log.read_text()
    assert "traceback=" not in err and no_python_traceback(err)
    assert "level=error" not in err, [line for line in err.splitlines() if "level=error" in line]
    said = [line for line in read_only_lines() if line["level"] == "warning"]
    assert {line["msg"] for line in said} >= {
        "database busy or unreachable, polling again later",
        "poll not recorded",
        "delivery failed, trying again later",
    }, err
    # once per loop (each folder's poller, its record, the leases, delivery), not per cycle
    keys = [(line["msg"], line.get("mailbox"), line.get("folder")) for line in said]
    assert len(keys) == len(set(keys)), keys
    general = [line for line in said if line.get("mailbox") == "general"]
    assert "SQLSTATE 25006" in general[0]["reason"]
    assert "works again" in err  # its end said
    rows = query(pg, "SELECT uid, decision FROM messages WHERE mailbox = 'general' ORDER BY uid")
    assert [(r.uid, r.decision) for r in rows] == [(1, "acknowledge"), (2, "acknowledge")]
    assert ars_to(smtp_server, "usager2@example.fr") == 1
    assert query(pg, "SELECT count(*) FROM events WHERE kind = 'passed_over'") == [(0,)]


def test_sqlite_locked_by_another_process_fails_the_batch_and_the_next_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (a backup, sqlite3 at a prompt) holds the write lock past the busy
    timeout (shortened here from 10 s): "database is locked" at the batch's BEGIN
    IMMEDIATE. (In-process: ``poll --once`` on SQLite first registers the worker, a write
    that would meet the lock before any mail is read.)"""
    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "mailbot.db"
    app = build_app(
        ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=f"sqlite:///{path}"
    )
    try:
        assert app.pipeline.start_folder(*WHERE) == 0
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TransientStoreError) as raised:
                app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert str(raised.value) == (
            "mailbox general, folder INBOX: the database could not record a batch now (the"
            " SQLite database is locked by another connection (SQLITE_BUSY)); nothing of it"
            " was committed, the next poll does it again"
        )
        url = f"sqlite:///{path}"
        assert recorded(url) == [] and queued_uids(url) == [] and last_uid(url) == 0
        outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
        assert [o.decision for o in outcomes] == ["acknowledge"] * 3
        assert queued_uids(url) == [1, 2, 3] and last_uid(url) == 3
    finally:
        app.store.close()


def test_a_database_outage_is_logged_once_by_the_delivery_thread_then_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The delivery thread retries every interval while another process holds SQLite's
    write lock: one WARNING naming the reason (no traceback), the repeats at DEBUG, one INFO
    when it works again; and the mail waiting meanwhile leaves once, after."""
    import time

    from mailbot.app.delivery_loop import DeliveryLoop
    from mailbot.core.statuses import OutboxKind

    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "mailbot.db"
    out = tmp_path / "out"
    app = build_app(ROOT / "rules.yaml", FileTransport(out), database=f"sqlite:///{path}")
    caplog.set_level(logging.DEBUG, logger="mailbot.app.delivery_loop")
    loop = DeliveryLoop(app.outbox, interval=0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with app.store.transaction() as tx:
            service = sorted(app.outbox.allowed)[0]  # a configured address: mailbot may write to
            tx.enqueue(None, OutboxKind.DIGEST, service, "", "<d@x>", b"Subject: x\r\n\r\nx")
        holder.execute("BEGIN IMMEDIATE")
        loop.start()
        deadline = time.monotonic() + 30
        while len(_delivery_lines(caplog, "delivery failed")) < 4:
            assert time.monotonic() < deadline, "the delivery thread did not retry"
            time.sleep(0.05)
        holder.execute("ROLLBACK")
        while not _delivery_lines(caplog, "delivery works again"):
            assert time.monotonic() < deadline, "the delivery thread did not recover"
            time.sleep(0.05)
    finally:
        app.outbox.stop.set()
        loop.join(5)
        holder.close()
        app.store.close()
    failed = _delivery_lines(caplog, "delivery failed")
    assert [r.levelno for r in failed[:1]] == [logging.WARNING]
    assert {r.levelno for r in failed[1:]} == {logging.DEBUG}
    assert failed[0].exc_info is None
    assert "locked by another connection" in failed[0].__dict__["reason"]
    (recovered,) = _delivery_lines(caplog, "delivery works again")
    assert recovered.levelno == logging.INFO and recovered.__dict__["failures"] == len(failed)
    assert len(list(out.glob("*.eml"))) == 1


def _delivery_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "mailbot.app.delivery_loop" and r.msg.startswith(message)
    ]


def test_poll_once_from_cron_quarantines_a_mail_failing_three_runs_in_a_row(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """A cron of `poll --once`: each run is a new process, and the count of a mail's
    attempts is the folder's (in the database), not the process's: the third run quarantines
    the failing mail alone, and the folder goes on."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg)
    fail_rows(pg, 2)
    imap_user.deliver([citizen(n, f"Demande {n}") for n in (1, 2, 3)])
    for attempt in (1, 2):
        args = ("--acknowledge-existing",) if attempt == 1 else ()
        result = cli(config, "poll", "--once", *args)
        assert result.returncode == 1, result.stderr
        (line,) = warnings(result.stderr, "mailbox failed, database busy or unreachable")
        assert f"attempt {attempt} of 3" in line, line
        assert query(pg, "SELECT count(*) FROM messages")[0][0] == 0
    third = cli(config, "poll", "--once")
    assert third.returncode == 0, third.stderr
    rows = query(pg, "SELECT uid, decision, reasons FROM messages ORDER BY uid")
    assert [(r.uid, r.decision) for r in rows] == [
        (1, "acknowledge"),
        (2, "quarantine"),
        (3, "acknowledge"),
    ]
    assert "quarantined after 3 database errors in a row" in rows[1].reasons
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert ars_to(smtp_server, "usager3@example.fr") == 1
    assert ars_to(smtp_server, "usager2@example.fr") == 0
    # the count went with the quarantine: nothing left for this folder
    counted = "SELECT transient_uid, transient_count FROM folders WHERE mailbox = 'general'"
    assert query(pg, counted) == [(None, 0)]


def heartbeat_error(pg: str) -> str | None:
    rows = query(pg, "SELECT error FROM heartbeats")
    return rows[0][0] if rows else None


def cycle_until(poller: Any, done: Callable[[], bool], within: float = 60.0) -> None:
    """Short cycles until ``done``: what a test waits for, not how long a poll takes."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        poller.cycle(0.2)


def test_a_poll_failed_by_the_database_is_no_imap_error_and_keeps_the_connection(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """The database failed the poll, not the IMAP server: the folder's "IMAP errors in a
    row" stay as they were (the failure is recorded as the database's), and the poller keeps
    its IMAP connection for the next poll (no reconnection, no LOGIN again)."""
    from mailbot.mail.imap import ImapMailbox
    from mailbot.metrics import Metrics
    from mailbot.worker import Worker

    config_path = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg)
    app = build_app(config_path, FileTransport(tmp_path / "out"), database=pg)
    fail_rows(pg, 2)
    imap_user.deliver([citizen(n, f"Demande {n}") for n in (1, 2, 3)])
    app.pipeline.acknowledge_existing = True
    source = ImapMailbox(app.config.mailboxes["general"].imap, name="general")
    worker = Worker(app.config, app.pipeline, app.outbox, {"general": source})
    poller = worker.pollers["general"]
    worker.metrics = Metrics(app.config, app.store, worker.pollers)
    try:
        # fails, waits its backoff (1 s), fails again; short cycles, so that the third
        # attempt (2 s later) is not made however slow the machine
        cycle_until(poller, lambda: "attempt 2 of 3" in (heartbeat_error(pg) or ""))
        assert poller.reconnects == 0 and poller.connected
        (beat,) = query(pg, "SELECT errors, error FROM heartbeats")
        assert "attempt 2 of 3" in beat.error and beat.errors == 0
        labels = {"mailbox": "general", "folder": "INBOX"}
        counted = worker.metrics.registry.get_sample_value(
            "mailbot_poll_database_errors_total", labels
        )
        assert counted == 2
        # the third attempt, once the backoff's 2 s are over (a cycle started before
        # waits for their end): the mail quarantined, the folder goes on
        decided = "SELECT decision FROM messages ORDER BY uid"
        cycle_until(poller, lambda: len(query(pg, decided)) == 3)
        assert poller.reconnects == 0
        assert query(pg, "SELECT errors FROM heartbeats")[0][0] == 0
        assert [d for (d,) in query(pg, "SELECT decision FROM messages ORDER BY uid")] == [
            "acknowledge",
            "quarantine",
            "acknowledge",
        ]
    finally:
        poller.disconnect_quietly()
        app.store.close()


def test_the_sent_folder_reader_logs_a_database_lock_once_then_its_end(
    tmp_path: Path,
    imap_user: MailUser,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process holds SQLite's write lock past the busy timeout while the Sent
    folder is read: one WARNING naming the reason (no ERROR, no traceback), the repeats at
    DEBUG, one INFO when the database works again; the reply is recorded after."""
    from test_poison import _acknowledged

    from mailbot.app.sent import SentPipeline, signature_check
    from mailbot.mail.imap import ImapMailbox
    from mailbot.mail.poller import MailboxPoller

    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "mailbot.db"
    app = build_app(
        ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=f"sqlite:///{path}"
    )
    with app.store.transaction() as tx:
        tx.insert_message(_acknowledged())
    imap_user.create_folder("Sent")
    imap_user.append(
        b"From: agent@seine-maritime.gouv.fr\r\nTo: usager1@example.fr\r\n"
        b"Subject: Re: votre demande [SM-2026-000001]\r\n"
        b"In-Reply-To: <poison-1@example.fr>\r\n"
        b"Message-ID: <reply-1@seine-maritime.gouv.fr>\r\n\r\nBonjour.\r\n",
        folder="Sent",
    )
    sent = SentPipeline(app.config, app.store, signature_check)
    source = ImapMailbox(imap_user.imap_config("Sent"), name="general")
    poller = MailboxPoller("general", "Sent", source, sent, app.config.polling, lambda: None)
    caplog.set_level(logging.DEBUG, logger="mailbot.mail.poller")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        poller.cycle(3.5)  # fails, 1 s, fails, 2 s, fails
        holder.execute("ROLLBACK")
        poller.cycle(5.0)  # past the backoff's 4 s, which a cycle started before waits out
    finally:
        holder.close()
        poller.disconnect_quietly()
        app.store.close()
    lines = [r for r in caplog.records if r.name == "mailbot.mail.poller"]
    assert not [r for r in lines if r.levelno >= logging.ERROR or r.exc_info]
    failed = [r for r in lines if r.msg == "database busy or unreachable, polling again later"]
    assert len(failed) >= 2
    assert [r.levelno for r in failed[:1]] == [logging.WARNING]
    assert {r.levelno for r in failed[1:]} == {logging.DEBUG}
    assert "locked by another connection" in failed[0].__dict__["reason"]
    assert failed[0].__dict__["mailbox"] == "general"
    (recovered,) = [r for r in lines if r.msg == "database works again"]
    assert recovered.levelno == logging.INFO and recovered.__dict__["failures"] == len(failed)
    assert query(f"sqlite:///{path}", "SELECT count(*) FROM events WHERE kind = 'reply'") == [(1,)]


def test_quarantine_retry_says_the_database_failed_not_that_the_mail_was_not_found(
    pg: str, tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """A retry the database could not record just then is no mail "not found": the
    summary says the database failed and that the retry is to be asked again."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=pg)
    refuse_rows(pg, 1)  # the mail's own error: quarantined
    imap_user.deliver([citizen(1, "Demande 1")])
    assert cli(config, "poll", "--once", "--acknowledge-existing").returncode == 0
    ((pk,),) = query(pg, "SELECT id FROM messages WHERE decision = 'quarantine'")
    allow_rows(pg)
    fail_rows(pg, 1, on="UPDATE")
    result = cli(config, "quarantine", "retry", str(pk))
    assert result.returncode == 1
    assert f"#{pk}" in result.stderr and "stays quarantined as it was" in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "0 not found" in summary, summary
    assert "1 not retried (the database could not record it now: retry later)" in summary
    heal(pg)
    again = cli(config, "quarantine", "retry", str(pk))
    assert again.returncode == 0, again.stderr
    assert ars_to(smtp_server, "usager1@example.fr") == 1


def test_poll_once_meeting_a_sqlite_lock_before_the_intake_fails_with_a_warning(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another process holds SQLite's write lock past the busy timeout when `poll --once`
    registers its worker (before any mail is read): the poll fails as for any transient
    database error (a WARNING naming the reason, exit 1), no CRITICAL nor traceback; the
    next run answers the mail, once."""
    from test_poison import inproc

    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "mailbot.db"
    database = f"sqlite:///{path}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    Store(database).close()  # the schema first
    imap_user.deliver([citizen(1, "Demande 1")])
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = inproc(capsys, config, "poll", "--once", "--acknowledge-existing")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1, result.stderr
    assert "level=critical" not in result.stderr and "traceback=" not in result.stderr
    (line,) = warnings(result.stderr, "poll failed, database busy or unreachable")
    assert "level=warning" in line and "locked by another connection" in line
    assert query(database, "SELECT count(*) FROM messages") == [(0,)]
    again = inproc(capsys, config, "poll", "--once", "--acknowledge-existing")
    assert again.returncode == 0, again.stderr
    assert ars_to(smtp_server, "usager1@example.fr") == 1


def test_run_meeting_a_sqlite_lock_at_its_registration_tries_again_then_works(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`run` starting while another process holds SQLite's write lock past the busy
    timeout: its registration is tried again (one WARNING with the reason, the repeats at
    DEBUG), never a crash; once the lock is gone it registers and answers the mail."""
    import threading

    from mailbot.app.context import app_from_config
    from mailbot.config import load_config
    from mailbot.worker import make_worker

    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "mailbot.db"
    database = f"sqlite:///{path}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    imap_user.deliver([citizen(1, "Demande 1")])
    app = app_from_config(load_config(config), acknowledge_existing=True)
    worker = make_worker(app)
    caplog.set_level(logging.DEBUG, logger="mailbot.worker")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()

    def tries_failed() -> int:
        return sum(r.getMessage().startswith("worker registration failed") for r in caplog.records)

    try:
        # Two tries refused, then the lock let go: the schedule's "at 0, 1 and 3 s" is the
        # worker's, not the test's clock's (a loaded machine starts the thread late).
        wait_until(lambda: tries_failed() >= 2, what="two refused registrations")
        holder.execute("ROLLBACK")
        wait_until(lambda: ars_to(smtp_server, "usager1@example.fr") == 1, what="the AR")
    finally:
        worker.stop.set()
        thread.join(30)
        holder.close()
        app.close()
    assert not thread.is_alive()
    lines = [r for r in caplog.records if r.name == "mailbot.worker"]
    assert not [r for r in lines if r.levelno >= logging.ERROR or r.exc_info]
    failed = [r for r in lines if r.msg.startswith("worker registration failed")]
    assert len(failed) >= 2 and failed[0].levelno == logging.WARNING
    assert {r.levelno for r in failed[1:]} == {logging.DEBUG}
    assert "locked by another connection" in failed[0].__dict__["reason"]
    assert [r.levelno for r in lines if r.msg == "worker registered"] == [logging.INFO]


def test_run_stopped_before_it_could_register_marks_no_send_uncertain(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run` kept from registering (SQLite locked from outside) is stopped during its
    backoff, while it holds no sole-worker lock: another process (a `poll --once` from
    cron) took that lock meanwhile and is sending. The stopped `run` started nothing, so
    it must not recover "interrupted" sends either: that other process's mail, leaving
    now, was marked 'uncertain' (its 'sent' then never written)."""
    import threading
    import time

    from mailbot.app.context import app_from_config
    from mailbot.config import load_config
    from mailbot.core.statuses import OutboxKind, OutboxStatus
    from mailbot.store.cluster import SoleWorkerLock
    from mailbot.worker import make_worker

    monkeypatch.setattr(store_engines, "SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "mailbot.db"
    database = f"sqlite:///{path}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    app = app_from_config(load_config(config), acknowledge_existing=True)
    with app.store.transaction() as tx:  # the other process's send, in flight
        item = tx.enqueue(None, OutboxKind.DIGEST, "svc@example.fr", "", "<o@x>", b"x")
        assert tx.claim_outbox(item, 1, "cron:poll-once")
    worker = make_worker(app)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    other = SoleWorkerLock(path)
    try:
        time.sleep(1.5)  # tries at 0 and 1 s, the next at 3 s
        # The other process, between two tries: under load a try can come late and still
        # hold the lock at 1.5 s; take it as soon as that try has let it go.
        deadline = time.monotonic() + 10
        while True:
            try:
                other.acquire()
                break
            except ClusterError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        holder.execute("ROLLBACK")
        worker.stop.set()
        thread.join(30)
    finally:
        worker.stop.set()
        other.release()
        holder.close()
        app.close()
    assert not thread.is_alive()
    assert query(database, f"SELECT status FROM outbox WHERE id = {item}") == [
        (OutboxStatus.SENDING,)
    ]
    assert query(database, "SELECT count(*) FROM events WHERE kind = 'send_uncertain'") == [(0,)]
