"""mailbot.imap against a real Dovecot: incremental, read-only, batched, IDLE, errors."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from servers import MailUser

from mailbot.config import ImapConfig
from mailbot.errors import MailboxError
from mailbot.imap import ImapMailbox


def raw(n: int, size: int = 0) -> bytes:
    body = f"Message {n}\r\n" + ("x" * 76 + "\r\n") * (size // 78)
    return (
        f"From: usager{n}@example.fr\r\nTo: pref-contact@seine-maritime.gouv.fr\r\n"
        f"Subject: test {n}\r\nMessage-ID: <m{n}@example.fr>\r\n\r\n{body}"
    ).encode()


def open_box(user: MailUser, **options: int) -> ImapMailbox:
    box = ImapMailbox(user.imap_config(), name="general", **options)
    box.connect()
    return box


def test_incremental_reading_by_uid(imap_user: MailUser) -> None:
    for n in range(3):
        imap_user.append(raw(n))
    box = open_box(imap_user)
    validity = box.select("INBOX")
    assert validity == imap_user.uid_validity()
    first = list(box.fetch(box.uids_after(0), batch_size=10))
    assert [m.uid for m in first] == [1, 2, 3]
    assert box.uids_after(3) == []  # the "n:*" quirk must not return the last UID again
    imap_user.append(raw(3))
    imap_user.append(raw(4))
    box.select("INBOX")
    assert box.uids_after(3) == [4, 5]
    box.close()


def test_batches_cover_everything_in_order(imap_user: MailUser) -> None:
    for n in range(5):
        imap_user.append(raw(n))
    box = open_box(imap_user)
    box.select("INBOX")
    mails = list(box.fetch([5, 1, 3, 2, 4], batch_size=2))
    assert [m.uid for m in mails] == [1, 2, 3, 4, 5]
    assert [m.raw for m in mails] == [raw(n) for n in range(5)]
    box.close()


def test_internaldate_is_aware_and_exact(imap_user: MailUser) -> None:
    when = datetime(2026, 11, 20, 23, 59, 30, tzinfo=UTC)
    imap_user.append(raw(1), internaldate=when)
    box = open_box(imap_user)
    box.select("INBOX")
    (mail,) = box.fetch([1], batch_size=1)
    assert mail.internaldate.tzinfo is not None
    assert mail.internaldate == when
    box.close()


def test_reading_never_changes_flags(imap_user: MailUser) -> None:
    imap_user.append(raw(1))
    imap_user.append(raw(2), flags=["\\Seen", "\\Flagged"])
    before = imap_user.flags()
    box = open_box(imap_user)
    box.select("INBOX")
    assert len(list(box.fetch([1, 2], batch_size=5))) == 2
    box.close()
    assert imap_user.flags() == before
    assert "\\Seen" not in before[1]
    assert imap_user.message_count() == 2


def test_uidvalidity_change_is_visible(imap_user: MailUser) -> None:
    imap_user.append(raw(1))
    box = open_box(imap_user)
    old = box.select("INBOX")
    box.close()
    imap_user.reset_uidvalidity()
    box = open_box(imap_user)
    assert box.select("INBOX") != old
    box.close()


def test_huge_message_is_read_as_header_and_start(imap_user: MailUser) -> None:
    imap_user.append(raw(1, size=600_000))
    imap_user.append(raw(2))
    box = open_box(imap_user, max_message_bytes=100_000)
    box.select("INBOX")
    huge, small = list(box.fetch([1, 2], batch_size=10))
    assert huge.truncated and huge.size > 600_000
    assert huge.raw.startswith(b"From: usager1@example.fr")
    assert 262_144 <= len(huge.raw) < 300_000
    assert not small.truncated and small.raw == raw(2)
    box.close()


def test_idle_reports_arrival_and_timeout(imap_user: MailUser) -> None:
    box = open_box(imap_user)
    box.select("INBOX")
    assert box.supports_idle()
    start = time.monotonic()
    assert box.wait_for_changes(0.5) is False
    assert time.monotonic() - start >= 0.45
    threading.Timer(0.3, lambda: imap_user.append(raw(1))).start()
    start = time.monotonic()
    assert box.wait_for_changes(10) is True
    assert time.monotonic() - start < 5
    assert box.uids_after(0) == [1]
    box.close()


def test_wrong_password_is_a_mailbox_error_without_the_secret(
    imap_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_PASSWORD", "not-the-s3cret-value")
    config = imap_user.imap_config().model_copy(
        update={"password_file": None, "password_env": "WRONG_PASSWORD"}
    )
    box = ImapMailbox(config, name="general")
    with pytest.raises(MailboxError) as info:
        box.connect()
    assert "login refused" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_dropped_connection_raises_mailbox_error(imap_user: MailUser) -> None:
    box = open_box(imap_user)
    box.select("INBOX")
    imap_user.drop_connections()
    time.sleep(0.3)
    with pytest.raises(MailboxError):
        box.select("INBOX")
        box.uids_after(0)
    box.connect()  # and it can reconnect
    box.select("INBOX")
    box.close()


def test_tls_is_the_default_and_never_falls_back(imap_user: MailUser) -> None:
    plain = imap_user.imap_config()
    config = ImapConfig(
        host=plain.host,
        port=plain.port,
        username=plain.username,
        password_file=plain.password_file,
        timeout_seconds=5,
    )
    assert config.security == "tls" and config.verify_certificate
    with pytest.raises(MailboxError, match="cannot connect"):
        ImapMailbox(config, name="general").connect()


def test_nothing_listening_is_a_mailbox_error(imap_user: MailUser) -> None:
    config = imap_user.imap_config().model_copy(update={"port": 1})
    with pytest.raises(MailboxError, match="cannot connect"):
        ImapMailbox(config, name="general").connect()
