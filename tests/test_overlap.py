"""Sending overlaps the recording of the next batch in `run` (issue 14, point 7).

`run` hands each committed batch to its delivery thread and records the next one meanwhile.
On SQLite, one writer at a time: an outbox claim submitted while an intake part holds the
write lock rides on that part (the part ends at its next mail and commits the claim with
it), so the sender waits one mail, not a part, and never sleeps in SQLite's busy handler.
`poll --once` does the same with a thread of its own (claims a group at a time, so a part
is cut once per group) and returns once everything due is sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from poison import citizen
from refusals import query

from mailbot.app import intake
from mailbot.app.context import App, app_from_config
from mailbot.app.delivery_loop import DeliveryLoop
from mailbot.config import load_config
from mailbot.core.incoming import IncomingMail
from mailbot.mail.smtp import Envelope, FileTransport
from mailbot.store import Transaction
from mailbot.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WAIT = 20.0  # seconds: only a broken overlap waits this long


@dataclass(frozen=True)
class Listed:
    uid: int
    internaldate: datetime
    raw: bytes


class Folder:
    """A folder held in memory, with the shape of a Source."""

    def __init__(self, count: int) -> None:
        self.mails = [Listed(n, RECEIVED, citizen(n, f"Demande {n}")) for n in range(1, count + 1)]

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def select(self, folder: str) -> int:
        return 1

    def uids_after(self, last_uid: int) -> list[int]:
        return [m.uid for m in self.mails if m.uid > last_uid]

    def fetch(self, uids: Sequence[int], batch_size: int) -> Iterator[Listed]:
        return iter([m for m in self.mails if m.uid in uids])

    def supports_idle(self) -> bool:
        return False

    def wait_for_changes(self, timeout: float, stop: threading.Event | None = None) -> bool:
        return False


def make_app(tmp_path: Path, batch_size: int) -> App:
    config = load_config(ROOT / "rules.yaml")
    polling = config.polling.model_copy(update={"batch_size": batch_size})
    config = config.model_copy(update={"polling": polling})
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    return app_from_config(config, FileTransport(tmp_path / "out"), database, True)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    built = make_app(tmp_path, batch_size=3)
    yield built
    built.store.close()


def instrument(app: App) -> tuple[dict[int, threading.Event], list[tuple[bool, int]]]:
    """Batch n's recording sets event n; each send says whether batch 2 was being recorded
    (waiting up to ``WAIT`` for it), on which thread, and how many batches had begun."""
    recording = {1: threading.Event(), 2: threading.Event(), 3: threading.Event()}
    record = app.pipeline.process_batch

    def process_batch(mailbox: str, folder: str, validity: int, mails: Any) -> Any:
        recording[(mails[0].uid + 2) // 3].set()
        return record(mailbox, folder, validity, mails)

    app.pipeline.process_batch = process_batch  # type: ignore[method-assign]
    sends: list[tuple[bool, int]] = []
    send = FileTransport.send_batch
    main = threading.current_thread()

    def send_batch(self: FileTransport, envelopes: Sequence[Envelope], *rest: Any) -> None:
        on_thread = threading.current_thread() is not main
        # The first batch's ARs leave only once the second batch is being recorded: one
        # delivery after the other (sending, then recording) would wait here in vain.
        if on_thread:
            recording[2].wait(WAIT)
        sends.append((on_thread, sum(event.is_set() for event in recording.values())))
        send(self, envelopes, *rest)

    app.outbox.transport.send_batch = send_batch.__get__(app.outbox.transport)  # type: ignore[method-assign]
    return recording, sends


def all_sent(app: App, tmp_path: Path, count: int) -> bool:
    """Every AR written by the transport, and recorded as sent (bookkeeping done)."""
    statuses = query(
        app.store.url,
        "SELECT status, NOT EXISTS (SELECT 1 FROM outbox_bodies WHERE outbox_id = outbox.id),"
        " count(*) FROM outbox GROUP BY 1, 2",
    )
    return len(list((tmp_path / "out").iterdir())) == count and statuses == [("sent", 1, count)]


def test_run_sends_a_batch_while_it_records_the_next(app: App, tmp_path: Path) -> None:
    _recording, sends = instrument(app)
    worker = Worker(app.config, app.pipeline, app.outbox, {"general": Folder(9)})
    worker.delivery = DeliveryLoop(app.outbox, 5.0)  # what `run` starts before its pollers
    worker.delivery.start()
    outcomes = worker.pollers["general"].poll_once()  # one cycle of `run`'s mailbox job
    worker.delivery.finish()
    assert [o.decision for o in outcomes] == ["acknowledge"] * 9
    on_thread, begun = sends[0]
    assert on_thread and begun >= 2  # on the thread, once batch 2 was being recorded
    assert all_sent(app, tmp_path, 9)


def test_poll_once_sends_on_its_delivery_thread_and_returns_all_sent(
    app: App, tmp_path: Path
) -> None:
    _recording, sends = instrument(app)
    worker = Worker(app.config, app.pipeline, app.outbox, {"general": Folder(9)})
    outcomes = worker.poll_once()
    assert [o.decision for o in outcomes] == ["acknowledge"] * 9
    # The first batch's ARs left on the delivery thread while batch 2 was recorded (the
    # instrumented send waits for it: a poll sending then recording would time out there).
    assert all(on_thread for on_thread, _ in sends)
    assert sends[0][1] >= 2
    assert all_sent(app, tmp_path, 9)  # poll --once returned with every AR sent
    assert worker.delivery is None  # its thread finished


def test_a_claim_submitted_during_a_batch_commits_with_it_at_the_next_mail(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 600.0)  # parts end for claims only
    app.pipeline.start_folder("general", "INBOX", 1)
    marks: list[int] = []
    save = Transaction.save_folder_state

    def save_folder_state(tx: Transaction, mailbox: str, folder: str, v: int, uid: int) -> None:
        marks.append(uid)
        save(tx, mailbox, folder, v, uid)

    commits: list[None] = []
    sa.event.listen(app.store.writer, "commit", lambda _conn: commits.append(None))
    claimed: list[bool] = []

    def claim() -> None:
        with app.store.session() as session:
            claimed.append(session.write(lambda tx: tx.claim_once("a claim")))

    sender = threading.Thread(target=claim)
    decide = app.pipeline._decide

    def deciding(rec: Any, where: Any, mail: IncomingMail, *rest: Any) -> Any:
        if mail.uid == 2:  # a claim arrives while mail 2 is recorded, and waits
            sender.start()
            deadline = time.monotonic() + WAIT
            while not rec.tx.writes_waiting() and time.monotonic() < deadline:
                time.sleep(0.001)
        return decide(rec, where, mail, *rest)

    app.pipeline._decide = deciding  # type: ignore[method-assign]
    monkeypatch.setattr(Transaction, "save_folder_state", save_folder_state)
    mails = [IncomingMail(m.uid, m.internaldate, m.raw) for m in Folder(5).mails]
    outcomes = app.pipeline.process_batch("general", "INBOX", 1, mails)
    sender.join(WAIT)
    assert len(outcomes) == 5
    assert claimed == [True]
    assert marks == [2, 5]  # the part ended after mail 2, carrying the claim
    assert len(commits) == 2  # the claim took no commit of its own
    assert query(app.store.url, "SELECT value FROM counters WHERE name = 'a claim'") == [(1,)]


def test_a_stop_during_poll_once_leaves_unsent_mail_queued_and_nothing_half_sent(
    app: App, tmp_path: Path
) -> None:
    record = app.pipeline.process_batch
    worker = Worker(app.config, app.pipeline, app.outbox, {"general": Folder(9)})

    def process_batch(mailbox: str, folder: str, validity: int, mails: Any) -> Any:
        outcomes = record(mailbox, folder, validity, mails)
        if mails[0].uid == 4:
            worker.stop.set()  # SIGTERM while the second batch is recorded
        return outcomes

    app.pipeline.process_batch = process_batch  # type: ignore[method-assign]
    outcomes = worker.poll_once()
    assert len(outcomes) == 6  # the batch in hand finished, no further one read
    statuses = dict(query(app.store.url, "SELECT status, count(*) FROM outbox GROUP BY 1"))
    assert sum(statuses.values()) == 6 and set(statuses) <= {"sent", "pending"}
    assert len(list((tmp_path / "out").iterdir())) == statuses.get("sent", 0)
    assert worker.delivery is None
