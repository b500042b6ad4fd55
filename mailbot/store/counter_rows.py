"""The named rows of ``counters``: reference numbers, one-time actions (a week's report, a
day's digest), a folder's backfill under way, an agent's request done once."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.errors import RepeatedRequestError
from mailbot.store.drivers import bind_param
from mailbot.store.rows import Rows
from mailbot.store.schema import (
    REFERENCE_COUNTERS,
    backfill_flag,
    counters,
    reference_counter,
    request_flag,
)

# A batch's references (``reserve_numbers``): the counter read and locked (PostgreSQL: the
# row, until the commit) at the first, its final value written once at the end.
_LOCK_COUNTER = (
    counters.update()
    .where(counters.c.name == bind_param("counter"))
    .values(value=counters.c.value)
    .returning(counters.c.value)
)
_SET_COUNTER = counters.update().where(counters.c.name == bind_param("counter"))
_BUMP_COUNTER = (
    counters.update()
    .where(counters.c.name == bind_param("counter"))
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)


def newest_claim(conn: Connection, prefix: str, before: str | None = None) -> str | None:
    """The greatest name claimed under ``prefix`` (``Transaction.claim_once``), without the
    prefix; only those below ``prefix + before`` when given (the last day's digest before
    today: ``alerts-`` and an ISO date). Names compared as strings: the labels claimed
    under one prefix (ISO dates, ISO weeks) have one width, so any collation sorts them
    as their days; a Store read (``Store.last_claim``) as well as a transaction's."""
    name = counters.c.name
    query = sa.select(sa.func.max(name)).where(name.startswith(prefix, autoescape=True))
    if before is not None:
        query = query.where(name < prefix + before)
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else str(found)[len(prefix) :]


class CounterRows(Rows):
    """The ``Transaction``'s writes and reads of the ``counters`` rows."""

    def next_reference(self, prefix: str, year: int) -> str:
        """Allocate ``PREFIX-YYYY-NNNNNN`` atomically, inside the caller's transaction."""
        name = reference_counter(prefix, year)
        bumped = self.conn.execute(_BUMP_COUNTER, {"counter": name}).first()
        if bumped is None:
            self._create_counter(name)
            bumped = self.conn.execute(_BUMP_COUNTER, {"counter": name}).one()
        return f"{prefix}-{year}-{int(bumped.value):06d}"

    def reserve_numbers(self, prefix: str, year: int) -> tuple[str, int]:
        """The reference counter of ``prefix`` and ``year``: its name and value, locked
        until this transaction ends, so that a batch numbers its mails in memory and writes
        the last number once (``set_numbers``)."""
        name = reference_counter(prefix, year)
        value = self.conn.execute(_LOCK_COUNTER, {"counter": name}).scalar()
        if value is None:
            self._create_counter(name)
            value = self.conn.execute(_LOCK_COUNTER, {"counter": name}).scalar_one()
        return name, int(value)

    def _create_counter(self, name: str) -> None:
        """A year's first counter row, at 0, unless another transaction made it first: two
        workers starting a year at once would otherwise both take number 1, and the second
        mail's row be refused on the unique reference (quarantined, no AR). ON CONFLICT waits
        for the other's commit on PostgreSQL; the lock that follows then reads its number."""
        # Only the dialect in use is imported: loading PostgreSQL's costs a start on SQLite
        # 27 ms (issue 14), and ``from sqlalchemy.dialects import postgresql, sqlite`` did.
        if self.conn.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement: sa.Executable = postgresql.insert(counters).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(counters).on_conflict_do_nothing()
        self.conn.execute(statement, {"name": name, "value": 0})

    def reference_counters(self) -> dict[str, int]:
        """Every reference counter (``reference_counter``: each prefix and year numbered
        so far) and the last number it gave."""
        query = sa.select(counters.c.name, counters.c.value).where(
            counters.c.name.startswith(REFERENCE_COUNTERS, autoescape=True)
        )
        return {name: int(value) for name, value in self.conn.execute(query)}

    def skip_numbers(self, name: str, count: int) -> int:
        """Move a counter forward by ``count`` numbers, never given (made at 0 first if it
        has no row yet); its last number, now."""
        self._create_counter(name)
        query = (
            counters.update()
            .where(counters.c.name == name)
            .values(value=counters.c.value + count)
            .returning(counters.c.value)
        )
        return int(self.conn.execute(query).scalar_one())

    def set_numbers(self, name: str, value: int) -> None:
        """Write a counter's last number taken (its row made by ``reserve_numbers``)."""
        self.conn.execute(_SET_COUNTER, {"counter": name, "value": value})

    def claim_once(self, name: str) -> bool:
        """Mark a one-time action (e.g. a week's report) as done; False if it already was."""
        exists = self.conn.execute(
            sa.select(counters.c.name).where(counters.c.name == name)
        ).first()
        if exists is not None:
            return False
        self.conn.execute(counters.insert().values(name=name, value=1))
        return True

    def last_claim(self, prefix: str, before: str | None = None) -> str | None:
        """The greatest one-time action claimed under ``prefix`` (e.g. the latest week whose
        report was queued: ISO week labels sort as their weeks), without the prefix; below
        ``before`` if given (see ``newest_claim``)."""
        return newest_claim(self.conn, prefix, before)

    def backfill_pending(self, mailbox: str, folder: str) -> bool:
        """Whether a backfill of this folder started and has not finished."""
        name = backfill_flag(mailbox, folder)
        query = sa.select(counters.c.name).where(counters.c.name == name)
        return self.conn.execute(query).first() is not None

    def set_backfill_pending(self, mailbox: str, folder: str, pending: bool) -> None:
        name = backfill_flag(mailbox, folder)
        self.conn.execute(counters.delete().where(counters.c.name == name))
        if pending:
            self.conn.execute(counters.insert().values(name=name, value=1))

    # -- requests done once -------------------------------------------------------------
    def claim_request(self, key: str) -> None:
        """Record an agent's request by its idempotency key; RepeatedRequestError if it was
        recorded before, even by a transaction committing at this very moment."""
        try:
            self.conn.execute(counters.insert().values(name=request_flag(key), value=0))
        except sa.exc.IntegrityError:
            raise RepeatedRequestError("this request was already done") from None

    def request_outcome(self, key: str) -> int | None:
        """The outbox id a request recorded (0: it queued nothing), None if never done."""
        query = sa.select(counters.c.value).where(counters.c.name == request_flag(key))
        value = self.conn.execute(query).scalar_one_or_none()
        return None if value is None else int(value)

    def set_request_outcome(self, key: str, outbox_id: int) -> None:
        self.conn.execute(
            counters.update().where(counters.c.name == request_flag(key)).values(value=outbox_id)
        )
