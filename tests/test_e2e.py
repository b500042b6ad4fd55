"""End to end against a real Dovecot and a real SMTP server (aiosmtpd): `mailbot poll --once`."""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from in_process import run_main
from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer

from mailbot.cli import main
from mailbot.core.dates import date_fr

ROOT = Path(__file__).resolve().parent.parent
GENERAL = "pref-contact@seine-maritime.gouv.fr"
ETRANGERS = "pref-etrangers@seine-maritime.gouv.fr"


def citizen_mail(
    n: int,
    *,
    sender: str = "marie.dupont@example.fr",
    to: str = GENERAL,
    subject: str = "Demande de renseignements",
    extra: str = "",
    message_id: str | None = "default",
    body: str = "Bonjour,\nQuels sont les horaires d'ouverture ?\nCordialement,\nMarie Dupont\n",
) -> bytes:
    mid = f"<citizen-{n}@example.fr>" if message_id == "default" else message_id
    headers = [
        f"Return-Path: <{sender}>",
        f"From: Marie Dupont <{sender}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: Thu, 26 Nov 2026 10:{n % 60:02d}:00 +0100",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    if mid:
        headers.append(f"Message-ID: {mid}")
    if extra:
        headers.append(extra.strip())
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


BOUNCE = (
    b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.example.fr>\r\n"
    b"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"Message-ID: <bounce-1@mx.example.fr>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n"
)
LIST_MAIL = citizen_mail(
    90,
    sender="lettre-info@lists.example.org",
    subject="Lettre d'information",
    extra="List-Id: <info.lists.example.org>\r\nPrecedence: list",
)
OUT_OF_OFFICE = citizen_mail(
    91,
    sender="jean.martin@example.com",
    subject="Réponse automatique : absent",
    extra="Auto-Submitted: auto-replied",
)


@pytest.fixture
def etrangers_user(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def write_config(
    tmp_path: Path,
    general: MailUser,
    etrangers: MailUser,
    smtp: SmtpServer,
    warm_language_models: bool = False,
    **overrides: Any,
) -> Path:
    """The shipped rules with these servers. ``mailbot run`` does not load the language
    models before its first poll unless asked (``warm_language_models``: 4 s of CPU at each
    of the suite's worker starts; the tests' mail is French or loads what it needs)."""
    data = load_rules()
    for name, user in (("general", general), ("etrangers", etrangers)):
        imap = user.imap_config().model_dump(mode="json", exclude_none=True)
        data["mailboxes"][name]["imap"] = imap
    data["smtp"] = smtp.smtp_config().model_dump(mode="json", exclude_none=True)
    data["database"] = f"sqlite:///{tmp_path / 'mailbot.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data["reports"] = {"weekly": {"to": []}}  # no weekly report in these mailbox tests
    for key, value in overrides.items():
        data[key] = value
    data["polling"] = {**data.get("polling", {}), "warm_language_models": warm_language_models}
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


@pytest.fixture
def setup(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> tuple[Path, MailUser, MailUser, SmtpServer]:
    return (
        write_config(tmp_path, imap_user, etrangers_user, smtp_server),
        imap_user,
        etrangers_user,
        smtp_server,
    )


def poll(config: Path, *, acknowledge_existing: bool = False) -> int:
    """`mailbot poll --once`. A first poll finding mail already there refuses unless
    ``acknowledge_existing`` (tests that start with a filled mailbox say so)."""
    extra = ["--acknowledge-existing"] if acknowledge_existing else []
    return main(["--config", str(config), "-q", "poll", "--once", *extra])


def received_year(user: MailUser, message_id: str) -> int:
    """The year of a mail's INTERNALDATE in Paris (the server may stamp it in UTC): the
    year mailbot puts in its reference. Tests derive it instead of writing this year down."""
    (stored,) = [m for m in user.messages() if message_id.encode() in m.raw]
    return stored.internaldate.astimezone(ZoneInfo("Europe/Paris")).year


def db_rows(config: Path, query: str) -> list[tuple[Any, ...]]:
    database = config.parent / "mailbot.db"
    with sqlite3.connect(database) as conn:
        return conn.execute(query).fetchall()


def subject_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg["Subject"])


def test_ars_reach_citizens_only_with_the_right_headers(setup: Any) -> None:
    config, general, etrangers, smtp = setup
    general.append(citizen_mail(1), flags=["\\Seen"])
    general.append(citizen_mail(2, sender="ali.benali@example.org", subject="Horaires"))
    general.append(BOUNCE)
    general.append(LIST_MAIL)
    general.append(OUT_OF_OFFICE)
    etrangers.append(
        citizen_mail(3, sender="olena@example.net", to=ETRANGERS, subject="Titre de séjour")
    )
    flags_before = {"general": general.flags(), "etrangers": etrangers.flags()}

    assert poll(config, acknowledge_existing=True) == 0

    received = smtp.wait_for(3)
    assert len(received) == 3
    by_recipient = {r.rcpt_tos[0]: r for r in received}
    assert set(by_recipient) == {
        "marie.dupont@example.fr",
        "ali.benali@example.org",
        "olena@example.net",
    }
    for item in received:
        assert item.mail_from == ""  # null envelope sender (RFC 3834)
        msg = email.message_from_bytes(item.raw, policy=email.policy.default)
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["X-Auto-Response-Suppress"] == "All"
        assert msg["Message-ID"].endswith("@mailbot.seine-maritime.gouv.fr>")
        assert msg["In-Reply-To"].startswith("<citizen-")
        assert msg["In-Reply-To"] in msg["References"]
        assert msg.get_content_type() == "multipart/alternative"
    ar = email.message_from_bytes(
        by_recipient["marie.dupont@example.fr"].raw, policy=email.policy.default
    )
    subject = str(ar["Subject"])
    year = received_year(general, "<citizen-1@example.fr>")
    assert subject.startswith(f"Accusé de réception [SM-{year}-")
    assert subject.endswith("] : Demande de renseignements")
    reference = subject.split("[", 1)[1].split("]", 1)[0]
    text = ar.get_body(("plain",)).get_content()
    assert reference in text
    assert "5 jours ouvrés" in text
    assert "02 32 76 50 00" in text
    etr = email.message_from_bytes(
        by_recipient["olena@example.net"].raw, policy=email.policy.default
    )
    assert str(etr["From"]).endswith(f"<{ETRANGERS}>")
    assert (
        "administration-etrangers-en-france.interieur.gouv.fr"
        in etr.get_body(("plain",)).get_content()
    )

    # nothing deleted, \Seen untouched, in both mailboxes
    assert general.flags() == flags_before["general"]
    assert etrangers.flags() == flags_before["etrangers"]
    assert general.message_count() == 5

    decisions = dict(db_rows(config, "SELECT subject, decision FROM messages"))
    assert decisions["Undelivered Mail Returned to Sender"] == "skip"
    assert decisions["Lettre d'information"] == "skip"
    assert decisions["Réponse automatique : absent"] == "skip"
    statuses = db_rows(config, "SELECT ar_status FROM messages WHERE decision='acknowledge'")
    assert statuses == [("sent",)] * 3


def test_second_run_sends_nothing(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    general.append(citizen_mail(2, sender="paul@example.fr"))
    assert poll(config) == 0
    assert poll(config) == 0
    received = smtp.wait_for(2)
    assert [r.rcpt_tos for r in received] == [("marie.dupont@example.fr",), ("paul@example.fr",)]


def test_uidvalidity_change_does_not_reacknowledge(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    general.append(citizen_mail(2, message_id=None, sender="sans.id@example.fr"))
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(2)
    old = general.uid_validity()
    assert general.reset_uidvalidity() != old
    general.append(citizen_mail(3, sender="nouveau@example.fr"))
    assert poll(config) == 0
    received = smtp.wait_for(3)
    assert len(received) == 3
    assert received[-1].rcpt_tos == ("nouveau@example.fr",)
    events = db_rows(config, "SELECT kind FROM events WHERE kind='uidvalidity_changed'")
    assert events == [("uidvalidity_changed",)]


def test_uidvalidity_change_after_a_backfill_never_acknowledges_older_mail(
    setup: Any,
) -> None:
    """A backfill marks the folder read past the mail older than ``--since`` without
    recording it; the folder restored (new UIDVALIDITY) is read again from UID 1: those
    three mails of 400 days ago are recorded without AR, not acknowledged."""
    config, general, _etrangers, smtp = setup
    old = datetime.now(UTC) - timedelta(days=400)
    for n in range(1, 4):
        general.append(citizen_mail(n, sender=f"ancien{n}@example.fr"), internaldate=old)
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    assert main(["--config", str(config), "-q", "backfill", "--since", since]) == 0
    assert db_rows(config, "SELECT count(*) FROM messages") == [(0,)]
    assert poll(config) == 0
    general.reset_uidvalidity()
    assert poll(config) == 0
    assert smtp.messages == []
    assert db_rows(config, "SELECT count(*) FROM outbox") == [(0,)]
    rows = db_rows(config, "SELECT uid, decision, ar_status FROM messages ORDER BY uid")
    assert rows == [(n, "acknowledge", "backfill") for n in range(1, 4)]
    details = db_rows(
        config, "SELECT detail FROM events WHERE kind='uidvalidity_changed' ORDER BY id"
    )
    # The change, then one event per intake part that recorded such mail: the three may
    # take more than one part (a part ends early on a loaded machine: intake's deadline).
    counted = [re.search(r": (\d+) mail\(s\) that arrived before ", d) for (d,) in details[1:]]
    assert len(details) >= 2 and "arrived before" not in details[0][0]
    assert all(counted) and sum(int(m.group(1)) for m in counted if m) == 3


def test_uidvalidity_change_after_a_purge_never_acknowledges_twice(setup: Any) -> None:
    """A mail acknowledged, then its row purged by retention: the folder restored (new
    UIDVALIDITY) and read again, the database no longer knows it, but it arrived before
    the folder's last full read: recorded again, without a second AR."""
    config, general, _etrangers, smtp = setup
    old = datetime.now(UTC) - timedelta(days=400)
    general.append(citizen_mail(1, sender="ancien@example.fr"), internaldate=old)
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    assert main(["--config", str(config), "-q", "purge", "--days", "365"]) == 0
    assert db_rows(config, "SELECT count(*) FROM messages") == [(0,)]
    general.reset_uidvalidity()
    assert poll(config) == 0
    assert len(smtp.messages) == 1
    assert db_rows(config, "SELECT decision, ar_status FROM messages") == [
        ("acknowledge", "backfill")
    ]


def test_uidvalidity_change_acknowledges_mail_that_arrived_after_the_last_poll(
    setup: Any,
) -> None:
    """Mail delivered after the last poll, before the folder was restored (the outage),
    was never read: it gets its AR after the UIDVALIDITY change, as the mail delivered
    after the change does; the mail read before is not acknowledged again."""
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    general.append(citizen_mail(2, sender="pendant.la.panne@example.fr"))
    general.reset_uidvalidity()
    general.append(citizen_mail(3, sender="apres@example.fr"))
    assert poll(config) == 0
    received = smtp.wait_for(3)
    assert [r.rcpt_tos for r in received] == [
        ("marie.dupont@example.fr",),
        ("pendant.la.panne@example.fr",),
        ("apres@example.fr",),
    ]
    assert db_rows(config, "SELECT count(*) FROM messages WHERE ar_status='backfill'") == [(0,)]


def test_smtp_451_then_ok_gives_exactly_one_ar(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    smtp.fail_next(1, code=451)
    assert poll(config, acknowledge_existing=True) == 0
    assert smtp.messages == []
    assert db_rows(config, "SELECT status, attempts FROM outbox") == [("pending", 1)]
    # make the retry due now, as the backoff would after its delay
    db_rows(config, "UPDATE outbox SET next_attempt_at = '2000-01-01 00:00:00'")
    assert poll(config) == 0
    assert poll(config) == 0
    assert len(smtp.wait_for(1)) == 1
    assert db_rows(config, "SELECT status, attempts FROM outbox") == [("sent", 2)]
    kinds = [k for (k,) in db_rows(config, "SELECT kind FROM events ORDER BY id")]
    assert kinds.count("send_deferred") == 1
    assert kinds.count("ar_sent") == 1


def test_smtp_550_is_recorded_as_failed(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    smtp.reject_next(1, code=550)
    assert poll(config, acknowledge_existing=True) == 0
    assert smtp.messages == []
    assert db_rows(config, "SELECT status FROM outbox") == [("failed",)]
    assert db_rows(config, "SELECT ar_status FROM messages") == [("failed",)]


def test_crash_while_sending_never_resends(setup: Any) -> None:
    """An AR left 'sending' by a crash is marked uncertain at the next start, never resent."""
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    smtp.fail_next(1)
    assert poll(config, acknowledge_existing=True) == 0
    db_rows(config, "UPDATE outbox SET status='sending'")  # the state a crash mid-send leaves
    db_rows(config, "UPDATE outbox SET next_attempt_at = '2000-01-01 00:00:00'")
    assert poll(config) == 0
    assert smtp.messages == []
    assert db_rows(config, "SELECT status FROM outbox") == [("uncertain",)]
    assert ("send_uncertain",) in db_rows(config, "SELECT kind FROM events")


def test_malformed_mime_is_processed_and_the_worker_goes_on(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    broken = (
        b"Return-Path: <casse@example.fr>\r\nFrom: =?utf-8?B?invalid base64?= <casse@example.fr>\r\n"
        b"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: =?x-unknown?Q?=E9t=E9?= \xff\xfe\r\n"
        b"Message-ID: <broken@example.fr>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=bogus-charset\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n%%%not base64%%%\r\n"
    )
    general.append(broken)
    general.append(citizen_mail(2, sender="suivant@example.fr"))
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(2)
    assert {r.rcpt_tos[0] for r in received} == {"casse@example.fr", "suivant@example.fr"}
    rows = db_rows(config, "SELECT decision, defects FROM messages ORDER BY uid")
    assert rows[0][0] == "acknowledge"
    assert (
        "StartBoundaryNotFoundDefect" in rows[0][1] or "CloseBoundaryNotFoundDefect" in rows[0][1]
    )
    for item in received:
        msg = email.message_from_bytes(item.raw, policy=email.policy.default)
        assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])


def test_follow_up_in_thread_gets_no_second_ar(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1))
    assert poll(config, acknowledge_existing=True) == 0
    ar = email.message_from_bytes(smtp.wait_for(1)[0].raw, policy=email.policy.default)
    reference = str(ar["Subject"]).split("[", 1)[1].split("]", 1)[0]
    reply_to_ar = citizen_mail(
        2, subject=f"Re: {ar['Subject']}", extra=f"In-Reply-To: {ar['Message-ID']}"
    )
    by_reference = citizen_mail(3, subject=f"Relance dossier {reference}")
    general.append(reply_to_ar)
    general.append(by_reference)
    assert poll(config) == 0
    assert len(smtp.messages) == 1
    rows = db_rows(config, "SELECT decision, parent_id FROM messages ORDER BY uid")
    assert rows[1:] == [("follow-up", 1), ("follow-up", 1)]


def test_rate_limit_per_sender(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    for n in range(1, 6):
        general.append(citizen_mail(n, subject=f"Question {n}"))
    assert poll(config, acknowledge_existing=True) == 0
    assert len(smtp.wait_for(3)) == 3
    reasons = db_rows(config, "SELECT reasons FROM messages WHERE decision='skip'")
    assert reasons == [('["rate-limited"]',), ('["rate-limited"]',)]


def test_rate_limit_holds_for_a_backlog_read_days_later(setup: Any) -> None:
    """The window ends at each mail's arrival, not at the poll: a robot's five mails of two
    days ago, read now (a poller stopped over a weekend), get three ARs as they would have
    live; a sixth, a day and a half after them, gets its own."""
    config, general, _etrangers, smtp = setup
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
    for n in range(1, 6):
        general.append(
            citizen_mail(n, subject=f"Question {n}"), internaldate=start + timedelta(minutes=n)
        )
    general.append(citizen_mail(6, subject="Question 6"), internaldate=start + timedelta(hours=36))
    assert poll(config, acknowledge_existing=True) == 0
    assert len(smtp.wait_for(4)) == 4
    decisions = db_rows(config, "SELECT uid, decision FROM messages ORDER BY uid")
    assert [d for _uid, d in decisions] == ["acknowledge"] * 3 + ["skip"] * 2 + ["acknowledge"]


def test_injected_recipients_are_never_mailed(setup: Any) -> None:
    """Reply-To, Cc and CR/LF tricks in the subject cannot add a recipient."""
    config, general, _etrangers, smtp = setup
    general.append(
        citizen_mail(
            1,
            subject="Bonjour =?utf-8?q?=0D=0ABcc:_victim@evil.example?=",
            extra="Reply-To: victim@evil.example\r\nCc: other@evil.example",
        )
    )
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(1)
    assert received[0].rcpt_tos == ("marie.dupont@example.fr",)
    msg = email.message_from_bytes(received[0].raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg["To"].addresses[0].addr_spec == "marie.dupont@example.fr"
    assert "victim" not in str(msg["To"])


def test_contact_form_relay_replies_to_reply_to(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(
        citizen_mail(
            1,
            sender="no-reply@seine-maritime.gouv.fr",
            subject="[Formulaire de contact] Passeport",
            extra="Reply-To: Lucie Bernard <lucie.bernard@example.fr>",
        )
    )
    assert poll(config, acknowledge_existing=True) == 0
    assert smtp.wait_for(1)[0].rcpt_tos == ("lucie.bernard@example.fr",)


def test_unreachable_mailbox_exits_nonzero_and_others_still_processed(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    data = load_rules(config)
    data["mailboxes"]["etrangers"]["imap"]["port"] = 1  # nothing listens there
    config.write_text(dump_rules(data), encoding="utf-8")
    imap_user.append(citizen_mail(1))
    assert poll(config, acknowledge_existing=True) == 1
    assert len(smtp_server.wait_for(1)) == 1


def test_cli_check_reports_located_error(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    data = load_rules()
    data["mailboxes"]["general"]["imap"]["port"] = "imap"
    bad.write_text(dump_rules(data), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(bad), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"{bad}: mailboxes.general.imap.port:" in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(ROOT / "rules.yaml"), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr


def test_received_at_is_internaldate(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    when = datetime(2026, 11, 20, 23, 59, 30, tzinfo=UTC)
    general.append(citizen_mail(1), internaldate=when)
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    (received_at,) = db_rows(config, "SELECT received_at FROM messages")[0]
    assert received_at.startswith("2026-11-20 23:59:30")


def test_decoded_subject_roundtrip_non_ascii(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(
        citizen_mail(1, subject="=?utf-8?q?Probl=C3=A8me_d=27acc=C3=A8s_=C3=A0_l=27ANTS?=")
    )
    assert poll(config, acknowledge_existing=True) == 0
    raw = smtp.wait_for(1)[0].raw
    header_line = raw.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0]
    assert header_line.isascii()  # RFC 2047 encoded on the wire
    assert str(make_header(decode_header(subject_of(raw)))).endswith("Problème d'accès à l'ANTS")


def test_huge_message_is_acknowledged_with_bounded_read(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(
        tmp_path,
        imap_user,
        etrangers_user,
        smtp_server,
        polling={"max_message_bytes": 100_000},
    )
    imap_user.append(citizen_mail(1, body="Pièce jointe scannée\n" + "A" * 2_000_000))
    assert poll(config, acknowledge_existing=True) == 0
    assert len(smtp_server.wait_for(1)) == 1
    ((size, defects),) = db_rows(config, "SELECT size, defects FROM messages")
    assert size > 2_000_000
    assert "TruncatedHugeMessage" in defects


def test_a_declared_implicit_decision_is_said_in_the_ar(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """CRPA L112-11: a mail routed to a service and category the prefecture declared
    (``routing.implicit_decisions``) gets an AR that says what silence will mean, from its
    date of receipt, in French and in the citizen's language, text and HTML; a mail routed
    elsewhere gets none of it."""
    rules = load_rules()
    rules["routing"]["implicit_decisions"] = {
        "general": {"information": {"decision": "rejet", "delay": "2 mois"}}
    }
    config = write_config(
        tmp_path, imap_user, etrangers_user, smtp_server, routing=rules["routing"]
    )
    imap_user.append(citizen_mail(1))  # « Quels sont les horaires d'ouverture ? »: general
    english = "Hello,\nWhat are the opening hours of the prefecture? I would like to come.\n"
    imap_user.append(
        citizen_mail(2, sender="john@example.org", subject="Opening hours", body=english)
    )
    etrangers_user.append(
        citizen_mail(3, sender="olena@example.net", to=ETRANGERS, subject="Titre de séjour")
    )
    assert poll(config, acknowledge_existing=True) == 0
    by_recipient = {r.rcpt_tos[0]: r for r in smtp_server.wait_for(3)}
    routed = dict(db_rows(config, "SELECT subject, service || '/' || category FROM messages"))
    assert routed == {
        "Demande de renseignements": "general/information",
        "Opening hours": "general/information",
        "Titre de séjour": "etrangers/information",
    }

    def parts(recipient: str) -> tuple[str, str]:
        msg = email.message_from_bytes(by_recipient[recipient].raw, policy=email.policy.default)
        text, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert text is not None and html is not None
        return " ".join(text.get_content().split()), " ".join(html.get_content().split())

    (stored,) = [m for m in imap_user.messages() if b"<citizen-1@" in m.raw]
    received = date_fr(stored.internaldate, style="date")  # Paris, as the AR prints it
    text, html = parts("marie.dupont@example.fr")
    assert (
        f"Sans réponse de notre part dans un délai de 2 mois à compter du {received}"
        " (date de réception), votre demande sera considérée comme rejetée. Vous pourrez"
        " alors contester ce refus dans les 2 mois qui suivent"
    ) in text
    assert "https://citoyens.telerecours.fr" in text and "month(s)" not in text
    assert re.search(r"<strong[^>]*>rejetée</strong>", html)
    assert 'href="https://citoyens.telerecours.fr"' in html

    text, html = parts("john@example.org")
    assert "IN ENGLISH" in text
    assert "votre demande sera considérée comme rejetée" in text
    assert (
        "If we have not answered you within 2 month(s) from the day we received your"
        " request, your request will be considered refused."
    ) in text
    assert "your request will be considered refused" in html
    assert html.count('href="https://citoyens.telerecours.fr"') == 2  # French, English

    text, html = parts("olena@example.net")
    for part in (text, html):
        assert "Sans réponse" not in part and "telerecours" not in part


def test_poll_with_an_imap_password_not_set_says_so_in_one_line(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's `password_env` not exported (or a unit without its environment): the
    poll fails for that mailbox (exit 1) with the variable named, and no traceback, which
    would say mailbot has a bug; the other mailbox is still served."""
    monkeypatch.delenv("MAILBOT_TEST_UNSET_PASSWORD", raising=False)
    data = load_rules(write_config(tmp_path, imap_user, etrangers_user, smtp_server))
    imap = data["mailboxes"]["general"]["imap"]
    del imap["password_file"]
    imap["password_env"] = "MAILBOT_TEST_UNSET_PASSWORD"
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data), encoding="utf-8")

    polled = run_main(config, "-q", "poll", "--once")

    assert polled.returncode == 1
    failed = [line for line in polled.stderr.splitlines() if "mailbox=general " in line]
    assert failed and all("traceback=" not in line for line in failed), polled.stderr
    unset = "no IMAP password: environment variable MAILBOT_TEST_UNSET_PASSWORD is not set"
    assert unset in failed[0]
    assert "mailbox=etrangers" not in polled.stderr  # reached, polled, nothing to say
