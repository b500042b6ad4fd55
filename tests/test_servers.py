"""The test servers themselves work: if these fail, every other server test is meaningless."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib
import pytest
from imapclient import IMAPClient
from servers import DovecotServer, MailUser, SmtpServer

RAW = b"From: alice@example.org\r\nTo: accueil@example.org\r\nSubject: hello\r\n\r\nHi.\r\n"


def test_dovecot_starts_quickly(dovecot: DovecotServer) -> None:
    assert dovecot.running
    assert dovecot.startup_seconds is not None and dovecot.startup_seconds < 5


def test_login_append_and_read_back(imap_user: MailUser) -> None:
    when = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
    first = imap_user.append(RAW)
    second = imap_user.append(RAW, flags=["\\Seen"], internaldate=when)
    assert second > first
    assert imap_user.message_count() == 2
    assert imap_user.uids() == [first, second]
    assert imap_user.flags() == {first: frozenset(), second: frozenset({"\\Seen"})}
    stored = imap_user.messages()
    assert [message.raw for message in stored] == [RAW, RAW]
    assert stored[1].internaldate == when


def test_each_user_has_a_fresh_mailbox(dovecot: DovecotServer, imap_user: MailUser) -> None:
    imap_user.append(RAW)
    other = dovecot.new_user()
    assert other.message_count() == 0
    assert imap_user.message_count() == 1


def test_wrong_password_is_refused(dovecot: DovecotServer, imap_user: MailUser) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=5)
    try:
        with pytest.raises(IMAPClient.Error):
            client.login(imap_user.name, "not-the-password")
    finally:
        client.shutdown()


def test_imap_config_points_at_the_user(imap_user: MailUser) -> None:
    config = imap_user.imap_config(sent_folder="Sent")
    assert config.security == "none"
    assert config.username == imap_user.name
    assert config.password() == imap_user.password
    assert config.sent_folder == "Sent"


def test_sent_folder_can_be_created_and_appended_to(imap_user: MailUser) -> None:
    imap_user.create_folder("Sent")
    uid = imap_user.append(RAW, folder="Sent", flags=["\\Seen"])
    assert imap_user.flags("Sent") == {uid: frozenset({"\\Seen"})}
    assert imap_user.message_count() == 0


def test_reset_uidvalidity_renumbers_same_messages(imap_user: MailUser) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    imap_user.append(RAW, internaldate=when)
    imap_user.append(RAW.replace(b"hello", b"again"), flags=["\\Seen", "\\Flagged"])
    imap_user.append(RAW, folder="Archive")  # UIDs 1-3 in INBOX, then reset
    before = imap_user.messages()
    old_validity = imap_user.uid_validity()

    new_validity = imap_user.reset_uidvalidity()

    assert new_validity != old_validity
    assert imap_user.uid_validity() == new_validity
    after = imap_user.messages()
    assert [(m.raw, m.flags, m.internaldate) for m in after] == [
        (m.raw, m.flags, m.internaldate) for m in before
    ]
    assert imap_user.message_count("Archive") == 1  # other folders untouched


def test_reset_uidvalidity_of_another_folder(imap_user: MailUser) -> None:
    imap_user.append(RAW, folder="Sent")
    old_validity = imap_user.uid_validity("Sent")
    assert imap_user.reset_uidvalidity("Sent") != old_validity
    assert imap_user.message_count("Sent") == 1


def test_drop_connections_cuts_open_sessions(dovecot: DovecotServer, imap_user: MailUser) -> None:
    client = imap_user.connect()
    client.select_folder("INBOX", readonly=True)
    assert dovecot.connection_count(imap_user.name) == 1
    imap_user.drop_connections()
    assert dovecot.connection_count(imap_user.name) == 0
    with pytest.raises(IMAPClient.AbortError):
        client.noop()
    client.shutdown()
    with imap_user.connect() as again:  # the user can log in again at once
        again.noop()


def _message(subject: str = "test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "accueil@example.org"
    message["To"] = "citizen@example.net"
    message["Subject"] = subject
    message.set_content("Bonjour.\n")
    return message


def _send(server: SmtpServer, sender: str = "", subject: str = "test") -> None:
    with smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.send_message(_message(subject), from_addr=sender, to_addrs=["citizen@example.net"])


def test_smtp_accepts_null_sender(smtp_server: SmtpServer) -> None:
    _send(smtp_server, sender="")
    (received,) = smtp_server.wait_for(1)
    assert received.mail_from == ""
    assert received.rcpt_tos == ("citizen@example.net",)
    assert b"Subject: test" in received.raw


def test_smtp_with_aiosmtplib_and_smtp_config(smtp_server: SmtpServer) -> None:
    config = smtp_server.smtp_config()
    assert config.security == "none"

    async def send() -> None:
        await aiosmtplib.send(
            _message(),
            sender="bounces@example.org",
            recipients=["citizen@example.net"],
            hostname=config.host,
            port=config.port,
            start_tls=False,
            timeout=5,
        )

    asyncio.run(send())
    (received,) = smtp_server.wait_for(1)
    assert received.mail_from == "bounces@example.org"


def test_smtp_temporary_failure_then_success(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(1)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(smtp_server, subject="first try")
    assert refused.value.smtp_code == 451
    assert smtp_server.messages == []
    _send(smtp_server, subject="second try")
    (received,) = smtp_server.wait_for(1)
    assert b"second try" in received.raw


def test_smtp_permanent_rejection(smtp_server: SmtpServer) -> None:
    smtp_server.reject_next(1)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(smtp_server)
    assert refused.value.smtp_code == 550


def test_smtp_failure_at_rcpt(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(1, stage="rcpt")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(smtp_server)
    assert refused.value.recipients["citizen@example.net"][0] == 451
    _send(smtp_server)
    assert len(smtp_server.wait_for(1)) == 1


def test_smtp_clear_and_wait_timeout(smtp_server: SmtpServer) -> None:
    _send(smtp_server)
    smtp_server.wait_for(1)
    smtp_server.fail_next(3)
    smtp_server.clear()
    assert smtp_server.messages == []
    _send(smtp_server)  # the scripted failures were cleared too
    with pytest.raises(AssertionError, match="expected 2"):
        smtp_server.wait_for(2, timeout=0.2)
