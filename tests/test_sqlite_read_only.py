"""A SQLite database that refuses writes (SQLITE_READONLY) is named, not a traceback.

In production: a ``-wal``/``-shm`` left owned by root by a command run as root while the
worker runs as its own user, a mode 0444, a read-only remount. Every poll failed with a
traceback ("unexpected error", `run` exiting), `mailbot status` said OK and `check
--connect` ok. Now: one ERROR per cycle naming the file and what to check, no mail's
attempt counted (nothing quarantined nor passed over), status CRITICAL, check FAILED; once
mended, the same worker records the mail, answered once.

How the tests make the file refuse writes: they run as root, whom a mode 0444 does not
stop, and a read-only remount needs a mount of its own. ``chattr +i`` (an immutable
attribute: ext4, and tmpfs since Linux 6.0, where conftest puts the tests' files) makes
``open(O_RDWR)`` fail for root too, so SQLite falls back to opening the file read-only
and a write meets SQLITE_READONLY, through the product's own open (``Store``), exactly as
a worker whose user may not write the file meets it. ``PRAGMA query_only`` or a
``?mode=ro`` URI would not be the product's open; a subprocess stripped of
CAP_DAC_OVERRIDE would, but only for a command run apart. What ``sqlite_refusal`` reads
from the files (owner, mode) is checked on files chowned to another user, with no write
needed.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg.errors
import pytest
import sqlalchemy as sa
from poison import citizen
from servers import DovecotServer, MailUser, SmtpServer
from test_batch import ROOT, WHERE, last_uid, mails, recorded
from test_e2e import write_config
from test_logs import fields
from test_poison import (
    ars_to,
    inproc,
    no_python_traceback,
    start_worker,
    stop_worker,
    wait_until,
)
from test_transient import queued_uids, wrapped

from mailbot.app import mail_failures
from mailbot.app.context import build_app
from mailbot.errors import TransientStoreError
from mailbot.mail.smtp import FileTransport
from mailbot.store import Store
from mailbot.store.errors import (
    is_lasting,
    is_read_only,
    is_transient,
    sqlite_refusal,
    transient_reason,
)

CHECK = "check that the worker's user owns the database file and its -wal and -shm files"


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``paths`` refuse writes, root's too (``chattr +i``), until the block ends."""
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def created(path: Path) -> str:
    """A database at this mailbot's schema, its folder row written; its URL."""
    url = f"sqlite:///{path}"
    app = build_app(ROOT / "rules.yaml", FileTransport(path.parent / "out"), database=url)
    try:
        assert app.pipeline.start_folder(*WHERE) == 0
    finally:
        app.store.close()
    return url


def readonly_error(path: Path) -> BaseException:
    """The error the product's own Store meets writing to ``path`` made immutable."""
    store = Store(f"sqlite:///{path}")
    try:
        with immutable(path):
            store.engine.dispose()  # connections opened before kept their writable handle
            with pytest.raises(sa.exc.OperationalError) as raised, store.engine.begin() as conn:
                conn.execute(sa.text("UPDATE folders SET last_uid = last_uid"))
    finally:
        store.close()
    return raised.value


def test_sqlite_readonly_is_read_only_transient_lasting_and_names_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailbot.db"
    created(path)
    error = readonly_error(path)
    assert isinstance(error.orig, sqlite3.OperationalError)
    assert error.orig.sqlite_errorname == "SQLITE_READONLY"
    assert is_transient(error) and is_read_only(error) and is_lasting(error)
    reason = transient_reason(error)
    assert reason is not None
    assert reason.startswith(
        f"the SQLite database {path.resolve()} refuses writes (SQLITE_READONLY"
    )
    assert CHECK in reason and "mounted read-write" in reason
    chained = TransientStoreError("the database could not register this worker now")
    chained.__cause__ = error
    assert is_lasting(chained) and is_read_only(chained)
    # PostgreSQL's read-only (a standby) passes by itself: not lasting
    standby = wrapped(psycopg.errors.lookup("25006")("cannot execute INSERT"))
    assert is_read_only(standby) and not is_lasting(standby)


def test_sqlite_refusal_names_a_wal_left_to_another_user_and_a_read_only_mode(
    tmp_path: Path,
) -> None:
    """What `mailbot status` reads from the files, whoever runs it: the database owned by
    the worker's user, its -shm by root (a command run as root), or a mode 0444."""
    nobody = pwd.getpwnam("nobody")
    path = tmp_path / "mailbot.db"
    path.write_bytes(b"")
    shm = tmp_path / "mailbot.db-shm"
    shm.write_bytes(b"")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    assert sqlite_refusal(path) == (
        "mailbot.db-shm belongs to root (mode 0644), not to nobody, the owner of mailbot.db"
    )
    os.chown(shm, nobody.pw_uid, nobody.pw_gid)
    assert sqlite_refusal(path) is None
    path.chmod(0o444)
    assert sqlite_refusal(path) == "mailbot.db is read-only (mode 0444)"
    path.chmod(0o644)
    assert sqlite_refusal(tmp_path / "missing.db") is None


def test_a_read_only_sqlite_file_fails_the_poll_counts_no_attempt_and_heals(
    tmp_path: Path,
) -> None:
    """As PostgreSQL's 25006: the poll fails, transient, and no attempt is counted against
    the mail at the head of the folder, however many polls fail; the files mended, the
    same App (its pooled connections had opened the file read-only) records every mail."""
    path = tmp_path / "mailbot.db"
    url = created(path)
    with immutable(path):
        app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=url)
        try:
            for _ in range(mail_failures.TRANSIENT_ATTEMPTS + 1):
                with pytest.raises(TransientStoreError) as raised:
                    app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
                message = str(raised.value)
                assert f"the SQLite database {path.resolve()} refuses writes" in message
                assert CHECK in message and "attempt" not in message
            assert app.pipeline.transient_failures == {}
        except BaseException:
            app.store.close()
            raise
    try:
        assert recorded(url) == [] and queued_uids(url) == [] and last_uid(url) == 0
        outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
        assert [o.decision for o in outcomes] == ["acknowledge"] * 3
        assert queued_uids(url) == [1, 2, 3]
    finally:
        app.store.close()


@pytest.fixture
def etrangers(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def test_poll_status_and_check_name_a_read_only_sqlite_file(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server)
    assert inproc(capsys, config, "poll", "--once").returncode == 0
    imap_user.deliver([citizen(1, "Demande 1")])
    path = (tmp_path / "mailbot.db").resolve()
    with immutable(path):
        result = inproc(capsys, config, "poll", "--once")
        assert result.returncode == 1, result.stderr
        assert no_python_traceback(result.stderr) and "traceback=" not in result.stderr
        (line,) = [fields(line) for line in result.stderr.splitlines() if "level=" in line]
        assert line["level"] == "error", line
        assert f"the SQLite database {path} refuses writes (SQLITE_READONLY" in line["error"]
        assert CHECK in line["error"]

        status = inproc(capsys, config, "status")
        assert status.returncode == 2, status.stdout
        assert (
            f"CRITICAL: database read-only: the SQLite database {path} refuses writes:"
            " mailbot.db cannot be written" in status.stdout
        ), status.stdout

        check = inproc(capsys, config, "check", "--connect")
        assert check.returncode == 1, check.stdout
        (database,) = [x for x in check.stdout.splitlines() if x.startswith("database ")]
        assert "FAILED" in database and "read-only: the SQLite database" in database
    assert ars_to(smtp_server, "usager1@example.fr") == 0
    assert inproc(capsys, config, "poll", "--once").returncode == 0
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert inproc(capsys, config, "status").returncode == 0


def test_run_on_a_shm_left_read_only_says_it_each_try_then_answers_once_mended(
    tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """The ``-wal`` and ``-shm`` a crashed command left and that the worker may not write:
    `run` exited with a traceback at its registration. Now it tries again, one ERROR each
    try naming the file, and registers once they are mended: the mail that waited on the
    server is acknowledged once."""
    polling = {"interval_seconds": 2, "max_backoff_seconds": 1}
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, polling=polling)
    path = tmp_path / "mailbot.db"
    created(path)
    leave_wal_and_shm(path)
    imap_user.deliver([citizen(1, "Demande 1")])
    log = tmp_path / "worker.log"

    def errors() -> list[dict[str, str]]:
        lines = [fields(line) for line in log.read_text().splitlines() if "level=" in line]
        return [line for line in lines if line["level"] == "error"]

    wal, shm = path.with_name("mailbot.db-wal"), path.with_name("mailbot.db-shm")
    with immutable(wal, shm):
        worker = start_worker(config, log)
        try:
            wait_until(lambda: len(errors()) >= 2, what="two tries, each an ERROR")
        except BaseException:
            stop_worker(worker)
            raise
    try:
        wait_until(lambda: ars_to(smtp_server, "usager1@example.fr") == 1, what="the AR")
    finally:
        assert stop_worker(worker) == 0, log.read_text()
    err = log.read_text()
    assert "traceback=" not in err and no_python_traceback(err)
    said = errors()
    assert said and all(line["msg"].startswith("worker registration failed") for line in said)
    assert all("refuses writes (SQLITE_READONLY: mailbot.db-" in line["reason"] for line in said)
    assert "worker registered" in err
    assert ars_to(smtp_server, "usager1@example.fr") == 1


def leave_wal_and_shm(path: Path) -> None:
    """The ``-wal`` (with a commit not checkpointed) and ``-shm`` a process killed while it
    had the database open leaves behind."""
    code = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('UPDATE folders SET last_uid = last_uid')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert path.with_name("mailbot.db-wal").exists() and path.with_name("mailbot.db-shm").exists()
