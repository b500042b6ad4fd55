"""What the database keeps of citizens and agents, and for how long (README, "Data kept
(privacy)"): each test is a record that outlived its purpose before, on SQLite and on a
real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from scripted import ScriptedSmtpServer

from mailbot.app import maintenance, presence
from mailbot.app.delivery import Outbox
from mailbot.app.delivery_recovery import recover_interrupted, recover_orphans
from mailbot.config import OutboxConfig, SmtpConfig, load_config
from mailbot.core.statuses import ArStatus, Decision, EventKind, OutboxKind, OutboxStatus
from mailbot.mail.smtp import SmtpTransport
from mailbot.store import NewMessage, Store, utcnow
from mailbot.store.schema import events, messages, outbox, outbox_bodies, viewings

ROOT = Path(__file__).resolve().parents[1]
CITIZEN = "jeanne.martin@example.fr"
HOUR = timedelta(hours=1)
# A forward carries the citizen's mail whole (attachments too): the worst bytes to keep.
FORWARD = (
    b"From: pref@seine-maritime.gouv.fr\r\nTo: service@pref.test\r\nSubject: Transfert\r\n"
    b"Message-ID: <fwd-1@example.test>\r\n\r\nMon titre de sejour expire le 3 mars.\r\n"
)


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = Store(database)
    yield opened
    opened.close()


def queue(store: Store, n: int = 1, kind: OutboxKind = OutboxKind.FORWARD) -> list[int]:
    with store.transaction() as tx:
        return [
            tx.enqueue(None, kind, CITIZEN, "", f"<{kind}-{i}@example.test>", FORWARD)
            for i in range(n)
        ]


def holding_bytes(store: Store) -> list[int]:
    """The outbox ids whose mail is still in the database."""
    with store.engine.connect() as conn:
        query = sa.select(outbox_bodies.c.outbox_id).order_by(outbox_bodies.c.outbox_id)
        return [int(i) for i in conn.execute(query).scalars()]


def test_a_mail_refused_for_good_or_uncertain_is_not_kept_in_the_database(store: Store) -> None:
    """A failed or uncertain mail is never sent again and nothing reads its bytes: a
    refused forward kept the citizen's whole mail until the retention purge (two years by
    default), while a sent one's bytes went at once. Its row and events stay: the status,
    the error, when. (Only a mail to a citizen becomes uncertain: an internal one a crash
    interrupted is queued again, its bytes kept to leave again.)"""
    refused, sent = queue(store, n=2)
    with ScriptedSmtpServer() as server:
        config = SmtpConfig(host=server.host, port=server.port, security="none")
        outbox = Outbox(store, SmtpTransport(config), OutboxConfig(), {CITIZEN})
        server.fail("rcpt", "perm")
        outbox.deliver_due()
    statuses = {row.id: row.status for row in store.outbox_items()}
    assert statuses == {refused: OutboxStatus.FAILED, sent: OutboxStatus.SENT}
    assert holding_bytes(store) == []

    (interrupted,) = queue(store, kind=OutboxKind.AR)  # a crash while it left: uncertain
    with store.transaction() as tx:
        assert tx.claim_outbox(interrupted, 1)
    assert recover_interrupted(store) == [interrupted]
    assert store.outbox_status(interrupted) == OutboxStatus.UNCERTAIN
    assert holding_bytes(store) == []

    (orphan,) = queue(store, kind=OutboxKind.AR)  # its worker died meanwhile: uncertain too
    with store.transaction() as tx:
        assert tx.claim_outbox(orphan, 1, holder="dead-worker")
        (item,) = tx.interrupted_sends()
    assert recover_orphans(store, [(item, "dead-worker")]) == [orphan]
    assert store.outbox_status(orphan) == OutboxStatus.UNCERTAIN
    assert holding_bytes(store) == []

    (forward,) = queue(store)  # a forward left 'sending' long ago: queued again, whole
    with store.transaction() as tx:
        assert tx.claim_outbox(forward, 1, holder="dead-worker")
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET claimed_at = :t"), {"t": utcnow() - HOUR})
    assert recover_interrupted(store) == []
    assert store.outbox_status(forward) == OutboxStatus.PENDING
    assert holding_bytes(store) == [forward]


def test_the_purge_deletes_the_bytes_an_older_version_kept_of_mail_that_never_left(
    store: Store,
) -> None:
    """An uncertain mail's bytes that an older version kept: the daily purge deletes them,
    whatever their age, and leaves a mail still to be sent as it is. (A failed mail's were
    deleted by schema 0024, test_store: a failed mail holding its bytes since failed for
    lack of time, and keeps them for a requeue until the retention, below.)"""
    uncertain, pending = queue(store, n=2)
    with store.engine.begin() as conn:  # as an older version settled it
        conn.execute(
            outbox.update().where(outbox.c.id == uncertain).values(status=OutboxStatus.UNCERTAIN)
        )
    assert holding_bytes(store) == [uncertain, pending]
    store.purge(datetime.now(UTC) - timedelta(days=730))
    assert holding_bytes(store) == [pending]
    assert len(store.outbox_items()) == 2  # the rows stay until the retention


def test_a_mail_failed_for_lack_of_time_keeps_its_bytes_until_the_retention(
    store: Store,
) -> None:
    """Deferred for longer than ``outbox.max_queue_hours``, a forward fails with its bytes
    kept, for `mailbot outbox retry --failed`: the daily purge leaves them, the retention
    purge deletes them with the row."""
    (expired,) = queue(store)
    later = datetime.now(UTC) + timedelta(hours=OutboxConfig().max_queue_hours, minutes=1)
    with ScriptedSmtpServer() as server:
        config = SmtpConfig(host=server.host, port=server.port, security="none")
        transport = SmtpTransport(config)
        outbox = Outbox(store, transport, OutboxConfig(), {CITIZEN}, clock=lambda: later)
        server.fail("rcpt", "temp")
        assert outbox.deliver_due().failed == 1
    assert store.outbox_status(expired) == OutboxStatus.FAILED
    assert holding_bytes(store) == [expired]
    store.purge(datetime.now(UTC) - timedelta(days=730))
    assert holding_bytes(store) == [expired]
    store.purge(later)  # its retention is over
    assert holding_bytes(store) == [] and store.outbox_items() == []


def test_the_purge_forgets_who_had_a_message_open_once_it_no_longer_counts(store: Store) -> None:
    """A page view records the agent and the time, kept a day (``presence.KEPT``) for the
    colleagues' warning; only a later page view deleted the older ones, so a console no
    longer used kept which agent read which citizen's mail, and when, until the message's
    own purge."""
    now = datetime.now(UTC)
    with store.transaction() as tx:
        pk = tx.insert_message(_message(now))
    presence.opened(store, "mleroy", pk, clock=lambda: now - timedelta(hours=1))
    presence.opened(store, "cdurand", pk, clock=lambda: now - timedelta(days=3))
    maintenance.purge(load_config(ROOT / "rules.yaml"), store, clock=lambda: now)
    with store.engine.connect() as conn:
        assert list(conn.execute(sa.select(viewings.c.agent))) == [("mleroy",)]
    assert [row.id for row in store.messages()] == [pk]  # the message is within retention


def _message(received: datetime) -> NewMessage:
    return NewMessage(
        mailbox="general",
        folder="INBOX",
        uidvalidity=7,
        uid=1,
        message_id="<a@example.fr>",
        content_hash="h1",
        received_at=received,
        sender=CITIZEN,
        subject="Titre de séjour",
        in_reply_to=None,
        decision=Decision.ACKNOWLEDGE,
        reasons=["citizen-mail"],
        size=1234,
        defects=[],
        reference="SM-2026-000001",
        ar_status=ArStatus.PENDING,
        ar_message_id="<ar1@mailbot.test>",
    )


# README, "Data kept (privacy)": the tables that hold something of a citizen (or of an
# agent's work on a citizen's mail), all emptied by the purge of an old enough message,
# and those that hold no person at all. A new table belongs to one or the other.
CITIZENS_TABLES = {
    "messages",
    "events",
    "outbox",
    "outbox_bodies",
    "corrections",
    "viewings",
    "message_keys",
    "indicator_facts",
    "ended_sessions",
}
NO_PERSON_TABLES = {
    "folders",
    "heartbeats",
    "leases",
    "workers",
    "probes",
    "indicator_days",
    "indicator_zone",
    "counters",
}


def test_the_purge_leaves_nothing_of_an_old_message_in_any_table(store: Store) -> None:
    """Every kind of row written about one citizen's mail — its row, events, outbox mails
    and their bytes, a correction, its fingerprint, the indicators' inputs, who had it open
    — the later ones written recently (an agent's work on an old mail): the purge of the
    message leaves none of them, and the tables it leaves hold no person (the figures of
    ``indicator_days`` count nothing of it any more)."""
    from mailbot.app import sessions
    from mailbot.store.schema import corrections, metadata

    now = datetime.now(UTC)
    old = now - timedelta(days=load_config(ROOT / "rules.yaml").retention.days + 1)
    with store.transaction() as tx:
        pk = tx.insert_message(_message(old))
        tx.claim_mail("fingerprint-of-the-mail", pk)
        tx.add_event(pk, EventKind.TRANSFERRED, f'{{"reason": "{CITIZEN} demande"}}')
        tx.enqueue(pk, OutboxKind.FORWARD, "service@pref.test", "", "<f@x>", FORWARD)
        tx.enqueue(None, OutboxKind.DIGEST, "service@pref.test", "", "<d@x>", b"Titre de sejour")
        tx.add_event(None, EventKind.SEND_FAILED, f"550 <{CITIZEN}>")
        tx.claim_request("form-key")
        tx.conn.execute(
            corrections.insert().values(
                message_pk=pk, at=now, agent="cdurand", service="etrangers", category="information"
            )
        )
    with store.engine.begin() as conn:  # the message-less rows as old as the message
        conn.execute(outbox.update().where(outbox.c.message_pk.is_(None)).values(created_at=old))
        conn.execute(events.update().where(events.c.message_pk.is_(None)).values(at=old))
    presence.opened(store, "cdurand", pk, clock=lambda: now - timedelta(minutes=5))
    sessions.end(store, "ended-session", now - timedelta(minutes=1))
    assert set(metadata.tables) == CITIZENS_TABLES | NO_PERSON_TABLES
    with store.engine.connect() as conn:
        assert all(_count(conn, name) for name in CITIZENS_TABLES)  # every kind was written

    maintenance.purge(load_config(ROOT / "rules.yaml"), store, clock=lambda: now)
    with store.engine.connect() as conn:
        left = {name: _count(conn, name) for name in CITIZENS_TABLES}
        assert left == dict.fromkeys(CITIZENS_TABLES, 0)
        days = metadata.tables["indicator_days"]
        assert conn.execute(sa.select(sa.func.coalesce(sa.func.sum(days.c.mails), 0))).scalar() == 0


def _count(conn: sa.Connection, name: str) -> int:
    from mailbot.store.schema import metadata

    table = metadata.tables[name]
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_mail_the_server_dates_in_the_future_is_purged_from_its_recording(
    store: Store,
) -> None:
    """Retention counts from a message's receipt, its IMAP INTERNALDATE: the server's
    clock, or whatever date a client gave a mail it copied in (APPEND: an agent dragging a
    mail from a local folder, a forged Date). A mail dated 2099 was kept until 2099 and
    later. Recorded more than the retention ago and still dated to come, it is purged; one
    recorded recently stays (its date may be a clock a little ahead)."""
    now = datetime.now(UTC)
    far = now.replace(year=now.year + 70)
    with store.transaction() as tx:
        long_ago = tx.insert_message(_message(far))
        recent = tx.insert_message(
            replace(_message(far), uid=2, message_id="<b@example.fr>", reference="SM-2026-000002")
        )
    with store.engine.begin() as conn:
        recorded = now - timedelta(days=load_config(ROOT / "rules.yaml").retention.days + 1)
        update = messages.update().where(messages.c.id == long_ago)
        conn.execute(update.values(created_at=recorded))
    maintenance.purge(load_config(ROOT / "rules.yaml"), store, clock=lambda: now)
    assert [row.id for row in store.messages()] == [recent]
