"""The store on SQLite and on a real PostgreSQL: migrations, references, dedupe, outbox states."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fresh_imports import modules_after
from pg import fresh_database

from mailbot.app import maintenance, sessions
from mailbot.app.delivery_recovery import recover_interrupted
from mailbot.config import load_config
from mailbot.core.message import clean_text
from mailbot.core.statuses import ArStatus, EventKind, OutboxKind, OutboxStatus
from mailbot.store import FolderState, NewMessage, Store, metadata
from mailbot.store.console import OpenFilter, open_messages
from mailbot.store.schema import fit, messages
from mailbot.store.schema_upgrade import MIGRATIONS

PARIS = ZoneInfo("Europe/Paris")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sub' / 'mailbot.db'}"
    else:
        base = request.getfixturevalue("postgres")
        url = fresh_database(base, "t", request.node.nodeid)
    opened = Store(url)
    yield opened
    opened.close()


def new_message(**changes: object) -> NewMessage:
    values: dict[str, object] = {
        "mailbox": "general",
        "folder": "INBOX",
        "uidvalidity": 7,
        "uid": 1,
        "message_id": "<a@example.fr>",
        "content_hash": "h1",
        "received_at": datetime(2026, 11, 26, 23, 59, tzinfo=PARIS),
        "sender": "citoyen@example.fr",
        "subject": "Carte grise",
        "in_reply_to": None,
        "decision": "acknowledge",
        "reasons": ["citizen-mail"],
        "size": 1234,
        "defects": [],
        "reference": "SM-2026-000001",
        "ar_status": "pending",
        "ar_message_id": "<ar1@mailbot.test>",
    }
    values.update(changes)
    return NewMessage(**values)  # type: ignore[arg-type]


def test_migrated_schema_matches_the_tables(store: Store) -> None:
    assert store.schema_version() == Store.head_version() == "0030"
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_the_head_read_from_the_files_is_alembics(store: Store) -> None:
    """The start reads the head from the migration files, and the version from the table,
    without Alembic: both as Alembic itself finds them."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert Store.head_version() == ScriptDirectory.from_config(cfg).get_current_head()
    with store.engine.connect() as conn:
        assert store.schema_version() == MigrationContext.configure(conn).get_current_revision()


def test_a_start_at_head_imports_no_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailbot.db'}"
    Store(url).close()  # created and migrated
    assert "alembic" not in modules_after(
        f"from mailbot.store import Store\nStore({url!r}).close()"
    )


def test_reopening_keeps_data_and_version(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_message(new_message())
    again = Store(store.url)
    assert again.schema_version() == "0030"
    assert len(again.messages()) == 1
    again.close()


def test_references_are_sequential_per_year(store: Store) -> None:
    with store.transaction() as tx:
        refs = [tx.next_reference("SM", 2026) for _ in range(3)]
        other = tx.next_reference("SM", 2027)
    assert refs == ["SM-2026-000001", "SM-2026-000002", "SM-2026-000003"]
    assert other == "SM-2027-000001"


def test_reference_not_consumed_when_transaction_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.next_reference("SM", 2026)
        raise RuntimeError("crash")
    with store.transaction() as tx:
        assert tx.next_reference("SM", 2026) == "SM-2026-000001"


def test_received_at_keeps_the_instant(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_message(new_message())
    row = store.messages()[0]
    assert row.received_at == datetime(2026, 11, 26, 22, 59, tzinfo=UTC)
    assert row.received_at.tzinfo is not None


def test_the_drivers_statements_write_times_as_sqlalchemy_does(store: Store) -> None:
    """The hot statements run on the driver's cursor (a message's INSERT, a part's events
    and outbox rows) store a time as the same text as SQLAlchemy's statements: SQL that
    compares or sorts times holds across rows written either way."""
    at = datetime(2026, 11, 26, 23, 59, 1, 5, tzinfo=PARIS)
    with store.batch() as tx:
        driven = tx.record_message(new_message(received_at=at)).id
        tx.add_event_rows([(driven, EventKind.RECEIVED, "driver", at)])
        tx.queue_rows([(driven, OutboxKind.AR, "a@b.fr", "m@b.fr", "<q@b.fr>", b"x", at)])
    with store.transaction() as tx:
        other = new_message(uid=2, message_id="<b@example.fr>", reference="SM-2026-000002")
        plain = tx.insert_message(dataclasses.replace(other, ar_message_id=None, received_at=at))
        tx.add_events(plain, (EventKind.RECEIVED, "sqlalchemy"), at=at)
    with store.engine.connect() as conn:
        texts = conn.execute(
            sa.text(
                "SELECT CAST(received_at AS TEXT) FROM messages UNION ALL "
                "SELECT CAST(at AS TEXT) FROM events WHERE kind = 'received' UNION ALL "
                "SELECT CAST(next_attempt_at AS TEXT) FROM outbox"
            )
        ).scalars()
        assert len(set(texts)) == 1


@pytest.mark.parametrize(
    "value",
    ["Carte grise", "a\x00b", "déjà vu", "8-bit \udce9 byte", "\x00\udce9é", "x" * 400, ""],
)
def test_fit_cleans_and_cuts_every_text(value: str) -> None:
    """``fit`` checks only non-ASCII text for surrogates (a copy per value spared): the
    same result as cleaning every text."""
    expected = clean_text(value.replace("\x00", ""))[:300]
    assert fit(messages, {"subject": value}) == {"subject": expected}


def test_folder_state_roundtrip(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.folder_state("general", "INBOX") is None
        tx.save_folder_state("general", "INBOX", 7, 10)
        tx.save_folder_state("general", "INBOX", 7, 12)
        state = tx.folder_state("general", "INBOX")
    assert state is not None
    assert (state.uidvalidity, state.last_uid) == (7, 12)


def test_the_folder_state_is_written_per_folder_with_sqlalchemys_time_text(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UID mark's UPDATE runs compiled once on the driver's cursor: it moves only its
    own folder's row, and stores ``updated_at`` as SQLAlchemy's statements store a time."""
    at = datetime(2026, 11, 26, 23, 59, 1, 5, tzinfo=UTC)
    monkeypatch.setattr("mailbot.store.folder_rows.utcnow", lambda: at)
    with store.transaction() as tx:
        tx.save_folder_state("general", "INBOX", 7, 10)
        tx.save_folder_state("general", "Archives", 7, 3)
        tx.save_folder_state("etrangers", "INBOX", 9, 5)
        tx.save_folder_state("general", "INBOX", 8, 12)
        tx.insert_message(new_message(received_at=at))
        states = [tx.folder_state(*key) for key in [("general", "INBOX"), ("general", "Archives")]]
        other = tx.folder_state("etrangers", "INBOX")
    assert [(s.uidvalidity, s.last_uid) for s in states if s] == [(8, 12), (7, 3)]
    assert other is not None and (other.uidvalidity, other.last_uid) == (9, 5)
    with store.engine.connect() as conn:
        texts = conn.execute(
            sa.text(
                "SELECT CAST(updated_at AS TEXT) FROM folders UNION ALL "
                "SELECT CAST(received_at AS TEXT) FROM messages"
            )
        ).scalars()
        assert len(set(texts)) == 1


def test_a_deliverys_updates_on_the_drivers_cursor_move_only_their_rows(store: Store) -> None:
    """``mark_sent`` and ``set_ar_statuses`` run as one executemany on the driver's cursor:
    'sent' only for an item still 'sending' under the holder's claim, its time stored as
    SQLAlchemy stores one, the AR status of the messages named only."""
    at = datetime(2026, 11, 26, 23, 59, 1, 5, tzinfo=UTC)
    with store.batch() as tx:
        pks = [
            tx.record_message(new_message(uid=n, message_id=f"<{n}@b.fr>", reference=None)).id
            for n in (1, 2, 3)
        ]
        tx.queue_rows(
            [(pk, OutboxKind.AR, "a@b.fr", "m@b.fr", f"<q{pk}@b.fr>", b"x", at) for pk in pks]
        )
    ids = [row.id for row in store.outbox_items()]
    with store.transaction() as tx:
        assert tx.claim_outbox(ids[0], 1, "w1") and tx.claim_outbox(ids[1], 1, "w2")
        tx.mark_sent([(item, at) for item in ids], "w1")  # ids[1]: w2's; ids[2]: not claimed
        tx.set_ar_statuses(pks[:2], ArStatus.SENT)
        tx.insert_message(new_message(uid=9, message_id="<9@b.fr>", reference=None, received_at=at))
    assert [row.status for row in store.outbox_items()] == [
        OutboxStatus.SENT,
        OutboxStatus.SENDING,
        OutboxStatus.PENDING,
    ]
    statuses = [row.ar_status for row in store.messages()]
    assert statuses[:2] == [ArStatus.SENT, ArStatus.SENT] and statuses[2] != ArStatus.SENT
    with store.engine.connect() as conn:
        texts = conn.execute(
            sa.text(
                "SELECT CAST(sent_at AS TEXT) FROM outbox WHERE sent_at IS NOT NULL UNION ALL "
                "SELECT CAST(received_at AS TEXT) FROM messages WHERE uid = 9"
            )
        ).scalars()
        assert len(set(texts)) == 1


def test_dedupe_by_message_id_and_fingerprint(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.insert_message(new_message(fingerprint="f1"))
        second = tx.insert_message(
            new_message(uid=2, message_id=None, content_hash="h2", fingerprint="f2", reference=None)
        )
        assert tx.find_duplicate("general", "<a@example.fr>", "f1", "other") == first
        # the same Message-ID on a different mail (another fingerprint) is not a copy
        assert tx.find_duplicate("general", "<a@example.fr>", "f9", "other") is None
        assert tx.find_duplicate("etrangers", "<a@example.fr>", "f1", "other") is None
        assert tx.find_duplicate("general", None, "f2", "zz") == second
        assert tx.find_duplicate("general", None, "f3", "h2") is None
        assert tx.find_duplicate("general", "<new@example.fr>", "f2", "h2") is None
        assert tx.find_duplicate("general", "<a@example.fr>", "f1", "x", exclude=first) is None


def test_rows_recorded_before_fingerprints_dedupe_as_before(store: Store) -> None:
    """No fingerprint (rows of revision 0005): Message-ID alone, or the hash without one."""
    with store.transaction() as tx:
        old = tx.insert_message(new_message())
        old_no_id = tx.insert_message(
            new_message(uid=2, message_id=None, content_hash="h2", reference=None)
        )
        assert tx.find_duplicate("general", "<a@example.fr>", "any", "other") == old
        assert tx.find_duplicate("general", None, "any", "h2") == old_no_id
        assert tx.find_duplicate("general", None, "any", "h3") is None


def test_long_and_odd_values_are_stored_bounded_and_found_again(store: Store) -> None:
    """A 1,200-character Message-ID (PostgreSQL refused it: column length) is stored as its
    hash and found again by it; text is cut to its column; NUL and lone surrogates go."""
    long_id = "<" + "x" * 1200 + "@example.fr>"
    with store.transaction() as tx:
        pk = tx.insert_message(
            new_message(
                message_id=long_id,
                in_reply_to="<" + "y" * 1200 + ">",
                fingerprint="f1",
                subject="Objet\x00 " + "é" * 400 + "\udce9",
                sender_name="N" * 500,
            )
        )
        tx.add_event(pk, "received", "detail with \x00 NUL and \udcff surrogate")
        assert tx.find_duplicate("general", long_id, "f1", "h") == pk
    row = store.messages()[0]
    assert row.message_id.startswith("sha256:") and len(row.message_id) == 71
    assert "\x00" not in row.subject and len(row.subject) == 300
    assert len(row.sender_name) == 200
    assert "\x00" not in store.events(pk)[0].detail


def test_thread_lookup_by_ids_and_reference(store: Store) -> None:
    with store.transaction() as tx:
        pk = tx.insert_message(new_message())
        assert tx.acknowledged_in_thread("general", ["<a@example.fr>"], None) == (
            pk,
            "SM-2026-000001",
        )
        assert tx.acknowledged_in_thread("general", ["<ar1@mailbot.test>"], None) == (
            pk,
            "SM-2026-000001",
        )
        assert tx.acknowledged_in_thread("general", [], "SM-2026-000001") == (pk, "SM-2026-000001")
        assert tx.acknowledged_in_thread("general", ["<zz@x>"], "SM-2026-000009") is None
        assert tx.acknowledged_in_thread("etrangers", ["<a@example.fr>"], None) is None


def test_recent_ar_count(store: Store) -> None:
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    with store.transaction() as tx:
        for uid, hours_ago in enumerate([1, 5, 30], start=1):
            tx.insert_message(
                new_message(
                    uid=uid,
                    message_id=f"<{uid}@x>",
                    reference=f"SM-2026-00000{uid}",
                    received_at=now - timedelta(hours=hours_ago),
                )
            )
        day_before = now - timedelta(hours=24)
        assert tx.count_recent_ars("general", "citoyen@example.fr", day_before, now) == 2
        assert tx.count_recent_ars("general", "autre@example.fr", day_before, now) == 0
        # The window ends at a mail's arrival: ARs of later mails are not counted.
        earlier = now - timedelta(hours=3)
        assert tx.count_recent_ars("general", "citoyen@example.fr", day_before, earlier) == 1


def test_an_intake_part_reads_its_lookups_in_one_statement_or_in_chunks(store: Store) -> None:
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    other = {"reference": None, "ar_message_id": None}
    rows = [
        new_message(),  # found by its AR's Message-ID (a thread)
        new_message(uid=2, message_id="<b@x>", fingerprint="f2", **other),  # a copy's
        new_message(
            uid=3, message_id="<c@x>", reference="SM-2026-000003", sender="s@x", ar_message_id=None
        ),
        new_message(uid=4, message_id="<d@x>", sender="s@x", decision="skip", **other),
        new_message(uid=5, message_id="<e@x>", mailbox="etrangers", **other),
    ]
    with store.transaction() as tx:
        first, copied, by_sender, _skipped, _elsewhere = (tx.insert_message(r) for r in rows)
        keys = {"ar_message_id": {"<ar1@mailbot.test>"}, "fingerprint": {"f2", "f9"}}
        found = tx.known("general", keys, {"s@x"}, now - timedelta(days=30))
        assert [row.id for row in found] == [first, copied, by_sender]
        # Hostile References: more values than one statement takes, read in chunks.
        many = {f"<{n}@x>" for n in range(1200)} | {"<ar1@mailbot.test>"}
        chunked = tx.known("general", {**keys, "ar_message_id": many}, {"s@x"}, now)
        assert [row.id for row in chunked] == [first, copied]  # s@x's AR is older than now


def test_an_intake_parts_lookups_read_what_sqlalchemys_statement_reads(store: Store) -> None:
    """``known`` runs its statement on the driver's cursor, each list padded to a power of
    two (issue 14): the same rows as SQLAlchemy's own statement (``known_query``, which
    the chunked path still runs), whatever the lengths of the lists, their times aware
    and in UTC, a sender's rows only its acknowledged ones since the date."""
    from mailbot.store.message_lookups import known_query
    from mailbot.store.records import KnownRow

    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    with store.transaction() as tx:
        for n in range(40):
            pk = tx.insert_message(
                new_message(
                    uid=n + 1,
                    message_id=f"<{n}@x>",
                    fingerprint=f"f{n}",
                    content_hash=f"h{n}",
                    sender=f"s{n % 7}@x",
                    decision="acknowledge" if n % 3 else "skip",
                    received_at=now - timedelta(hours=n),
                    reference=f"SM-2026-{n:06d}",
                    ar_message_id=f"<ar{n}@x>",
                    mailbox="general" if n % 5 else "etrangers",
                )
            )
            if n % 4 == 0:
                tx.record_reply(pk, now - timedelta(minutes=n), False, "")
    for size in (1, 2, 3, 5, 9, 17, 33):
        picked = range(0, 40, max(1, 40 // size))[:size]
        keys = {
            "message_id": {f"<{n}@x>" for n in picked},
            "ar_message_id": {f"<ar{n + 1}@x>" for n in picked},
            "fingerprint": {f"f{n + 2}" for n in picked},
            "content_hash": {f"h{n + 3}" for n in picked},
            "reference": {f"SM-2026-{n + 4:06d}" for n in picked},
        }
        senders = {f"s{n % 7}@x" for n in picked}
        since = now - timedelta(hours=size)
        values = {c: sorted(v) for c, v in keys.items()} | {"sender": sorted(senders)}
        with store.transaction() as tx:
            found = tx.known("general", keys, senders, since)
            rows = tx.conn.execute(
                known_query(tuple(values)), {**values, "mailbox": "general", "since": since}
            )
            by_id = {int(row.id): KnownRow(*row) for row in rows}
        assert found == [by_id[pk] for pk in sorted(by_id)]
        assert len(found) >= min(size, 20)
        assert all(row.received_at.tzinfo == UTC for row in found)
        assert any(row.first_reply_at is not None for row in found)
        assert all(r.first_reply_at is None or r.first_reply_at.tzinfo == UTC for r in found)


def test_an_intake_parts_lookups_never_walk_the_mailbox(tmp_path: Path) -> None:
    """Each part of a batch reads its lookups once (``known``); most mails quote no
    reference and answer no thread, so some key columns have no values. An empty IN list
    is an empty subquery to SQLite, which then read every message of the mailbox, testing
    each against it: a cost per part that grew with the mailbox (issue 14). Each SELECT
    must find its rows by an index on one of its values, whichever keys are empty."""
    store = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    sent: list[str] = []  # each statement as SQLite ran it, its values written in
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    since = now - timedelta(days=30)
    new_mails = {"message_id": {"<n@x>"}, "fingerprint": {"f"}, "content_hash": {"h"}}
    cases = [
        (new_mails, {"s@x"}),  # new mail: no reference, no thread
        ({"fingerprint": {"f"}}, set()),  # no Message-ID, no sender
        ({**new_mails, "reference": {"SM-2026-000001"}}, set()),
        ({**new_mails, "ar_message_id": {"<ar@x>"}, "message_id": {"<ar@x>"}}, {"s@x"}),
    ]
    plans: list[str] = []
    with store.transaction() as tx:
        for uid in range(1, 4):
            tx.insert_message(new_message(uid=uid, message_id=f"<{uid}@x>", reference=None))
        raw = tx.conn.connection.dbapi_connection
        assert raw is not None
        # The statement runs on the driver's cursor (no SQLAlchemy event sees it): SQLite's
        # own trace gives it, its values in place.
        raw.set_trace_callback(sent.append)
        for keys, senders in cases:
            sent.clear()
            tx.known("general", keys, senders, since)
            assert len(sent) == 1
            plans += [str(row[3]) for row in raw.execute(f"EXPLAIN QUERY PLAN {sent[0]}")]
        raw.set_trace_callback(None)
    store.close()
    reads = [plan for plan in plans if "messages" in plan]
    assert reads
    walks = [p for p in reads if p.startswith("SCAN") or p.endswith("(mailbox=?)")]
    assert walks == []


def test_the_relances_after_a_day_are_read_among_the_follow_ups_alone(tmp_path: Path) -> None:
    """The figures as of a day take away the relances received after it. Read through the
    index of every message's time of receipt, that walked all the mail received since —
    as of a past day (a report for an earlier week: nine calls, one per row of its table)
    tens of thousands of rows for a few follow-ups (issue 14). The follow-ups have an index
    of their own, and the read goes through it."""
    store = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    with store.transaction() as tx:
        for uid in range(1, 5):
            tx.insert_message(
                new_message(uid=uid, message_id=f"<{uid}@x>", reference=None, received_at=at)
            )
    sent: list[tuple[str, Any]] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: sent.append(a[2:4]))
    store.relances_after(at - timedelta(days=1), at - timedelta(days=7), at, "general", "permis")
    (statement, parameters), *_ = sent
    with store.engine.connect() as conn:
        plan = [
            str(r[3]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]
    store.close()
    assert any("ix_messages_follow_ups" in step for step in plan), plan


def test_outbox_claim_is_exclusive_and_crash_recovery_marks_uncertain(store: Store) -> None:
    with store.transaction() as tx:
        pk = tx.insert_message(new_message())
        first = tx.enqueue(pk, "ar", "citoyen@example.fr", "", "<ar1@mailbot.test>", b"raw")
        second = tx.enqueue(pk, "ar", "citoyen@example.fr", "", "<ar2@mailbot.test>", b"raw")
    with store.transaction() as tx:
        assert tx.claim_outbox(first, attempts=1)
    with store.transaction() as tx:
        assert not tx.claim_outbox(first, attempts=1)
    assert [i.id for i in store.due_outbox(datetime.now(UTC))] == [second]
    assert recover_interrupted(store) == [first]
    assert store.outbox_status(first) == "uncertain"
    assert store.messages()[0].ar_status == "uncertain"
    assert [e.kind for e in store.events(pk)] == ["send_uncertain"]


def test_two_workers_starting_a_year_take_different_numbers(store: Store) -> None:
    """No counter row yet for the year (its first mails, or a new database), two workers'
    batches at once: the second waits for the first's commit and numbers after it (both
    took number 1, and the second mail was refused on the unique reference)."""
    import threading

    second: list[tuple[str, int]] = []
    with store.transaction() as first:
        name, value = first.reserve_numbers("SM", 2031)
        assert value == 0

        def other_worker() -> None:
            with store.transaction() as tx:
                found = tx.reserve_numbers("SM", 2031)
                tx.set_numbers(found[0], found[1] + 1)
                second.append(found)

        thread = threading.Thread(target=other_worker)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waits for the first worker's transaction
        first.set_numbers(name, 3)
    thread.join(10)
    assert second == [(name, 3)]
    with store.transaction() as tx:
        assert tx.next_reference("SM", 2031) == "SM-2031-000005"


def bodies(store: Store) -> int:
    """How many outbox mails still hold their bytes."""
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM outbox_bodies")).scalar_one())


def test_purge_removes_old_messages_and_their_traces(store: Store) -> None:
    old = datetime(2020, 1, 2, tzinfo=UTC)
    with store.transaction() as tx:
        old_pk = tx.insert_message(
            new_message(received_at=old, answer_addresses=("citoyenne@example.org",))
        )
        tx.add_event(old_pk, "received")
        tx.enqueue(old_pk, "ar", "citoyen@example.fr", "", "<ar@x>", b"raw")
        tx.insert_message(new_message(uid=2, message_id="<b@x>", reference="SM-2026-000002"))
    assert store.purge(datetime(2024, 1, 1, tzinfo=UTC)) == 1
    assert [row.uid for row in store.messages()] == [2]
    assert [row.answer_addresses for row in store.messages()] == [None]  # went with its row
    assert store.events(old_pk) == []
    assert store.outbox_items() == []
    assert bodies(store) == 0  # the AR's bytes went with its row (ON DELETE CASCADE)


def test_a_replys_addresses_are_the_sender_and_the_others_recorded(store: Store) -> None:
    """A row recorded before 0020 (none recorded) is answered at its sender alone."""
    with store.transaction() as tx:
        plain = tx.insert_message(new_message())
        other = ("Marie@Example.org", "marie.dupont@example.fr")
        srs = tx.insert_message(
            new_message(
                uid=2, message_id="<b@x>", reference="SM-2026-000002", answer_addresses=other
            )
        )
        assert tx.answer_addresses_of(plain) == {"citoyen@example.fr"}
        assert tx.answer_addresses_of(srs) == {
            "citoyen@example.fr",
            "marie@example.org",
            "marie.dupont@example.fr",
        }
        assert tx.answer_addresses_of(999) == frozenset()


def test_purge_removes_mail_and_events_tied_to_no_message_past_retention(store: Store) -> None:
    """A digest or a report (no message of its own) carries citizens' subjects: one that
    failed or stayed pending was kept for ever, with the events of its failure."""
    with store.transaction() as tx:
        tx.enqueue(None, "digest", "pref-permis@x", "", "<d@x>", b"[SM-2026-000001] Sujet")
        tx.add_event(None, "send_failed", "at RCPT TO: 550")
    now = datetime.now(UTC)
    store.purge(now - timedelta(days=1))  # made today: within any retention
    assert len(store.outbox_items()) == 1
    store.purge(now + timedelta(days=1))
    assert store.outbox_items() == []
    assert bodies(store) == 0
    assert store.events(None) == []


@pytest.mark.parametrize("days", ["-1", "0", "1.5", "36501", "tout"])
def test_purge_days_out_of_range_is_refused_and_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    """`--days -1` put the cut-off in the future and deleted today's mail; `--days 0` was
    silently the configured retention."""
    import yaml

    from mailbot.cli import main

    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["database"] = f"sqlite:///{tmp_path / 'p.db'}"
    config = tmp_path / "rules.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    store = Store(data["database"])
    with store.transaction() as tx:
        tx.insert_message(new_message(received_at=datetime.now(UTC)))
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "purge", "--days", days])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --days: '{days}': expected a number of days from 1 to 36500" in err

    assert len(store.messages()) == 1
    store.close()


def test_ended_sessions_stay_refused_until_the_purge_drops_the_expired(store: Store) -> None:
    """Logout records a console session's id until the session would have expired anyway;
    the purge job deletes the rows past that time only: no unbounded growth, and no ended
    session revived while its cookie could still be valid."""
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    sessions.end(store, "expired-id", now - timedelta(minutes=1))
    sessions.end(store, "live-id", now + timedelta(hours=3))
    sessions.end(store, "live-id", now + timedelta(hours=3))  # logged out twice (two tabs)
    assert sessions.ended(store, "expired-id") and sessions.ended(store, "live-id")
    assert not sessions.ended(store, "never-ended-id")
    maintenance.purge(load_config(ROOT / "rules.yaml"), store, clock=lambda: now)
    assert not sessions.ended(store, "expired-id")  # its cookie is too old to be valid
    assert sessions.ended(store, "live-id")


def test_purged_data_is_not_left_in_the_sqlite_file_nor_its_backups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite frees a deleted row's pages without erasing them unless secure_delete is on,
    which only some builds (Debian's, Fedora's) make the default: a purged citizen's
    address, subject and mail (a forward's raw bytes carry it whole) would stay readable in
    the file, and in every backup copied from it, until the pages happened to be reused."""
    from mailbot.store.backup import backup

    engine_of = Store._create_engine

    def as_built_without_secure_delete(url: str, **kwargs: Any) -> sa.Engine:
        engine = engine_of(url, **kwargs)

        def default_off(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA secure_delete=OFF")

        sa.event.listen(engine, "connect", default_off, insert=True)  # before mailbot's
        return engine

    monkeypatch.setattr(Store, "_create_engine", staticmethod(as_built_without_secure_delete))
    store = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    old = datetime(2020, 1, 2, tzinfo=UTC)
    address = "jeanne.purgee@example.fr"
    with store.transaction() as tx:
        pk = tx.insert_message(
            new_message(received_at=old, sender=address, subject="Titre de séjour Purgée")
        )
        tx.add_event(pk, "received", f'{{"to": "{address}"}}')
        tx.enqueue(pk, "forward", "service@pref.test", "", "<f@x>", b"CORPS-PURGE " * 2000)
    assert store.purge(datetime(2024, 1, 1, tzinfo=UTC)) == 1
    # The worker keeps its database open for days: the purged pages must not wait in the
    # write-ahead log for the last connection to close.
    for name in ("mailbot.db", "mailbot.db-wal"):
        data = (tmp_path / name).read_bytes() if (tmp_path / name).exists() else b""
        for trace in (address.encode(), "Purgée".encode(), b"CORPS-PURGE"):
            assert trace not in data, (name, trace)
    backup(store, tmp_path / "copy.db")
    store.close()  # the last connection checkpoints the WAL into the file
    for name in ("mailbot.db", "copy.db"):
        data = (tmp_path / name).read_bytes()
        for trace in (address.encode(), "Purgée".encode(), b"CORPS-PURGE"):
            assert trace not in data, (name, trace)


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(sa.exc.StatementError), store.transaction() as tx:
        tx.insert_message(new_message(received_at=datetime(2026, 1, 1)))


def at_revision(url: str, revision: str, *rows: tuple[str, dict[str, Any]]) -> None:
    """A database migrated only to ``revision``, as an older mailbot left it, with ``rows``
    written by plain SQL (statement, parameters): what an upgrade test then opens."""

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        for statement, parameters in rows:
            conn.execute(sa.text(statement), parameters)
    engine.dispose()


def test_upgrade_from_first_revision_keeps_data(tmp_path: Path) -> None:
    from alembic.config import Config as AlembicConfig

    from mailbot.store import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO messages (mailbox, folder, uidvalidity, uid, content_hash, "
                "received_at, subject, decision, reasons, ar_status, size, defects, created_at) "
                "VALUES ('general', 'INBOX', 1, 1, 'h', '2026-01-05 10:00:00', 'old', "
                "'acknowledge', '[]', 'sent', 10, '[]', '2026-01-05 10:00:00')"
            )
        )
    engine.dispose()
    store = Store(url)
    assert store.schema_version() == Store.head_version()
    (row,) = store.messages()
    assert row.subject == "old" and row.service is None
    store.close()


SHOUTED = "ÉCHANGE DE MON PERMIS ÉTRANGER"


def found(store: Store, word: str) -> list[str]:
    """The subjects of the open messages the console's search for ``word`` lists."""
    where = OpenFilter(services=(), mailbox_services=("general",), words=(word,))
    rows, total = open_messages(store.engine, where, 0, 50)
    assert total == len(rows)
    return [row.subject for row in rows]


def test_queue_search_ignores_case_and_accents(store: Store) -> None:
    """SQLite's lower() folds ASCII only: « échange » missed « ÉCHANGE » (B7). The subject
    is stored folded (core.fold), the words are folded the same way: one answer on both
    databases, whatever PostgreSQL's locale."""
    with store.transaction() as tx:
        tx.insert_message(new_message(subject=SHOUTED))
        tx.insert_message(
            new_message(
                uid=2,
                message_id="<b@example.fr>",
                content_hash="h2",
                reference="SM-2026-000002",
                subject="Straße, Œuvre et ﬁn de séjour",
            )
        )
    for word in ("échange", "ÉCHANGE", "Échange", "echange", "ECHANGE", "permis", "ÉTRANGER"):
        assert found(store, word) == [SHOUTED], word
    for word in ("strasse", "STRASSE", "œuvre", "fin", "Séjour", "SEJOUR"):
        assert found(store, word) == ["Straße, Œuvre et ﬁn de séjour"], word
    assert found(store, "sm-2026-000002") == ["Straße, Œuvre et ﬁn de séjour"]  # reference
    assert found(store, "échanges") == [] and found(store, "%") == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_folds_the_subjects_already_recorded(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Revision 0016 folds the subjects of the rows recorded before it: found as new ones."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    insert = (
        "INSERT INTO messages (mailbox, folder, uidvalidity, uid, content_hash, received_at, "
        "subject, decision, reasons, ar_status, size, defects, created_at) VALUES ('general', "
        "'INBOX', 1, :uid, 'h', '2026-01-05 10:00:00', :subject, 'acknowledge', '[]', 'sent', "
        "10, '[]', '2026-01-05 10:00:00')"
    )
    subjects = {1: SHOUTED, 2: "Carte grise"}
    at_revision(url, "0015", *((insert, {"uid": u, "subject": s}) for u, s in subjects.items()))
    store = Store(url)
    try:
        assert store.schema_version() == Store.head_version()
        assert found(store, "echange") == [SHOUTED]
        assert found(store, "CARTE") == ["Carte grise"]
    finally:
        store.close()


def test_a_request_key_is_claimed_once_even_by_two_transactions_at_once(store: Store) -> None:
    """The web console's double submit: the second transaction waits for the first, then
    finds the key taken (RepeatedRequestError) and reads what the first recorded."""
    import threading

    from mailbot.app.requests import once

    started = threading.Event()
    results: list[tuple[int, bool]] = []

    def work(tx: Any) -> int:
        started.set()
        threading.Event().wait(0.5)
        return int(tx.enqueue(None, "digest", "a@seine-maritime.gouv.fr", "", "<m@x>", b"x"))

    def request() -> None:
        results.append(once(store, "reply_queued", "form-token", work, agent="cdurand"))

    first = threading.Thread(target=request)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=request)
    second.start()
    first.join(20)
    second.join(20)
    assert sorted(repeated for _id, repeated in results) == [False, True]
    assert len({outbox_id for outbox_id, _ in results}) == 1
    assert len(store.outbox_items()) == 1
    other = once(store, "reply_queued", "other-token", work, agent="cdurand")
    assert other[1] is False  # another key: done


def test_a_message_checked_where_a_request_writes_is_locked_until_it_commits(
    store: Store,
) -> None:
    """An agent's request checks whose the message is in the transaction that writes
    (``owner_locked``), first thing in it: a head moving the message at that moment waits
    for it to commit. On SQLite the driver began the transaction only at its first write:
    the read went outside it, and the move committed between the check and the write."""
    import threading

    from mailbot.store.console import owner_locked

    with store.transaction() as tx:
        pk = tx.insert_message(new_message(service="general"))
    moved = threading.Event()

    def move() -> None:
        with store.transaction() as tx:
            tx.set_service(pk, "permis")
        moved.set()

    mover = threading.Thread(target=move)
    with store.transaction() as tx:
        seen = owner_locked(tx.conn, pk)
        assert seen is not None and (seen.service, seen.mailbox) == ("general", "general")
        mover.start()
        assert not moved.wait(1)  # the move waits for this transaction
        again = owner_locked(tx.conn, pk)
        assert again is not None and again.service == "general"
    mover.join(20)
    assert moved.is_set() and store.message(id=pk).service == "permis"
    with store.transaction() as tx:
        assert owner_locked(tx.conn, 999_999) is None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://mailbot:S3cretPw99@db.pref.local/mailbot",
        "postgresql+psycopg://mailbot@db.pref.local/mailbot?password=S3cretPw99",
        "postgresql+psycopg://mailbot@db/mailbot?sslmode=verify-full&sslpassword=S3cretPw99",
    ],
)
def test_a_database_url_is_shown_with_no_password_wherever_it_is_written(url: str) -> None:
    """`check`, `purge` and `status` print the database's URL: libpq also takes the
    password as a query parameter, which ``hide_password`` alone left in clear."""
    from mailbot.store.engines import shown_url

    shown = shown_url(url)
    assert "S3cretPw99" not in shown and "***" in shown
    assert shown.startswith("postgresql+psycopg://mailbot") and "db" in shown


def test_the_upgrade_keeps_each_followed_folder_read_up_to_its_last_write(
    tmp_path: Path,
) -> None:
    """Migration 0017: a folder followed before it counts as read up to its mark's last
    move, so that a UIDVALIDITY change at the first poll after the upgrade already holds
    back the older mail; nothing is being read again yet."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    folder = (
        "INSERT INTO folders (mailbox, folder, uidvalidity, last_uid, updated_at)"
        " VALUES ('general', 'INBOX', 7, 42, '2026-11-05 10:00:00')"
    )
    at_revision(url, "0016", (folder, {}))
    store = Store(url)
    with store.transaction() as tx:
        state = tx.folder_state("general", "INBOX")
    store.close()
    written = datetime(2026, 11, 5, 10, 0, tzinfo=UTC)
    assert state == FolderState(7, 42, read_until=written, resync_before=None)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_upgrade_gives_each_folder_no_transient_attempt_and_keeps_its_mark(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Migration 0019 on a folder already followed: no mail is being retried, the
    high-water mark stays, and a count written after it is read back."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    folder = (
        "INSERT INTO folders (mailbox, folder, uidvalidity, last_uid, updated_at)"
        " VALUES ('general', 'INBOX', 7, 42, '2026-11-05 10:00:00')"
    )
    at_revision(url, "0018", (folder, {}))
    store = Store(url)
    try:
        assert store.schema_version() == Store.head_version()
        with store.transaction() as tx:
            assert tx.folder_state("general", "INBOX").last_uid == 42
            assert tx.transient_attempts("general", "INBOX", 7) == (0, 0)
            tx.note_transient_attempts("general", "INBOX", 7, 43, 2)
        with store.transaction() as tx:
            assert tx.transient_attempts("general", "INBOX", 7) == (43, 2)
    finally:
        store.close()


def test_a_uidvalidity_change_keeps_the_moment_read_until_the_folder_is_read_again(
    store: Store,
) -> None:
    """``read_until`` moves only forward and only for its UIDVALIDITY; a change makes it
    the bound of the re-read, which a full read of the new UIDVALIDITY ends."""
    first, later = datetime(2026, 11, 5, 10, 0, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)
    with store.transaction() as tx:
        tx.save_folder_state("general", "INBOX", 7, 42)
        tx.folder_read("general", "INBOX", 7, later)
        tx.folder_read("general", "INBOX", 7, first)  # a slower reader's: never backwards
        tx.folder_read("general", "INBOX", 8, first)  # another UIDVALIDITY's: left alone
        assert tx.folder_state("general", "INBOX") == FolderState(7, 42, later)
        tx.save_folder_state("general", "INBOX", 8, 0)
        tx.start_resync("general", "INBOX", later)
        assert tx.resync_bounds("general", "INBOX", 8).resync_before == later
        assert tx.resync_bounds("general", "INBOX", 7).resync_before is None
        tx.folder_read("general", "INBOX", 8, first)
        assert tx.folder_state("general", "INBOX") == FolderState(8, 0, first, None)
        assert tx.resync_bounds("general", "INBOX", 8).resync_before is None


def test_a_full_read_ends_a_restores_bound_even_within_the_same_second(store: Store) -> None:
    """``mailbot restored`` between two polls of the same second (the moments are cut to
    the second): the second poll's full read still ends the bound; a slower reader's older
    moment neither moves ``read_until`` back nor ends it."""
    read, bound = datetime(2026, 11, 5, 10, 0, tzinfo=UTC), datetime(2026, 11, 5, 11, tzinfo=UTC)
    with store.transaction() as tx:
        tx.save_folder_state("general", "INBOX", 7, 42)
        tx.folder_read("general", "INBOX", 7, read)
        (folder,) = tx.followed_folders()
        tx.restore_folder(folder.id, bound)
        tx.folder_read("general", "INBOX", 7, read - timedelta(seconds=1))
        assert tx.resync_bounds("general", "INBOX", 7).restored_before == bound
        tx.folder_read("general", "INBOX", 7, read)
        assert tx.resync_bounds("general", "INBOX", 7).restored_before is None
        assert tx.folder_state("general", "INBOX") == FolderState(7, 42, read)


def test_closing_without_reply_leaves_an_answered_message_answered(store: Store) -> None:
    from mailbot.core.statuses import NoReplyReason
    from mailbot.store import console as stored

    with store.transaction() as tx:
        pk = tx.insert_message(new_message())
        tx.record_reply(pk, datetime(2026, 11, 27, 10, 0, tzinfo=PARIS), True, "{}")
    with store.transaction() as tx:
        assert not stored.set_no_reply(tx.conn, pk, NoReplyReason.SPAM)
        assert stored.closed_reason(tx.conn, pk) is None


def test_a_closing_loses_to_a_reply_committed_after_its_state_was_read(
    request: pytest.FixtureRequest,
) -> None:
    """PostgreSQL's read committed: an agent closes a message without reply while a
    colleague's answer commits between the closing's read and its write. The message ends
    answered, not answered and closed (counted once in the figures, not listed as closed)."""
    from mailbot.core.statuses import NoReplyReason
    from mailbot.store import console as stored

    store = Store(fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid))
    try:
        with store.transaction() as tx:
            pk = tx.insert_message(new_message())
        with store.transaction() as closing:
            assert stored.reply_state(closing.conn, pk) == (False, False)  # read: unanswered
            with store.transaction() as answer:
                answer.record_reply(pk, datetime(2026, 11, 27, 10, tzinfo=PARIS), True, "{}")
            assert not stored.set_no_reply(closing.conn, pk, NoReplyReason.DUPLICATE)
        with store.transaction() as tx:
            assert stored.closed_reason(tx.conn, pk) is None
            assert stored.reply_state(tx.conn, pk)[0]
    finally:
        store.close()


@pytest.mark.parametrize("url", ["postgresql+nodriver://mailbot:Tr0ub4dor-pw@127.0.0.1:1/mailbot"])
def test_a_database_driver_that_is_not_installed_is_a_store_error(url: str) -> None:
    """`database: postgresql+psycopg2://…` without psycopg2 (or a misspelt driver) ended
    every command, `mailbot check` included, in a traceback."""
    from mailbot.errors import StoreError

    with pytest.raises(StoreError) as info:
        Store(url)
    message = str(info.value)
    assert "postgresql+nodriver://mailbot:***@127.0.0.1:1/mailbot" in message, message
    assert "Tr0ub4dor" not in message
    assert "driver" in message


def watch_body_writes(store: Store) -> None:
    """Record in ``body_writes`` each row written to ``outbox_bodies`` (a trigger)."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE body_writes (op VARCHAR(8) NOT NULL)"))
        for op in ("INSERT", "UPDATE", "DELETE"):
            if store.engine.dialect.name == "sqlite":
                conn.execute(
                    sa.text(
                        f"CREATE TRIGGER body_{op} AFTER {op} ON outbox_bodies"
                        f" BEGIN INSERT INTO body_writes VALUES ('{op}'); END"
                    )
                )
            else:
                conn.execute(
                    sa.text(
                        f"CREATE FUNCTION body_{op}() RETURNS trigger AS $$ BEGIN INSERT INTO"
                        f" body_writes VALUES ('{op}'); RETURN NULL; END $$ LANGUAGE plpgsql"
                    )
                )
                conn.execute(
                    sa.text(
                        f"CREATE TRIGGER body_{op} AFTER {op} ON outbox_bodies"
                        f" FOR EACH ROW EXECUTE FUNCTION body_{op}()"
                    )
                )


def body_writes(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT op FROM body_writes")).scalars())


def test_a_take_holds_at_most_so_many_mails_to_citizens_and_the_internal_ones_between(
    store: Store,
) -> None:
    """A delivery takes a FETCH batch's ARs and the forwards between them (``citizens``):
    a transferred batch is not cut in two deliveries, and a batch of ARs alone is no larger
    in memory than a batch (bench/run.py (c), issue 14)."""
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    kinds = [OutboxKind.AR, OutboxKind.FORWARD] * 4 + [OutboxKind.AR] * 4 + [OutboxKind.DIGEST] * 6
    with store.batch() as tx:
        pk = tx.record_message(new_message(reference=None)).id
        rows = [
            (pk, kind, "a@b.fr", "m@b.fr", f"<q{n}@b.fr>", b"x", at) for n, kind in enumerate(kinds)
        ]
        tx.queue_rows(rows)
    later, stale = at + timedelta(minutes=1), timedelta(hours=1)
    with store.transaction() as tx:
        taken = tx.take_due(later, 10, "w1", stale, citizens=3)
        # The third AR's forward comes with it: an internal mail stops nothing.
        assert [i.kind for i in taken] == [OutboxKind.AR, OutboxKind.FORWARD] * 3
    with store.transaction() as tx:  # what it took is its own again
        assert [i.kind for i in tx.take_due(later, 10, "w1", stale, citizens=100)] == kinds[:10]
        assert [i.kind for i in tx.take_due(later, 30, "w1", stale, citizens=8)] == kinds
        assert [i.kind for i in tx.take_due(later, 30, "w1", stale)] == kinds


def test_an_outbox_mails_status_updates_leave_its_bytes_alone(store: Store) -> None:
    """Issue 14, point 2: the bytes of a mail (~14 KB for an AR) were in its outbox row, and
    each status update (taken, claimed, sent) rewrote them. They sit apart now: only the
    purge after sending touches them, once, and a second purge finds nothing to do."""
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    body = b"Votre demande a bien ete recue.\r\n" * 400
    with store.batch() as tx:
        pk = tx.record_message(new_message(reference=None)).id
        tx.queue_rows([(pk, OutboxKind.AR, "a@b.fr", "m@b.fr", "<q@b.fr>", body, at)])
    watch_body_writes(store)
    with store.transaction() as tx:
        (item,) = tx.take_due(at + timedelta(minutes=1), 10, "w1", timedelta(hours=1))
        assert item.raw == body
    with store.transaction() as tx:
        assert tx.claim_outbox(item.id, 1, "w1")
    with store.transaction() as tx:
        tx.mark_sent([(item.id, at)], "w1")
    assert body_writes(store) == []
    with store.transaction() as tx:
        assert [found.id for found, _ in tx.unfinished_sent()] == [item.id]
        assert tx.finish_sent([item.id]) == {item.id}
        assert tx.finish_sent([item.id]) == set() and tx.unfinished_sent() == []
    assert body_writes(store) == ["DELETE"]
    assert [(row.status, row.raw) for row in store.outbox_items()] == [(OutboxStatus.SENT, None)]


class _RolledBack(Exception):
    """Raised in a transaction to roll it back."""


def sent_item(store: Store) -> int:
    """One AR queued, taken, claimed and marked sent: its bookkeeping still to finish."""
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    with store.batch() as tx:
        pk = tx.record_message(new_message(reference=None)).id
        tx.queue_rows([(pk, OutboxKind.AR, "a@b.fr", "m@b.fr", "<q@b.fr>", b"AR\r\n", at)])
    with store.transaction() as tx:
        (item,) = tx.take_due(at + timedelta(minutes=1), 10, "w1", timedelta(hours=1))
    with store.transaction() as tx:
        assert tx.claim_outbox(item.id, 1, "w1")
    with store.transaction() as tx:
        tx.mark_sent([(item.id, at)], "w1")
    return item.id


def waits_on_a_lock(store: Store) -> bool:
    """Whether a session of this database waits on a lock another one holds."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    )
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.text(query)).scalar())


@pytest.mark.parametrize("first", ["commits", "rolls back"])
def test_two_deliveries_finishing_one_sent_mail_on_postgresql_finish_it_once(
    request: pytest.FixtureRequest, first: str
) -> None:
    """Two deliveries write the bookkeeping of the same sent mail at once (PostgreSQL, two
    connections): the second's ``finish_sent`` waits on the first's DELETE, then gets the
    id back only if the first rolled back. Exactly one committed call has it, so the
    status mirror and the events are written once."""
    url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    store = Store(url)
    try:
        item = sent_item(store)
        second: list[set[int]] = []

        def finish() -> None:
            with store.transaction() as other:
                second.append(other.finish_sent([item]))

        thread = threading.Thread(target=finish)
        try:
            with store.transaction() as tx:
                assert tx.finish_sent([item]) == {item}
                thread.start()
                deadline = time.monotonic() + 10
                while not waits_on_a_lock(store):  # the second blocked on the first's DELETE
                    assert thread.is_alive() and time.monotonic() < deadline
                    time.sleep(0.01)
                if first == "rolls back":
                    raise _RolledBack
        except _RolledBack:
            pass
        thread.join(10)
        assert not thread.is_alive()
        assert second == ([set()] if first == "commits" else [{item}])
        with store.transaction() as tx:
            assert tx.unfinished_sent() == [] and tx.finish_sent([item]) == set()
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_upgrade_moves_the_bytes_of_the_mails_still_holding_them(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Migration 0018: the bytes of a pending mail (and of any mail still holding them:
    retried, sending, failed, uncertain) move to ``outbox_bodies`` and are sent from there,
    each row keeping its id, status, attempts, holder and last error; a sent mail whose
    bookkeeping a crash left undone is still found and finished; a purged one stays
    without bytes. Migration 0024 then deletes the bytes a failed or uncertain mail still
    held (a version before ``_give_up_bytes`` kept them): from then on, a failed mail
    holding its bytes is one that failed for lack of time, which a requeue may send."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    message = (
        "INSERT INTO messages (id, mailbox, folder, uidvalidity, uid, content_hash, received_at,"
        " subject, decision, reasons, ar_status, size, defects, created_at) VALUES (1,"
        " 'general', 'INBOX', 1, 1, 'h', '2026-11-05 10:00:00', 's', 'acknowledge', '[]',"
        " 'pending', 10, '[]', '2026-11-05 10:00:00')"
    )
    mail = (
        "INSERT INTO outbox (id, message_pk, kind, recipient, envelope_from, email_message_id,"
        " raw, status, attempts, next_attempt_at, last_error, created_at, sent_at, claimed_by,"
        " claimed_at) VALUES (:id, 1, 'ar', 'a@b.fr', 'm@b.fr', :mid, :raw, :status,"
        " :attempts, :next, :error, '2026-11-05 10:00:00', :sent_at, :holder, :claimed_at)"
    )
    pending, unfinished = b"AR pending\r\n" * 1000, b"AR sent\r\n" * 1000
    retried, sending = b"AR retried\r\n" * 10, b"AR sending\r\n" * 10
    failed, uncertain = b"AR failed\r\n" * 10, b"AR uncertain\r\n" * 10
    soon, claimed = "2026-11-05 10:00:00", "2026-11-05 10:00:03"
    rows = [  # id, bytes, status, attempts, next attempt, last error, sent at, holder
        (7, pending, "pending", 0, soon, None, None, None),
        (8, unfinished, "sent", 1, soon, None, "2026-11-05 10:00:01", "w1"),
        (9, None, "sent", 1, soon, None, "2026-11-05 10:00:02", "w1"),
        (10, retried, "pending", 2, "2026-11-05 12:00:00", "451 try again later", None, None),
        (11, sending, "sending", 1, soon, None, None, "w-gone"),
        (12, failed, "failed", 3, soon, "550 no such user", None, None),
        (13, uncertain, "uncertain", 1, soon, "interrupted while sending", None, "w-gone"),
    ]
    at_revision(
        url,
        "0017",
        (message, {}),
        *(
            (
                mail,
                {
                    "id": i,
                    "mid": f"<{i}@b.fr>",
                    "raw": raw,
                    "status": status,
                    "attempts": attempts,
                    "next": next_at,
                    "error": error,
                    "sent_at": sent,
                    "holder": holder,
                    "claimed_at": claimed if holder else None,
                },
            )
            for i, raw, status, attempts, next_at, error, sent, holder in rows
        ),
    )
    store = Store(url)
    try:
        assert store.schema_version() == Store.head_version()
        with store.engine.connect() as conn:
            kept = conn.execute(
                sa.text(
                    "SELECT id, message_pk, status, attempts, claimed_by, last_error FROM outbox"
                    " ORDER BY id"
                )
            ).all()
            bodies = conn.execute(
                sa.text("SELECT outbox_id, raw FROM outbox_bodies ORDER BY outbox_id")
            ).all()
        assert [tuple(row) for row in kept] == [
            (i, 1, status, attempts, holder, error)
            for i, _raw, status, attempts, _next, error, _sent, holder in rows
        ]
        assert [(i, bytes(raw)) for i, raw in bodies] == [
            (i, raw) for i, raw, _s, *_rest in rows if raw is not None and i not in (12, 13)
        ]
        assert [(row.id, row.raw) for row in store.outbox_items()] == [
            (7, pending),
            (8, unfinished),
            (9, None),
            (10, retried),
            (11, sending),
            (12, None),  # 0024
            (13, None),
        ]
        assert [row.failed_at for row in store.outbox_items(OutboxStatus.FAILED)] == [
            datetime(2026, 11, 5, 10, 0, tzinfo=UTC)  # its creation: it was never claimed
        ]
        with store.transaction() as tx:
            now = datetime(2026, 11, 5, 11, 0, tzinfo=UTC)
            assert [i.raw for i in tx.take_due(now, 10, "w1", timedelta(hours=1))] == [pending]
            assert [item.id for item, _ in tx.unfinished_sent()] == [8]
            assert tx.finish_sent([8, 9]) == {8}
        assert [row.raw for row in store.outbox_items()] == [
            pending,
            None,
            None,
            retried,
            sending,
            None,
            None,
        ]
    finally:
        store.close()
