"""A FETCH batch in one transaction (issue 14.1), on SQLite and on a real PostgreSQL.

Each mail is recorded under a SAVEPOINT: one the database refuses is rolled back alone and
quarantined in the same batch, the others are recorded and answered. The folder's UID mark
is written with the batch, so a crash before the commit leaves nothing of the batch and
it is read again from the start. Failures are real: a trigger makes the database refuse
one mail's row; the crash is a child process ending with ``os._exit`` in mid-batch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from poison import citizen
from refusals import allow_rows, query, refuse_rows

from mailbot.app import intake
from mailbot.app.context import App, build_app
from mailbot.core.incoming import IncomingMail
from mailbot.core.statuses import Decision
from mailbot.errors import StoreError
from mailbot.mail.smtp import FileTransport
from mailbot.store import Transaction
from mailbot.store import drivers as store_drivers

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WHERE = ("general", "INBOX", 1)


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def mails(uids: range) -> list[IncomingMail]:
    return [IncomingMail(uid, RECEIVED, citizen(uid, f"Demande numéro {uid}")) for uid in uids]


def last_uid(url: str) -> int | None:
    rows = query(url, "SELECT last_uid FROM folders WHERE mailbox = 'general'")
    return int(rows[0][0]) if rows else None


def recorded(url: str) -> list[tuple[int, str, str | None]]:
    return [
        tuple(r) for r in query(url, "SELECT uid, decision, reference FROM messages ORDER BY uid")
    ]


def test_a_refused_mail_in_the_middle_is_quarantined_alone(app: App, database: str) -> None:
    refuse_rows(database, 3)
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert [o.decision for o in outcomes] == ["acknowledge"] * 2 + ["quarantine"] + [
        "acknowledge"
    ] * 2
    rows = recorded(database)
    assert [(uid, decision) for uid, decision, _ in rows] == [
        (1, "acknowledge"),
        (2, "acknowledge"),
        (3, "quarantine"),
        (4, "acknowledge"),
        (5, "acknowledge"),
    ]
    # The savepoint undid mail 3's reference too: no number lost, none given twice.
    numbers = [int(ref.rsplit("-", 1)[1]) for _, _, ref in rows if ref]
    assert numbers == [1, 2, 3, 4]
    ars = query(database, "SELECT m.uid FROM outbox o JOIN messages m ON m.id = o.message_pk")
    assert sorted(uid for (uid,) in ars) == [1, 2, 4, 5]
    assert last_uid(database) == 5
    (kind,) = query(
        database,
        "SELECT e.kind FROM events e JOIN messages m ON m.id = e.message_pk WHERE m.uid = 3",
    )
    assert kind == ("quarantined",)
    assert app.outbox.deliver_due().sent == 4


def test_a_mail_even_its_quarantine_refused_ends_the_batch_below_it(
    app: App, database: str
) -> None:
    refuse_rows(database, 3, quarantine_too=True)
    with pytest.raises(StoreError, match="UID 3"):
        app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    assert [uid for uid, *_ in recorded(database)] == [1, 2]  # what came before commits
    assert last_uid(database) == 2  # mail 3 is read again, never skipped
    allow_rows(database)
    start = app.pipeline.start_folder(*WHERE)
    assert start == 2
    app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
    assert [decision for _, decision, _ in recorded(database)] == ["acknowledge"] * 5
    assert last_uid(database) == 5


def test_a_mail_whose_quarantine_is_refused_three_polls_in_a_row_is_passed_over(
    app: App, database: str
) -> None:
    """The mail raises, and the database refuses its quarantine row (even the minimal one)
    at every poll: each poll ends below it (it is read again: the refusal may pass), but
    not for ever, its folder stuck behind it. At the third attempt in a row it is passed
    over: its location and why in an event, the folder's mark past it, no AR."""
    refuse_rows(database, 3, quarantine_too=True)
    for _attempt in (1, 2):
        start = app.pipeline.start_folder(*WHERE)
        with pytest.raises(StoreError, match="UID 3"):
            app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
        assert [uid for uid, *_ in recorded(database)] == [1, 2] and last_uid(database) == 2
    start = app.pipeline.start_folder(*WHERE)
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
    assert [(o.uid, o.decision) for o in outcomes] == [
        (3, "passed-over"),
        (4, "acknowledge"),
        (5, "acknowledge"),
    ]
    assert [uid for uid, *_ in recorded(database)] == [1, 2, 4, 5] and last_uid(database) == 5
    (event,) = query(database, "SELECT message_pk, detail FROM events WHERE kind = 'passed_over'")
    assert event.message_pk is None
    assert event.detail.startswith("general/INBOX UIDVALIDITY 1 UID 3: ")
    assert "its quarantine row refused 3 times in a row" in event.detail
    assert "Traceback" in event.detail and "usager3" not in event.detail
    counted = "SELECT transient_uid, transient_count FROM folders WHERE mailbox = 'general'"
    assert query(database, counted) == [(None, 0)]
    assert app.outbox.deliver_due().sent == 4  # 1, 2, 4 and 5: none for the mail passed over


def test_the_uid_mark_moves_with_the_batch_not_with_each_mail(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 3600.0)  # one part, however slow
    app.pipeline.start_folder(*WHERE)  # the folder's state: UID 0
    seen: list[tuple[int | None, int]] = []
    decide = app.pipeline._decide

    def looking(*args: Any) -> Any:
        # Another connection, during the batch: it sees what was committed before it.
        seen.append((last_uid(database), len(recorded(database))))
        return decide(*args)

    monkeypatch.setattr(app.pipeline, "_decide", looking)
    app.pipeline.process_batch(*WHERE, mails(range(1, 5)))
    assert seen == [(0, 0)] * 4
    assert last_uid(database) == 4 and len(recorded(database)) == 4


def test_a_long_batch_commits_in_parts_each_with_its_mark(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 3600.0)  # one part, however slow
    commits: list[int | None] = []
    sa.event.listen(app.store.writer, "commit", lambda _conn: commits.append(None))
    app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
    assert len(commits) == 1  # three mails, one commit
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 0.0)  # every part is over at once
    marks: list[int | None] = []
    sa.event.listen(app.store.writer, "commit", lambda _conn: marks.append(None))
    app.pipeline.process_batch(*WHERE, mails(range(4, 7)))
    assert len(marks) == 3 and last_uid(database) == 6
    assert [decision for _, decision, _ in recorded(database)] == ["acknowledge"] * 6


CRASH = """
import os, sys
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, {tests!r})
from poison import citizen
from mailbot.app import intake
from mailbot.app.context import build_app
from mailbot.core.incoming import IncomingMail
from mailbot.mail.smtp import FileTransport

app = build_app(Path({rules!r}), FileTransport(Path({out!r})), database={url!r})
intake.MAX_TRANSACTION_SECONDS = 3600.0  # one transaction, however loaded the machine
app.pipeline.start_folder("general", "INBOX", 1)
decide = app.pipeline._decide
def crashing(tx, where, mail, *rest):
    if mail.uid == {crash_at}:
        os._exit(9)  # as kill -9 would: no rollback, no cleanup, mid-transaction
    return decide(tx, where, mail, *rest)
app.pipeline._decide = crashing
received = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
batch = [IncomingMail(n, received, citizen(n, f"Demande numéro {{n}}")) for n in range(1, 6)]
app.pipeline.process_batch("general", "INBOX", 1, batch)
"""


def test_a_crash_mid_batch_commits_nothing_and_the_batch_is_read_again(
    app: App, database: str, tmp_path: Path
) -> None:
    script = CRASH.format(
        tests=str(ROOT / "tests"),
        rules=str(ROOT / "rules.yaml"),
        out=str(tmp_path / "out"),
        url=database,
        crash_at=4,
    )
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True)
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    assert recorded(database) == []  # mails 1-3 were processed, none committed
    assert query(database, "SELECT count(*) FROM outbox") == [(0,)]
    assert last_uid(database) == 0
    start = app.pipeline.start_folder(*WHERE)
    assert start == 0  # the batch is read again, from its first mail
    app.pipeline.process_batch(*WHERE, mails(range(start + 1, 6)))
    assert [uid for uid, *_ in recorded(database)] == [1, 2, 3, 4, 5]
    assert app.outbox.deliver_due().sent == 5


# -- the outbox: a committed claim before each DATA, "sent" with the next claim -------------


class Watching:
    """A transport that accepts every mail and notes, at each step, each mail's status as
    another connection sees it (what a crash at that moment would leave)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[str, int, dict[int, str]]] = []

    def statuses(self) -> dict[int, str]:
        return dict(query(self.url, "SELECT id, status FROM outbox ORDER BY id"))

    def send_batch(self, envelopes: Any, before: Any, after: Any, stop: Any = None) -> None:
        for envelope in envelopes:
            if before(envelope):
                self.seen.append(("DATA", int(envelope.name), self.statuses()))
                after(envelope, None)
                self.seen.append(("accepted", int(envelope.name), self.statuses()))


def test_each_claim_commits_before_its_data_and_sent_rides_on_the_next_claim(
    app: App, database: str
) -> None:
    app.outbox.claim_group = (
        1  # one claim per mail (`outbox.claim_group: 1`); groups: test_delivery
    )
    app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
    watching = Watching(database)
    app.outbox.transport = watching
    commits: list[int | None] = []
    sa.event.listen(app.store.writer, "commit", lambda _conn: commits.append(None))
    assert app.outbox.deliver_due().sent == 3
    sending, pending, sent = "sending", "pending", "sent"
    assert watching.seen == [
        ("DATA", 1, {1: sending, 2: pending, 3: pending}),
        ("accepted", 1, {1: sending, 2: pending, 3: pending}),  # a crash: 1 uncertain
        ("DATA", 2, {1: sent, 2: sending, 3: pending}),  # one commit: 1 sent, 2 claimed
        ("accepted", 2, {1: sent, 2: sending, 3: pending}),
        ("DATA", 3, {1: sent, 2: sent, 3: sending}),
        ("accepted", 3, {1: sent, 2: sent, 3: sending}),
    ]
    assert watching.statuses() == {1: sent, 2: sent, 3: sent}
    assert len(commits) == 1 + 3 + 1  # taking the due mail, a claim each, the last "sent"


def test_the_writers_commit_with_synchronous_full_on_sqlite(app: App, database: str) -> None:
    with app.store.session() as session, session.transaction() as tx:
        if database.startswith("sqlite"):
            assert tx.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        else:  # PostgreSQL: a commit waits for its WAL flush unless told otherwise
            assert tx.conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


# -- the outbox's bookkeeping: once per delivery batch, finished after a crash ---------------


def bookkeeping(url: str) -> list[tuple[Any, ...]]:
    """Per AR: its outbox status, whether its bytes are still kept, its message's AR status,
    and how many 'ar_sent' events its message has."""
    return [
        tuple(r)
        for r in query(
            url,
            "SELECT o.status, EXISTS (SELECT 1 FROM outbox_bodies b WHERE b.outbox_id = o.id), "
            "m.ar_status, "
            "(SELECT count(*) FROM events e WHERE e.message_pk = m.id AND e.kind = 'ar_sent') "
            "FROM outbox o JOIN messages m ON m.id = o.message_pk ORDER BY o.id",
        )
    ]


def test_the_status_mirror_events_and_purge_are_written_once_per_delivery_batch(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.outbox.claim_group = (
        1  # one claim per mail (`outbox.claim_group: 1`); groups: test_delivery
    )
    app.pipeline.process_batch(*WHERE, mails(range(1, 6)))
    statements: list[str] = []
    sa.event.listen(
        app.store.writer,
        "before_cursor_execute",
        lambda _c, _cur, sql, _p, _ctx, many: statements.append(sql.split()[0] + str(many)),
    )
    claim = store_drivers.DriverUpdate.run  # claims run on the driver's cursor (issue 14)

    def counted_claim(driver: Any, conn: Any, values: dict[str, Any]) -> int:
        statements.append(driver.sql.split()[0] + "False")
        return claim(driver, conn, values)

    monkeypatch.setattr(store_drivers.DriverUpdate, "run", counted_claim)
    rows = store_drivers.DriverRows.run  # so do the events' executemany

    def counted_rows(driver: Any, conn: Any, values: list[dict[str, Any]]) -> None:
        verb, *words = driver.sql.split()
        statements.append(f"{verb} {words[1] if verb == 'INSERT' else words[0]} many")
        rows(driver, conn, values)

    monkeypatch.setattr(store_drivers.DriverRows, "run", counted_rows)
    assert app.outbox.deliver_due().sent == 5
    assert bookkeeping(database) == [("sent", False, "sent", 1)] * 5
    # Per mail: its claim, and its 'sent' (with the next claim, the last one's at the end;
    # an executemany of its claim group's rows on the driver). Per batch: taking the due
    # mail, the purge (a DELETE of the bodies: their own table, issue 14 point 2), the
    # messages' AR status (one executemany), the events (one).
    assert statements.count("UPDATE messages many") == 1
    assert statements.count("UPDATE outbox many") == 5
    assert statements.count("UPDATETrue") == 0
    assert statements.count("UPDATEFalse") == 1 + 5
    assert statements.count("DELETEFalse") == 1
    assert [s for s in statements if s.startswith("INSERT")] == ["INSERT events many"]


FLUSH_CRASH = """
import os, sys
from pathlib import Path
from mailbot.app import delivery_run
from mailbot.app.context import build_app
from mailbot.mail.smtp import FileTransport

finish = delivery_run.finish_sent
def crashing(tx, left):
    if left:  # as kill -9 would, after the last 'sent' committed, before the bookkeeping
        os._exit(9)
    finish(tx, left)
delivery_run.finish_sent = crashing
app = build_app(Path({rules!r}), FileTransport(Path({out!r})), database={url!r})
app.outbox.claim_group = 1  # one claim per mail, as outbox.claim_group: 1 configures
app.outbox.deliver_due()
"""


def test_a_crash_before_the_bookkeeping_leaves_sent_mails_finished_by_the_next_delivery(
    app: App, database: str, tmp_path: Path
) -> None:
    app.pipeline.process_batch(*WHERE, mails(range(1, 4)))
    script = FLUSH_CRASH.format(rules=str(ROOT / "rules.yaml"), out=str(tmp_path), url=database)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=ROOT)
    assert child.returncode == 9, child.stderr.decode()[-2000:]
    # The three left. The first two were committed 'sent' with the next one's claim, their
    # bookkeeping not written yet; the last one's 'sent' was to commit with the bookkeeping:
    # it stays 'sending' (uncertain at the next start, never sent again).
    before = [("sent", True, "pending", 0)] * 2 + [("sending", True, "pending", 0)]
    assert bookkeeping(database) == before
    report = app.outbox.deliver_due()
    assert report.sent == 0  # nothing sent twice
    after = [("sent", False, "sent", 1)] * 2 + [("sending", True, "pending", 0)]
    assert bookkeeping(database) == after
    app.outbox.deliver_due()  # and never written twice
    assert bookkeeping(database) == after


# -- lookups read once per part, rows written at its end (issue 14, fourth session) ---------


def varied(received: datetime) -> list[IncomingMail]:
    """Mails whose decisions depend on the mails before them IN THE SAME batch: five from
    one sender (rate limit 3 a day), a copy of mail 1, a reply quoting mail 1's reference,
    a relance of mail 7 (same sender, similar subject), and two ordinary mails."""
    same = "usager1@example.fr"
    one = {"Return_Path": f"<{same}>", "From": f"Usager <{same}>"}
    raws = [citizen(1, "Carte grise", Message_ID="<m1@example.fr>", **one)]
    topics = ("Permis de conduire", "Naturalisation", "Passeport perdu", "Associations")
    raws += [citizen(n, topic, **one) for n, topic in enumerate(topics, start=2)]
    raws.append(raws[0])  # the very same mail again: a duplicate
    raws.append(citizen(7, "Titre de séjour : rendez-vous"))
    raws.append(citizen(8, f"Re: Carte grise [SM-{received.year}-000001]"))  # its reference
    raws.append(citizen(7, "Titre de séjour : rendez-vous", Message_ID="<relance@example.fr>"))
    raws += [citizen(n, f"Demande numéro {n}") for n in (10, 11)]
    return [IncomingMail(uid, received, raw) for uid, raw in enumerate(raws, start=1)]


def decisions(url: str) -> list[tuple[Any, ...]]:
    """Each row's decision, reasons, reference and parent's UID, in UID order."""
    return [
        tuple(r)
        for r in query(
            url,
            "SELECT m.uid, m.decision, m.reasons, m.reference, p.uid FROM messages m"
            " LEFT JOIN messages p ON p.id = m.parent_id ORDER BY m.uid",
        )
    ]


def test_a_batch_decides_on_what_it_recorded_itself(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lookups read 2, 2, 4, 4 mails ahead: the copy, the reply and the relance are read in
    # other statements than their originals, recorded by the part.
    monkeypatch.setattr(intake, "READ_AHEAD", (2, 4))
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 3600.0)  # one part
    # The rate limit's window ends now: the mails arrived a few minutes ago.
    received = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    app.pipeline.process_batch(*WHERE, varied(received))
    rows = decisions(database)
    by_uid = {uid: (decision, parent) for uid, decision, _, _, parent in rows}
    # 3 ARs a day for one sender, the mails decided earlier in the batch counted.
    ack, skip, follow_up = Decision.ACKNOWLEDGE, Decision.SKIP, Decision.FOLLOW_UP
    assert [by_uid[uid][0] for uid in (1, 2, 3, 4, 5)] == [ack] * 3 + [skip] * 2
    assert by_uid[6] == (Decision.DUPLICATE, 1)  # a copy of a mail recorded in this batch
    assert by_uid[8] == (follow_up, 1)  # the reference of an AR numbered in this batch
    assert by_uid[9] == (follow_up, 7)  # a relance of mail 7, unanswered
    numbers = [int(ref.rsplit("-", 1)[1]) for *_, ref, _ in rows if ref]
    assert numbers == list(range(1, len(numbers) + 1))  # no number lost, none twice
    outbox = query(database, "SELECT m.uid FROM outbox o JOIN messages m ON m.id = o.message_pk")
    assert sorted(uid for (uid,) in outbox) == [uid for uid, d, *_ in rows if d == ack]


def test_refused_batch_rows_are_written_again_mail_by_mail(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 3600.0)  # one part, however slow
    queue_rows = Transaction.queue_rows
    calls: list[int] = []

    def refusing(tx: Transaction, rows: Any) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            raise sa.exc.OperationalError("INSERT INTO outbox", {}, Exception("refused"))
        queue_rows(tx, rows)

    monkeypatch.setattr(Transaction, "queue_rows", refusing)
    outcomes = app.pipeline.process_batch(*WHERE, mails(range(1, 5)))
    assert calls == [4]  # the batch's four ARs at once, refused; then mail by mail
    assert [o.decision for o in outcomes] == [Decision.ACKNOWLEDGE] * 4
    rows = recorded(database)
    assert [(uid, ref) for uid, _, ref in rows] == [
        (n, f"SM-{RECEIVED.year}-{n:06d}") for n in range(1, 5)
    ]
    assert query(database, "SELECT count(*) FROM events") == [(8,)]  # received, ar_queued
    assert last_uid(database) == 4
    assert app.outbox.deliver_due().sent == 4


def test_a_relance_ten_working_days_later_is_found_across_may_s_holidays(
    app: App, database: str
) -> None:
    """Monday 30 April 2035, 09:00, then the same sender on Sunday 20 May: 10 working days
    (1 May, Ascension, 8 May and Whit Monday between), 20 calendar days and a bit. The
    look-up window once read 20 calendar days back and missed it."""
    paris = ZoneInfo("Europe/Paris")
    first = IncomingMail(1, datetime(2035, 4, 30, 9, tzinfo=paris), citizen(7, "Titre de séjour"))
    again = citizen(7, "Relance : titre de séjour", Message_ID="<relance-7@example.fr>")
    app.pipeline.process_batch(*WHERE, [first])
    app.pipeline.process_batch(
        *WHERE, [IncomingMail(2, datetime(2035, 5, 20, 10, tzinfo=paris), again)]
    )
    rows = query(database, "SELECT uid, decision, parent_id FROM messages ORDER BY uid")
    assert [tuple(r) for r in rows] == [(1, "acknowledge", None), (2, "follow-up", 1)]


def test_a_reference_carries_the_year_of_paris_not_of_the_server_s_clock(
    app: App, database: str
) -> None:
    """New Year's Eve, 23:30 UTC as a server on UTC stamps its INTERNALDATE: already
    1 January 2027 in Paris, the date the AR says the mail was received on. Its reference is
    a 2027 one (the year's first); the mail 31 minutes before, still 2026 in Paris, 2026's."""
    eve = citizen(1, "Demande de rendez-vous")
    new_year = citizen(2, "Demande de rendez-vous")
    batch = [
        IncomingMail(1, datetime(2026, 12, 31, 22, 59, tzinfo=UTC), eve),
        IncomingMail(2, datetime(2026, 12, 31, 23, 30, tzinfo=UTC), new_year),
    ]
    app.pipeline.process_batch(*WHERE, batch)
    assert [ref for _, _, ref in recorded(database)] == ["SM-2026-000001", "SM-2027-000001"]
