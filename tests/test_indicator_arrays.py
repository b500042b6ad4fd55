"""The packed read of the indicators' inputs gives exactly what the per-column read gave.

``Store.indicator_arrays`` now reads ``indicator_facts`` (kept by triggers, migration 0011:
received and replied as Unix seconds, the flags packed into one integer), each column
joined into one string by the database, instead of seven columns of the messages per
message (issue 14, point 10); the rows below are inserted with plain SQL, so the triggers
fill the facts. On random messages — timestamps with microseconds
across a year and its DST changes, every AR status, complaints, transfers, relances, a
signature complete, incomplete or unchecked, mail that is not a citizen's — every array is
equal to the one the previous query (kept below) returns, and so are the figures.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from mailbot.core.indicators import arrays_from_store, compute_arrays
from mailbot.core.statuses import ArStatus
from mailbot.core.workdays import WorkingCalendar
from mailbot.store import Store
from mailbot.store.schema import messages

STATUSES = ["sent", "pending", "failed", "skipped"]
DECISIONS = ["acknowledge"] * 8 + ["quarantine", "skip", "follow_up"]


def fill(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2025, 12, 1, tzinfo=UTC)
    rows = []
    for n in range(1, count + 1):
        received = start + timedelta(seconds=rng.randrange(400 * 86400), microseconds=n % 997)
        replied = None
        if rng.random() < 0.8:
            delay = timedelta(days=rng.randrange(20), seconds=rng.randrange(86400))
            replied = (received + delay).strftime("%Y-%m-%d %H:%M:%S.%f")
        stamp = received.strftime("%Y-%m-%d %H:%M:%S.%f")
        complete = rng.choice([None, 0, 1]) if replied else None
        where = (n, "general", "INBOX", 1, n, f"<m{n}@x>", f"h{n}", f"SM-2026-{n:07d}", stamp)
        what = (f"u{n}@example.fr", "Sujet", rng.choice(DECISIONS), "[]", rng.choice(STATUSES))
        how = (1000, "[]", stamp, rng.choice(["general", "permis"]))
        category = rng.choice(["information", "reclamation", "rendez-vous"])
        counts = (int(rng.random() < 0.1), rng.choice([0, 0, 0, 1, 2, 7, 40]))
        rows.append((*where, *what, *how, category, replied, complete, *counts))
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO messages (id, mailbox, folder, uidvalidity, uid, message_id, content_hash,"
        " reference, received_at, sender, subject, decision, reasons, ar_status, size, defects,"
        " created_at, service, category, first_reply_at, first_reply_complete, transferred,"
        " relances) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    # Some transferred by an agent: their notice sent, failed or queued (no draw: the seeds
    # draw the same as before).
    conn.execute(
        "UPDATE messages SET notice_status = CASE id % 3 WHEN 0 THEN 'sent' WHEN 1 THEN 'failed'"
        " ELSE 'pending' END WHERE id % 5 = 0"
    )
    conn.commit()
    conn.close()


def previous_read(store: Store, since: datetime, until: datetime, service: str | None) -> Any:
    """Store.indicator_arrays as it was: seven columns, strftime('%s'), np.array."""

    def instants(column: Any) -> Any:
        return sa.cast(sa.func.strftime("%s", column), sa.BigInteger)

    query = sa.select(
        instants(messages.c.received_at),
        sa.func.coalesce(instants(messages.c.first_reply_at), -1),
        sa.case((messages.c.category == "reclamation", 1), else_=0),
        sa.case((messages.c.ar_status == ArStatus.SENT, 1), else_=0),
        messages.c.transferred,
        messages.c.relances,
        sa.func.coalesce(messages.c.first_reply_complete, -1),
        # Transferred and announced (migration 0021): an agent's notice sent, else the AR.
        sa.case(
            (
                sa.and_(
                    messages.c.transferred != 0,
                    sa.func.coalesce(messages.c.notice_status, messages.c.ar_status) == "sent",
                ),
                1,
            ),
            else_=0,
        ),
    ).where(store._citizens(since, until, long_period=until - since > timedelta(days=62)))
    if service:
        query = query.where(messages.c.service == service)
    with store.engine.connect() as conn:
        rows = conn.execute(query).cursor.fetchall()
    table = np.array(rows, dtype=np.int64).reshape(-1, 8)
    names = ["received", "replied", "complaint", "ar_sent", "transferred", "relances"]
    columns = {name: table[:, i] for i, name in enumerate(names)}
    columns["announced"] = table[:, 7]
    for flag in ("complaint", "ar_sent", "transferred", "announced"):
        columns[flag] = columns[flag].astype(bool)
    columns["signature"] = table[:, 6].astype(np.int8)
    return columns


def in_one_order(columns: dict[str, Any]) -> dict[str, Any]:
    """The same messages, sorted on every column: the reads need not agree on row order."""
    order = np.lexsort([columns[name] for name in sorted(columns)])
    return {name: values[order] for name, values in columns.items()}


def test_packed_read_equals_the_column_read_on_random_messages(tmp_path: Path) -> None:
    path = tmp_path / "random.db"
    store = Store(f"sqlite:///{path}")
    fill(path, 8_000, seed=11)  # the triggers make each insert ~0.4 ms
    calendar = WorkingCalendar()
    periods = [
        (date(2026, 1, 1), date(2026, 12, 31), None),  # a year: the long-period plan
        (date(2026, 3, 23), date(2026, 4, 5), None),  # across the spring DST change
        (date(2026, 10, 19), date(2026, 11, 1), "permis"),  # the autumn one, one service
        (date(2025, 12, 1), date(2027, 2, 1), "general"),
    ]
    for start, end, service in periods:
        since = datetime.combine(start, datetime.min.time(), calendar.zone)
        until = datetime.combine(end + timedelta(days=1), datetime.min.time(), calendar.zone)
        now = in_one_order(store.indicator_arrays(since, until, "reclamation", service=service))
        before = in_one_order(previous_read(store, since, until, service))
        assert len(now["received"]) > 100
        assert now.keys() == before.keys()
        for name in now:
            assert now[name].dtype == before[name].dtype, name
            assert np.array_equal(now[name], before[name]), name
        as_of = end + timedelta(days=3)
        assert compute_arrays(arrays_from_store(now, calendar), as_of, calendar) == (
            compute_arrays(arrays_from_store(before, calendar), as_of, calendar)
        )
    store.close()


def test_the_reports_weeks_from_one_read_equal_one_read_per_week(tmp_path: Path) -> None:
    """The report's chart: twelve weeks' figures from one read of the store, split by local
    date of receipt, equal the figures of each week read on its own (DST weeks included)."""
    from mailbot.app.indicators import figures, figures_of_periods
    from mailbot.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "rules.yaml")
    path = tmp_path / "weeks.db"
    store = Store(f"sqlite:///{path}")
    fill(path, 8_000, seed=5)
    for last in (date(2026, 4, 5), date(2026, 11, 29), date(2027, 1, 10)):
        weeks = [
            (last - timedelta(days=7 * k + 6), last - timedelta(days=7 * k)) for k in range(12)
        ]
        as_of = last + timedelta(days=1)
        together = figures_of_periods(config, store, weeks[::-1], as_of)
        apart = [figures(config, store, start, end, as_of) for start, end in weeks[::-1]]
        assert together == apart
        assert sum(f.received for f in together) > 1000
    store.close()
