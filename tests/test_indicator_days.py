"""The indicators from their daily buckets are the indicators from every message (issue 14,
point 10).

``indicator_days`` (migration 0013) is kept by triggers on ``indicator_facts``. On random
messages over four years — instants on both sides of each DST change (to the second), on
weekends and public holidays, replies days later or never, complaints, transfers, relances,
signatures, mail that is not a citizen's — then random updates (a reply recorded, a relance,
a transfer...), deletes and a purge, on SQLite and on a real PostgreSQL:

* the buckets the triggers kept equal those ``refill`` computes from the facts, and those
  computed here in Python from the messages;
* every figure, for many periods, as-of dates, mailboxes and services, equals the full
  computation over the facts (``compute_arrays``), to the last bit;
* in another time zone than the buckets', the figures come from the facts; after
  ``rebuild`` in that zone (one with a half-hour offset), from the buckets, equal again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pg import fresh_database
from rulesfile import dump_rules, load_rules

from mailbot.app import indicators
from mailbot.cli import main
from mailbot.config import Config
from mailbot.core.indicators import arrays_from_store, compute_arrays
from mailbot.core.workdays import calendar_for, zone_offsets
from mailbot.store import Store
from mailbot.store.schema import indicator_days, indicator_zone, messages

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
FIRST_YEAR, YEARS = 2024, 4
MAILBOXES = ["general", "etrangers"]
SERVICES = [None, "general", "permis"]
CATEGORIES = [None, "information", "reclamation"]
DECISIONS = ["acknowledge"] * 10 + ["quarantine", "skip", "follow_up"]
REASONS = ["[]", '["no-return-path"]']


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    opened = Store(database)
    yield opened
    opened.close()


def config(zone: str = "Europe/Paris") -> Config:
    """What the indicators read of the configuration."""
    return cast(Config, SimpleNamespace(timezone=zone, complaint_category="reclamation"))


@cache
def dst_changes() -> list[datetime]:
    """The instants (UTC) at which Paris changes its offset over the years of the test."""
    rows = zone_offsets(PARIS, FIRST_YEAR, FIRST_YEAR + YEARS)
    return [datetime.fromtimestamp(since, UTC) for since, _ in rows[1:]]


def instant(rng: random.Random) -> datetime:
    """A moment over the years: often a second around a DST change or a local midnight,
    often with a fraction of a second just below the next one."""
    draw = rng.random()
    if draw < 0.2:
        moment = rng.choice(dst_changes()) + timedelta(seconds=rng.choice([-3601, -1, 0, 1, 3599]))
    elif draw < 0.4:
        day = date(FIRST_YEAR, 1, 1) + timedelta(days=rng.randrange(365 * YEARS))
        midnight = datetime(day.year, day.month, day.day, tzinfo=PARIS).astimezone(UTC)
        moment = midnight + timedelta(seconds=rng.choice([-1, 0, 1]))
    else:
        start = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
        moment = start + timedelta(seconds=rng.randrange(365 * YEARS * 86400))
    return moment + timedelta(microseconds=rng.choice([0, 999_999, rng.randrange(10**6)]))


def reply_state(rng: random.Random, received: datetime) -> dict[str, Any]:
    replied = None
    if rng.random() < 0.75:
        later = timedelta(days=rng.choice([0, 1, 2, 3, 5, 6, 7, 9, 14, 40]))
        replied = received + later + timedelta(seconds=rng.randrange(-3600, 86400))
    return {
        "first_reply_at": replied,
        "first_reply_complete": rng.choice([None, 0, 1]) if replied else None,
    }


NOTICES = [None, None, "pending", None, "sent", "failed"]


def random_state(rng: random.Random, received: datetime) -> dict[str, Any]:
    return {
        "decision": rng.choice(DECISIONS),
        "reasons": rng.choice(REASONS),
        "no_reply": None if rng.random() < 0.95 else "spam",
        "probe": int(rng.random() < 0.03),
        "ar_status": rng.choice(["sent", "sent", "pending", "failed", "skipped"]),
        "transferred": int(rng.random() < 0.15),
        # An agent's transfer notice, drawn apart: the seeds draw the same as before.
        "notice_status": NOTICES[int(received.timestamp()) % len(NOTICES)],
        "relances": rng.choice([0, 0, 0, 1, 2, 9]),
        "mailbox": rng.choice(MAILBOXES),
        "service": rng.choice(SERVICES),
        "category": rng.choice(CATEGORIES),
        **reply_state(rng, received),
    }


def insert_random(store: Store, rng: random.Random, count: int) -> None:
    rows = []
    for n in range(count):
        received = instant(rng)
        rows.append(
            {
                "folder": "INBOX",
                "uidvalidity": 1,
                "uid": n + 1,
                "content_hash": f"h{n}",
                "received_at": received,
                "subject": "Sujet",
                "size": 100,
                "defects": "[]",
                "created_at": received,
                **random_state(rng, received),
            }
        )
    with store.engine.begin() as conn:
        conn.execute(messages.insert(), rows)


def update_randomly(store: Store, rng: random.Random) -> None:
    """What happens to messages later: a reply recorded, a relance, a transfer, a move to
    another service, a new category; or everything at once."""
    with store.engine.begin() as conn:
        found = conn.execute(sa.select(messages.c.id, messages.c.received_at)).all()
        for message_pk, received in found:
            draw = rng.random()
            if draw < 0.4:
                continue
            if draw < 0.6:
                values = reply_state(rng, received)
            elif draw < 0.7:
                values = {"relances": messages.c.relances + 1}
            elif draw < 0.8:
                values = {"transferred": 1, "service": rng.choice(SERVICES)}
                values["notice_status"] = NOTICES[message_pk % len(NOTICES)]
            elif draw < 0.9:
                values = {"category": rng.choice(CATEGORIES), "ar_status": "sent"}
            else:
                values = random_state(rng, received)
            conn.execute(messages.update().where(messages.c.id == message_pk).values(**values))


def buckets(store: Store) -> dict[tuple[Any, ...], tuple[int, ...]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(indicator_days)).all()
    return {tuple(row[:5]): tuple(int(v) for v in row[5:]) for row in rows}


def local_day(moment: datetime | None, zone: ZoneInfo) -> int:
    """The local day number of an instant, floored to its second, computed here apart."""
    if moment is None:
        return -1
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    second = datetime.fromtimestamp(math.floor(moment.timestamp()), UTC)
    return (second.astimezone(zone).date() - date(1970, 1, 1)).days


def expected(store: Store, zone: ZoneInfo = PARIS) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The buckets, computed in Python from the messages as the indicators define them."""
    found: dict[tuple[Any, ...], list[int]] = {}
    for m in store.messages():
        unhandled = m.decision == "quarantine" or (m.decision == "skip" and m.reasons == REASONS[1])
        if not (m.decision == "acknowledge" or unhandled) or m.no_reply is not None or m.probe:
            continue
        key = (local_day(m.received_at, zone), local_day(m.first_reply_at, zone))
        key += (m.mailbox, m.service or "", m.category or "")
        sent, transferred = m.ar_status == "sent", bool(m.transferred)
        # Announced: an agent's notice sent, else (a transfer at receipt) the AR sent.
        told = sent if m.notice_status is None else m.notice_status == "sent"
        add = [1, sent, transferred, told and transferred, m.relances]
        add += [m.first_reply_complete == 1, m.first_reply_complete is not None]
        found[key] = [a + int(b) for a, b in zip(found.get(key, [0] * 7), add, strict=True)]
    return {key: tuple(sums) for key, sums in found.items()}


def refilled(store: Store, zone: str = "Europe/Paris") -> dict[tuple[Any, ...], tuple[int, ...]]:
    indicators.rebuild(config(zone), store)
    return buckets(store)


def assert_same_figures(store: Store, rng: random.Random, zone: str = "Europe/Paris") -> None:
    """Random periods, as-of dates and filters: the figures from the buckets equal the full
    computation over the facts (and there are messages in most of them)."""
    calendar = calendar_for(zone)
    seen = 0
    for n in range(20):
        start = date(FIRST_YEAR, 1, 1) + timedelta(days=rng.randrange(365 * YEARS))
        end = start + timedelta(days=rng.choice([2, 6, 30, 92, 365]))
        as_of = end + timedelta(days=rng.choice([0, 1, 3, 7, 30]))
        where = [{}, {"mailbox": rng.choice(MAILBOXES)}, {"service": rng.choice(SERVICES[1:])}]
        filters = where[n % 3]
        got = indicators.figures(config(zone), store, start, end, as_of, **filters)
        since, until = indicators.period_bounds(calendar, start, end)
        columns = store.indicator_arrays(since, until, "reclamation", **filters)
        full = compute_arrays(arrays_from_store(columns, calendar), as_of, calendar)
        assert got == full, (start, end, as_of, filters)
        seen += got.received > 0
    assert seen > 6
    periods = [(date(FIRST_YEAR + 1, 3, 1) + timedelta(days=7 * k),) * 2 for k in range(12)]
    periods = [(a, a + timedelta(days=6)) for a, _ in periods]
    as_of = date(FIRST_YEAR + 1, 6, 1)
    many = indicators.figures_of_periods(config(zone), store, periods, as_of)
    assert many == [indicators.figures(config(zone), store, a, b, as_of) for a, b in periods]


def test_buckets_follow_the_messages_and_give_the_same_figures(store: Store) -> None:
    rng = random.Random(10)
    insert_random(store, rng, 1000)
    assert buckets(store) == expected(store)
    update_randomly(store, rng)
    kept = buckets(store)
    assert kept == expected(store)
    assert refilled(store) == kept
    assert_same_figures(store, rng)
    with store.engine.begin() as conn:
        conn.execute(messages.delete().where(messages.c.id % 5 == 0))
    assert buckets(store) == expected(store)
    purged = store.purge(datetime(FIRST_YEAR + 1, 7, 1, tzinfo=UTC))
    assert purged > 200
    assert buckets(store) == expected(store) == refilled(store)
    assert all(sums[0] > 0 for sums in buckets(store).values())  # no empty bucket kept
    assert_same_figures(store, rng)


def test_another_time_zone_reads_the_facts_until_rebuilt(store: Store) -> None:
    rng = random.Random(11)
    insert_random(store, rng, 600)
    kolkata = "Asia/Kolkata"  # +05:30: local days that start at half past an hour
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(indicator_zone.c.zone).distinct()).scalars().all() == [
            "Europe/Paris"
        ]
    assert_same_figures(store, rng, kolkata)  # from the facts: no bucket in that zone
    assert refilled(store, kolkata) == expected(store, ZoneInfo(kolkata))
    update_randomly(store, rng)  # the triggers now count in Kolkata's days
    assert buckets(store) == expected(store, ZoneInfo(kolkata))
    assert_same_figures(store, rng, kolkata)


def test_zone_offsets_give_the_local_dates_of_the_calendar() -> None:
    """The offsets the triggers add give, for every second around each change of four
    years, the local date ``WorkingCalendar.local_dates_from_epoch`` gives."""
    import numpy as np

    rows = zone_offsets(PARIS, FIRST_YEAR, FIRST_YEAR + YEARS)
    assert len(rows) == 1 + 2 * YEARS
    seconds = np.concatenate([np.arange(s - 7300, s + 7300) for s, _ in rows[1:]])
    starts = np.array([s for s, _ in rows])
    offsets = np.array([o for _, o in rows])[np.searchsorted(starts, seconds, side="right") - 1]
    by_table = ((seconds + offsets) // 86400).astype("datetime64[D]")
    assert (by_table == calendar_for("Europe/Paris").local_dates_from_epoch(seconds)).all()


@pytest.mark.parametrize("name", ["Europe/Paris", "Australia/Lord_Howe", "America/Godthab"])
def test_zone_offsets_are_every_change_an_hourly_scan_finds(name: str) -> None:
    """Looked at once a day and halved, the changes are those of a look at every hour (a
    half-hour DST, a zone that changed its standard offset)."""
    zone = ZoneInfo(name)
    start = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp()) // 3600
    stop = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()) // 3600
    offsets = [
        int(datetime.fromtimestamp(h * 3600, zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        for h in range(start, stop)
    ]
    changes = [
        ((start + i) * 3600, offsets[i])
        for i in range(1, len(offsets))
        if offsets[i] != offsets[i - 1]
    ]
    assert zone_offsets(zone, 2020, 2030) == [(-(2**62), offsets[0]), *changes]


def test_the_rebuild_command_puts_the_buckets_in_the_configured_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot rebuild-indicators`` after a change of ``timezone``: the figures the
    command prints are the same before (from the facts) and after (from the buckets)."""
    data = load_rules()
    data |= {"timezone": "America/Cayenne", "database": f"sqlite:///{tmp_path / 'm.db'}"}
    rules = tmp_path / "rules.yaml"
    rules.write_text(dump_rules(data), encoding="utf-8")
    opened = Store(data["database"])
    insert_random(opened, random.Random(12), 300)
    year = ["indicators", "--from", "2025-01-01", "--to", "2025-12-31", "--format", "json"]
    assert main(["--config", str(rules), *year, "--as-of", "2026-01-31"]) == 0
    from_facts = capsys.readouterr().out
    assert main(["--config", str(rules), "rebuild-indicators"]) == 0
    assert "America/Cayenne" in capsys.readouterr().out
    assert buckets(opened) == expected(opened, ZoneInfo("America/Cayenne"))
    assert main(["--config", str(rules), *year, "--as-of", "2026-01-31"]) == 0
    assert capsys.readouterr().out == from_facts
    assert '"received": 0' not in from_facts
    opened.close()


def test_postgresql_locks_a_bucket_only_while_committing(postgres: str) -> None:
    """A worker's open batch that recorded a mail of some bucket does not hold that bucket:
    an agent's reply to another mail of the same bucket commits meanwhile (it would wait
    for the batch's end, and could deadlock with it, were the triggers not deferred)."""
    store = Store(fresh_database(postgres, "b", "bucket-locks"))
    received = datetime(FIRST_YEAR, 3, 4, 9, tzinfo=UTC)
    same = {"mailbox": "general", "service": "permis", "category": "information"}
    insert_rows(store, [(received, same), (received, same)])
    replied = received + timedelta(days=1)
    with store.engine.connect() as batch, batch.begin():
        insert_rows_on(batch, [(received, same)])  # the batch stays open
        with store.engine.connect() as agent, agent.begin():
            agent.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
            agent.execute(
                messages.update().where(messages.c.uid == 1).values(first_reply_at=replied)
            )
    assert buckets(store) == expected(store)
    assert sum(sums[0] for sums in buckets(store).values()) == 3
    store.close()


def insert_rows(store: Store, rows: list[tuple[datetime, dict[str, str]]]) -> None:
    with store.engine.begin() as conn:
        insert_rows_on(conn, rows)


def insert_rows_on(conn: Any, rows: list[tuple[datetime, dict[str, str]]]) -> None:
    """Acknowledged mails received at these instants, in these buckets; uids follow."""
    first = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
    conn.execute(
        messages.insert(),
        [
            {
                "folder": "INBOX",
                "uidvalidity": 1,
                "uid": first + n + 1,
                "content_hash": f"lock{first + n}",
                "received_at": received,
                "subject": "Sujet",
                "size": 100,
                "defects": "[]",
                "created_at": received,
                "decision": "acknowledge",
                "reasons": "[]",
                "ar_status": "sent",
                **where,
            }
            for n, (received, where) in enumerate(rows)
        ],
    )
