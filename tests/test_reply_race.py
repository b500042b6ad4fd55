"""Two replies to one message at the same moment, from forms with different idempotency keys
(a page shown before an assignment and one after, as the console's keys once were, or two
agents): one mail reaches the citizen. The check that no answer was recorded since the form
was shown runs in the transaction that queues the reply, the message's row locked on
PostgreSQL (SQLite's write transaction serialises), on both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from poison import citizen
from refusals import query
from replying import everywhere

from mailbot.app import outgoing
from mailbot.app import reply as reply_module
from mailbot.app.context import App, build_app
from mailbot.app.reply import Draft, Replies
from mailbot.core.incoming import IncomingMail
from mailbot.core.statuses import ANSWERS
from mailbot.errors import AnsweredMeanwhileError
from mailbot.mail.smtp import FileTransport
from mailbot.store import console as stored

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def tracked(app: App, database: str) -> int:
    """A citizen's acknowledged message's row id."""
    batch = [IncomingMail(1, RECEIVED, citizen(1))]
    app.pipeline.process_batch("general", "INBOX", 1, batch)
    (row,) = query(database, "SELECT id FROM messages")
    return int(row[0])


def replies_queued(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM outbox WHERE kind = 'reply'")[0][0])


def test_a_form_sent_after_anothers_reply_committed_is_stopped(app: App, database: str) -> None:
    """No check before the transaction saw the first reply (the console's is skipped here):
    the transaction's own check stops the second form, and nothing of it is kept — its key
    is free for a deliberate new reply."""
    pk = tracked(app, database)
    state = stored.last_event_id(app.store.engine, pk, ANSWERS)
    replies = Replies(app.config, app.store, app.renderer, everywhere(app))
    replies.send("cdurand", pk, Draft.free("Première réponse."), key="form-a", since=state)
    with pytest.raises(AnsweredMeanwhileError):
        replies.send("lmoreau", pk, Draft.free("Seconde réponse."), key="form-b", since=state)
    assert replies_queued(database) == 1
    later = stored.last_event_id(app.store.engine, pk, ANSWERS)
    assert later > state
    replies.send("lmoreau", pk, Draft.free("Complément."), key="form-b", since=later)
    assert replies_queued(database) == 2


def test_two_forms_with_different_keys_at_the_same_moment_send_one_reply(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second arrives while the first is still in its transaction, its reply queued
    and not committed: it waits (the row lock, or SQLite's write lock), then sees that
    reply and queues nothing."""
    pk = tracked(app, database)
    state = stored.last_event_id(app.store.engine, pk, ANSWERS)
    replies = Replies(app.config, app.store, app.renderer, everywhere(app))
    queued = threading.Event()
    enqueue = outgoing.enqueue  # what reply.py calls

    def slow_enqueue(tx: Any, message_pk: int, mails: Any) -> Any:
        found = enqueue(tx, message_pk, mails)
        queued.set()
        threading.Event().wait(0.5)  # still in the transaction when the other form comes
        return found

    monkeypatch.setattr(reply_module, "enqueue", slow_enqueue)
    outcomes: dict[str, object] = {}

    def send(key: str) -> None:
        try:
            replies.send("cdurand", pk, Draft.free(f"Réponse {key}."), key=key, since=state)
            outcomes[key] = "sent"
        except AnsweredMeanwhileError as exc:
            outcomes[key] = exc

    first = threading.Thread(target=send, args=("form-a",))
    first.start()
    assert queued.wait(10)
    second = threading.Thread(target=send, args=("form-b",))
    second.start()
    first.join(20)
    second.join(20)
    assert outcomes["form-a"] == "sent"
    assert isinstance(outcomes["form-b"], AnsweredMeanwhileError)
    assert replies_queued(database) == 1
    events = query(database, "SELECT count(*) FROM events WHERE kind = 'reply_queued'")
    assert events[0][0] == 1
