"""``indicator_facts`` always holds what the messages say (issue 14, point 10).

The table is kept by database triggers (migration 0011), so any write to the messages —
the store's own, an agent's, plain SQL, a purge — keeps it right. On 1,500 random messages
(every decision, reasons, AR status, closed or probe, reply or not, relances...), after
inserts, random updates of every watched column and of others, deletes and a purge, the
table equals the facts computed here in Python from the messages themselves, on SQLite and
on a real PostgreSQL; a downgrade drops it and an upgrade rebuilds it from the messages.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from mailbot.core.statuses import ArStatus, Attention, Decision
from mailbot.store import MIGRATIONS, Store
from mailbot.store.schema import indicator_days, indicator_facts, messages

START = datetime(2025, 12, 1, tzinfo=UTC)
DECISIONS = [*Decision]
REASONS = ["[]", json.dumps([Attention.NO_RETURN_PATH.value]), '["citizen-mail"]']
SERVICES = [None, "general", "permis"]
CATEGORIES = [None, "information", "reclamation"]
Facts = set[tuple[Any, ...]]
NOTICES = [None, "pending", None, "sent", "failed"]


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = Store(database)
    yield opened
    opened.close()


def instant(rng: random.Random) -> datetime:
    """A moment, often a microsecond before a whole second (SQLite's date functions round
    to the millisecond: the facts must floor)."""
    fraction = rng.choice([0, 999_999, 999_700, rng.randrange(10**6)])
    return START + timedelta(seconds=rng.randrange(400 * 86400), microseconds=fraction)


def random_state(rng: random.Random) -> dict[str, Any]:
    """The columns the facts depend on, at random (a reply sometimes set, sometimes not)."""
    replied = None
    if rng.random() < 0.6:
        replied = instant(rng)
    return {
        "decision": rng.choice(DECISIONS),
        "reasons": rng.choice(REASONS),
        "no_reply": rng.choice([None, None, None, "spam"]),
        "probe": int(rng.random() < 0.1),
        "ar_status": rng.choice([*ArStatus]),
        "transferred": int(rng.random() < 0.2),
        "first_reply_at": replied,
        "first_reply_complete": rng.choice([None, 0, 1]) if replied else None,
        "relances": rng.choice([0, 0, 1, 3, 40]),
        "service": rng.choice(SERVICES),
        "category": rng.choice(CATEGORIES),
    }


def insert_random(store: Store, rng: random.Random, count: int) -> None:
    rows = []
    for n in range(count):
        received = instant(rng)
        rows.append(
            {
                "mailbox": rng.choice(["general", "etrangers"]),
                "folder": "INBOX",
                "uidvalidity": 1,
                "uid": n + 1,
                "content_hash": f"h{n}",
                "received_at": received,
                "subject": "Sujet",
                "size": 100,
                "defects": "[]",
                "created_at": received,
                # An agent's transfer notice, drawn apart: the seeds draw the same as before.
                "notice_status": NOTICES[n % len(NOTICES)],
                **random_state(rng),
            }
        )
    with store.engine.begin() as conn:
        conn.execute(messages.insert(), rows)


def update_randomly(store: Store, rng: random.Random) -> None:
    """Each message: left alone, one watched column changed, all of them, or another
    column only (which fires no trigger and must change nothing)."""
    with store.engine.begin() as conn:
        # In id order: the same seed draws the same changes on any database (the order of
        # a bare SELECT is the index SQLite's planner picks, which may differ between two).
        ids = [row.id for row in conn.execute(sa.select(messages.c.id).order_by(messages.c.id))]
        for message_pk in ids:
            draw = rng.random()
            if draw < 0.3:
                continue
            state = random_state(rng)
            if draw < 0.6:
                name = rng.choice(sorted(state))
                values: dict[str, Any] = {name: state[name]}
            elif draw < 0.8:
                values = state | {"received_at": instant(rng), "mailbox": "etrangers"}
            else:
                values = {"assignee": "agent", "to_check": 1}
            conn.execute(messages.update().where(messages.c.id == message_pk).values(**values))


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else math.floor(moment.timestamp())


def announced(m: Any) -> bool:
    """Transferred, and the mail that told the citizen sent: an agent's notice when there
    is one, else the AR (a transfer at receipt, which the AR announces)."""
    told = m.ar_status if m.notice_status is None else m.notice_status
    return m.transferred != 0 and told == "sent"


FACT_COLUMNS = (
    "id",
    "mailbox",
    "service",
    "category",
    "received_at",
    "first_reply_at",
    "decision",
    "reasons",
    "no_reply",
    "probe",
    "first_reply_complete",
    "ar_status",
    "transferred",
    "notice_status",
    "relances",
)


def expected(store: Store) -> Facts:
    """The facts, computed in Python from the messages as the indicators define them."""
    found = set()
    # Only the columns the facts read: an older database (a migration test's) has no later one.
    columns = [messages.c[name] for name in FACT_COLUMNS]
    with store.engine.connect() as conn:
        read = list(conn.execute(sa.select(*columns).order_by(messages.c.id)))
    for m in read:
        unhandled = m.decision == Decision.QUARANTINE or (
            m.decision == Decision.SKIP and m.reasons == REASONS[1]
        )
        citizen = m.decision == Decision.ACKNOWLEDGE or unhandled
        if not citizen or m.no_reply is not None or m.probe:
            continue
        signature = -1 if m.first_reply_complete is None else m.first_reply_complete
        flags = (m.ar_status == ArStatus.SENT) + 2 * (m.transferred != 0)
        flags += 4 * (signature + 1) + 16 * announced(m) + 32 * m.relances
        times = (epoch(m.received_at), m.id, epoch(m.first_reply_at))
        found.add((*times, flags, m.mailbox, m.service, m.category))
    return found


def stored(store: Store) -> Facts:
    with store.engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.select(indicator_facts))}


def test_the_facts_follow_inserts_updates_deletes_and_a_purge(store: Store) -> None:
    rng = random.Random(14)
    insert_random(store, rng, 1500)
    assert stored(store) == expected(store)
    assert len(stored(store)) > 300
    update_randomly(store, rng)
    assert stored(store) == expected(store)
    with store.engine.begin() as conn:  # notices sent, failed, queued again
        status = sa.case((messages.c.id % 3 == 0, "sent"), (messages.c.id % 3 == 1, "failed"))
        conn.execute(messages.update().values(notice_status=status))
    assert stored(store) == expected(store)
    with store.engine.begin() as conn:
        conn.execute(messages.delete().where(messages.c.id % 7 == 0))
    assert stored(store) == expected(store)
    purged = store.purge(START + timedelta(days=200))
    assert purged > 300
    facts = stored(store)
    assert facts == expected(store)
    assert facts and min(received for received, *_ in facts) >= epoch(START + timedelta(days=200))


def alembic(store: Store, action: str, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def test_downgrade_drops_the_facts_and_upgrade_rebuilds_them(store: Store) -> None:
    rng = random.Random(15)
    insert_random(store, rng, 400)
    alembic(store, "downgrade", "0010")
    assert "indicator_facts" not in sa.inspect(store.engine).get_table_names()
    update_randomly(store, rng)  # no trigger left to fail
    alembic(store, "upgrade", "head")
    assert store.schema_version() == Store.head_version()
    assert stored(store) == expected(store) != set()
    update_randomly(store, rng)  # the triggers are back
    assert stored(store) == expected(store)


def test_the_indicators_read_gives_the_facts_back(store: Store) -> None:
    """``Store.indicator_arrays`` unpacks what it reads into the facts, on both backends."""
    insert_random(store, random.Random(16), 600)
    since, until = START, START + timedelta(days=401)
    arrays = store.indicator_arrays(since, until, "reclamation", service="permis")
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(indicator_facts, messages.c.category)
            .join(messages, messages.c.id == indicator_facts.c.message_pk)
            .where(indicator_facts.c.service == "permis")
        ).all()
    assert len(rows) > 50
    read = sorted(
        zip(
            arrays["received"].tolist(),
            arrays["replied"].tolist(),
            arrays["complaint"].tolist(),
            arrays["ar_sent"].tolist(),
            arrays["transferred"].tolist(),
            arrays["announced"].tolist(),
            arrays["signature"].tolist(),
            arrays["relances"].tolist(),
            strict=True,
        )
    )
    assert read == sorted(
        (
            row.received,
            -1 if row.replied is None else row.replied,
            row.category == "reclamation",
            bool(row.flags & 1),
            bool(row.flags & 2),
            bool(row.flags & 16),
            (row.flags >> 2 & 3) - 1,
            row.flags >> 5,
        )
        for row in rows
    )


def test_the_reports_listing_is_indicator_rows_with_unix_seconds(store: Store) -> None:
    """The report's listing (from the facts) holds the messages ``indicator_rows`` gives,
    their times as Unix seconds, in order of receipt."""
    insert_random(store, random.Random(17), 800)  # 172 listed, whatever the enums hold
    since, until = START + timedelta(days=30), START + timedelta(days=300)
    listing = store.indicator_listing(since, until)
    rows = store.indicator_rows(since, until)
    assert len(listing) == len(rows) > 100
    assert [(r["received"], r["id"]) for r in listing] == sorted(
        (r["received"], r["id"]) for r in listing
    )
    by_id = {r["id"]: r for r in rows}
    for found in listing:
        row = by_id[found["id"]]
        assert found["received"] == epoch(row["received_at"])
        assert found["replied"] == epoch(row["replied_at"])
        for name in ("attention", "reference", "mailbox", "subject", "service", "category"):
            assert found[name] == row[name], name
        for name in ("relances", "first_reply_complete", "reorient"):
            assert found[name] == row[name], name


def test_the_upgrade_reads_each_agents_notice_from_the_outbox(store: Store) -> None:
    """A database from before 0021: an agent's transfer whose notice failed, or was sent
    after an earlier one failed, was counted announced by its AR. The upgrade takes each
    message's latest notice from the outbox, and the facts and buckets say so."""
    insert_random(store, random.Random(18), 60)
    alembic(store, "downgrade", "0020")
    with store.engine.begin() as conn:
        ids = [r.id for r in conn.execute(sa.select(messages.c.id).order_by(messages.c.id))]
        conn.execute(
            messages.update().values(
                decision="acknowledge", no_reply=None, probe=0, ar_status="sent", transferred=1
            )
        )
        notices = [(ids[0], "failed"), (ids[1], "failed"), (ids[1], "sent"), (ids[2], "pending")]
        for n, (message_pk, status) in enumerate(notices):
            conn.exec_driver_sql(
                "INSERT INTO outbox (message_pk, kind, recipient, envelope_from,"
                " email_message_id, status, attempts, next_attempt_at, created_at)"
                f" VALUES ({message_pk}, 'notice', 'a@example.fr', 'b@example.fr', '<n{n}@x>',"
                f" '{status}', 1, '2026-12-01 10:00:00', '2026-12-01 10:00:00')"
            )
    alembic(store, "upgrade", "head")
    with store.engine.connect() as conn:
        found = dict(conn.execute(sa.select(messages.c.id, messages.c.notice_status)).all())
        facts = sa.select(indicator_facts.c.message_pk, indicator_facts.c.flags)
        flags = dict(conn.execute(facts).all())
        notices = conn.execute(sa.select(sa.func.sum(indicator_days.c.notices))).scalar()
    assert [found[i] for i in ids[:4]] == ["failed", "sent", "pending", None]
    assert [bool(flags[i] & 16) for i in ids[:4]] == [False, True, False, True]
    assert stored(store) == expected(store)
    assert notices == len(ids) - 2


def test_the_upgrade_takes_each_messages_latest_notice(store: Store) -> None:
    """A database at 0021: a message transferred twice by agents showed the status of the
    notice settled last, the first one's when its delivery came after the second's. The
    upgrade (0022) marks each message's latest notice and takes its status; the facts and
    the buckets follow, and the downgrade leaves the statuses as they are."""
    insert_random(store, random.Random(22), 40)
    alembic(store, "downgrade", "0021")
    # Each message's notices, oldest first, and the status the last one settled wrote.
    cases = [(["sent", "failed"], "sent"), (["failed", "sent"], "failed"), (["failed"], "failed")]
    with store.engine.begin() as conn:
        ids = [r.id for r in conn.execute(sa.select(messages.c.id).order_by(messages.c.id))]
        transferred = {"ar_status": "sent", "transferred": 1, "notice_status": None}
        citizen = {"decision": "acknowledge", "no_reply": None, "probe": 0}
        conn.execute(messages.update().values(**citizen, **transferred))
        for message_pk, (statuses, written) in zip(ids, cases, strict=False):
            for status in statuses:
                conn.exec_driver_sql(
                    "INSERT INTO outbox (message_pk, kind, recipient, envelope_from,"
                    " email_message_id, status, attempts, next_attempt_at, created_at)"
                    f" VALUES ({message_pk}, 'notice', 'a@example.fr', 'b@example.fr',"
                    f" '<n{message_pk}-{status}@x>', '{status}', 1, '2026-12-01 10:00:00',"
                    " '2026-12-01 10:00:00')"
                )
            conn.execute(
                messages.update().where(messages.c.id == message_pk).values(notice_status=written)
            )
    alembic(store, "upgrade", "head")
    with store.engine.connect() as conn:
        columns = (messages.c.id, messages.c.notice_outbox, messages.c.notice_status)
        found = {r.id: r for r in conn.execute(sa.select(*columns))}
        latest = conn.exec_driver_sql(
            "SELECT message_pk, max(id) FROM outbox WHERE kind = 'notice' GROUP BY message_pk"
        )
        latest_of: dict[int, int] = dict(latest.all())
        query = sa.select(indicator_facts.c.message_pk, indicator_facts.c.flags)
        flags = dict(conn.execute(query).all())
        notices = conn.execute(sa.select(sa.func.sum(indicator_days.c.notices))).scalar()
    assert [found[i].notice_status for i in ids[:4]] == ["failed", "sent", "failed", None]
    assert [found[i].notice_outbox for i in ids[:4]] == [*(latest_of[i] for i in ids[:3]), None]
    assert [bool(flags[i] & 16) for i in ids[:4]] == [False, True, False, True]
    facts = stored(store)
    assert facts == expected(store)
    assert notices == len(ids) - 2
    alembic(store, "downgrade", "0021")
    with store.engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT id, notice_status FROM messages").all()
    assert [dict(kept)[i] for i in ids[:4]] == ["failed", "sent", "failed", None]
    assert stored(store) == facts
