"""A bounce of our AR, end to end with the real Dovecot and aiosmtpd: a citizen's mail gets
its AR, the relay later returns a DSN about it to the mailbox; the next poll records the
bounce on the citizen's message (core/bounces, app/bounces), sends nothing in answer, and
`mailbot unanswered` shows it. A delay notice and a bounce about another mail record none."""

from __future__ import annotations

import email
import email.policy
import json
from typing import Any

import pytest
from test_e2e import (  # noqa: F401 - fixtures
    GENERAL,
    citizen_mail,
    db_rows,
    etrangers_user,
    poll,
    setup,
)

from mailbot.cli import main

CITIZEN = "marie.dupont@example.fr"


def dsn(
    about: str, recipient: str, action: str = "failed", status: str = "5.1.1", to: str = GENERAL
) -> bytes:
    """A Postfix-shaped DSN from our relay about the mail ``about`` (its Message-ID)."""
    diagnostic = f"smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown"
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@relay.seine-maritime.gouv.fr (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{action}-{status}@relay.seine-maritime.gouv.fr>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        "--R\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host relay.seine-maritime.gouv.fr.\r\n\r\n"
        "--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.seine-maritime.gouv.fr\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\nRemote-MTA: dns; mx.example.fr\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n    (in reply to RCPT TO command)\r\n\r\n"
        "--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: contact@seine-maritime.gouv.fr\r\nTo: {recipient}\r\n"
        f"Subject: AR\r\nMessage-ID: {about}\r\n\r\n--R--\r\n"
    ).encode()


def unanswered(config: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["--config", str(config), "-q", "unanswered"]) == 0
    return capsys.readouterr().out


def acknowledged(general: Any, smtp: Any, config: Any) -> str:
    """A citizen's mail polled and acknowledged: its AR's Message-ID, as a DSN quotes it."""
    general.append(citizen_mail(1, sender=CITIZEN))
    assert poll(config, acknowledge_existing=True) == 0
    ar = email.message_from_bytes(smtp.wait_for(1)[0].raw, policy=email.policy.default)
    return str(ar["Message-ID"])


def test_a_bounced_ar_is_recorded_on_the_citizens_message_and_shown(
    setup: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, general, _etrangers, smtp = setup
    general.append(dsn(acknowledged(general, smtp, config), CITIZEN.upper()))
    assert poll(config) == 0

    assert len(smtp.messages) == 1  # nothing sent in answer to the bounce
    rows = db_rows(config, "SELECT id, decision, reasons FROM messages ORDER BY uid")
    assert [r[1] for r in rows] == ["acknowledge", "skip"]  # the bounce stays skipped
    events = db_rows(config, "SELECT message_pk, detail FROM events WHERE kind = 'bounced'")
    assert [pk for pk, _ in events] == [rows[0][0]]  # on the citizen's message
    detail = json.loads(events[0][1])
    assert detail["kind"] == "ar" and detail["status"] == "5.1.1" and detail["sent_at"]
    assert detail["bounce"] == rows[1][0]
    assert detail["diagnostic"] == (
        "550 5.1.1 <adresse>: Recipient address rejected: User unknown"
        " (in reply to RCPT TO command)"
    )
    out = unanswered(config, capsys)
    line = next(x for x in out.splitlines() if "Demande de renseignements" in x)
    assert "5.1.1" in line  # the bounce's mark on the unanswered message's line
    assert "not delivered" in out


def test_a_delay_or_a_bounce_about_another_mail_records_nothing(
    setup: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, general, _etrangers, smtp = setup
    ar_id = acknowledged(general, smtp, config)
    general.append(dsn(ar_id, CITIZEN, action="delayed", status="4.4.1"))
    general.append(dsn("<not-ours@example.fr>", CITIZEN))
    general.append(dsn(ar_id, "someone.else@example.fr"))
    assert poll(config) == 0
    assert len(smtp.messages) == 1
    assert db_rows(config, "SELECT count(*) FROM events WHERE kind = 'bounced'") == [(0,)]
    assert "not delivered" not in unanswered(config, capsys)
