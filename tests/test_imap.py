"""mailbot.mail.imap against a real Dovecot: incremental reads, batches, dates, flags left alone,
UIDVALIDITY, IDLE, and failures that must surface as MailboxError."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from servers import DovecotServer, MailUser, free_port

from mailbot.config import ImapConfig
from mailbot.core.message import mime_leaves
from mailbot.errors import MailboxError
from mailbot.mail import display
from mailbot.mail.imap import FetchedMail, ImapMailbox


def mail(n: int) -> bytes:
    return (
        "From: Alice Martin <alice@example.org>\r\n"
        "To: accueil@seine-maritime.gouv.fr\r\n"
        f"Subject: Demande {n}\r\n"
        f"Message-ID: <demande-{n}@example.org>\r\n"
        "Date: Tue, 05 Mar 2024 10:00:00 +0100\r\n"
        "\r\n"
        f"Bonjour, ceci est la demande {n}.\r\n"
    ).encode()


@pytest.fixture
def box(imap_user: MailUser) -> Iterator[ImapMailbox]:
    mailbox = ImapMailbox(imap_user.imap_config(), name="accueil")
    mailbox.connect()
    yield mailbox
    mailbox.close()


def later(delay: float, action: Callable[[], Any]) -> threading.Thread:
    """Run ``action`` from another thread (another IMAP connection) after ``delay``."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- reading ------------------------------------------------------------------------------


def test_incremental_reading(imap_user: MailUser, box: ImapMailbox) -> None:
    first = [imap_user.append(mail(n)) for n in (1, 2, 3)]
    box.select("INBOX")
    uids = box.uids_after(0)
    assert uids == first
    assert [m.raw for m in box.fetch(uids, batch_size=10)] == [mail(1), mail(2), mail(3)]
    last = uids[-1]
    assert box.uids_after(last) == []

    second = [imap_user.append(mail(n)) for n in (4, 5)]
    # Same session, no reselect: new mail must be seen by the next poll.
    assert box.uids_after(last) == second
    assert [m.raw for m in box.fetch(second, batch_size=10)] == [mail(4), mail(5)]


def test_uids_after_ignores_the_star_quirk(imap_user: MailUser, box: ImapMailbox) -> None:
    uids = [imap_user.append(mail(n)) for n in (1, 2)]
    box.select("INBOX")
    # UID SEARCH UID 3:* and UID 100:* both match the last message (UID 2) on the server.
    assert box.uids_after(uids[-1]) == []
    assert box.uids_after(100) == []
    assert box.uids_after(uids[0]) == [uids[1]]


def test_empty_folder(box: ImapMailbox) -> None:
    box.select("INBOX")
    assert box.uids_after(0) == []
    assert list(box.fetch([], batch_size=5)) == []


def test_fetch_in_batches_keeps_uid_order(
    imap_user: MailUser, box: ImapMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = [imap_user.append(mail(n)) for n in range(1, 6)]
    box.select("INBOX")
    client = box._client
    batches: list[list[int]] = []
    real_fetch = client.fetch

    def spy(messages: list[int], data: list[bytes]) -> Any:
        assert not any(item.startswith((b"BODY[", b"RFC822.TEXT")) for item in data)
        if b"BODY.PEEK[]" in data:
            batches.append(list(messages))
        return real_fetch(messages, data)

    monkeypatch.setattr(client, "fetch", spy)
    fetched = list(box.fetch(list(reversed(uids)), batch_size=2))

    assert [m.uid for m in fetched] == uids
    assert [m.raw for m in fetched] == [mail(n) for n in range(1, 6)]
    assert batches == [uids[0:2], uids[2:4], uids[4:5]]


def test_fetch_is_lazy_between_batches(imap_user: MailUser, box: ImapMailbox) -> None:
    uids = [imap_user.append(mail(n)) for n in range(1, 4)]
    box.select("INBOX")
    iterator = box.fetch(uids, batch_size=2)
    assert isinstance(iterator, Generator)
    assert isinstance(next(iterator), FetchedMail)
    iterator.close()  # a consumer may stop early; the connection stays usable
    assert box.uids_after(0) == uids


def test_fetch_skips_vanished_uids(imap_user: MailUser, box: ImapMailbox) -> None:
    uid = imap_user.append(mail(1))
    box.select("INBOX")
    assert [m.uid for m in box.fetch([uid, uid + 50], batch_size=10)] == [uid]


def test_fetch_rejects_a_zero_batch(box: ImapMailbox) -> None:
    box.select("INBOX")
    with pytest.raises(ValueError):
        list(box.fetch([1], batch_size=0))


def test_a_mail_the_server_cannot_read_is_given_up_on_alone(
    imap_user: MailUser, box: ImapMailbox
) -> None:
    """Dovecot fails a whole FETCH (and closes the session) when one maildir file cannot be
    read: the batch is read again in halves on new connections, every other mail comes in
    UID order, and the unreadable ones come as ``refused`` with the server's answer."""
    uids = [imap_user.append(mail(n)) for n in range(1, 7)]
    with imap_user.unreadable(b"<demande-2@"), imap_user.unreadable(b"<demande-5@"):
        box.select("INBOX")
        fetched = list(box.fetch(uids, batch_size=200))
        assert [m.uid for m in fetched] == uids
        refused = {m.uid: m.refused for m in fetched if m.refused}
        assert set(refused) == {uids[1], uids[4]}
        assert all("FETCH failed" in answer for answer in refused.values())
        readable = [m.raw for m in fetched if not m.refused]
        assert readable == [mail(n) for n in (1, 3, 4, 6)]
        assert fetched[1].raw == b"" and fetched[1].internaldate.tzinfo is not None
        assert box.connected and box.uids_after(0) == uids  # still on the folder
    (again,) = box.fetch([uids[1]], batch_size=1)  # readable again: read whole
    assert again.raw == mail(2) and not again.refused
    assert all("\\Seen" not in flags for flags in imap_user.flags().values())


def test_a_refusal_is_narrowed_its_answer_masked(
    imap_user: MailUser, box: ImapMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tagged NO to a FETCH (other servers than Dovecot) is narrowed the same way; an
    address the server quotes in its answer is masked (the answer is stored and logged)."""
    uids = [imap_user.append(mail(n)) for n in range(1, 4)]
    real_fetch = IMAPClient.fetch

    def refusing(client: IMAPClient, messages: list[int], data: list[bytes]) -> Any:
        if uids[2] in messages and b"BODY.PEEK[]" in data:
            raise IMAPClientError("FETCH command error: NO [b'cannot read alice@example.org']")
        return real_fetch(client, messages, data)

    monkeypatch.setattr(IMAPClient, "fetch", refusing)
    box.select("INBOX")
    fetched = list(box.fetch(uids, batch_size=10))
    assert [(m.uid, bool(m.refused)) for m in fetched] == [(u, u == uids[2]) for u in uids]
    assert "alice@" not in fetched[2].refused and "cannot read" in fetched[2].refused


def test_a_connection_lost_during_fetch_is_not_narrowed(
    imap_user: MailUser, box: ImapMailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session cut during a FETCH (a kick, a restart) says nothing of the mails: it is a
    MailboxError as before (the poll runs again later), never a mail given up on."""
    uids = [imap_user.append(mail(n)) for n in range(1, 4)]
    box.select("INBOX")
    client = box._client
    real_fetch = client.fetch

    def cut(messages: list[int], data: list[bytes]) -> Any:
        if b"BODY.PEEK[]" in data:
            imap_user.drop_connections()
        return real_fetch(messages, data)

    monkeypatch.setattr(client, "fetch", cut)
    with pytest.raises(MailboxError, match="accueil"):
        list(box.fetch(uids, batch_size=10))
    assert not box.connected


def test_internaldate_is_aware_and_exact(imap_user: MailUser, box: ImapMailbox) -> None:
    paris_winter = timezone(timedelta(hours=1))
    received = datetime(2024, 3, 5, 14, 30, 12, tzinfo=paris_winter)
    uid = imap_user.append(mail(1), internaldate=received)
    box.select("INBOX")
    (fetched,) = box.fetch([uid], batch_size=1)
    assert fetched.internaldate.tzinfo is not None
    # The same instant (Dovecot keeps the instant, and answers in its own time zone).
    assert fetched.internaldate == received
    assert fetched.internaldate.astimezone(UTC) == datetime(2024, 3, 5, 13, 30, 12, tzinfo=UTC)


def test_reading_never_changes_flags(imap_user: MailUser, box: ImapMailbox) -> None:
    unread = imap_user.append(mail(1))
    read = imap_user.append(mail(2), flags=["\\Seen"])
    flagged = imap_user.append(mail(3), flags=["\\Flagged", "\\Answered"])
    before = imap_user.flags()
    assert before == {
        unread: frozenset(),
        read: frozenset({"\\Seen"}),
        flagged: frozenset({"\\Flagged", "\\Answered"}),
    }

    box.select("INBOX")
    assert len(list(box.fetch(box.uids_after(0), batch_size=2))) == 3
    box.close()

    assert imap_user.flags() == before


def test_huge_message_is_read_as_header_and_start(imap_user: MailUser) -> None:
    body = "Pièce jointe scannée\r\n" + ("x" * 76 + "\r\n") * 8000  # about 600 kB
    huge_raw = mail(1).replace(b"\r\n\r\n", b"\r\n\r\n" + body.encode(), 1)
    imap_user.append(huge_raw)
    imap_user.append(mail(2))
    with ImapMailbox(imap_user.imap_config(), name="accueil", max_message_bytes=100_000) as box:
        box.select("INBOX")
        huge, small = list(box.fetch(box.uids_after(0), batch_size=10))
    assert huge.truncated and huge.size == len(huge_raw)
    assert huge.raw.startswith(mail(1).split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert 262_144 <= len(huge.raw) < 300_000
    assert not small.truncated and small.raw == mail(2) and small.size == len(mail(2))
    assert "\\Seen" not in imap_user.flags()[huge.uid]


def test_a_part_is_fetched_alone_by_the_section_the_parser_names(imap_user: MailUser) -> None:
    """Each leaf's section, as ``mime_leaves`` names it, is the server's (Dovecot's
    BODYSTRUCTURE agrees on type and size), and its body fetched alone decodes to the
    parser's bytes: what the console serves of a huge mail read in part. \\Seen stays."""
    raw = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>Bonjour</p>\r\n--a--\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: tr\r\n\r\ntexte\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: tr2\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/plain\r\n\r\nci-dessous\r\n"
        b'--i\r\nContent-Type: image/png; name="photo.png"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--i--\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(bytes(range(256)) * 300)
        + b"--b--\r\n"
    )
    uid = imap_user.append(raw)
    leaves = list(mime_leaves(raw))
    with ImapMailbox(imap_user.imap_config(), name="accueil") as box:
        box.select("INBOX")
        for part, ctype, _attached, section in leaves:
            assert section is not None
            info = box.part_info(uid, section)
            assert info is not None and info.content_type == ctype, section
            body = box.fetch_part(uid, section)
            assert body is not None and len(body) == info.size, section
            assert display.decoded(body, info.transfer_encoding) == part.get_payload(decode=True)
        assert [s for *_leaf, s in leaves] == ["1.1", "1.2", "2.1", "3.1", "3.2", "4"]
        assert box.part_info(uid, "3") is None  # a forwarded mail is no leaf
        assert box.part_info(uid, "4.1") is None and box.part_info(uid, "9") is None
        with pytest.raises(ValueError, match="section"):
            box.part_info(uid, "1 BODY[]")
    assert "\\Seen" not in imap_user.flags()[uid]


def test_one_fetch_holds_at_most_max_message_bytes(
    imap_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of large mails (scans under the size limit) is fetched a few at a time: one
    FETCH response, in memory whole, holds about ``max_message_bytes`` of mail, not a
    batch's worth (200 mails of 20 MB: 4 GB)."""
    body = ("y" * 76 + "\r\n") * 800  # about 60 kB
    raws = [mail(n).replace(b"\r\n\r\n", b"\r\n\r\n" + body.encode(), 1) for n in range(5)]
    uids = [imap_user.append(raw) for raw in raws]
    with ImapMailbox(imap_user.imap_config(), name="accueil", max_message_bytes=130_000) as box:
        box.select("INBOX")
        client = box._client
        fetches: list[list[int]] = []
        real_fetch = client.fetch

        def spy(messages: list[int], data: list[bytes]) -> Any:
            if b"BODY.PEEK[]" in data:
                fetches.append(list(messages))
            return real_fetch(messages, data)

        monkeypatch.setattr(client, "fetch", spy)
        fetched = list(box.fetch(uids, batch_size=10))
    assert [m.raw for m in fetched] == raws and not any(m.truncated for m in fetched)
    assert fetches == [uids[0:2], uids[2:4], uids[4:5]]


def test_list_folders(imap_user: MailUser, box: ImapMailbox) -> None:
    imap_user.create_folder("Sent")
    assert {"INBOX", "Sent"} <= set(box.list_folders())


def test_select_unknown_folder(box: ImapMailbox) -> None:
    with pytest.raises(MailboxError, match=r"accueil.*Nope"):
        box.select("Nope")


# -- UIDVALIDITY --------------------------------------------------------------------------


def test_uidvalidity_is_returned_and_changes_after_reset(imap_user: MailUser) -> None:
    for n in (1, 2, 3):
        imap_user.append(mail(n))
    with ImapMailbox(imap_user.imap_config(), name="accueil") as box:
        validity = box.select("INBOX")
        assert validity == imap_user.uid_validity()
        old_uids = box.uids_after(0)

    new_validity = imap_user.reset_uidvalidity()

    with ImapMailbox(imap_user.imap_config(), name="accueil") as box:
        assert box.select("INBOX") == new_validity != validity
        new_uids = box.uids_after(0)
        assert [m.raw for m in box.fetch(new_uids, batch_size=10)] == [mail(n) for n in (1, 2, 3)]
    assert len(new_uids) == len(old_uids)


# -- IDLE ---------------------------------------------------------------------------------


def test_supports_idle(box: ImapMailbox) -> None:
    assert box.supports_idle()


def test_idle_wakes_up_when_mail_arrives(imap_user: MailUser, box: ImapMailbox) -> None:
    imap_user.append(mail(1))
    box.select("INBOX")
    last = box.uids_after(0)[-1]
    appender = later(0.3, lambda: imap_user.append(mail(2)))

    started = time.monotonic()
    assert box.wait_for_changes(timeout=20) is True
    assert time.monotonic() - started < 3
    appender.join()
    assert len(box.uids_after(last)) == 1
    # IDLE is over: the connection answers ordinary commands again.
    assert len(box.uids_after(0)) == 2


def test_idle_times_out_when_nothing_arrives(box: ImapMailbox) -> None:
    box.select("INBOX")
    box.uids_after(0)
    started = time.monotonic()
    assert box.wait_for_changes(timeout=1.0) is False
    assert 0.9 <= time.monotonic() - started < 3
    assert box.uids_after(0) == []


def test_mail_arriving_between_poll_and_idle_is_not_missed(
    imap_user: MailUser, box: ImapMailbox
) -> None:
    box.select("INBOX")
    assert box.uids_after(0) == []
    imap_user.append(mail(1))  # after the poll, before IDLE starts
    started = time.monotonic()
    assert box.wait_for_changes(timeout=20) is True
    assert time.monotonic() - started < 3
    assert len(box.uids_after(0)) == 1


def test_idle_reports_nothing_new_right_after_select(imap_user: MailUser) -> None:
    imap_user.append(mail(1))
    with ImapMailbox(imap_user.imap_config(), name="accueil") as box:
        box.select("INBOX")
        # The EXISTS of the SELECT itself is not news.
        assert box.wait_for_changes(timeout=0.5) is False


def test_connection_dropped_during_idle(imap_user: MailUser, box: ImapMailbox) -> None:
    box.select("INBOX")
    kicker = later(0.3, imap_user.drop_connections)
    started = time.monotonic()
    with pytest.raises(MailboxError, match="accueil"):
        box.wait_for_changes(timeout=20)
    assert time.monotonic() - started < 5
    kicker.join()
    assert not box.connected


# -- failures -----------------------------------------------------------------------------


def test_wrong_password(imap_user: MailUser, tmp_path: Path) -> None:
    secret = "Wr0ng-S3cret-Value"
    (tmp_path / "password").write_text(secret)
    config = imap_user.imap_config().model_copy(update={"password_file": tmp_path / "password"})
    box = ImapMailbox(config, name="accueil")
    with pytest.raises(MailboxError) as refused:
        box.connect()
    message = str(refused.value)
    assert secret not in message
    assert imap_user.password not in message
    assert "accueil" in message and "login" in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert not box.connected


def test_a_password_not_set_is_a_mailbox_error_naming_its_variable(
    imap_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment variable missing (a unit without its EnvironmentFile) is the
    mailbox's failure, told in one line as `check --connect` tells it, not an error the
    worker takes for a bug (a traceback at every poll cycle)."""
    monkeypatch.delenv("MAILBOT_TEST_UNSET_PASSWORD", raising=False)
    config = imap_user.imap_config().model_copy(
        update={"password_file": None, "password_env": "MAILBOT_TEST_UNSET_PASSWORD"}
    )
    box = ImapMailbox(config, name="accueil")
    with pytest.raises(MailboxError) as refused:
        box.connect()
    assert str(refused.value) == (
        "mailbox accueil: no IMAP password: environment variable"
        " MAILBOT_TEST_UNSET_PASSWORD is not set"
    )
    assert not box.connected


def test_connection_dropped_then_next_operation_fails(
    dovecot: DovecotServer, imap_user: MailUser, box: ImapMailbox
) -> None:
    imap_user.append(mail(1))
    box.select("INBOX")
    assert len(box.uids_after(0)) == 1
    imap_user.drop_connections()

    with pytest.raises(MailboxError, match="accueil"):
        box.uids_after(0)
    assert not box.connected
    with pytest.raises(MailboxError, match="not connected"):
        box.uids_after(0)
    box.close()  # tolerated on a dead connection

    box.connect()  # and the mailbox recovers with a new connection
    box.select("INBOX")
    assert len(box.uids_after(0)) == 1


def test_server_restart_is_a_mailbox_error(dovecot: DovecotServer, imap_user: MailUser) -> None:
    box = ImapMailbox(imap_user.imap_config(), name="accueil")
    box.connect()
    box.select("INBOX")
    dovecot.restart()
    with pytest.raises(MailboxError):
        box.uids_after(0)
    box.connect()
    box.select("INBOX")
    box.close()


def test_unreachable_server(imap_user: MailUser) -> None:
    config = imap_user.imap_config().model_copy(update={"port": free_port()})
    with pytest.raises(MailboxError, match="cannot connect"):
        ImapMailbox(config, name="accueil").connect()


def test_not_connected(imap_user: MailUser) -> None:
    box = ImapMailbox(imap_user.imap_config(), name="accueil")
    with pytest.raises(MailboxError, match="not connected"):
        box.select("INBOX")
    box.close()


def test_tls_is_required_by_default(dovecot: DovecotServer, imap_user: MailUser) -> None:
    """The default security is TLS, and it never degrades to a plaintext session."""
    plain = imap_user.imap_config()
    config = ImapConfig(
        host=plain.host,
        port=plain.port,
        username=plain.username,
        password_file=plain.password_file,
        timeout_seconds=5,
    )
    assert config.security == "tls"
    box = ImapMailbox(config, name="accueil")
    with pytest.raises(MailboxError, match=r"TLS|certificate") as refused:
        box.connect()
    assert imap_user.password not in str(refused.value)
    assert not box.connected
    assert dovecot.connection_count(imap_user.name) == 0


def test_tls_without_verification_still_needs_tls(imap_user: MailUser) -> None:
    config = imap_user.imap_config().model_copy(
        update={"security": "tls", "verify_certificate": False}
    )
    with pytest.raises(MailboxError, match="TLS"):
        ImapMailbox(config, name="accueil").connect()


def test_starttls_is_not_optional(imap_user: MailUser) -> None:
    """This Dovecot offers no STARTTLS: refusing to log in is the only right answer."""
    config = imap_user.imap_config().model_copy(update={"security": "starttls"})
    with pytest.raises(MailboxError, match="STARTTLS"):
        ImapMailbox(config, name="accueil").connect()


def test_source_never_alters_the_mailbox() -> None:
    """Guard: no flag store, expunge, delete, move or \\Seen-setting fetch in mailbot.imap."""
    source = Path(__file__).parents[1].joinpath("mailbot", "mail", "imap.py").read_text()
    code = re.sub(r'"""[\s\S]*?"""', "", source)  # docstrings may talk about these
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    forbidden = [
        r"\.(add|remove|set)_flags\(",
        r"\.(add|remove|set)_gmail_labels\(",
        r"\.(uid_)?expunge\(",
        r"\.delete_(messages|folder)\(",
        r"\.(move|copy|rename_folder|append|multiappend|close_folder)\(",
        r"\bSTORE\b",
        r"readonly\s*=\s*False",
    ]
    for pattern in forbidden:
        assert not re.search(pattern, code), pattern
    fetches = re.findall(r"\.fetch\(([^)]*)\)", code)
    assert fetches, "mailbot.mail.imap no longer fetches?"
    assert any("BODY.PEEK[]" in arguments for arguments in fetches)
    for arguments in fetches:
        # BODY[...] and RFC822 / RFC822.TEXT set \Seen; BODY.PEEK[...] and RFC822.SIZE do not.
        assert "BODY[" not in arguments, arguments
        assert not re.search(r"RFC822(?!\.SIZE|\.HEADER)", arguments), arguments
