"""Restoring a backup must not send ARs again: `mailbot restored --acknowledged-until`.

A restored database remembers each folder's UID mark as it was at the backup: the mail
acknowledged since is read again. With the moment the lost database last worked, that
mail is recorded without an AR (``ar_status`` restored), later mail gets its AR, and the
mail still queued in the backup is settled uncertain. Against Dovecot and aiosmtpd, on
SQLite (a `mailbot backup` file copied back) and PostgreSQL (pg_dump, pg_restore into a
new database); the INTERNALDATEs are the server's own (no clock faked), and only the mail
that arrives after the bound is dated by the test, a few seconds after it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pg import _bin, fresh_database
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, etrangers_user, poll, write_config

from mailbot.app.cluster import this_worker
from mailbot.app.delivery import Outbox
from mailbot.cli import main
from mailbot.config import OutboxConfig
from mailbot.mail.smtp import SmtpTransport
from mailbot.store import Store
from mailbot.store.cluster import Cluster, sole_worker_lock

__all__ = ["etrangers_user"]  # a fixture of test_e2e


@dataclass
class Site:
    """One deployment under test: its rules.yaml, mailbox, SMTP sink and database URL."""

    tmp: Path
    general: MailUser
    etrangers: MailUser
    smtp: SmtpServer
    url: str
    config: Path

    def run(self, *args: str) -> int:
        return main(["--config", str(self.config), "-q", *args])

    def backup(self) -> Path:
        """`mailbot backup` (SQLite), or pg_dump in its custom format (PostgreSQL)."""
        if self.url.startswith("sqlite"):
            copy = self.tmp / "backup.db"
            assert self.run("backup", str(copy)) == 0
            return copy
        dump = self.tmp / "mailbot.dump"
        subprocess.run(
            [_bin("pg_dump"), "--format=custom", f"--file={dump}", libpq(self.url)], check=True
        )
        return dump

    def restore(self, backup: Path, postgres: str | None) -> None:
        """docs/deploy.md, "Restoring": SQLite, the WAL and SHM deleted, the copy put back;
        PostgreSQL, pg_restore into a new, empty database, which ``database:`` names."""
        if self.url.startswith("sqlite"):
            database = Path(sa.make_url(self.url).database or "")
            for extra in ("-wal", "-shm"):
                database.with_name(database.name + extra).unlink(missing_ok=True)
            shutil.copyfile(backup, database)
            return
        assert postgres is not None
        self.url = fresh_database(postgres, "r", str(self.tmp))
        subprocess.run(
            [_bin("pg_restore"), "--no-owner", f"--dbname={libpq(self.url)}", str(backup)],
            check=True,
        )
        self.config = write_config(
            self.tmp, self.general, self.etrangers, self.smtp, database=self.url
        )

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(query))]
        finally:
            engine.dispose()


def libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def site(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    database: str,
) -> Site:
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server, database=database)
    return Site(tmp_path, imap_user, etrangers_user, smtp_server, database, config)


def postgres_of(site: Site, request: pytest.FixtureRequest) -> str | None:
    if site.url.startswith("sqlite"):
        return None
    return str(request.getfixturevalue("postgres"))


def recipients(smtp: SmtpServer) -> list[str]:
    return [r.rcpt_tos[0] for r in smtp.messages]


def acknowledged_after_a_backup(site: Site) -> tuple[Path, datetime]:
    """One mail acknowledged, the backup, three more acknowledged: the failure's moment
    is after their ARs left (returned with the backup)."""
    site.general.append(citizen_mail(1, sender="avant@example.fr"))
    assert poll(site.config, acknowledge_existing=True) == 0
    assert recipients(site.smtp) == ["avant@example.fr"]
    backup = site.backup()
    for n in (2, 3, 4):
        site.general.append(citizen_mail(n, sender=f"apres{n}@example.fr"))
    assert poll(site.config) == 0
    assert len(site.smtp.messages) == 4
    return backup, datetime.now(UTC)


def test_a_restored_database_never_acknowledges_again_the_mail_of_before_the_failure(
    site: Site, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 mails acknowledged after the backup, the backup restored: `restored` with the
    failure's moment, then a poll: no second AR, the 3 recorded without one (and shown as
    such); a 4th mail that arrived after the bound gets its AR. Running it again changes
    nothing and counts the 3."""
    backup, failed_at = acknowledged_after_a_backup(site)
    site.restore(backup, postgres_of(site, request))
    assert site.rows("SELECT count(*) FROM messages") == [(1,)]
    # Arrived after the failure, before the restore: the lost database never saw it.
    site.general.append(
        citizen_mail(5, sender="pendant@example.fr"), internaldate=failed_at + timedelta(seconds=2)
    )

    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", failed_at.isoformat()) == 0
    out = capsys.readouterr().out
    assert "general/INBOX: mail after UID 1 that arrived before the bound" in out
    assert "0 recorded so far" in out and "gets none" in out

    assert poll(site.config) == 0
    assert recipients(site.smtp)[4:] == ["pendant@example.fr"]
    assert len(site.smtp.messages) == 5
    rows = site.rows("SELECT uid, ar_status, reference IS NOT NULL FROM messages ORDER BY uid")
    assert rows == [
        (1, "sent", True),
        (2, "restored", True),
        (3, "restored", True),
        (4, "restored", True),
        (5, "sent", True),
    ]
    assert site.rows("SELECT count(*) FROM outbox") == [(2,)]  # mail 1's and 5's ARs
    presumed = site.rows("SELECT count(*) FROM events WHERE kind = 'ar_presumed_sent'")
    assert presumed == [(3,)]
    query = "SELECT detail FROM events WHERE kind = 'restored' ORDER BY id"
    details = [d for (d,) in site.rows(query) if d.startswith("general/")]
    assert len(details) == 2
    assert "restored, acknowledged until" in details[0] and "after UID 1" in details[0]
    assert "general/INBOX: 3 mail(s) that arrived before" in details[1]
    # The folder read whole: the bound is gone, the next mail is acknowledged as usual.
    assert site.rows("SELECT restored_before FROM folders WHERE mailbox = 'general'") == [(None,)]

    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", failed_at.isoformat()) == 0
    out = capsys.readouterr().out
    assert "general/INBOX (already marked): " in out and "3 recorded so far" in out
    assert len(site.rows(query)) == 3  # and the etrangers folder's, marked once
    assert poll(site.config) == 0
    assert len(site.smtp.messages) == 5

    capsys.readouterr()
    site.run("status")
    assert "restored: 3 message(s) recorded after a restore without AR" in capsys.readouterr().out


def test_running_it_twice_before_the_poll_is_harmless(
    site: Site, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    backup, failed_at = acknowledged_after_a_backup(site)
    site.restore(backup, postgres_of(site, request))
    until = failed_at.isoformat()
    assert site.run("restored", "--acknowledged-until", until) == 0
    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", until) == 0
    assert "general/INBOX (already marked)" in capsys.readouterr().out
    assert site.rows("SELECT count(*) FROM events WHERE kind = 'restored'") == [(2,)]  # a folder
    assert poll(site.config) == 0
    assert len(site.smtp.messages) == 4
    assert site.rows("SELECT count(*) FROM messages WHERE ar_status = 'restored'") == [(3,)]


def test_the_mail_still_queued_in_the_backup_is_never_sent_again(
    site: Site, request: pytest.FixtureRequest
) -> None:
    """An AR deferred by the SMTP server when the backup was made, sent by the lost
    database afterwards: restored, it is settled uncertain, never sent a second time."""
    site.smtp.fail_next(1)
    site.general.append(citizen_mail(1, sender="differe@example.fr"))
    assert poll(site.config, acknowledge_existing=True) == 0
    assert site.smtp.messages == []
    assert site.rows("SELECT status FROM outbox") == [("pending",)]
    backup = site.backup()
    assert deliver_an_hour_later(site) == 1  # the lost database sends it once due
    assert recipients(site.smtp) == ["differe@example.fr"]
    site.restore(backup, postgres_of(site, request))
    assert site.run("restored", "--acknowledged-until", datetime.now(UTC).isoformat()) == 0
    assert site.rows("SELECT status FROM outbox") == [("uncertain",)]
    assert site.rows("SELECT ar_status FROM messages") == [("uncertain",)]
    kinds = [k for (k,) in site.rows("SELECT kind FROM events ORDER BY id")]
    assert kinds[-1] == "send_uncertain"
    assert poll(site.config) == 0
    assert deliver_an_hour_later(site) == 0  # due by then: still never sent again
    assert len(site.smtp.messages) == 1


def deliver_an_hour_later(site: Site) -> int:
    """A delivery an hour from now (the deferred AR's retry is due), as the worker's."""
    store = Store(site.url)
    try:
        later = datetime.now(UTC) + timedelta(hours=1)
        transport = SmtpTransport(site.smtp.smtp_config())
        outbox = Outbox(store, transport, OutboxConfig(), set(), clock=lambda: later)
        return outbox.deliver_due().sent
    finally:
        store.close()


def test_refused_while_a_worker_runs(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite: the sole-worker lock a worker holds; PostgreSQL: a live worker's row."""
    site.general.append(citizen_mail(1))
    assert poll(site.config, acknowledge_existing=True) == 0
    store = Store(site.url)
    lock = sole_worker_lock(store)
    try:
        if lock is not None:
            lock.acquire()
        else:
            Cluster(store, this_worker("test:worker", store), lease_seconds=600).register()
        capsys.readouterr()
        until = datetime.now(UTC).isoformat()
        assert site.run("restored", "--acknowledged-until", until) == 2
        err = capsys.readouterr().err
        assert "cannot mark the database" in err and "Stop every worker" in err
    finally:
        if lock is not None:
            lock.release()
        store.close()
    assert site.rows("SELECT restored_before FROM folders") == [(None,), (None,)]


def test_a_moment_in_the_future_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """Mail arriving until then would get no AR at all."""
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert site.run("restored", "--acknowledged-until", until) == 2
    assert "is in the future" in capsys.readouterr().err


def test_a_moment_without_offset_is_in_the_configured_timezone(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--acknowledged-until 2026-03-14T08:00` is Paris time (rules.yaml's timezone), as
    `outbox retry --since` reads it, and printed back in it."""
    store = Store(site.url)
    try:
        with store.transaction() as tx:  # a folder followed, never read whole
            tx.save_folder_state("general", "INBOX", 7, 0)
    finally:
        store.close()
    paris = ZoneInfo("Europe/Paris")
    now = datetime.now(paris).replace(second=0, microsecond=0)
    # In the future in Paris; read as UTC it would be an hour or two ago, and taken.
    ahead = (now + timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    assert site.run("restored", "--acknowledged-until", ahead) == 2
    until = now - timedelta(minutes=1)
    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", until.replace(tzinfo=None).isoformat()) == 0
    assert f"before {until:%Y-%m-%d %H:%M:%S} (Europe/Paris) gets no AR" in capsys.readouterr().out
    store = Store(site.url)
    try:
        with store.transaction() as tx:
            bounds = tx.resync_bounds("general", "INBOX", 7)
    finally:
        store.close()
    assert bounds.restored_before == until
