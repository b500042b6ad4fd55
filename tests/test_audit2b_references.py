"""The References of an agent's reply and of a transfer notice continue the citizen's thread
(RFC 5322 §3.6.4): the References of the citizen's mail (or its In-Reply-To when it has
none), then its Message-ID — not its Message-ID alone. What is kept of a hostile References
(thousands of identifiers) is bounded: the thread's root and the latest, in the row and in
the header."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from poison import citizen
from refusals import query
from replying import Originals

from mailbot.app.context import App, build_app
from mailbot.app.reply import Draft, Replies
from mailbot.app.transfer import Transfers
from mailbot.core.incoming import IncomingMail
from mailbot.core.message import MAX_THREAD_IDS, parent_thread, parse_message
from mailbot.mail.smtp import FileTransport

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OWN = "<poison-1@example.fr>"  # the citizen's mail's Message-ID (tests/poison.citizen)


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def received(app: App, database: str, **headers: str) -> tuple[int, bytes]:
    """A citizen's mail to the general mailbox, acknowledged: its row id, its bytes."""
    raw = citizen(1, **headers)
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, raw)])
    ((pk, decision),) = query(database, "SELECT id, decision FROM messages")
    assert decision == "acknowledge"
    return int(pk), raw


def references(database: str, outbox_id: int) -> list[str]:
    (row,) = query(database, f"SELECT raw FROM outbox_bodies WHERE outbox_id = {outbox_id}")
    mail = email.message_from_bytes(bytes(row[0]), policy=email.policy.default)
    assert mail["In-Reply-To"] == OWN
    return str(mail["References"]).split()


def reply(app: App, pk: int) -> int:
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    (outbox_id,) = replies.send("aleroux", pk, Draft.free("Bien reçu.")).outbox_ids
    return outbox_id


def test_a_reply_continues_the_citizens_thread(app: App, database: str) -> None:
    thread = "<root@example.fr> <middle@example.fr> <parent@example.fr>"
    pk, _raw = received(app, database, In_Reply_To="<parent@example.fr>", References=thread)
    assert references(database, reply(app, pk)) == [*thread.split(), OWN]


def test_without_references_the_in_reply_to_comes_first(app: App, database: str) -> None:
    pk, _raw = received(app, database, In_Reply_To="<parent@example.fr>")
    assert references(database, reply(app, pk)) == ["<parent@example.fr>", OWN]


def test_a_transfer_notice_continues_it_too(app: App, database: str) -> None:
    thread = "<root@example.fr> <parent@example.fr>"
    pk, raw = received(app, database, In_Reply_To="<parent@example.fr>", References=thread)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, Originals(raw))
    sent = transfers.transfer("lmoreau", pk, "cartes-grises", "carte grise")  # general's head
    (notice,) = query(
        database, "SELECT id FROM outbox WHERE kind = 'notice'"
    )  # the forward goes to the service, in no thread of the citizen's
    assert notice[0] in sent.outbox_ids
    assert references(database, int(notice[0])) == [*thread.split(), OWN]


def test_hostile_references_are_bounded(app: App, database: str) -> None:
    pk, raw = received(
        app, database, References=" ".join(f"<id-{n}@x.example>" for n in range(3000))
    )
    ids = parse_message(raw).references  # what the bounded parse reads of it
    assert len(ids) > 500 and ids[0] == "<id-0@x.example>"
    ((stored,),) = query(database, "SELECT thread_references FROM messages")
    assert stored.split() == [ids[0], *ids[-(MAX_THREAD_IDS - 1) :]]
    found = references(database, reply(app, pk))
    assert found == [ids[0], *ids[-(MAX_THREAD_IDS - 1) :], OWN]  # 20: the root, the latest


def test_parent_thread() -> None:
    assert parent_thread(("<a@x>", "<b@x>", "<a@x>"), ("<b@x>",)) == ("<a@x>", "<b@x>")
    assert parent_thread((), ("<p@x>",)) == ("<p@x>",)
    assert parent_thread((), ("<p@x>", "<q@x>")) == ()  # RFC 5322: a single identifier only
    long = "<" + "l" * 300 + "@x>"
    assert parent_thread((long, "<b@x>"), ()) == ("<b@x>",)
