"""The mystery e-mail probe end to end (issue 16): real Dovecot, aiosmtpd and `mailbot run`.

aiosmtpd accepts what mailbot sends; the test plays the MTA between it and Dovecot: each
accepted mail is delivered (with its Return-Path, as an MTA writes it) to the Dovecot user
of its recipient, so the probe mail reaches the watched mailbox and the AR the probe's.
Three cases: the AR comes and is right; it never comes (no worker); it lacks the
reference (a template that lost it).
"""

from __future__ import annotations

import email
import email.policy
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from pg import fresh_database
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import ROOT, write_config
from test_poison import inproc, start_worker, stop_worker

from mailbot.config import load_config
from mailbot.core.message import parse_message
from mailbot.core.probe import News, is_probe, mark, news
from mailbot.core.statuses import ProbeStatus
from mailbot.store import Store
from mailbot.store import probes as probe_rows

GENERAL = "pref-contact@seine-maritime.gouv.fr"
PROBE = "sonde.mailbot@example.org"
OPERATORS = "exploitation@seine-maritime.gouv.fr"


class Mta:
    """Delivers what aiosmtpd accepted to the Dovecot users of its recipients."""

    def __init__(self, smtp: SmtpServer, users: dict[str, MailUser]) -> None:
        self.smtp = smtp
        self.users = users
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        done = 0
        while not self.stop.wait(0.2):
            for received in list(self.smtp.messages)[done:]:
                done += 1
                for rcpt in received.rcpt_tos:
                    user = self.users.get(rcpt.lower())
                    if user is not None:
                        user.append(
                            f"Return-Path: <{received.mail_from}>\r\n".encode() + received.raw
                        )


@pytest.fixture
def probe_setup(
    tmp_path: Path,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, SmtpServer]]:
    monkeypatch.setenv("MAILBOT_PROBE_SECRET", "probe-secret-for-tests-0123456789")
    probe_user = dovecot.new_user("sonde")
    probe = {
        "address": PROBE,
        "imap": probe_user.imap_config().model_dump(mode="json", exclude_none=True),
        "secret_env": "MAILBOT_PROBE_SECRET",
        "mailboxes": ["general"],
        "alert_to": [OPERATORS],
        "late_seconds": 60,
    }
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, probe=probe)
    mta = Mta(smtp_server, {GENERAL: imap_user, PROBE: probe_user})
    mta.thread.start()
    yield config, smtp_server
    mta.stop.set()
    mta.thread.join()


def readable(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def to(smtp: SmtpServer, address: str) -> list[bytes]:
    return [r.raw for r in smtp.messages if address in r.rcpt_tos]


def test_a_probe_whose_ar_comes_right_passes_and_is_no_citizen(
    probe_setup: tuple[Path, SmtpServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, smtp = probe_setup
    worker = start_worker(config, config.parent / "worker.log")
    try:
        result = inproc(capsys, config, "probe", "--wait", "60")
    finally:
        assert stop_worker(worker) == 0
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("general: passed after ")
    store = Store(load_config(config).database)
    (row,) = store.messages()
    assert row.probe == 1 and row.decision == "acknowledge" and row.transferred == 0
    assert row.service == "general"  # never routed to another service
    assert store.indicator_rows(row.received_at, row.received_at.replace(year=9999)) == []
    store.close()
    assert len(to(smtp, PROBE)) == 1  # the AR, and nothing to any service
    assert to(smtp, OPERATORS) == []
    status = inproc(capsys, config, "status")
    assert "general probe" not in status.stdout.splitlines()[0]


def test_a_probe_whose_ar_never_comes_is_critical_and_alerts(
    probe_setup: tuple[Path, SmtpServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, smtp = probe_setup  # no worker runs: nobody answers
    result = inproc(capsys, config, "probe", "--wait", "4")
    assert result.returncode == 2
    assert result.stdout.startswith("general: ar-missing: aucun accusé de réception")
    (alert,) = [readable(raw) for raw in to(smtp, OPERATORS)]
    assert alert["Subject"] == "[mailbot] Sonde en échec : general"
    assert (
        "boîte general : ar-missing — aucun accusé de réception"
        in alert.get_body(("plain",)).get_content()
    )
    status = inproc(capsys, config, "status")
    assert status.returncode == 2
    assert "general probe ar-missing" in status.stdout.splitlines()[0]


def test_a_probe_whose_ar_lacks_the_reference_is_wrong(
    probe_setup: tuple[Path, SmtpServer], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config, smtp = probe_setup
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    for name in ("reference.txt.j2", "reference.html.j2"):  # someone's edit lost it
        (templates / "_partials" / name).write_text("", encoding="utf-8")
    meta = templates / "ar-general" / "meta.yaml"
    meta.write_text(
        meta.read_text(encoding="utf-8").replace("Accusé de réception [{{ reference }}]", "AR"),
        encoding="utf-8",
    )
    text = config.read_text(encoding="utf-8").replace(str(ROOT / "templates"), str(templates))
    config.write_text(text, encoding="utf-8")
    worker = start_worker(config, config.parent / "worker.log")
    try:
        result = inproc(capsys, config, "probe", "--wait", "60")
    finally:
        assert stop_worker(worker) == 0
    assert result.returncode == 2, result.stdout
    assert result.stdout.startswith("general: ar-wrong after ")
    assert "référence de suivi absente" in result.stdout
    (alert,) = [readable(raw) for raw in to(smtp, OPERATORS)]
    assert "ar-wrong — référence de suivi absente" in alert.get_body(("plain",)).get_content()


def probe_mail(sender: str, header: str | None, message_id: str = "<p-1@example.org>") -> bytes:
    lines = [
        f"Return-Path: <{sender}>",
        f"From: Sonde <{sender}>",
        f"To: {GENERAL}",
        "Subject: test",
        f"Message-ID: {message_id}",
    ]
    if header is not None:
        lines.append(f"X-Mailbot-Probe: {header}")
    return ("\r\n".join(lines) + "\r\n\r\nbonjour\r\n").encode()


def test_only_mailbot_s_own_marked_probe_is_one() -> None:
    secret = "s3cret-s3cret"
    good = mark(secret, "<p-1@example.org>")
    assert is_probe(parse_message(probe_mail(PROBE, good)), PROBE, secret)
    assert not is_probe(parse_message(probe_mail(PROBE, None)), PROBE, secret)
    assert not is_probe(parse_message(probe_mail(PROBE, "0" * 64)), PROBE, secret)
    # A citizen copying a real probe's header from another Message-ID, or sending from
    # elsewhere with the right one, is a citizen: counted and answered as such.
    other = probe_mail(PROBE, good, message_id="<p-2@example.org>")
    assert not is_probe(parse_message(other), PROBE, secret)
    assert not is_probe(parse_message(probe_mail("usager@example.fr", good)), PROBE, secret)


def test_one_alert_per_incident_then_one_when_it_ends(
    probe_setup: tuple[Path, SmtpServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """An hourly probe failing all night mailed the operators every hour: now the first
    failed round alerts, the next ones (the same day) do not, and the round that passes
    again says so."""
    config, smtp = probe_setup  # no worker yet: nobody answers
    for _ in range(2):
        assert inproc(capsys, config, "probe", "--wait", "2").returncode == 2
    alerts = [readable(raw) for raw in to(smtp, OPERATORS)]
    assert [a["Subject"] for a in alerts] == ["[mailbot] Sonde en échec : general"]
    worker = start_worker(config, config.parent / "worker.log")
    try:
        result = inproc(capsys, config, "probe", "--wait", "60")
    finally:
        assert stop_worker(worker) == 0
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [readable(raw) for raw in to(smtp, OPERATORS)]
    assert [a["Subject"] for a in alerts] == [
        "[mailbot] Sonde en échec : general",
        "[mailbot] Sonde rétablie : general",
    ]
    assert "passe de nouveau pour : general" in alerts[1].get_body(("plain",)).get_content()


def test_the_news_of_a_round() -> None:
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert news(True, None, now) is News.FAILING
    assert news(False, None, now) is None
    assert news(False, (now - 3 * hour, now - hour), now) is News.RECOVERED
    assert news(True, (now - 3 * hour, now - hour), now) is None  # the same day
    assert news(True, (now - 24 * hour, now - hour), now) is News.STILL_FAILING  # a day on
    assert news(True, (now - 25 * hour, now - hour), now) is None  # reminded an hour ago
    assert news(True, (now - 48 * hour, now - hour), now) is News.STILL_FAILING


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failing_run_is_the_failed_rounds_since_the_last_that_passed(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    if backend == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    else:
        pg = request.getfixturevalue("postgres")
        store = Store(fresh_database(pg, "p", request.node.nodeid))
    start = datetime(2026, 12, 1, 8, tzinfo=UTC)
    statuses = [ProbeStatus.MISSING, ProbeStatus.PASSED, ProbeStatus.LATE]
    statuses += [ProbeStatus.AWAITING, ProbeStatus.WRONG, ProbeStatus.PASSED]
    ids = []
    for n, status in enumerate(statuses):
        at = start + timedelta(hours=n)
        ids.append(probe_rows.add(store, f"r{n}", "general", f"<p{n}@x>", at, at))
        probe_rows.settle(store, ids[-1], status)
    try:
        assert probe_rows.failing_run(store, "general", ids[0]) is None  # none before
        assert probe_rows.failing_run(store, "general", ids[1]) == (start, start)
        assert probe_rows.failing_run(store, "general", ids[2]) is None  # after a pass
        two, four = start + timedelta(hours=2), start + timedelta(hours=4)
        assert probe_rows.failing_run(store, "general", ids[5]) == (two, four)
        assert probe_rows.failing_run(store, "etrangers", ids[5]) is None
    finally:
        store.close()
