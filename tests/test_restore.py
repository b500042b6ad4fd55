"""Restoring a backup must not send ARs again: `mailbot restored --acknowledged-until`.

A restored database remembers each folder's UID mark as it was at the backup: the mail
acknowledged since is read again. With the moment the lost database last worked, that
mail is recorded without an AR (``ar_status`` restored), later mail gets its AR, and the
mail still queued in the backup is settled uncertain. Against Dovecot and aiosmtpd, on
SQLite (a `mailbot backup` file copied back) and PostgreSQL (pg_dump, pg_restore into a
new database); the INTERNALDATEs are the server's own (no clock faked), and only the mail
that arrives after the bound is dated by the test, a few seconds after it."""

from __future__ import annotations

import email
import email.policy
import logging
import re
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
from scripted import ScriptedSmtpServer
from servers import MailUser, SmtpServer
from test_delivery import FORWARD, enqueue_mixed, forward_outbox, kinds_and_statuses
from test_e2e import citizen_mail, etrangers_user, poll, write_config

from mailbot.app.cluster import this_worker
from mailbot.app.delivery import Outbox
from mailbot.app.restore import SKIP_REFERENCES, restored
from mailbot.cli import main
from mailbot.config import OutboxConfig
from mailbot.mail.smtp import SmtpTransport
from mailbot.store import Store, utcnow
from mailbot.store.cluster import Cluster, sole_worker_lock
from mailbot.store.schema import outbox as outbox_table

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
    assert "restored, acknowledged until" in details[0] and "after UID 1" in details[0]
    # One event per part of the poll that recorded some: how the intake cut its batch
    # into parts depends on timing (under load, 1 then 2); the 3 are counted once.
    counted = [
        re.match(r"general/INBOX: (\d+) mail\(s\) that arrived before", d) for d in details[1:]
    ]
    assert all(counted) and sum(int(m.group(1)) for m in counted if m) == 3, details
    # The folder read whole: the bound is gone, the next mail is acknowledged as usual.
    assert site.rows("SELECT restored_before FROM folders WHERE mailbox = 'general'") == [(None,)]

    events = site.rows(query)
    assert len(events) == len(details) + 2  # and the etrangers folder's and the counters'
    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", failed_at.isoformat()) == 0
    out = capsys.readouterr().out
    assert "general/INBOX (already marked): " in out and "3 recorded so far" in out
    assert site.rows(query) == events  # marked once: the run again wrote no event
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
    # One a folder, one for the reference counters.
    assert site.rows("SELECT count(*) FROM events WHERE kind = 'restored'") == [(3,)]
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


def ar_references(smtp: SmtpServer) -> dict[str, str]:
    """The reference each AR at the sink gave, by recipient (``[SM-2026-000123]`` in its
    subject)."""
    found = {}
    for item in smtp.messages:
        msg = email.message_from_bytes(item.raw, policy=email.policy.default)
        found[item.rcpt_tos[0]] = str(msg["Subject"]).split("[", 1)[1].split("]", 1)[0]
    return found


def series_and_number(reference: str) -> tuple[str, int]:
    """``SM-2026-000123``: ``("SM-2026", 123)``; numbers compare within a series only."""
    series, _, number = reference.rpartition("-")
    return series, int(number)


def test_no_reference_the_lost_database_gave_is_given_again(
    site: Site, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lost database numbered 3 mails after the backup; an agent moved one of them out
    of the inbox before the restore. The restored counter skips past them: the 2 read
    again and a new mail get references above all the lost ones (without the skip, the
    new mail got the lost database's last one), and the citizen whose mail was moved,
    writing again with the reference of its AR, is new mail (an AR), not a relance of
    someone else's message. A second run does not move the counters again."""
    backup, failed_at = acknowledged_after_a_backup(site)
    lost = ar_references(site.smtp)
    assert len(set(lost.values())) == 4
    with site.general.connect() as client:  # an agent files mail 3 away
        client.create_folder("Archives")
        client.select_folder("INBOX")
        (uid,) = client.search(["FROM", "apres3@example.fr"])
        client.move([uid], "Archives")
    site.restore(backup, postgres_of(site, request))
    site.general.append(
        citizen_mail(5, sender="pendant@example.fr"), internaldate=failed_at + timedelta(seconds=2)
    )

    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", failed_at.isoformat()) == 0
    out = capsys.readouterr().out

    assert poll(site.config) == 0
    assert recipients(site.smtp)[4:] == ["pendant@example.fr"]
    query = "SELECT sender, ar_status, reference FROM messages WHERE uid > 1 ORDER BY uid"
    rows = site.rows(query)
    assert [row[:2] for row in rows] == [
        ("apres2@example.fr", "restored"),
        ("apres4@example.fr", "restored"),
        ("pendant@example.fr", "sent"),
    ]
    new = ar_references(site.smtp)["pendant@example.fr"]
    assert new == rows[2][2]
    assert new not in lost.values(), f"the new mail got {new}, given by the lost database"
    highest: dict[str, int] = {}
    for reference in lost.values():
        lost_series, number = series_and_number(reference)
        highest[lost_series] = max(number, highest.get(lost_series, 0))
    for _, _, reference in rows:
        given_series, number = series_and_number(reference)
        assert number > highest.get(given_series, 0), (reference, sorted(lost.values()))

    series, before = series_and_number(lost["avant@example.fr"])  # numbered before the backup
    assert f"references {series}: next {series}-{before + SKIP_REFERENCES + 1:06d}" in out

    # The moved mail's citizen writes again, quoting the reference of the lost AR.
    again = citizen_mail(
        6,
        sender="apres3@example.fr",
        subject=f"Re: Accusé de réception [{lost['apres3@example.fr']}] : Demande",
    )
    site.general.append(again)
    assert poll(site.config) == 0
    assert recipients(site.smtp)[5:] == ["apres3@example.fr"]
    (row,) = site.rows("SELECT decision, parent_id, reference FROM messages WHERE uid = 6")
    assert row[:2] == ("acknowledge", None)
    given_series, number = series_and_number(row[2])
    assert number > highest.get(given_series, 0)

    counters = "SELECT name, value FROM counters WHERE name LIKE 'reference-%' ORDER BY name"
    numbered = site.rows(counters)
    capsys.readouterr()
    assert site.run("restored", "--acknowledged-until", failed_at.isoformat()) == 0
    out = capsys.readouterr().out
    assert f"references {series} (already moved by a run with this moment): next" in out
    assert site.rows(counters) == numbered


def test_a_reference_the_database_never_gave_is_new_mail(site: Site) -> None:
    """A subject quoting a reference of ours that this database does not know (another
    database's: a restore's lost one) threads nothing: the mail gets its AR."""
    site.general.append(citizen_mail(1, sender="avant@example.fr"))
    assert poll(site.config, acknowledge_existing=True) == 0
    (given,) = ar_references(site.smtp).values()
    series, number = series_and_number(given)
    unknown = f"{series}-{number + 5:06d}"
    site.general.append(citizen_mail(2, sender="autre@example.fr", subject=f"Dossier {unknown}"))
    assert poll(site.config) == 0
    assert recipients(site.smtp) == ["avant@example.fr", "autre@example.fr"]
    query = "SELECT decision, parent_id, ar_status, reference FROM messages WHERE uid = 2"
    (row,) = site.rows(query)
    assert row == ("acknowledge", None, "sent", ar_references(site.smtp)["autre@example.fr"])
    assert row[3] != unknown


def test_the_counters_of_a_december_backup_restored_in_january(database: str) -> None:
    """Every reference counter moves (an older prefix's too), and the new year's, which
    the backup does not hold, is made past the skip: the lost database gave its first
    numbers in January. The same moment again, in another offset, moves nothing."""
    paris = ZoneInfo("Europe/Paris")
    store = Store(database)
    try:
        with store.transaction() as tx:
            for _ in range(3):
                tx.next_reference("SM", 2025)
            tx.next_reference("OLD", 2024)
        until = datetime(2026, 1, 5, 9, 0, tzinfo=paris)
        now = datetime(2026, 1, 6, 10, 0, tzinfo=paris)
        for moment in (until, until.astimezone(UTC)):
            done = restored(
                store,
                moment,
                prefix="SM",
                timezone="Europe/Paris",
                skip_references=500,
                clock=lambda: now,
            )
            assert done.counters_moved is (moment is until)
            assert [(c.series, c.next_reference) for c in done.counters] == [
                ("OLD-2024", "OLD-2024-000502"),
                ("SM-2025", "SM-2025-000504"),
                ("SM-2026", "SM-2026-000501"),
            ]
        with store.transaction() as tx:
            assert tx.next_reference("SM", 2026) == "SM-2026-000501"
    finally:
        store.close()


def test_a_skip_of_no_number_is_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    until = datetime.now(UTC).isoformat()
    assert site.run("restored", "--acknowledged-until", until, "--skip-references", "0") == 2
    assert "must be 1 or more" in capsys.readouterr().err


def test_internal_mail_queued_in_the_backup_leaves_again(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The restored database had an AR and two forwards queued, one of them leaving: any
    may have left from the lost database. The AR is uncertain, never sent again, as
    before; the forwards leave (the one 'sending' back to 'pending', its bytes kept), each
    a WARNING: a second copy in a service's mailbox is harmless, a forward lost is not. A
    run again changes nothing. Before: the forwards uncertain, their bytes deleted."""
    store = Store(database)
    try:
        enqueue_mixed(store, "aff")
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(outbox_table)
                .where(outbox_table.c.id == 3)
                .values(status="sending", claimed_by="lost:1:ab", claimed_at=utcnow())
            )
        until = utcnow()
        for run in range(2):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="mailbot.app.restore"):
                done = restored(store, until, prefix="SM", timezone="Europe/Paris")
            assert [i.id for i in done.uncertain] == ([1] if run == 0 else [])
            assert [i.id for i in done.requeued] == [2, 3]
            assert [r.outbox for r in caplog.records] == [2, 3]  # type: ignore[attr-defined]
            assert all("may arrive twice" in r.getMessage() for r in caplog.records)
            assert kinds_and_statuses(store) == [
                ("ar", "uncertain"),
                ("forward", "pending"),
                ("forward", "pending"),
            ]
        kinds = [e.kind for e in store.events()]
        assert (kinds.count("send_uncertain"), kinds.count("send_deferred")) == (1, 1)
        with ScriptedSmtpServer() as server:
            outbox = forward_outbox(store, server)
            assert outbox.deliver_due().sent == 2
            assert [d.data for d in server.deliveries] == [FORWARD, FORWARD]
            outbox.transport.close()
    finally:
        store.close()
