"""A citizen's Message-ID longer than the 250 characters the ``message_id`` column indexes
(RFC 5322 allows any length within the 998-octet line; mail clients write 300+ character
ones) is stored as ``sha256:<hex>`` for lookups and duplicates. Every mail answering it
(the AR, a re-orientation, an agent's reply from ``mailbot reply`` or the console, the
transfer notice) threads on the real Message-ID, kept beside the hash; and the forward to
a service leaves. A Message-ID that would not fit on a header line, or one recorded before
the real one was kept, costs the threading only: the mail still leaves, a WARNING says so
without the identifier."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from poison import citizen
from refusals import query
from replying import Originals

from mailbot.app.context import App, build_app
from mailbot.app.reply import Draft, Replies
from mailbot.app.transfer import Transfers
from mailbot.core.incoming import IncomingMail
from mailbot.mail.compose import build_email
from mailbot.mail.smtp import FileTransport
from mailbot.render.rendering import RenderedMail
from mailbot.store import stored_id

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
# As a mail client writes one: 320 characters, well within its header line.
# The longest that fits "In-Reply-To: <id>" on a 998-octet line (RFC 5322 §2.1.1).
MAX_HEADER_ID_LENGTH = 998 - len("In-Reply-To: ")
LONG = "<" + "x" * 300 + ".long-id@client.example.org>"
PARENT = "<parent@example.fr>"


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def received(app: App, database: str, message_id: str, **headers: str) -> tuple[int, bytes]:
    """A citizen's mail to the general mailbox with this Message-ID: its row id, its bytes."""
    raw = citizen(1, Message_ID=message_id, **headers)
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, raw)])
    ((pk, decision),) = query(database, "SELECT id, decision FROM messages")
    assert decision == "acknowledge"
    return int(pk), raw


def sent(database: str, kind: str) -> list[EmailMessage]:
    rows = query(
        database,
        "SELECT b.raw FROM outbox o JOIN outbox_bodies b ON b.outbox_id = o.id"
        f" WHERE o.kind = '{kind}' ORDER BY o.id",
    )
    return [email.message_from_bytes(bytes(raw), policy=email.policy.default) for (raw,) in rows]


def reply(app: App, pk: int) -> int:
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    (outbox_id,) = replies.send("aleroux", pk, Draft.free("Bien reçu.")).outbox_ids
    return outbox_id


def by_id(database: str, outbox_id: int) -> EmailMessage:
    (row,) = query(database, f"SELECT raw FROM outbox_bodies WHERE outbox_id = {outbox_id}")
    return email.message_from_bytes(bytes(row[0]), policy=email.policy.default)


def test_the_long_id_is_hashed_for_lookups_and_kept_for_threading(app: App, database: str) -> None:
    received(app, database, LONG)
    ((key, full),) = query(database, "SELECT message_id, full_message_id FROM messages")
    assert key == stored_id(LONG) and str(key).startswith("sha256:")
    assert full == LONG


def test_an_ordinary_id_is_stored_once(app: App, database: str) -> None:
    received(app, database, "<short@example.fr>")
    assert query(database, "SELECT message_id, full_message_id FROM messages") == [
        ("<short@example.fr>", None)
    ]


def test_the_ar_threads_on_the_long_id(app: App, database: str) -> None:
    received(app, database, LONG, In_Reply_To=PARENT, References=PARENT)
    (ar,) = sent(database, "ar")
    assert ar["In-Reply-To"] == LONG
    assert str(ar["References"]).split() == [PARENT, LONG]


def test_a_reorientation_threads_on_the_long_id(app: App, database: str) -> None:
    raw = citizen(1, "Attestation d'accueil", Message_ID=LONG)
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, raw)])
    assert query(database, "SELECT reorient FROM messages") == [("mairie",)]
    (mail,) = sent(database, "ar")
    assert mail["In-Reply-To"] == LONG


def test_an_agents_reply_threads_on_the_long_id(app: App, database: str) -> None:
    pk, _raw = received(app, database, LONG, In_Reply_To=PARENT)
    mail = by_id(database, reply(app, pk))
    assert mail["In-Reply-To"] == LONG
    assert str(mail["References"]).split() == [PARENT, LONG]


def test_the_transfer_notice_threads_on_it_and_the_forward_leaves(app: App, database: str) -> None:
    pk, raw = received(app, database, LONG)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, Originals(raw))
    done = transfers.transfer("lmoreau", pk, "cartes-grises", "carte grise")  # general's head
    (notice,) = sent(database, "notice")
    assert notice["In-Reply-To"] == LONG
    assert str(notice["References"]).split() == [LONG]
    (forward,) = sent(database, "forward")
    assert done.outbox_ids
    assert LONG.encode() in forward.as_bytes()  # the original, attached byte for byte


def test_a_row_recorded_before_keeps_no_thread_but_the_reply_leaves(
    app: App, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A row recorded before the real Message-ID was kept holds its hash alone: the reply
    leaves without In-Reply-To, its References what is known of the thread."""
    pk, _raw = received(app, database, LONG, In_Reply_To=PARENT)
    query(database, "UPDATE messages SET full_message_id = NULL")
    with caplog.at_level(logging.WARNING):
        mail = by_id(database, reply(app, pk))
    assert mail["In-Reply-To"] is None
    assert str(mail["References"]).split() == [PARENT]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and all("x" * 50 not in r.getMessage() for r in warned)
    assert any("Message-ID" in r.getMessage() for r in warned)


def test_a_longest_id_that_fits_a_header_line_is_kept(app: App, database: str) -> None:
    longest = "<" + "y" * (MAX_HEADER_ID_LENGTH - 2 - len("@example.fr")) + "@example.fr>"
    assert len(longest) == MAX_HEADER_ID_LENGTH
    pk, _raw = received(app, database, longest)
    (ar,) = sent(database, "ar")
    mail = by_id(database, reply(app, pk))
    for each in (ar, mail):
        assert each["In-Reply-To"] == longest
        assert str(each["References"]).split() == [longest]
    raws = query(database, "SELECT raw FROM outbox_bodies")
    assert len(raws) == 2
    for (raw,) in raws:
        assert max(len(line) for line in bytes(raw).split(b"\r\n")) <= 998


def test_an_id_beyond_a_header_line_costs_the_thread_only(
    app: App, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    beyond = "<" + "z" * 1500 + "@example.fr>"  # on an over-long line, or folded: it happens
    with caplog.at_level(logging.WARNING):
        pk, _raw = received(app, database, beyond, In_Reply_To=PARENT, References=PARENT)
        mail = by_id(database, reply(app, pk))
    (ar,) = sent(database, "ar")
    for each in (ar, mail):
        assert each["In-Reply-To"] is None
        assert str(each["References"]).split() == [PARENT]
    assert query(database, "SELECT full_message_id FROM messages") == [(None,)]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Message-ID" in m for m in warned)
    assert all("z" * 50 not in m for m in warned)


def test_no_line_break_or_other_text_reaches_a_header() -> None:
    """Only the Message-ID is written: nothing around it, no CR or LF."""
    rendered = RenderedMail(subject="Réponse", text="Bonjour", html="<p>Bonjour</p>")
    raw = build_email(
        rendered,
        from_address="pref@example.fr",
        from_name="Préfecture",
        to="usager@example.fr",
        message_id_domain="example.fr",
        in_reply_to=LONG + "\r\nBcc: victim@example.org",
        references=["<r@example.fr>\r\nX-Evil: 1", "sha256:" + "0" * 64],
    ).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"Bcc" not in head and b"X-Evil" not in head and b"sha256" not in head
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["In-Reply-To"] == LONG
    assert str(mail["References"]).split() == ["<r@example.fr>", LONG]


def test_several_long_ids_fold_within_the_line_limit() -> None:
    rendered = RenderedMail(subject="Réponse", text="Bonjour", html="<p>Bonjour</p>")
    ids = [f"<{n}" + "w" * (MAX_HEADER_ID_LENGTH - 14) + "@example.fr>" for n in range(3)]
    assert {len(i) for i in ids} == {MAX_HEADER_ID_LENGTH}
    raw = build_email(
        rendered,
        from_address="pref@example.fr",
        from_name="Préfecture",
        to="usager@example.fr",
        message_id_domain="example.fr",
        in_reply_to=ids[2],
        references=ids[:2],
    ).as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["In-Reply-To"] == ids[2]
    assert str(mail["References"]).split() == ids
