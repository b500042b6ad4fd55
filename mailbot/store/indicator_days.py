"""The indicators' read path over their daily buckets (issue 14, point 10).

``indicator_days`` holds, per local day of receipt and of first reply, mailbox, service and
category, the number of citizens' messages and the sums the figures need; database triggers
on ``indicator_facts`` keep it (migration 0013), in the zone whose UTC offsets
``indicator_zone`` lists. A year is a few thousand buckets: read in milliseconds where the
facts are a million rows. ``refill`` computes the whole table again from the facts (the
migration, and ``mailbot rebuild-indicators`` for another time zone); the indicators fall
back on the facts when the buckets are in another zone than the configuration's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.core.workdays import zone_offsets
from mailbot.store.schema import indicator_days, indicator_zone

if TYPE_CHECKING:  # numpy when the buckets are read (``read``), not with the store
    import numpy as np
    import numpy.typing as npt

    from mailbot.store.database import Store

# The local day of an instant (Unix seconds, positive), as the triggers compute it.
LOCAL_DAY = (
    "(({t}) + COALESCE((SELECT z.utc_offset FROM indicator_zone z WHERE z.since <= ({t})"
    " ORDER BY z.since DESC LIMIT 1), 0)) / 86400"
)
SUMS = ("mails", "ars_sent", "transfers", "notices", "relances", "complete", "checked")
KEY = "received_day, replied_day, mailbox, service, category"
# One fact's contribution to its bucket, ``{r}`` its row (flags: store/triggers.py; before
# migration 0021, notices were the transfers whose AR was sent and relances flags / 16).
CONTRIBUTION = (
    "1",
    "{r}.flags & 1",
    "({r}.flags / 2) & 1",
    "({r}.flags / 16) & 1",
    "{r}.flags / 32",
    "CASE WHEN (({r}.flags / 4) & 3) = 2 THEN 1 ELSE 0 END",
    "CASE WHEN (({r}.flags / 4) & 3) > 0 THEN 1 ELSE 0 END",
)


def bucket_key(row: str) -> list[str]:
    """The bucket of the fact ``row``: its key columns as SQL expressions."""
    return [
        LOCAL_DAY.format(t=f"{row}.received"),
        f"CASE WHEN {row}.replied IS NULL THEN -1 ELSE {LOCAL_DAY.format(t=f'{row}.replied')} END",
        f"{row}.mailbox",
        f"COALESCE({row}.service, '')",
        f"COALESCE({row}.category, '')",
    ]


def refill(conn: Connection, zone: str, contribution: tuple[str, ...] = CONTRIBUTION) -> None:
    """The buckets computed again from ``indicator_facts``, in ``zone``: its offsets
    written to ``indicator_zone`` first (what the triggers then use). On PostgreSQL the
    facts are locked against writes until the commit, so that no message recorded
    meanwhile is counted in the old zone's days (SQLite has one writer at a time).
    ``contribution`` as a migration before the head computed it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE indicator_facts IN SHARE MODE"))
    conn.execute(indicator_zone.delete())
    rows = zone_offsets(ZoneInfo(zone))
    conn.execute(
        indicator_zone.insert(),
        [{"since": since, "utc_offset": offset, "zone": zone} for since, offset in rows],
    )
    conn.execute(indicator_days.delete())
    key = ", ".join(f"{e} AS k{n}" for n, e in enumerate(bucket_key("f")))
    sums = ", ".join(f"SUM({e.format(r='f')})" for e in contribution)
    keys = ", ".join(f"k{n}" for n in range(5))
    conn.execute(
        sa.text(
            f"INSERT INTO indicator_days ({KEY}, {', '.join(SUMS)})"
            f" SELECT {keys}, {sums} FROM (SELECT {key}, f.flags FROM indicator_facts f) AS f"
            f" GROUP BY {keys}"
        )
    )


def zone_of(conn: Connection) -> str | None:
    """The zone the buckets' days are in (None: no offsets written)."""
    found = conn.execute(sa.select(indicator_zone.c.zone).limit(1)).scalar()
    return None if found is None else str(found)


def read(
    store: Store,
    zone: str,
    first_day: int,
    last_day: int,
    complaint: str,
    mailbox: str | None = None,
    service: str | None = None,
) -> dict[str, npt.NDArray[np.int64]] | None:
    """The buckets of messages received from day ``first_day`` to ``last_day`` (day
    numbers, inclusive), summed per (received day, replied day, complaint): one array per
    field, ``complaint`` 1 for the category named. None when the buckets are not in
    ``zone`` (the caller reads the facts). A year is some 7,000 rows, fetched as plain
    tuples (no Row object) straight into numpy."""
    days = indicator_days.c
    is_complaint = sa.case((days.category == complaint, 1), else_=0)
    query = (
        sa.select(
            days.received_day,
            days.replied_day,
            is_complaint,
            *(sa.func.sum(days[name]) for name in SUMS),
        )
        .where(days.received_day >= first_day, days.received_day <= last_day)
        .group_by(days.received_day, days.replied_day, is_complaint)
    )
    if mailbox:
        query = query.where(days.mailbox == mailbox)
    if service:
        query = query.where(days.service == service)
    with store.engine.connect() as conn:
        if zone_of(conn) != zone:
            return None
        rows = conn.execute(query).cursor.fetchall()
    import numpy as np

    table = np.array(rows, dtype=np.int64).reshape(len(rows), 3 + len(SUMS))
    names = ("received_day", "replied_day", "complaint", *SUMS)
    return {name: table[:, n] for n, name in enumerate(names)}
