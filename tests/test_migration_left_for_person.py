"""Migration 0023: a mail without a Return-Path recorded in both mailboxes before the intake
counted it once (two rows skipped ``no-return-path``, neither holding the mail's key) is
repaired as the intake records it now: the oldest copy holds the key, the other is its
duplicate, and the indicators' facts and daily buckets count it once. Rows an agent answered
or closed are left as they are. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from refusals import query
from test_crossbox import RECEIVED, both, counted, rows
from test_indicator_facts import alembic, expected, stored

from mailbot.app.context import App, build_app
from mailbot.core.incoming import IncomingMail
from mailbot.mail.smtp import FileTransport
from mailbot.store import Store
from mailbot.store.indicator_days import refill, zone_of
from mailbot.store.schema import indicator_days, messages

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "0022"  # the revision before the repair
NO_RETURN_PATH = '["no-return-path"]'
LEFT = " (no reference, left for a person: no Return-Path)"


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def repair(store: Store) -> None:
    """The database taken back to the revision before the repair (whose downgrade does
    nothing), then upgraded to the head: the repair runs on the rows as they are."""
    alembic(store, "downgrade", BEFORE)
    assert store.schema_version() == BEFORE
    alembic(store, "upgrade", "head")
    assert store.schema_version() == Store.head_version()


def duplicate_events(url: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for pk, detail in query(
        url, "SELECT message_pk, detail FROM events WHERE kind = 'duplicate' ORDER BY id"
    ):
        found.setdefault(pk, []).append(detail)
    return found


def keys(url: str) -> dict[str, int]:
    return {f: pk for f, pk in query(url, "SELECT fingerprint, message_pk FROM message_keys")}


def test_a_pair_recorded_before_counts_once_and_a_later_copy_is_its_duplicate(
    app: App, database: str
) -> None:
    """The old intake's rows, made by the intake itself (the keys it did not take removed):
    a pair left for a person in both mailboxes, a mail read in one mailbox only so far, a
    copy left for a person whose other copy was acknowledged, and a pair an agent answered.
    The repair counts each mail once; the answered pair stays as it was; the copy of the
    lone mail read after the upgrade is its duplicate, not a second mail counted."""
    from mailbot.app.answered import AnsweredHow, mark_answered

    def read(mailbox: str, *mails: bytes, first_uid: int = 1) -> None:
        batch = [IncomingMail(u, RECEIVED, mail) for u, mail in enumerate(mails, first_uid)]
        app.pipeline.process_batch(mailbox, "INBOX", 1, batch)

    bare = {n: both(n, Return_Path=None) for n in (1, 2, 3, 4)}  # type: ignore[arg-type]
    read("general", bare[1], bare[2], bare[3], bare[4])
    query(database, "DELETE FROM message_keys")
    read("etrangers", bare[1], both(3), bare[4])
    query(
        database,
        "DELETE FROM message_keys WHERE message_pk IN"
        f" (SELECT id FROM messages WHERE reasons = '{NO_RETURN_PATH}')",
    )
    old = rows(database)
    g1, g2, g3, g4, e1, e3, e4 = (r[0] for r in old)
    assert [r[1:3] for r in old] == [
        *(("general", "skip"),) * 4,
        ("etrangers", "skip"),
        ("etrangers", "acknowledge"),
        ("etrangers", "skip"),
    ]
    assert list(keys(database).values()) == [e3]
    for pk in (g4, e4):  # lmoreau answers both mailboxes' services' mail
        how = AnsweredHow.PHONE
        mark_answered(app.config, app.store, app.agent, "lmoreau", f"#{pk}", how, "rappelée")
    # Facts, received, unanswered, awaiting a person (answered rows still listed, as the
    # intake leaves them): each pair counted twice.
    assert counted(app, database) == (7, 7, 5, 6)

    repair(app.store)

    decided = {r[0]: (r[2], r[4]) for r in rows(database)}
    assert decided == {
        g1: ("skip", None),
        g2: ("skip", None),
        g3: ("duplicate", e3),
        g4: ("skip", None),
        e1: ("duplicate", g1),
        e3: ("acknowledge", None),
        e4: ("skip", None),
    }
    assert sorted(keys(database).values()) == [g1, g2, e3]
    reference = old[5][3]
    assert duplicate_events(database) == {
        g3: [f"copy of message {e3} in mailbox etrangers ({reference})"],
        e1: [f"copy of message {g1} in mailbox general{LEFT}"],
    }
    assert counted(app, database) == (5, 5, 3, 4)  # one row fewer for each pair repaired
    assert stored(app.store) == expected(app.store)

    read("etrangers", bare[2], first_uid=4)  # the lone mail's other copy, read after the upgrade
    assert rows(database)[-1][2:5:2] == ("duplicate", g2)
    assert counted(app, database) == (5, 5, 3, 4)


MAILBOXES = ("general", "etrangers")
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
# id: (fingerprint, decision, reasons, minutes after T0, other columns). Ids in this order.
CASES: dict[int, tuple[str | None, str, str, int, dict[str, Any]]] = {
    # Two copies, the younger first by id: the older by received time takes the key.
    1: ("f-pair", "skip", NO_RETURN_PATH, 5, {}),
    2: ("f-pair", "skip", NO_RETURN_PATH, 0, {}),
    # Received at the same moment: the lower id takes it.
    3: ("f-tie", "skip", NO_RETURN_PATH, 0, {}),
    4: ("f-tie", "skip", NO_RETURN_PATH, 0, {}),
    # Three copies (two in one mailbox): one key, two duplicates.
    5: ("f-three", "skip", NO_RETURN_PATH, 0, {}),
    6: ("f-three", "skip", NO_RETURN_PATH, 1, {}),
    7: ("f-three", "skip", NO_RETURN_PATH, 2, {}),
    # The other copy was acknowledged and holds the key: the older copy is its duplicate.
    8: ("f-ack", "skip", NO_RETURN_PATH, 0, {}),
    9: ("f-ack", "acknowledge", '["citizen-mail"]', 3, {"reference": "SM-2026-000009"}),
    # A copy left for a person holds the key (recorded after the upgrade): the old one is
    # its duplicate.
    10: ("f-wait", "skip", NO_RETURN_PATH, 4, {}),
    11: ("f-wait", "skip", NO_RETURN_PATH, 0, {}),
    # Alone so far: it takes the key, for the copy still unread in the other mailbox.
    12: ("f-lone", "skip", NO_RETURN_PATH, 0, {}),
    # Both answered: left as they are.
    13: ("f-answered", "skip", NO_RETURN_PATH, 0, {"first_reply_at": T0 + timedelta(hours=2)}),
    14: ("f-answered", "skip", NO_RETURN_PATH, 1, {"first_reply_at": T0 + timedelta(hours=3)}),
    # One answered, one closed as a duplicate by an agent: those two stay as they are, the
    # copy still waiting keeps its place (it takes the key, changes nothing else).
    15: ("f-half", "skip", NO_RETURN_PATH, 0, {"first_reply_at": T0 + timedelta(hours=2)}),
    16: ("f-half", "skip", NO_RETURN_PATH, 1, {}),
    17: ("f-closed", "skip", NO_RETURN_PATH, 0, {"no_reply": "duplicate"}),
    18: ("f-closed", "skip", NO_RETURN_PATH, 1, {}),
    # A copy skipped for its mailbox only held the key (before the intake stopped that):
    # the copy left for a person is no duplicate of it.
    19: ("f-here", "skip", '["not-addressed"]', 0, {}),
    20: ("f-here", "skip", NO_RETURN_PATH, 1, {}),
    # Quarantined, or without a fingerprint: no key taken, nothing changed.
    21: ("f-quarantine", "quarantine", '["error:RuntimeError"]', 0, {}),
    22: ("f-quarantine", "quarantine", '["error:RuntimeError"]', 1, {}),
    23: (None, "skip", NO_RETURN_PATH, 0, {}),
    24: (None, "skip", NO_RETURN_PATH, 1, {}),
}
HELD = {"f-ack": 9, "f-wait": 10, "f-here": 19}  # keys held before the repair
REPAIRED = {1: 2, 4: 3, 6: 5, 7: 5, 8: 9, 11: 10}  # duplicate: the row holding the key
TAKEN = {"f-pair": 2, "f-tie": 3, "f-three": 5, "f-lone": 12, "f-half": 16, "f-closed": 18}


def old_database(url: str) -> Store:
    """A database at the revision before the repair, holding ``CASES`` and ``HELD``."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        from mailbot.store import MIGRATIONS

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, BEFORE)
        for pk, (fingerprint, decision, reasons, minutes, extra) in CASES.items():
            received = T0 + timedelta(minutes=minutes)
            values = {
                "id": pk,
                "mailbox": MAILBOXES[pk % 2],
                "folder": "INBOX",
                "uidvalidity": 1,
                "uid": pk,
                "content_hash": f"h{pk}",
                "received_at": received,
                "subject": "Titre de séjour",
                "decision": decision,
                "reasons": reasons,
                "ar_status": "sent" if decision == "acknowledge" else "none",
                "size": 100,
                "defects": "[]",
                "created_at": received,
                "fingerprint": fingerprint,
                "service": "general",
            }
            conn.execute(messages.insert().values(**values, **extra))
        for fingerprint, pk in HELD.items():
            conn.execute(
                sa.text("INSERT INTO message_keys (fingerprint, message_pk) VALUES (:f, :pk)"),
                {"f": fingerprint, "pk": pk},
            )
    engine.dispose()
    store = Store(url, migrate=False)
    assert store.schema_version() == BEFORE
    return store


def buckets(store: Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return buckets_in(conn)


def mails_counted(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.sum(indicator_days.c.mails))).scalar() or 0)


def test_the_repair_keys_each_mail_once_and_leaves_agents_rows(database: str) -> None:
    store = old_database(database)
    try:
        before = query(database, "SELECT * FROM messages ORDER BY id")
        facts_before, mails_before = stored(store), mails_counted(store)
        assert facts_before == expected(store)

        alembic(store, "upgrade", "head")

        after = {r[0]: r for r in rows(database)}
        for pk, (_, decision, *_rest) in CASES.items():
            if pk in REPAIRED:
                assert after[pk][2:5:2] == ("duplicate", REPAIRED[pk]), pk
                assert after[pk][6] == '["already-recorded"]'
            else:
                assert after[pk][2:5:2] == (decision, None), pk
        untouched = [r for r in before if r[0] not in REPAIRED]
        now = query(
            database, "SELECT * FROM messages WHERE id NOT IN (1, 4, 6, 7, 8, 11) ORDER BY id"
        )
        width = len(before[0])  # the columns later migrations add come after, empty
        assert untouched == [row[:width] for row in now]
        assert {value for row in now for value in row[width:]} <= {None}
        assert keys(database) == HELD | TAKEN
        events = duplicate_events(database)
        assert events == {
            1: [f"copy of message 2 in mailbox general{LEFT}"],
            4: [f"copy of message 3 in mailbox etrangers{LEFT}"],
            6: [f"copy of message 5 in mailbox etrangers{LEFT}"],
            7: [f"copy of message 5 in mailbox etrangers{LEFT}"],
            8: ["copy of message 9 in mailbox etrangers (SM-2026-000009)"],
            11: [f"copy of message 10 in mailbox general{LEFT}"],
        }
        # The triggers moved the facts and the buckets by the repaired rows exactly.
        facts = stored(store)
        assert facts == expected(store)
        assert {f[1] for f in facts_before} - {f[1] for f in facts} == set(REPAIRED)
        assert len(facts_before) - len(facts) == len(REPAIRED)
        assert mails_before - mails_counted(store) == len(REPAIRED)
        kept = buckets(store)
        assert kept
        with store.engine.connect() as conn, conn.begin() as tx:
            refill(conn, zone_of(conn) or "Europe/Paris")  # the buckets from the facts
            rebuilt = buckets_in(conn)
            tx.rollback()
        assert kept == rebuilt

        # Run again: nothing more to do.
        repaired = query(database, "SELECT * FROM messages ORDER BY id")
        repair(store)
        assert query(database, "SELECT * FROM messages ORDER BY id") == repaired
        assert duplicate_events(database) == events
        assert keys(database) == HELD | TAKEN
        assert stored(store) == facts and buckets(store) == kept
    finally:
        store.close()


def buckets_in(conn: sa.Connection) -> list[tuple[Any, ...]]:
    found = conn.execute(sa.select(indicator_days).order_by(*indicator_days.primary_key))
    return [tuple(row) for row in found]


def test_a_later_migration_may_alter_the_facts_in_the_same_transaction(
    request: pytest.FixtureRequest,
) -> None:
    """PostgreSQL: the buckets' triggers are deferred to the commit; the repair fires them
    before it ends, so that a later migration run in the same transaction (every pending
    one is, ``Store.migrate``) can still ALTER ``indicator_facts`` ("cannot ALTER TABLE
    because it has pending trigger events" otherwise)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from pg import fresh_database

    from mailbot.store import MIGRATIONS

    url = fresh_database(request.getfixturevalue("postgres"), "a", request.node.nodeid)
    old_database(url).close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn, conn.begin() as tx:
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.exec_driver_sql("ALTER TABLE indicator_facts ADD COLUMN later integer")
            assert conn.exec_driver_sql("SELECT count(*) FROM indicator_facts").scalar()
            tx.rollback()
    finally:
        engine.dispose()
