"""Reading delivery reports (core/bounces): real-world shaped bounces written for these
tests (tests/data/bounces), a permanent failure told from a delay, our mail named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.core.bounces import (
    MAX_DIAGNOSTIC,
    diagnostic_text,
    failure_of,
    read_report,
    reason_fr,
)

SAMPLES = Path(__file__).parent / "data" / "bounces"


def report(name: str):  # type: ignore[no-untyped-def]
    found = read_report((SAMPLES / name).read_bytes())
    assert found is not None, name
    return found


@pytest.mark.parametrize(
    ("name", "message_id", "recipient", "status"),
    [
        (
            "postfix-dsn.eml",
            "<ar.postfix.1@prefecture.example>",
            "jean.dupont@example.net",
            "5.1.1",
        ),
        (
            "exchange-ndr.eml",
            "<reply.exchange.2@prefecture.example>",
            "marie.martin@contoso.example",
            "5.1.10",
        ),
        (
            "gmail-bounce.eml",
            "<notice.gmail.3@prefecture.example>",
            "paul.durand123@gmail.example",
            "5.1.1",
        ),
        ("qmail-text.eml", "<ar.qmail.4@prefecture.example>", "luc.bernard@fai.example", "5.1.1"),
    ],
)
def test_a_permanent_failure_names_our_mail_and_its_recipient(
    name: str, message_id: str, recipient: str, status: str
) -> None:
    found = report(name)
    assert found.bounced and not found.delayed
    assert found.message_ids == (message_id,)
    failure = failure_of(found, recipient.upper())  # addresses compared without case
    assert failure is not None and failure.status == status
    assert failure.diagnostic and "\n" not in failure.diagnostic and "\r" not in failure.diagnostic
    assert len(failure.diagnostic) <= MAX_DIAGNOSTIC
    assert "@" not in failure.diagnostic  # the addresses it quotes are masked
    assert failure_of(found, "someone.else@example.net") is None


def test_the_diagnostics_read_as_the_server_said() -> None:
    assert report("postfix-dsn.eml").failures[0].diagnostic == (
        "550 5.1.1 <adresse>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert report("qmail-text.eml").failures[0].diagnostic == (
        "Sorry, no mailbox here by that name. (#5.1.1)"
    )
    gmail = report("gmail-bounce.eml").failures[0].diagnostic
    assert gmail.startswith("550-5.1.1 The email account that you tried to reach does not exist")
    assert gmail.endswith("…") and len(gmail) == MAX_DIAGNOSTIC


def test_a_delay_is_no_bounce() -> None:
    found = report("delayed-dsn.eml")
    assert found.delayed and not found.bounced and found.failures == ()


def test_a_bounce_about_a_mail_not_ours_names_that_mail() -> None:
    found = report("not-ours-dsn.eml")
    assert found.message_ids == ("<CAB1234xyz@mail.citoyen.example>",)
    assert found.bounced  # the intake matches no outbox mail with it: skipped as before


def test_a_citizens_mail_or_garbage_is_no_report() -> None:
    citizen = (
        b"From: a@example.net\r\nTo: contact@prefecture.example\r\nSubject: titre\r\n\r\nBonjour"
    )
    assert read_report(citizen) is None
    assert read_report(b"\xff\xfe\x00garbage") is None
    broken = (SAMPLES / "postfix-dsn.eml").read_bytes().replace(b"Final-Recipient", b"X-Nothing")
    found = read_report(broken)
    assert found is not None and [f.recipient for f in found.failures] == [
        "jean.dupont@example.net"
    ]


def test_diagnostic_text_is_one_short_line() -> None:
    text = diagnostic_text("smtp; 550 boom\r\nInjected: header\x00" + "x" * 500)
    assert text.startswith("550 boom Injected: header") and len(text) == MAX_DIAGNOSTIC
    assert not any(c in text for c in "\r\n\x00")


def test_the_status_in_french() -> None:
    assert reason_fr("5.1.1") == "adresse inconnue"
    assert reason_fr("5.2.2") == "boîte aux lettres pleine"
    assert reason_fr("5.1.10") == "domaine sans messagerie"
    assert reason_fr("5.7.1") == "refusé par le serveur du destinataire"
    assert reason_fr("") == "distribution impossible"
