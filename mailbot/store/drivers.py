"""The hot statements compiled once per dialect and run on the driver's cursor (issue 14):
the ``Driver*`` classes, their factories (cached per dialect) and the statements only
they run; the ``Transaction``'s parts (``store/*_rows``, ``message_lookups``,
``outbox_recovery``) call them."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.core.statuses import Decision, OutboxStatus
from mailbot.store.records import KnownRow
from mailbot.store.schema import folders, left_for_person, message_keys, messages, outbox

# -- hot statements, built once ------------------------------------------------------------
# Each mail runs about a dozen statements. Built per call, a statement and its cache key
# cost more than running it; built once with bound parameters, SQLAlchemy finds each one
# compiled in its cache at once.
bind_param = sa.bindparam

# One mail in several mailboxes (``claimed_mail``, ``claim_mail``): the row that took it.
_CLAIMED = (
    sa.select(
        messages.c.id,
        messages.c.mailbox,
        messages.c.reference,
        sa.case((left_for_person(), 1), else_=0),
    )
    .select_from(message_keys.join(messages, messages.c.id == message_keys.c.message_pk))
    .where(message_keys.c.fingerprint == bind_param("fingerprint"))
)
# What the intake's lookups read of a recorded message (``Transaction.known``).
KNOWN_COLUMNS = (
    messages.c.id,
    messages.c.message_id,
    messages.c.fingerprint,
    messages.c.content_hash,
    messages.c.sender,
    messages.c.decision,
    messages.c.received_at,
    messages.c.reference,
    messages.c.ar_message_id,
    messages.c.subject,
    messages.c.first_reply_at,
)


def known_condition(
    column: str, values: sa.BindParameter[Any] | Sequence[sa.BindParameter[Any]]
) -> sa.ColumnElement[bool]:
    """Rows whose ``column`` is among the values (an expanding parameter, or one each); by
    sender, only its acknowledged messages since a date (the rate limit's and the relances'
    rows)."""
    found = messages.c[column].in_(values)
    if column != "sender":
        return found
    return sa.and_(
        found,
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.received_at >= bind_param("since"),
    )


# The SET clause of this comes from the parameters' keys (the columns to change).
_CLAIM_OUTBOX = outbox.update().where(
    outbox.c.id == bind_param("item_id"), outbox.c.status == OutboxStatus.PENDING
)
_CLAIM_KEYS = ("status", "attempts", "claimed_by", "claimed_at")
# A part's UID mark (``save_folder_state``): one of its two folder statements, see
# ``folder_rows._RESYNC_BOUND``.
_FOLDER_STATE = folders.update().where(
    folders.c.mailbox == bind_param("w_mailbox"), folders.c.folder == bind_param("w_folder")
)


class Driver:
    """A hot statement compiled once per dialect and run on the driver's cursor (issue 14):
    SQLAlchemy's execution of a one-row statement (its cache lookup, execution context and
    result) cost about twice the statement itself on SQLite. Values are bound as SQLAlchemy
    binds them (``bind_processor``; values written into the statement, such as a status it
    tests, as compiled); an error comes back as SQLAlchemy's, its parameters hidden like
    the engines'."""

    def __init__(self, dialect: sa.Dialect, statement: Any, keys: tuple[str, ...]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self.dialect = dialect
        self.sql = str(compiled)
        self.order = compiled.positiontup if compiled.positional else None
        binds = {compiled.bind_names[bind]: bind for bind in compiled.bind_names}
        self.fixed = {
            name: bind.effective_value for name, bind in binds.items() if not bind.required
        }
        # The dialect's own type: its processor writes a time as SQLAlchemy's statements
        # do ("2026-11-02 08:00:01.000000" on SQLite); the generic type's left a datetime
        # to sqlite3's default adapter ("...08:00:01+00:00": another text, and a Python
        # call per value).
        self.processors = {
            name: found
            for name, bind in binds.items()
            if (found := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def params(self, values: dict[str, Any]) -> Any:
        values = {**self.fixed, **values}
        for key, process in self.processors.items():
            values[key] = process(values[key])
        return values if self.order is None else [values[k] for k in self.order]

    @contextmanager
    def cursor(self, conn: Connection) -> Iterator[Any]:
        cursor = conn.connection.cursor()
        try:
            yield cursor
        except self.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                self.sql,
                None,
                exc,
                self.dialect.loaded_dbapi.Error,
                hide_parameters=True,
                dialect=self.dialect,
            ) from exc
        finally:
            cursor.close()


class DriverInsert(Driver):
    """An INSERT of one row with a given set of columns, its id returned: a message's (~115
    µs a mail saved on SQLite), an outbox mail's (its body's key)."""

    def __init__(self, dialect: sa.Dialect, keys: tuple[str, ...], table: sa.Table) -> None:
        self.returning = dialect.name != "sqlite"  # SQLite gives the cursor's lastrowid
        statement = table.insert()
        if self.returning:
            statement = statement.returning(table.c.id)
        super().__init__(dialect, statement, keys)

    def run(self, conn: Connection, values: dict[str, Any]) -> int:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            return int(cursor.fetchone()[0] if self.returning else cursor.lastrowid)


class DriverUpdate(Driver):
    """An UPDATE of one row, its rowcount returned (an outbox claim: one per mail)."""

    def run(self, conn: Connection, values: dict[str, Any]) -> int:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            return int(cursor.rowcount)


class DriverFirst(Driver):
    """A SELECT of one row, or None (a mail's first copy in another mailbox: one a mail)."""

    def run(self, conn: Connection, values: dict[str, Any]) -> Any:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            return cursor.fetchone()


class DriverRows(Driver):
    """A statement run for many rows in one executemany on the driver's cursor (a part's
    events and outbox mails, a delivery's updates): SQLAlchemy's executemany builds an
    execution context and runs its processors per row through more layers (~0.1 ms a
    mail, issue 14)."""

    def run(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """The rows changed, in all (both drivers sum an executemany's row counts)."""
        with self.cursor(conn) as cursor:
            cursor.executemany(self.sql, [self.params(row) for row in rows])
            return int(cursor.rowcount)


class DriverKnown(Driver):
    """``message_lookups.known_query`` for lists of given lengths, compiled once and run
    on the driver's cursor (issue 14): SQLAlchemy expands an ``IN`` list anew at each
    execution, and with its execution context that was ~60 % of a part's lookups (~0.15 ms
    a mail with claims cutting the parts). Each list is padded to a power of two (its last
    value repeated, which changes no result): a few statements per column serve every part.
    Rows come back as SQLAlchemy's would (its result processors: a time, aware, in UTC)."""

    def __init__(self, dialect: sa.Dialect, shape: tuple[tuple[str, int], ...]) -> None:
        unindexed = sa.func.coalesce(messages.c.mailbox, "") == bind_param("mailbox")
        selects = [
            sa.select(*KNOWN_COLUMNS).where(
                unindexed if c == "ar_message_id" else messages.c.mailbox == bind_param("mailbox"),
                known_condition(c, [bind_param(f"{c}_{i}") for i in range(size)]),
            )
            for c, size in shape
        ]
        statement = selects[0] if len(selects) == 1 else sa.union_all(*selects)
        super().__init__(dialect, statement, ())
        self.results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in KNOWN_COLUMNS
        ]

    def run(self, conn: Connection, values: dict[str, Any]) -> list[KnownRow]:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            rows = cursor.fetchall()
        processors = [(n, p) for n, p in enumerate(self.results) if p is not None]
        found: dict[int, KnownRow] = {}
        for raw in rows:
            row = list(raw)
            for n, process in processors:
                row[n] = process(row[n])
            found[int(row[0])] = KnownRow(*row)
        return [found[pk] for pk in sorted(found)]


@functools.lru_cache(maxsize=64)
def driver_known(dialect: sa.Dialect, shape: tuple[tuple[str, int], ...]) -> DriverKnown:
    return DriverKnown(dialect, shape)


def padded_length(length: int) -> int:
    """The length a lookup's list is padded to: the next power of two."""
    return 1 << (length - 1).bit_length()


@functools.cache
def driver_rows(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> DriverRows:
    return DriverRows(dialect, table.insert(), keys)


@functools.cache
def driver_insert(
    dialect: sa.Dialect, keys: tuple[str, ...], table: sa.Table = messages
) -> DriverInsert:
    return DriverInsert(dialect, keys, table)


@functools.cache
def driver_claimed(dialect: sa.Dialect) -> DriverFirst:
    return DriverFirst(dialect, _CLAIMED, ("fingerprint",))


@functools.cache
def driver_claim_mail(dialect: sa.Dialect) -> DriverRows:
    return DriverRows(dialect, message_keys.insert(), ("fingerprint", "message_pk"))


@functools.cache
def driver_claim(dialect: sa.Dialect) -> DriverUpdate:
    return DriverUpdate(dialect, _CLAIM_OUTBOX, _CLAIM_KEYS)


@functools.cache
def driver_many(dialect: sa.Dialect, statement: Any, keys: tuple[str, ...]) -> DriverRows:
    """An UPDATE of many rows in one executemany on the driver's cursor (a claim group's
    'sent', a delivery batch's AR statuses): SQLAlchemy's executemany cost ~30 µs a mail
    sent more (issue 14). ``keys``: the columns it SETs from each row's values."""
    return DriverRows(dialect, statement, keys)


@functools.cache
def driver_folder_state(dialect: sa.Dialect) -> DriverUpdate:
    return DriverUpdate(dialect, _FOLDER_STATE, ("uidvalidity", "last_uid", "updated_at"))
