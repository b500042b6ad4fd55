"""An SMTP outage must not lose ARs: a deferred mail waits up to ``outbox.max_queue_hours``
(5 days, as Postfix), not 10 attempts (about 3 hours); past it, it fails with its bytes kept,
and `mailbot outbox retry --failed` queues it again once the relay is back; `mailbot status`
says so long before. Against the aiosmtpd server of tests/servers.py (and Dovecot for the
mail that is acknowledged); the days pass on the outbox's clock, never in a sleep."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, write_config
from test_poison import inproc
from test_retention import _message
from test_status import all_polled, offline_config

from mailbot.app.context import build_app
from mailbot.app.delivery import Outbox
from mailbot.app.requeue import requeue_failed
from mailbot.config import OutboxConfig, load_config
from mailbot.core.statuses import OutboxKind
from mailbot.mail.smtp import SmtpTransport
from mailbot.store import Store, utcnow
from mailbot.store.schema import messages, outbox_bodies

__all__ = ["etrangers_user"]  # a fixture of test_e2e

CITIZEN = "marie.dupont@example.fr"
AR = (
    b"From: pref-contact@seine-maritime.gouv.fr\r\nTo: marie.dupont@example.fr\r\n"
    b"Subject: =?utf-8?q?Accus=C3=A9_de_r=C3=A9ception?=\r\nMessage-ID: <ar-1@example.test>\r\n"
    b"\r\nBonjour,\r\nVotre demande est bien recue.\r\nCordialement\r\n"
)
LIFETIME = timedelta(hours=OutboxConfig().max_queue_hours)


class Clock:
    """The outbox's time, moved on by the test (made after the mail is queued: it is due)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    """A new database, SQLite and PostgreSQL (the requeue's SQL runs on both)."""
    opened = Store(database)
    yield opened
    opened.close()


def queue(store: Store) -> int:
    with store.transaction() as tx:
        return tx.enqueue(None, OutboxKind.AR, CITIZEN, "", "<ar-1@example.test>", AR)


def row(store: Store) -> Any:
    (found,) = store.outbox_items()
    return found


def has_bytes(store: Store, item_id: int) -> bool:
    query = sa.select(outbox_bodies.c.outbox_id).where(outbox_bodies.c.outbox_id == item_id)
    with store.engine.connect() as conn:
        return conn.execute(query).first() is not None


def test_a_mail_deferred_past_ten_attempts_waits_for_its_lifetime_then_fails_kept(
    store: Store, smtp_server: SmtpServer
) -> None:
    """Fifteen 451s over about 9 hours: still queued (it failed at the 10th, about 3 hours,
    before). An hour short of 5 days, a 451 still defers it; past 5 days, it fails, its
    bytes kept for a requeue, and the time it failed recorded."""
    item_id = queue(store)
    clock = Clock()
    transport = SmtpTransport(smtp_server.smtp_config())
    outbox = Outbox(store, transport, OutboxConfig(), {CITIZEN}, clock=clock)
    smtp_server.fail_next(1000)
    delays = []
    for attempt in range(1, 16):
        report = outbox.deliver_due()
        assert (report.retried, report.failed, report.sent) == (1, 0, 0), attempt
        current = row(store)
        assert (current.status, current.attempts) == ("pending", attempt)
        delays.append((current.next_attempt_at - clock.now).total_seconds())
        clock.now = current.next_attempt_at  # due
    assert delays[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]  # doubling, then the cap
    # in the thread at the 1st, 2nd, 4th and 8th deferral only, not 15 times
    assert [e.kind for e in store.events()].count("send_deferred") == 4
    assert set(delays[8:]) == {3600}
    assert clock.now - current.created_at < timedelta(hours=12)

    clock.now = current.created_at + LIFETIME - timedelta(hours=1)
    assert outbox.deliver_due().retried == 1
    assert (row(store).status, row(store).attempts) == ("pending", 16)

    clock.now = current.created_at + LIFETIME + timedelta(minutes=1)
    report = outbox.deliver_due()
    assert (report.failed, report.retried, report.sent) == (1, 0, 0)
    failed = row(store)
    assert failed.status == "failed" and failed.attempts == 17
    assert failed.failed_at == clock.now
    assert "451" in failed.last_error and "max_queue_hours" in failed.last_error
    assert has_bytes(store, item_id)  # for `mailbot outbox retry --failed`
    assert [e.kind for e in store.events()][-2:] == ["send_deferred", "send_failed"]
    assert smtp_server.messages == []


def test_a_permanent_refusal_fails_at_once_and_loses_its_bytes(
    store: Store, smtp_server: SmtpServer
) -> None:
    outbox = Outbox(store, SmtpTransport(smtp_server.smtp_config()), OutboxConfig(), {CITIZEN})
    item_id = queue(store)
    smtp_server.reject_next(1)
    report = outbox.deliver_due()
    assert (report.failed, report.retried) == (1, 0)
    assert (row(store).status, row(store).attempts) == ("failed", 1)
    assert row(store).failed_at is not None
    assert not has_bytes(store, item_id)
    # Nothing to requeue: it would be refused again (and its bytes are gone).
    assert requeue_failed(store).items == []
    assert requeue_failed(store, kinds=list(OutboxKind)).items == []


def test_a_config_that_sets_max_attempts_loads_and_says_it_is_not_read(
    store: Store, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The prefecture's rules.yaml may still say ``max_attempts: 10``: it loads, a WARNING
    says the key is not read, and the lifetime holds all the same."""
    config = OutboxConfig(max_attempts=10, max_queue_hours=48)
    assert config.warnings() and "max_queue_hours (48 h)" in config.warnings()[0]
    queue(store)
    clock = Clock()
    transport = SmtpTransport(smtp_server.smtp_config())
    outbox = Outbox(store, transport, config, {CITIZEN}, clock=clock)
    assert "outbox.max_attempts (10) is no longer read" in caplog.text
    smtp_server.fail_next(1000)
    for _ in range(12):
        outbox.deliver_due()
        clock.now = row(store).next_attempt_at
    assert (row(store).status, row(store).attempts) == ("pending", 12)


def test_after_an_outage_failed_ars_are_queued_again_and_sent_once(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three citizens write. The first AR leaves, but the server hangs up before its reply:
    uncertain. Then the relay defers everything (451) for longer than 5 days: the two other
    ARs fail. The relay mended, `mailbot outbox retry --failed` queues the two again and
    sends them, each once; the uncertain one is left alone (it may have left); a second run
    queues nothing."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.deliver([citizen_mail(1, sender="citoyen1@example.fr")])
    smtp_server.drop_after(0)  # the first mail taken, the connection closed before "250"
    assert poll(config, acknowledge_existing=True) == 0
    assert len(smtp_server.messages) == 1
    imap_user.deliver([citizen_mail(n, sender=f"citoyen{n}@example.fr") for n in (2, 3)])
    smtp_server.fail_next(1000)  # the outage
    assert poll(config) == 0
    ars = "SELECT status, attempts FROM outbox WHERE kind = 'ar' ORDER BY id"
    assert db_rows(config, ars) == [("uncertain", 1), ("pending", 1), ("pending", 1)]

    app = build_app(config)
    try:
        app.outbox.clock = lambda: utcnow() + LIFETIME + timedelta(hours=1)
        report = app.outbox.deliver_due()
    finally:
        app.close()
    assert report.failed == 2
    assert db_rows(config, ars) == [("uncertain", 1), ("failed", 2), ("failed", 2)]
    statuses = "SELECT ar_status FROM messages ORDER BY id"
    assert db_rows(config, statuses) == [("uncertain",), ("failed",), ("failed",)]

    smtp_server.clear()  # the relay is back (what it took before is forgotten)
    result = inproc(capsys, config, "outbox", "retry", "--failed")
    assert result.returncode == 0, result.stderr
    assert "2 mail(s) queued again; this delivery: 2 sent" in result.stdout
    received = smtp_server.wait_for(2)
    expected = db_rows(config, "SELECT email_message_id FROM outbox WHERE status = 'sent'")
    assert sorted(m.rcpt_tos for m in received) == [
        ("citoyen2@example.fr",),
        ("citoyen3@example.fr",),
    ]
    for (message_id,) in expected:
        assert sum(message_id.encode() in m.raw for m in received) == 1
    assert db_rows(config, ars) == [("uncertain", 1), ("sent", 1), ("sent", 1)]
    assert db_rows(config, statuses) == [("uncertain",), ("sent",), ("sent",)]
    requeued = "SELECT count(*) FROM events WHERE kind = 'send_requeued'"
    assert db_rows(config, requeued) == [(2,)]

    again = inproc(capsys, config, "outbox", "retry", "--failed")
    assert again.returncode == 0 and "nothing to queue again" in again.stdout
    assert len(smtp_server.messages) == 2
    assert db_rows(config, requeued) == [(2,)]


def test_status_flags_an_outage_within_the_hour_and_its_failures_days_later(
    tmp_path: Path,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay deferring everything: the first deferral is a WARNING, the deferred mail
    an hour old CRITICAL (``oldest_pending_seconds``). Five days on, the mail fails: it is
    counted in the last 24 hours' failures though it was queued 5 days before (counted by
    its creation, it never showed). Queued again, its age counts from the requeue."""
    config_path = offline_config(tmp_path)
    store = all_polled(config_path)
    queue(store)
    clock = Clock()
    transport = SmtpTransport(smtp_server.smtp_config())
    outbox = Outbox(store, transport, OutboxConfig(), {CITIZEN}, clock=clock)
    smtp_server.fail_next(1000)
    outbox.deliver_due()

    def status_at(moment: datetime) -> Any:
        """`mailbot status` at ``moment``, the folders polled then (all well but the mail)."""
        for module in ("store.supervision", "app.supervision", "ops_commands"):
            monkeypatch.setattr(f"mailbot.{module}.utcnow", lambda: moment)
        all_polled(config_path).close()
        return inproc(capsys, config_path, "status")

    now = utcnow()
    early = status_at(now)
    assert early.returncode == 1, early.stdout
    assert early.stdout.startswith("MAILBOT WARNING - deferred sends 1 (warning at 1) | ")
    late = status_at(now + timedelta(minutes=61))
    assert late.returncode == 2, late.stdout
    assert late.stdout.startswith("MAILBOT CRITICAL - oldest pending 36"), late.stdout
    assert "(critical at 3600 s)" in late.stdout.splitlines()[0]
    assert "1 pending (oldest 36" in late.stdout and "1 deferred (SMTP)" in late.stdout

    clock.now = row(store).created_at + LIFETIME + timedelta(minutes=1)
    assert outbox.deliver_due().failed == 1
    days_later = status_at(clock.now + timedelta(minutes=5))
    assert "0 pending, 0 deferred (SMTP), 1 failed (24 h)" in days_later.stdout
    assert "WARNING: failed sends (24 h) 1 (warning at 1)" in days_later.stdout

    requeued = requeue_failed(store, clock=lambda: clock.now + timedelta(minutes=10))
    assert [item.id for item in requeued.items] == [row(store).id]
    after = status_at(clock.now + timedelta(minutes=15))
    assert "1 pending (oldest 300 s), 0 deferred (SMTP), 0 failed (24 h)" in after.stdout
    store.close()
    assert load_config(config_path).outbox.max_attempts is None


def test_a_requeue_never_sends_a_superseded_or_answered_ar_and_takes_each_mail_once(
    store: Store, smtp_server: SmtpServer
) -> None:
    """Of two failed ARs of one message only the later is queued again (never two ARs);
    the AR of a message answered meanwhile stays failed (the reply said more); a digest
    only when asked. What was queued again is not queued a second time."""
    now = utcnow()
    with store.transaction() as tx:
        first = tx.insert_message(_message(now))
        answered = tx.insert_message(
            replace(_message(now), uid=2, content_hash="h2", reference=None)
        )
        ids = [
            tx.enqueue(pk, OutboxKind.AR, CITIZEN, "", f"<ar-{n}@example.test>", AR)
            for n, pk in enumerate((first, first, answered))
        ]
        ids.append(tx.enqueue(None, OutboxKind.DIGEST, CITIZEN, "", "<digest@x>", AR))
        tx.conn.execute(
            messages.update().where(messages.c.id == answered).values(first_reply_at=now)
        )
    later = now + LIFETIME + timedelta(minutes=1)
    outbox = Outbox(
        store,
        SmtpTransport(smtp_server.smtp_config()),
        OutboxConfig(),
        {CITIZEN},
        clock=lambda: later,
    )
    smtp_server.fail_next(1000)
    assert outbox.deliver_due().failed == 4
    assert all(has_bytes(store, i) for i in ids)

    dry = requeue_failed(store, dry_run=True)
    assert ([i.id for i in dry.items], dry.held_back) == ([ids[1]], 2)
    assert [i.id for i in requeue_failed(store, since=later, dry_run=True).items] == [ids[1]]
    after = later + timedelta(seconds=1)  # --since: failed from then on only
    assert requeue_failed(store, since=after, dry_run=True).items == []
    assert [row.status for row in store.outbox_items()] == ["failed"] * 4
    done = requeue_failed(store, who="exploitation")
    assert ([i.id for i in done.items], done.held_back) == ([ids[1]], 2)
    assert requeue_failed(store).items == []
    digests = requeue_failed(store, kinds=[OutboxKind.DIGEST])
    assert [i.id for i in digests.items] == [ids[3]]
    assert [row.status for row in store.outbox_items()] == [
        "failed",
        "pending",
        "failed",
        "pending",
    ]
    assert {row.id: row.ar_status for row in store.messages()} == {
        first: "pending",
        answered: "failed",
    }
    (event,) = [e for e in store.events() if e.kind == "send_requeued" and e.message_pk]
    assert event.message_pk == first and "by exploitation" in event.detail


def test_check_warns_of_a_max_attempts_still_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prefecture's rules.yaml, written for an older version, still loads."""
    outbox = {"max_attempts": 10, "retry_base_seconds": 30, "retry_max_seconds": 3600}
    config = offline_config(tmp_path, outbox=outbox)
    result = inproc(capsys, config, "check")
    assert result.returncode == 0, result.stderr
    assert "warning: outbox.max_attempts (10) is no longer read" in result.stderr
    assert "outbox.max_queue_hours (120 h)" in result.stderr


def test_check_warns_of_an_https_console_behind_a_proxy_it_does_not_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An https address served from a loopback port is a reverse proxy's. Without
    ``web.trusted_proxies`` every request is the proxy's: the per-address login limit
    counts all agents together (20 failures lock every local login out) and the audit log
    names the proxy. `mailbot check` says so; with the proxy trusted, nothing."""
    web = {"host": "127.0.0.1", "public_url": "https://mailbot.seine-maritime.gouv.fr"}
    untrusted = inproc(capsys, offline_config(tmp_path, web=web), "check")
    assert untrusted.returncode == 0, untrusted.stderr
    assert (
        "warning: web: public_url https://mailbot.seine-maritime.gouv.fr is served from"
        " 127.0.0.1 (a reverse proxy) while web.trusted_proxies is empty"
    ) in untrusted.stderr
    assert "login_rate_limit.per_ip (20 failures)" in untrusted.stderr
    trusted = {**web, "trusted_proxies": ["127.0.0.1"]}
    quiet = inproc(capsys, offline_config(tmp_path, web=trusted), "check")
    assert quiet.returncode == 0 and "trusted_proxies" not in quiet.stderr
