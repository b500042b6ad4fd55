"""Operations that commit together: a mail's row, its events, its outbox mail, its folder state."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.core.clock import utcnow
from mailbot.core.fold import search_fold
from mailbot.core.leases import Fence, folder_lease
from mailbot.core.statuses import (
    AT_LEAST_ONCE,
    AT_MOST_ONCE,
    DUPLICATE_REASON,
    GIVEN_UP,
    ArStatus,
    Decision,
    EventKind,
    OutboxKind,
    OutboxStatus,
)
from mailbot.errors import LeaseLostError, RepeatedRequestError, SameMailError, StoreError
from mailbot.store.records import (
    Dismissal,
    FirstCopy,
    FolderState,
    KnownRow,
    NewMessage,
    OutboxItem,
    ResyncBounds,
    SentMail,
    outbox_item,
)
from mailbot.store.schema import (
    REFERENCE_COUNTERS,
    backfill_flag,
    counters,
    events,
    fit,
    folders,
    full_id,
    leases,
    left_for_person,
    message_keys,
    messages,
    outbox,
    outbox_bodies,
    reference_counter,
    request_flag,
    stored_id,
    unhandled,
    workers,
)

if TYPE_CHECKING:
    from mailbot.store.desk import Part, WriteDesk

T = TypeVar("T")

# -- hot statements, built once ------------------------------------------------------------
# Each mail runs about a dozen statements. Built per call, a statement and its cache key
# cost more than running it; built once with bound parameters, SQLAlchemy finds each one
# compiled in its cache at once.
_param = sa.bindparam


@functools.cache
def _duplicate_query(with_id: bool, excluding: bool) -> sa.Select[Any]:
    legacy = messages.c.fingerprint.is_(None)
    if with_id:
        condition = sa.and_(
            messages.c.message_id == _param("message_id"),
            sa.or_(messages.c.fingerprint == _param("fingerprint"), legacy),
        )
    else:
        condition = sa.or_(
            messages.c.fingerprint == _param("fingerprint"),
            sa.and_(legacy, messages.c.content_hash == _param("content_hash")),
        )
    query = sa.select(messages.c.id).where(messages.c.mailbox == _param("mailbox"), condition)
    if excluding:
        query = query.where(messages.c.id != _param("exclude"))
    return query.order_by(messages.c.id).limit(1)


@functools.cache
def _thread_query(by_ids: bool, by_reference: bool, in_mailbox: bool) -> sa.Select[Any]:
    conditions: list[sa.ColumnElement[bool]] = []
    if by_ids:
        ids: sa.BindParameter[Any] = _param("ids", expanding=True)
        conditions += [messages.c.message_id.in_(ids), messages.c.ar_message_id.in_(ids)]
    if by_reference:
        conditions.append(messages.c.reference == _param("reference"))
    return (
        sa.select(messages.c.id, messages.c.reference)
        .where(sa.or_(*conditions))
        .where(messages.c.reference.is_not(None))
        .where(messages.c.mailbox == _param("mailbox") if in_mailbox else sa.true())
        .order_by(messages.c.id)
        .limit(1)
    )


# One mail in several mailboxes (``claimed_mail``, ``claim_mail``): the row that took it.
_CLAIMED = (
    sa.select(
        messages.c.id,
        messages.c.mailbox,
        messages.c.reference,
        sa.case((left_for_person(), 1), else_=0),
    )
    .select_from(message_keys.join(messages, messages.c.id == message_keys.c.message_pk))
    .where(message_keys.c.fingerprint == _param("fingerprint"))
)
_RECENT_ARS = (
    sa.select(sa.func.count())
    .select_from(messages)
    .where(
        messages.c.mailbox == _param("mailbox"),
        messages.c.sender == _param("recipient"),
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.received_at >= _param("since"),
        messages.c.received_at <= _param("until"),
    )
)
_UNANSWERED = (
    sa.select(messages.c.id, messages.c.reference, messages.c.received_at, messages.c.subject)
    .where(
        messages.c.mailbox == _param("mailbox"),
        messages.c.sender == _param("sender"),
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.received_at >= _param("since"),
        messages.c.first_reply_at.is_(None),
    )
    .order_by(messages.c.received_at.desc())
    .limit(20)
)
# A batch's references (``reserve_numbers``): the counter read and locked (PostgreSQL: the
# row, until the commit) at the first, its final value written once at the end.
_LOCK_COUNTER = (
    counters.update()
    .where(counters.c.name == _param("counter"))
    .values(value=counters.c.value)
    .returning(counters.c.value)
)
_SET_COUNTER = counters.update().where(counters.c.name == _param("counter"))
# What the intake's lookups read of a recorded message (``Transaction.known``).
_KNOWN = (
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
# Values per statement: far below SQLite's and PostgreSQL's limits on parameters.
_IN_CHUNK = 500
_KEYS = ("message_id", "ar_message_id", "fingerprint", "content_hash", "reference", "sender")


def _known_condition(
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
        messages.c.received_at >= _param("since"),
    )


@functools.cache
def _known_query(columns: tuple[str, ...]) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """A mailbox's messages matching the values of any of these key columns: one
    statement, a UNION ALL of one SELECT per column, each served by that column's index
    (an OR of them all made SQLite read the whole mailbox). Only columns that have values:
    an empty IN list is an empty subquery to SQLite, which then walked every message of
    the mailbox testing it (the references of a batch without any, at every part: a cost
    that grew with the mailbox; issue 14)."""
    # The AR's Message-ID has an index of its own, without the mailbox: compared as is,
    # the mailbox made SQLite prefer an index holding it and read the whole mailbox.
    unindexed = sa.func.coalesce(messages.c.mailbox, "") == _param("mailbox")
    selects = [
        sa.select(*_KNOWN).where(
            unindexed if c == "ar_message_id" else messages.c.mailbox == _param("mailbox"),
            _known_condition(c, _param(c, expanding=True)),
        )
        for c in columns
    ]
    return selects[0] if len(selects) == 1 else sa.union_all(*selects)


_BUMP_COUNTER = (
    counters.update()
    .where(counters.c.name == _param("counter"))
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)
# The columns of an INSERT come from the parameters' keys; built once, their cache key is.
_INSERT_MESSAGE = messages.insert()
_INSERT_EVENT = events.insert()
_INSERT_OUTBOX = outbox.insert()
_INSERT_BODY = outbox_bodies.insert()
# The SET clause of these comes from the parameters' keys (the columns to change).
_UPDATE_OUTBOX = outbox.update().where(outbox.c.id == _param("item_id"))
_CLAIM_OUTBOX = outbox.update().where(
    outbox.c.id == _param("item_id"), outbox.c.status == OutboxStatus.PENDING
)
# What a delivery writes of a mail it holds, only while it still does: 'sending' under its
# own claim after a send attempt, or 'pending' and taken by it before (Transaction.settle).
_SETTLE_OUTBOX = outbox.update().where(
    outbox.c.id == _param("item_id"),
    outbox.c.status == _param("held_as"),
    outbox.c.claimed_by == _param("holder"),
)
_UPDATE_MESSAGE = messages.update().where(messages.c.id == _param("message_pk"))
# A transfer notice's status, on its message only while it is the latest notice.
_UPDATE_NOTICE = _UPDATE_MESSAGE.where(messages.c.notice_outbox == _param("notice_id"))
# A mail the server accepted: committed with the next mail's claim. Its bytes stay until
# the delivery batch's bookkeeping (``finish_sent``), which they mark as not done yet.
# Only under the sender's own claim, as every write after a send (``settle``).
_MARK_SENT = (
    outbox.update()
    .where(
        outbox.c.id == _param("item_id"),
        outbox.c.status == OutboxStatus.SENDING,
        outbox.c.claimed_by == _param("holder"),
    )
    .values(status=OutboxStatus.SENT, sent_at=_param("at"), last_error=None)
)
# The sent items still holding their bytes: looked for from the few bodies, each one's
# status read by its id (a join let SQLite's planner walk every sent row by the status
# index instead, having no statistics to know better).
_OF_BODY = outbox.alias("of_body")
_BODY_STATUS = (
    sa.select(_OF_BODY.c.status)
    .where(_OF_BODY.c.id == outbox_bodies.c.outbox_id)
    .correlate(outbox_bodies)
    .scalar_subquery()
)
_SENT_UNFINISHED = sa.select(outbox_bodies.c.outbox_id).where(_BODY_STATUS == OutboxStatus.SENT)
# The body of the outbox row a statement is about (a failed mail's, kept for a requeue).
_KEPT_BODY = outbox_bodies.c.outbox_id == outbox.c.id
# A mail's size, for a delivery's ``max_bytes``.
_BODY_SIZE = (
    sa.select(sa.func.length(outbox_bodies.c.raw))
    .where(outbox_bodies.c.outbox_id == outbox.c.id)
    .scalar_subquery()
)
# What a delivery reads of the items it took (``outbox_item``): not their other times,
# each parsed from text into a datetime on SQLite for nothing; since when each waits, for
# its time in the queue (``outbox.max_queue_hours``).
_ITEM_COLUMNS = (
    "id",
    "message_pk",
    "kind",
    "recipient",
    "envelope_from",
    "email_message_id",
    "attempts",
    "created_at",
    "requeued_at",
)
_TAKEN = (*(outbox.c[name] for name in _ITEM_COLUMNS), outbox_bodies.c.raw)


def dismissals(conn: Connection, event_id: int | None = None) -> dict[int, Dismissal]:
    """The mail passed over that a person dismissed (``Transaction.dismiss_passed_over``),
    by the ``passed_over`` event each dismissal closes (``event_id``: that one only; its
    first dismissal, should there be two). Their events are few — one per mail a person
    closed by hand, purged with the other events tied to no message — so they are read
    whole and matched here, the event they close being named in their detail."""
    query = (
        sa.select(events.c.id, events.c.at, events.c.detail)
        .where(events.c.kind == EventKind.PASSED_OVER_DISMISSED)
        .order_by(events.c.id)
    )
    found: dict[int, Dismissal] = {}
    for row in conn.execute(query):
        try:
            detail = json.loads(row.detail)
            target = int(detail["passed_over"])
        except (ValueError, TypeError, KeyError):
            continue  # not written by dismiss_passed_over: closes nothing
        if target in found or (event_id is not None and target != event_id):
            continue
        agent, reason = str(detail.get("agent") or ""), str(detail.get("reason") or "")
        found[target] = Dismissal(row.id, target, row.at, agent, reason)
    return found


class _Driver:
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


class _DriverInsert(_Driver):
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


class _DriverUpdate(_Driver):
    """An UPDATE of one row, its rowcount returned (an outbox claim: one per mail)."""

    def run(self, conn: Connection, values: dict[str, Any]) -> int:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            return int(cursor.rowcount)


class _DriverFirst(_Driver):
    """A SELECT of one row, or None (a mail's first copy in another mailbox: one a mail)."""

    def run(self, conn: Connection, values: dict[str, Any]) -> Any:
        with self.cursor(conn) as cursor:
            cursor.execute(self.sql, self.params(values))
            return cursor.fetchone()


class _DriverRows(_Driver):
    """A statement run for many rows in one executemany on the driver's cursor (a part's
    events and outbox mails, a delivery's updates): SQLAlchemy's executemany builds an
    execution context and runs its processors per row through more layers (~0.1 ms a
    mail, issue 14)."""

    def run(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """The rows changed, in all (both drivers sum an executemany's row counts)."""
        with self.cursor(conn) as cursor:
            cursor.executemany(self.sql, [self.params(row) for row in rows])
            return int(cursor.rowcount)


class _DriverKnown(_Driver):
    """``_known_query`` for lists of given lengths, compiled once and run on the driver's
    cursor (issue 14): SQLAlchemy expands an ``IN`` list anew at each execution, and with
    its execution context that was ~60 % of a part's lookups (~0.15 ms a mail with claims
    cutting the parts). Each list is padded to a power of two (its last value repeated,
    which changes no result): a few statements per column serve every part. Rows come back
    as SQLAlchemy's would (its result processors: a time, aware, in UTC)."""

    def __init__(self, dialect: sa.Dialect, shape: tuple[tuple[str, int], ...]) -> None:
        unindexed = sa.func.coalesce(messages.c.mailbox, "") == _param("mailbox")
        selects = [
            sa.select(*_KNOWN).where(
                unindexed if c == "ar_message_id" else messages.c.mailbox == _param("mailbox"),
                _known_condition(c, [_param(f"{c}_{i}") for i in range(size)]),
            )
            for c, size in shape
        ]
        statement = selects[0] if len(selects) == 1 else sa.union_all(*selects)
        super().__init__(dialect, statement, ())
        self.results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in _KNOWN
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
def _driver_known(dialect: sa.Dialect, shape: tuple[tuple[str, int], ...]) -> _DriverKnown:
    return _DriverKnown(dialect, shape)


def _padded(length: int) -> int:
    """The length a lookup's list is padded to: the next power of two."""
    return 1 << (length - 1).bit_length()


@functools.cache
def _driver_rows(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> _DriverRows:
    return _DriverRows(dialect, table.insert(), keys)


_EVENT_KEYS = ("message_pk", "kind", "detail", "at")
_OUTBOX_KEYS = (
    "message_pk",
    "kind",
    "recipient",
    "envelope_from",
    "email_message_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


@functools.cache
def _driver_insert(
    dialect: sa.Dialect, keys: tuple[str, ...], table: sa.Table = messages
) -> _DriverInsert:
    return _DriverInsert(dialect, keys, table)


def stalled_sends(
    now: datetime, stale: timedelta, alone: bool = False, own: str | None = None
) -> Any:
    """The condition of an internal mail left 'sending' that no live delivery can be
    sending any more (``Transaction.requeue_stalled``); never one ``own`` claimed (this
    process's holder: its claims are live)."""
    alive = sa.select(workers.c.id).where(workers.c.expires_at > now)
    gone = sa.and_(
        sa.or_(outbox.c.claimed_at.is_(None), outbox.c.claimed_at < now - stale),
        sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by.not_in(alive)),
    )
    if alone:
        gone = sa.or_(gone, outbox.c.claimed_by.in_(sa.select(workers.c.id)))
    if own is not None:
        gone = sa.and_(gone, not_claimed_by(own))
    return sa.and_(outbox.c.status == OutboxStatus.SENDING, outbox.c.kind.in_(AT_LEAST_ONCE), gone)


def not_claimed_by(holder: str) -> Any:
    """An outbox row ``holder`` does not hold (unclaimed, or another's claim)."""
    return sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by != holder)


_BODY_KEYS = ("outbox_id", "raw")
_REQUEUED_ERROR = "queued again: its sender stopped while sending it (it may arrive twice)"
# What ``requeue_stalled`` returns of each mail it queued again (an OutboxItem, no bytes).
_REQUEUED = _ITEM_COLUMNS
_CLAIM_KEYS = ("status", "attempts", "claimed_by", "claimed_at")


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


@functools.cache
def _driver_claimed(dialect: sa.Dialect) -> _DriverFirst:
    return _DriverFirst(dialect, _CLAIMED, ("fingerprint",))


@functools.cache
def _driver_claim_mail(dialect: sa.Dialect) -> _DriverRows:
    return _DriverRows(dialect, message_keys.insert(), ("fingerprint", "message_pk"))


@functools.cache
def _driver_claim(dialect: sa.Dialect) -> _DriverUpdate:
    return _DriverUpdate(dialect, _CLAIM_OUTBOX, _CLAIM_KEYS)


@functools.cache
def _driver_many(dialect: sa.Dialect, statement: Any, keys: tuple[str, ...]) -> _DriverRows:
    """An UPDATE of many rows in one executemany on the driver's cursor (a claim group's
    'sent', a delivery batch's AR statuses): SQLAlchemy's executemany cost ~30 µs a mail
    sent more (issue 14). ``keys``: the columns it SETs from each row's values."""
    return _DriverRows(dialect, statement, keys)


# A part's two folder statements (a part is ~6-10 mails when claims cut it, issue 14): built
# and compiled at each call they cost ~175 and ~195 µs of CPU, ~40 and ~11 µs like this.
_RESYNC_BOUND = sa.select(folders.c.resync_before, folders.c.restored_before).where(
    folders.c.mailbox == _param("mailbox"),
    folders.c.folder == _param("folder"),
    folders.c.uidvalidity == _param("uidvalidity"),
)
# The count of a mail's transient errors, read at each part too (built at each call, the
# statement cost ~0.3 ms of CPU a part: ~0.1 ms a transferred mail in bench/run.py).
_TRANSIENT_ATTEMPTS = sa.select(folders.c.transient_uid, folders.c.transient_count).where(
    folders.c.mailbox == _param("mailbox"),
    folders.c.folder == _param("folder"),
    folders.c.uidvalidity == _param("uidvalidity"),
)
_FOLDER_STATE = folders.update().where(
    folders.c.mailbox == _param("w_mailbox"), folders.c.folder == _param("w_folder")
)


@functools.cache
def _driver_folder_state(dialect: sa.Dialect) -> _DriverUpdate:
    return _DriverUpdate(dialect, _FOLDER_STATE, ("uidvalidity", "last_uid", "updated_at"))


def _within(rows: list[Any], max_bytes: int | None) -> list[int]:
    """The ids of ``rows`` (id, size) up to ``max_bytes`` of mail, one at least."""
    ids: list[int] = []
    total = 0
    for item_id, size in rows:
        total += int(size)
        if ids and max_bytes is not None and total > max_bytes:
            break
        ids.append(int(item_id))
    return ids


def _this_folder(mailbox: str, folder: str, uidvalidity: int) -> tuple[Any, ...]:
    """A folder's row under one UIDVALIDITY: another UIDVALIDITY's state is left alone."""
    return (
        folders.c.mailbox == mailbox,
        folders.c.folder == folder,
        folders.c.uidvalidity == uidvalidity,
    )


def relance_counted(replied: Any, received: Any) -> sa.ColumnElement[bool]:
    """Whether a follow-up received at ``received`` counts as a relance of a message first
    answered at ``replied`` (None: not yet): while it was unanswered. ``count_relance``
    counts them so; ``Store.relances_after`` finds them again by the same rule."""
    return sa.or_(replied.is_(None), replied > received)


class Transaction:
    """Operations that must commit together, e.g. a message, its decision and its AR intent."""

    def __init__(
        self, conn: Connection, fence: Fence | None = None, part: Part | None = None
    ) -> None:
        self.conn = conn
        # Set for a worker that shares the database: whose lease a folder's writes need.
        self.fence = fence
        # An intake part on SQLite (``Store.batch``): other writes of the process wait for it.
        self.part = part
        self._depth = 0  # savepoints open

    def writes_waiting(self) -> bool:
        """Whether another write of this process waits for this transaction's commit (an
        outbox claim before its DATA): a batch should then commit at its next mail."""
        return self.part is not None and self.part.wanted()

    @contextmanager
    def savepoint(self) -> Iterator[Transaction]:
        """A SAVEPOINT: if the block raises, its writes alone are undone (and the exception
        goes on), the transaction stays usable. One mail of a batch fails alone this way.

        Plain SQL on the driver's cursor rather than ``Connection.begin_nested``, which
        compiles its SAVEPOINT and RELEASE anew each time: 0.19 ms a mail against 0.03 with
        ``exec_driver_sql``, 0.005 on the cursor (issue 14). Nothing here asks SQLAlchemy
        about its nested transactions; the names follow the nesting depth."""
        self._depth += 1
        name = f"mailbot_{self._depth}"
        self._driver_sql(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            self._driver_sql(f"ROLLBACK TO SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self._driver_sql(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def _driver_sql(self, *statements: str) -> None:
        """Statements without parameters nor results, on the driver's cursor."""
        cursor = self.conn.connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    # -- folder sync state --------------------------------------------------------------
    def folder_state(self, mailbox: str, folder: str) -> FolderState | None:
        columns = (folders.c.uidvalidity, folders.c.last_uid, folders.c.read_until)
        row = self.conn.execute(
            sa.select(*columns, folders.c.resync_before).where(
                folders.c.mailbox == mailbox, folders.c.folder == folder
            )
        ).first()
        if row is None:
            return None
        return FolderState(
            int(row.uidvalidity), int(row.last_uid), row.read_until, row.resync_before
        )

    def start_resync(self, mailbox: str, folder: str, before: datetime | None) -> None:
        """A new UIDVALIDITY, read again from UID 1: nothing of it is read yet
        (``read_until``), and mail that arrived before ``before`` gets no AR until the
        folder was read whole (``resync_bound``)."""
        self.conn.execute(
            folders.update()
            .where(folders.c.mailbox == mailbox, folders.c.folder == folder)
            .values(read_until=None, resync_before=before, transient_uid=None, transient_count=0)
        )

    def folder_read(self, mailbox: str, folder: str, uidvalidity: int, at: datetime) -> None:
        """Every mail that arrived before ``at`` was read under this UIDVALIDITY: the bound a
        later UIDVALIDITY change keeps, and the end of a re-read after one or after a
        restore. Only forward (a late write from a slower reader never moves it back; one
        of the same second still ends a restore's bound: two polls within a second, the
        command between them); another UIDVALIDITY's row is left alone."""
        self.conn.execute(
            folders.update()
            .where(
                *_this_folder(mailbox, folder, uidvalidity),
                sa.or_(folders.c.read_until.is_(None), folders.c.read_until <= at),
            )
            .values(read_until=at, resync_before=None, restored_before=None)
        )

    def resync_bounds(self, mailbox: str, folder: str, uidvalidity: int) -> ResyncBounds:
        """Until a folder is read whole: after a UIDVALIDITY change, the moment before which
        its mail arrived under the old one; after a restore, the moment until which the
        lost database acknowledged it (``restore_folder``). None when there is none."""
        found = {"mailbox": mailbox, "folder": folder, "uidvalidity": uidvalidity}
        row = self.conn.execute(_RESYNC_BOUND, found).first()
        if row is None:
            return ResyncBounds(None, None)
        return ResyncBounds(row.resync_before, row.restored_before)

    def followed_folders(self) -> list[sa.Row[Any]]:
        """Every folder this database follows (mailbox, folder, its mark and bounds)."""
        return list(
            self.conn.execute(sa.select(folders).order_by(folders.c.mailbox, folders.c.folder))
        )

    def restore_folder(self, folder_id: int, before: datetime) -> None:
        """A database restored from a backup: the folder's mail that arrived before
        ``before`` (the lost database's last working moment) and that this one does not
        hold is recorded without an AR until the folder is read whole (``folder_read``)."""
        self.conn.execute(
            folders.update().where(folders.c.id == folder_id).values(restored_before=before)
        )

    def queued_before(self, before: datetime) -> list[OutboxItem]:
        """The outbox items queued before ``before`` and still waiting or leaving (pending,
        sending), without their bytes."""
        query = (
            sa.select(outbox)
            .where(
                outbox.c.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
                outbox.c.created_at < before,
            )
            .order_by(outbox.c.id)
        )
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]

    def restored_counts(self) -> dict[tuple[str, str], int]:
        """Per mailbox and folder, the messages recorded without the AR the database lost
        before a restore presumably sent (``ar_status`` ``restored``)."""
        query = (
            sa.select(messages.c.mailbox, messages.c.folder, sa.func.count())
            .where(messages.c.ar_status == ArStatus.RESTORED)
            .group_by(messages.c.mailbox, messages.c.folder)
        )
        return {(m, f): int(n) for m, f, n in self.conn.execute(query)}

    def transient_attempts(self, mailbox: str, folder: str, uidvalidity: int) -> tuple[int, int]:
        """The UID of this folder (under this UIDVALIDITY) whose recording last met a
        transient database error, and how many times in a row; (0, 0) when none did."""
        found = {"mailbox": mailbox, "folder": folder, "uidvalidity": uidvalidity}
        row = self.conn.execute(_TRANSIENT_ATTEMPTS, found).first()
        if row is None or row.transient_uid is None:
            return 0, 0
        return int(row.transient_uid), int(row.transient_count)

    def note_transient_attempts(
        self, mailbox: str, folder: str, uidvalidity: int, uid: int | None, count: int = 0
    ) -> None:
        """Keep (``uid`` None: forget) the count of a mail's transient errors in its folder's
        row, where the next poll finds it, whichever process runs it."""
        self.conn.execute(
            folders.update()
            .where(*_this_folder(mailbox, folder, uidvalidity))
            .values(transient_uid=uid, transient_count=count if uid is not None else 0)
        )

    def save_folder_state(self, mailbox: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Move a folder's high-water UID. A worker sharing the database first renews its
        lease on the folder in this very transaction: if another worker took the folder
        over (this one was paused past its lease), LeaseLostError rolls everything back."""
        if self.fence is not None:
            self._check_fence(folder_lease(mailbox, folder), self.fence)
        values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": utcnow()}
        where = {"w_mailbox": mailbox, "w_folder": folder}
        if _driver_folder_state(self.conn.dialect).run(self.conn, where | values) == 0:
            self.conn.execute(folders.insert().values(mailbox=mailbox, folder=folder, **values))

    def _check_fence(self, name: str, fence: Fence) -> None:
        renewed = self.conn.execute(
            leases.update()
            .where(leases.c.name == name, leases.c.holder == fence.holder)
            .values(expires_at=utcnow() + timedelta(seconds=fence.seconds))
        )
        if renewed.rowcount != 1:
            raise LeaseLostError(f"the lease of {name} is no longer this worker's")

    # -- messages -----------------------------------------------------------------------
    def find_duplicate(
        self,
        mailbox: str,
        message_id: str | None,
        fingerprint: str,
        content_hash: str,
        exclude: int | None = None,
    ) -> int | None:
        """The row of an earlier copy of this very mail, if any.

        A copy has the same Message-ID *and* the same fingerprint (identity headers and
        body): a different mail that reuses a Message-ID is not one. Rows recorded before
        fingerprints existed are matched as they used to be: by Message-ID, or by content
        hash for a mail without one.
        """
        query = _duplicate_query(bool(message_id), exclude is not None)
        params = {"mailbox": mailbox, "fingerprint": fingerprint, "exclude": exclude}
        if message_id:
            params["message_id"] = stored_id(message_id)
        else:
            params["content_hash"] = content_hash
        found = self.conn.execute(query, params).scalar()
        return None if found is None else int(found)

    def claimed_mail(self, fingerprint: str) -> FirstCopy | None:
        """The row that handled this very mail first, in any mailbox (``claim_mail``): its
        id, mailbox and reference, and whether it is left for a person; None if none did."""
        row = _driver_claimed(self.conn.dialect).run(self.conn, {"fingerprint": fingerprint})
        return None if row is None else FirstCopy(int(row[0]), str(row[1]), row[2], bool(row[3]))

    def claim_mail(self, fingerprint: str, message_pk: int) -> None:
        """Record that ``message_pk`` handles the mail of this fingerprint. SameMailError if
        another row did first, even in a transaction committing at this very moment (the
        insert waits for it): the caller rolls back its savepoint, and this copy is that
        row's duplicate."""
        try:
            values = {"fingerprint": fingerprint, "message_pk": message_pk}
            _driver_claim_mail(self.conn.dialect).run(self.conn, [values])
        except sa.exc.IntegrityError:
            raise SameMailError("this mail was recorded first in another mailbox") from None

    def take_over_mail(self, fingerprint: str, waiting_pk: int, message_pk: int) -> None:
        """``message_pk`` handles the mail whose key ``waiting_pk`` holds, a copy left for
        a person in another mailbox (``schema.left_for_person``): that row becomes its
        duplicate and the key passes to it. SameMailError if the row is no longer left for
        a person (a retry or an agent committed first: the guarded UPDATE waits for them
        and reads the row again): the caller rolls back its savepoint and, looking again,
        records this copy as that row's duplicate."""
        taken = self.conn.execute(
            messages.update()
            .where(messages.c.id == waiting_pk, left_for_person())
            .values(
                decision=Decision.DUPLICATE,
                reasons=json.dumps([DUPLICATE_REASON]),
                parent_id=message_pk,
            )
        )
        moved = 0
        if taken.rowcount == 1:
            moved = self.conn.execute(
                message_keys.update()
                .where(
                    message_keys.c.fingerprint == fingerprint,
                    message_keys.c.message_pk == waiting_pk,
                )
                .values(message_pk=message_pk)
            ).rowcount
        if moved != 1:
            raise SameMailError("this mail was handled meanwhile in another mailbox")

    def acknowledged_in_thread(
        self, mailbox: str | None, thread_ids: Sequence[str], reference: str | None
    ) -> tuple[int, str] | None:
        """The acknowledged message a follow-up belongs to: by threading, else by reference."""
        if not thread_ids and not reference:
            return None
        query = _thread_query(bool(thread_ids), bool(reference), bool(mailbox))
        params = {
            "ids": [stored_id(mid) for mid in thread_ids],
            "reference": reference,
            "mailbox": mailbox,
        }
        row = self.conn.execute(query, params).first()
        return (int(row.id), str(row.reference)) if row else None

    def unanswered_from(
        self, mailbox: str, sender: str, since: datetime
    ) -> list[tuple[int, str, datetime, str]]:
        """Acknowledged messages of this sender since ``since`` with no reply yet, newest first."""
        params = {"mailbox": mailbox, "sender": sender, "since": since}
        return [
            (r.id, r.reference, r.received_at, r.subject)
            for r in self.conn.execute(_UNANSWERED, params)
        ]

    def answer_addresses_of(self, message_pk: int) -> frozenset[str]:
        """Where a reply answers this message's citizen: its sender (the AR's address), and
        the From and Reply-To recorded when they differ (``answer_addresses``)."""
        query = sa.select(messages.c.sender, messages.c.answer_addresses)
        row = self.conn.execute(query.where(messages.c.id == message_pk)).first()
        if row is None:
            return frozenset()
        others = json.loads(row.answer_addresses) if row.answer_addresses else []
        return frozenset(a.lower() for a in (row.sender, *others) if a)

    def has_event(self, kind: EventKind, detail_contains: str) -> bool:
        query = sa.select(events.c.id).where(
            events.c.kind == kind, events.c.detail.contains(detail_contains, autoescape=True)
        )
        return self.conn.execute(query.limit(1)).first() is not None

    def count_recent_ars(
        self, mailbox: str, recipient: str, since: datetime, until: datetime
    ) -> int:
        """ARs to ``recipient`` for mails received in [since, until]."""
        params = {"mailbox": mailbox, "recipient": recipient, "since": since, "until": until}
        return int(self.conn.execute(_RECENT_ARS, params).scalar_one())

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

    def known(
        self,
        mailbox: str,
        keys: dict[str, set[str]],
        senders: set[str],
        since: datetime,
    ) -> list[KnownRow]:
        """A mailbox's messages an intake batch may look up, in id order: those whose
        column named in ``keys`` (message_id, ar_message_id, fingerprint, content_hash,
        reference) holds one of its values (Message-IDs as given: stored here), and the
        acknowledged messages of ``senders`` received since ``since``."""
        wanted = {column: set(keys.get(column, ())) for column in _KEYS} | {"sender": senders}
        for column in ("message_id", "ar_message_id"):
            wanted[column] = {stored_id(v) or "" for v in wanted[column]}
        values = {column: sorted(v for v in wanted[column] if v) for column in _KEYS}
        values = {column: listed for column, listed in values.items() if listed}
        if not values:
            return []
        if sum(map(len, values.values())) <= _IN_CHUNK:
            shape = tuple((column, _padded(len(listed))) for column, listed in values.items())
            params: dict[str, Any] = {"mailbox": mailbox, "since": since}
            for (column, size), listed in zip(shape, values.values(), strict=True):
                padded = [*listed, *[listed[-1]] * (size - len(listed))]
                params.update({f"{column}_{i}": value for i, value in enumerate(padded)})
            return _driver_known(self.conn.dialect, shape).run(self.conn, params)
        found = {}
        for column, ordered in values.items():  # a huge batch, or hostile References
            for low in range(0, len(ordered), _IN_CHUNK):
                params = {column: ordered[low : low + _IN_CHUNK], "mailbox": mailbox}
                query = _known_query((column,))
                for row in self.conn.execute(query, {**params, "since": since}):
                    found[row.id] = KnownRow(*row)
        return [found[pk] for pk in sorted(found)]

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

    @staticmethod
    def _message_values(new: NewMessage) -> dict[str, Any]:
        """The row's values as stored, and its subject folded for the console's search
        (``core.fold``: the same on SQLite and PostgreSQL), from the subject as kept."""
        values = fit(
            messages,
            {
                **new.__dict__,
                "message_id": stored_id(new.message_id),
                "full_message_id": full_id(new.message_id),
                "in_reply_to": stored_id(new.in_reply_to),
                "ar_message_id": stored_id(new.ar_message_id),
                "reasons": json.dumps(list(new.reasons)),
                "defects": json.dumps(list(new.defects)),
                "answer_addresses": json.dumps(list(new.answer_addresses))
                if new.answer_addresses
                else None,
                "created_at": utcnow(),
            },
        )
        values["subject_search"] = search_fold(values["subject"])
        return values

    def insert_message(self, new: NewMessage) -> int:
        result = self.conn.execute(_INSERT_MESSAGE, self._message_values(new))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def record_message(self, new: NewMessage) -> KnownRow:
        """``insert_message``, returning the row as the intake's lookups see it (the values
        as written: a batch finds it again without reading it back)."""
        values = self._message_values(new)
        known = [values.get(c.name) for c in _KNOWN[1:]]
        pk = _driver_insert(self.conn.dialect, tuple(values)).run(self.conn, values)
        return KnownRow(pk, *known)  # type: ignore[arg-type]

    def update_message(self, message_pk: int, new: NewMessage) -> None:
        """Record a new decision on an existing row (a quarantined mail processed again):
        the row is replaced, never duplicated; its id and location stay."""
        values = self._message_values(new)
        for kept in ("mailbox", "folder", "uidvalidity", "uid", "created_at"):
            values.pop(kept)
        self.conn.execute(messages.update().where(messages.c.id == message_pk).values(**values))

    def claim_unhandled(self, message_pk: int) -> None:
        """Lock a mail left without an AR before processing it again; RepeatedRequestError
        if it no longer is one (another retry committed first). The guarded UPDATE waits
        for a concurrent retry's transaction and re-reads the row once it commits."""
        claimed = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, unhandled())
            .values(decision=messages.c.decision)
        )
        if claimed.rowcount != 1:
            raise RepeatedRequestError(f"mail #{message_pk} was already processed again")

    def claim_passed_over(self, event_id: int) -> None:
        """Lock a mail passed over (its ``passed_over`` event, no row) before processing it
        again, or dismissing it; RepeatedRequestError if a row records it now (another
        retry committed first) or a person dismissed it. The guarded UPDATE waits for a
        concurrent retry or dismissal, as ``claim_unhandled``; the dismissals are read
        after it, so that one committed meanwhile is seen (PostgreSQL's read committed
        takes a new snapshot per statement; SQLite's writers take turns)."""
        claimed = self.conn.execute(
            events.update()
            .where(
                events.c.id == event_id,
                events.c.kind == EventKind.PASSED_OVER,
                events.c.message_pk.is_(None),
            )
            .values(message_pk=events.c.message_pk)
        )
        if claimed.rowcount != 1:
            raise RepeatedRequestError(f"mail P{event_id} was already processed again")
        if event_id in dismissals(self.conn, event_id):
            raise RepeatedRequestError(f"mail P{event_id} was already dismissed")

    def dismiss_passed_over(self, event_id: int, agent: str, reason: str) -> None:
        """A person handled a mail passed over outside mailbot: its case is closed by an
        event without a message (``passed_over_dismissed``) naming it, who and why, which
        takes it off the lists, `mailbot status` and the metrics; its ``passed_over`` event
        stays as it was (no row records the mail). Claimed first (``claim_passed_over``):
        a retry or a dismissal committed first makes this one RepeatedRequestError, so a
        double click dismisses once."""
        self.claim_passed_over(event_id)
        detail = {"passed_over": event_id, "agent": agent, "reason": reason}
        self.add_event(
            None, EventKind.PASSED_OVER_DISMISSED, json.dumps(detail, ensure_ascii=False)
        )

    def resolve_passed_over(
        self, event_id: int, mailbox: str, folder: str, uidvalidity: int, uid: int
    ) -> int:
        """The mail passed over is recorded now, in this transaction: its event goes to the
        row at its location (one at most: ``uq_messages_location``), which takes it off
        the lists and `mailbot status`, and shows it in the row's history. The row's id."""
        message_pk = self.conn.execute(
            sa.select(messages.c.id).where(
                messages.c.mailbox == mailbox,
                messages.c.folder == folder,
                messages.c.uidvalidity == uidvalidity,
                messages.c.uid == uid,
            )
        ).scalar_one_or_none()
        if message_pk is None:
            raise StoreError(f"mail P{event_id}: no row records {mailbox}/{folder} UID {uid}")
        self.conn.execute(
            events.update().where(events.c.id == event_id).values(message_pk=message_pk)
        )
        return int(message_pk)

    def count_relance(self, message_pk: int, received_at: datetime) -> None:
        """One more relance of a message: the citizen writing again (a follow-up received at
        ``received_at``) while it was still unanswered. Writing after the answer (thanks, a
        new question in the thread) is no relance: the indicators count reminders of mail
        left waiting."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .where(relance_counted(messages.c.first_reply_at, received_at))
            .values(relances=messages.c.relances + 1)
        )

    def reopen_closed(self, message_pk: int) -> bool:
        """Undo an agent's closing without a reply of a message still unanswered (the
        citizen wrote again about it: they still expect an answer, and a closed message is
        in no queue, alert or figure, so their relance would go unseen). True when it was
        closed. The guarded UPDATE waits for an agent closing it at this very moment."""
        reopened = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .where(messages.c.no_reply.is_not(None), messages.c.first_reply_at.is_(None))
            .values(no_reply=None)
        )
        return reopened.rowcount == 1

    def mark_written_again(self, message_pk: int, received_at: datetime) -> bool:
        """The citizen wrote again (a follow-up received at ``received_at``) after the
        message's answer: no relance (``relance_counted``), but mail nobody would read,
        so the message is back in its service's queue until an agent replies again or
        marks it read. True when it was not so already (the first unread follow-up)."""
        flagged = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at.is_(None))
            .where(sa.not_(relance_counted(messages.c.first_reply_at, received_at)))
            .values(written_again_at=received_at)
        )
        return flagged.rowcount == 1

    def clear_written_again(self, message_pk: int) -> bool:
        """An agent read the citizen's mail after the answer, with nothing to answer: out
        of the queue again. False when there was nothing to clear (done meanwhile)."""
        cleared = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at.is_not(None))
            .values(written_again_at=None)
        )
        return cleared.rowcount == 1

    def record_reply(
        self,
        message_pk: int,
        at: datetime,
        complete: bool | None,
        detail: str,
        kind: EventKind = EventKind.REPLY,
    ) -> None:
        """A reply to a citizen's message: the event, and the first reply kept on the row
        (``complete``: its signature; None when there was none to check, e.g. a phone call).
        A message closed as needing no reply is answered after all: no longer closed, so
        that it counts once, as answered (not also apart, in the report's closed list).

        A first reply earlier than the one known (a phone answer recorded days later, a
        reply found in Sent after the citizen wrote again) takes back the relances counted
        since it: the follow-ups received from ``at`` on came after the answer, no reminder
        of mail left waiting (``relance_counted``). The stored count then keeps following
        the rule by which ``Store.relances_after`` finds them again for figures as of a day
        (which would otherwise take away none of them, and show relances before they came).
        Those received before the known first reply were counted when they came (a first
        reply only ever moves earlier); in an UPDATE, ``first_reply_at`` is still that one.
        """
        self.add_events(message_pk, (kind, detail), at=at)
        # The row first, in a statement of its own: a follow-up being recorded holds it
        # (its relance) until the intake commits, and the UPDATE below then reads that
        # follow-up — on PostgreSQL a statement's subquery sees only what had committed
        # when the statement began, however long it waited for the row (SQLite: no-op,
        # the transaction already excludes other writers).
        self.conn.execute(
            sa.select(messages.c.id).where(messages.c.id == message_pk).with_for_update()
        )
        self._answered_at(message_pk, at)
        follow_up = messages.alias("written_again")
        after_answer = (
            sa.select(sa.func.count())
            .select_from(follow_up)
            .where(
                follow_up.c.parent_id == messages.c.id,
                follow_up.c.decision == Decision.FOLLOW_UP,
                follow_up.c.received_at >= at,
                relance_counted(messages.c.first_reply_at, follow_up.c.received_at),
            )
            .scalar_subquery()
        )
        self.conn.execute(
            messages.update()
            .where(
                messages.c.id == message_pk,
                sa.or_(messages.c.first_reply_at.is_(None), messages.c.first_reply_at > at),
            )
            .values(
                first_reply_at=at,
                first_reply_complete=None if complete is None else int(complete),
                relances=messages.c.relances - after_answer,
            )
        )

    def _answered_at(self, message_pk: int, at: datetime) -> None:
        """What a reply at ``at`` settles besides the first reply: a closing without reply,
        and the citizen's mail after the answer if it came before ``at`` (not one that came
        after a reply dated earlier, e.g. a phone call recorded late)."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.no_reply.is_not(None))
            .values(no_reply=None)
        )
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at <= at)
            .values(written_again_at=None)
        )

    def set_service(self, message_pk: int, service: str) -> None:
        """A message transferred to ``service``: it is that service's from now on."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .values(service=service, transferred=1)
        )

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

    def sent_mails(self, message_ids: Sequence[str], kinds: Sequence[OutboxKind]) -> list[SentMail]:
        """Our mails of these kinds to a citizen's message with one of these Message-IDs
        (``ix_outbox_email_message_id``): what a bounce naming them is about."""
        if not message_ids:
            return []
        query = (
            sa.select(
                outbox.c.id,
                outbox.c.message_pk,
                outbox.c.kind,
                outbox.c.recipient,
                outbox.c.sent_at,
            )
            .where(
                outbox.c.email_message_id.in_(list(message_ids)),
                outbox.c.kind.in_([k.value for k in kinds]),
                outbox.c.message_pk.is_not(None),
            )
            .order_by(outbox.c.id)
        )
        return [
            SentMail(r.id, r.message_pk, OutboxKind(r.kind), r.recipient, r.sent_at)
            for r in self.conn.execute(query)
        ]

    def add_event(self, message_pk: int | None, kind: EventKind, detail: str = "") -> None:
        values = {"message_pk": message_pk, "kind": kind, "detail": detail, "at": utcnow()}
        self.conn.execute(_INSERT_EVENT, fit(events, values))

    # -- outbox -------------------------------------------------------------------------
    def enqueue(
        self,
        message_pk: int | None,
        kind: OutboxKind,
        recipient: str,
        envelope_from: str,
        email_message_id: str,
        raw: bytes,
    ) -> int:
        now = utcnow()
        result = self.conn.execute(
            _INSERT_OUTBOX,
            {
                "message_pk": message_pk,
                "kind": kind,
                "recipient": recipient,
                "envelope_from": envelope_from,
                "email_message_id": email_message_id,
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
        item_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        self.conn.execute(_INSERT_BODY, {"outbox_id": item_id, "raw": raw})
        return item_id

    def take_due(
        self,
        now: datetime,
        limit: int,
        holder: str,
        stale: timedelta,
        max_bytes: int | None = None,
    ) -> list[OutboxItem]:
        """Due mail for ``holder`` to send: pending items nobody else took, or taken by a
        dead worker, or long ago. What it took itself is free to it again: one Outbox
        delivers one batch at a time (``Outbox.deliver_due``), so that is what an earlier
        delivery of its left. Another delivery may thus hold what is taken here: each
        claim, and every write after it, is conditional (``claim_outbox``,
        ``settle_outbox``). ``FOR UPDATE SKIP LOCKED``: two workers asking at the
        same moment get different items and never wait on each other (SQLite, which
        serves one worker, ignores it). With ``max_bytes``, no more mail than that (one
        item at least): what is taken is held in memory until it is sent, and a forward
        carries the citizen's original, scans and all."""
        alive = sa.select(workers.c.id).where(workers.c.expires_at > now)
        free = sa.or_(
            outbox.c.claimed_by.is_(None),
            outbox.c.claimed_by == holder,
            outbox.c.claimed_by.not_in(alive),
            outbox.c.claimed_at < now - stale,
        )
        due = self.conn.execute(
            sa.select(outbox.c.id, sa.func.coalesce(_BODY_SIZE, 0))
            .where(outbox.c.status == OutboxStatus.PENDING, outbox.c.next_attempt_at <= now)
            .where(free)
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = _within(list(due), max_bytes)
        if not ids:
            return []
        self.conn.execute(
            outbox.update().where(outbox.c.id.in_(ids)).values(claimed_by=holder, claimed_at=now)
        )
        query = (
            sa.select(*_TAKEN, messages.c.sender)
            .select_from(outbox)
            .outerjoin(messages, messages.c.id == outbox.c.message_pk)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .where(outbox.c.id.in_(_param("ids", expanding=True)))
            .order_by(outbox.c.id)
        )
        rows = self.conn.execute(query, {"ids": ids})
        return [outbox_item(row, message_sender=row.sender) for row in rows]

    def claim_outbox(self, item_id: int, attempts: int, holder: str | None = None) -> bool:
        """Move a pending item to 'sending'; False if another worker got it first. The
        claimer is recorded: its send is recovered as uncertain only once it is dead."""
        values = {
            "item_id": item_id,
            "status": OutboxStatus.SENDING,
            "attempts": attempts,
            "claimed_by": holder,
            "claimed_at": utcnow(),
        }
        return _driver_claim(self.conn.dialect).run(self.conn, values) == 1

    def renew_claims(self, item_ids: Sequence[int], holder: str, at: datetime) -> set[int]:
        """A slow delivery's claims on internal mail it still holds 'sending' (``holder``'s),
        dated ``at`` again: a keeper queues such a mail again once its claim is older than
        ``CLAIM_STALE`` (``requeue_stalled``), and must not while its sender lives. The ids
        still held; one missing was queued again meanwhile: the sender leaves it alone."""
        if not item_ids:
            return set()
        query = (
            outbox.update()
            .where(
                outbox.c.id.in_(_param("ids", expanding=True)),
                outbox.c.status == OutboxStatus.SENDING,
                outbox.c.claimed_by == holder,
            )
            .values(claimed_at=at)
            .returning(outbox.c.id)
        )
        return {int(i) for i in self.conn.execute(query, {"ids": list(item_ids)}).scalars()}

    def requeue_stalled(
        self, now: datetime, stale: timedelta, alone: bool = False, own: str | None = None
    ) -> list[OutboxItem]:
        """Internal mail (forward, digest, report, probe alert) left 'sending' that no live
        delivery can be sending any more, back to 'pending', due now, for any worker: its
        claim older than ``stale`` (``CLAIM_STALE``: a live sender renews it before, see
        ``renew_claims``) and its claimer no live worker. ``alone`` (a worker's start on
        SQLite, whose sole-worker lock proves every other worker's process gone): a
        registered worker's claim at once, whatever its age — but never ``own``'s (this
        process's holder: its console may be delivering). One statement, its condition
        checked on the row as it is when written (a claim renewed meanwhile stays)."""
        return self._requeue_where(stalled_sends(now, stale, alone, own), now)

    def requeue_claims_of(self, holder: str, now: datetime) -> list[OutboxItem]:
        """``holder``'s internal mail left 'sending', whatever its claim's age, back to the
        queue as ``requeue_stalled`` does: a delivery of that (live) process that raised
        mid-run left it so (``app/delivery.recover_own``)."""
        mine = sa.and_(
            outbox.c.status == OutboxStatus.SENDING,
            outbox.c.kind.in_(AT_LEAST_ONCE),
            outbox.c.claimed_by == holder,
        )
        return self._requeue_where(mine, now)

    def _requeue_where(self, condition: Any, now: datetime) -> list[OutboxItem]:
        query = (
            outbox.update()
            .where(condition)
            .values(
                status=OutboxStatus.PENDING,
                next_attempt_at=now,
                claimed_by=None,
                claimed_at=None,
                last_error=_REQUEUED_ERROR,
            )
            .returning(*(outbox.c[name] for name in _REQUEUED))
        )
        found = [outbox_item(row, raw=False) for row in self.conn.execute(query)]
        return sorted(found, key=lambda item: item.id)

    def requeue_sending(self, item_id: int, now: datetime, error: str) -> bool:
        """``item_id`` back to 'pending', due ``now``, for any worker, if it is 'sending'
        (its bytes kept): internal mail a restored database had leaving (app/restore)."""
        query = (
            outbox.update()
            .where(outbox.c.id == item_id, outbox.c.status == OutboxStatus.SENDING)
            .values(
                status=OutboxStatus.PENDING,
                next_attempt_at=now,
                claimed_by=None,
                claimed_at=None,
                last_error=error,
            )
        )
        return self.conn.execute(query).rowcount == 1

    def settle_orphan(
        self, item_id: int, claimed_by: str | None, status: OutboxStatus, **values: Any
    ) -> bool:
        """``set_outbox_status`` only while the item is still 'sending' under the claim it
        was found with (``claimed_by``, None included); False, and nothing written, once
        it was given back or claimed by another (a live) worker meanwhile. On PostgreSQL the
        UPDATE waits for a concurrent claim's lock and checks the row as it then is."""
        result = self.conn.execute(
            outbox.update()
            .where(
                outbox.c.id == item_id,
                outbox.c.status == OutboxStatus.SENDING,
                outbox.c.claimed_by.is_not_distinct_from(claimed_by),
            )
            .values(status=status, **values)
        )
        if result.rowcount != 1:
            return False
        self._give_up_bytes(item_id, status)
        return True

    def set_outbox_status(self, item_id: int, status: OutboxStatus, **values: Any) -> None:
        self.conn.execute(_UPDATE_OUTBOX, {"item_id": item_id, "status": status, **values})
        self._give_up_bytes(item_id, status)

    def _give_up_bytes(self, item_id: int, status: OutboxStatus) -> None:
        """A mail failed or uncertain is not sent again by mailbot: its bytes (an AR's
        subject, a forward's whole citizen's mail) are deleted with the status that says
        so, in its transaction, as a sent mail's are after its bookkeeping. (A mail failed
        for lack of time keeps them: ``settle_outbox(keep_bytes=True)``.)"""
        if status in GIVEN_UP:
            self.conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id == item_id))

    def settle_outbox(
        self,
        item_id: int,
        holder: str,
        held_as: OutboxStatus,
        status: OutboxStatus,
        keep_bytes: bool = False,
        **values: Any,
    ) -> bool:
        """``set_outbox_status`` only while ``holder`` still holds the item as ``held_as``
        ('sending': its own claim; 'pending': taken by it, not claimed yet); False, and
        nothing written, once another delivery has it (claimed, sent, taken again). A
        delivery writing over a mail it no longer holds could put a sent AR back to
        'pending', and it would leave a second time. ``keep_bytes``: a mail failed only for
        lack of time (temporary errors for longer than ``outbox.max_queue_hours``) keeps
        its bytes until the retention purge, for an operator's ``requeue_failed``."""
        params = {"item_id": item_id, "holder": holder, "held_as": held_as}
        result = self.conn.execute(_SETTLE_OUTBOX, {**params, "status": status, **values})
        if result.rowcount != 1:
            return False
        if not (keep_bytes and status == OutboxStatus.FAILED):
            self._give_up_bytes(item_id, status)
        return True

    def set_ar_status(self, message_pk: int, status: ArStatus) -> None:
        self.conn.execute(_UPDATE_MESSAGE, {"message_pk": message_pk, "ar_status": status})

    def set_ar_statuses(self, message_pks: Sequence[int], status: ArStatus) -> None:
        """``set_ar_status`` for many messages in one executemany (a delivery batch)."""
        self._set_statuses("ar_status", message_pks, status)

    def set_latest_notice(self, message_pk: int, notice_id: int) -> None:
        """An agent's transfer queued the notice ``notice_id`` (pending): from now on the
        message's notice status is this one's, the latest transfer's, whatever an earlier
        notice's delivery writes later (``set_notice_status``). Written with the transfer's
        service, in its transaction: the last transfer committed is the one that holds."""
        values = {"notice_outbox": notice_id, "notice_status": OutboxStatus.PENDING}
        self.conn.execute(_UPDATE_MESSAGE, {"message_pk": message_pk, **values})

    def set_notice_status(self, message_pk: int, notice_id: int, status: OutboxStatus) -> None:
        """The outbox status of the transfer notice ``notice_id`` on its message, only while
        it is the message's latest (``set_latest_notice``): the transfer is announced to the
        citizen once that one is 'sent'. An earlier notice settled later writes nothing. On
        PostgreSQL an UPDATE waiting for a transfer's lock checks the row as it committed."""
        self.set_notice_statuses([(message_pk, notice_id)], status)

    def set_notice_statuses(self, notices: Sequence[tuple[int, int]], status: OutboxStatus) -> None:
        """``set_notice_status`` for many (message, notice) in one executemany (a delivery
        batch)."""
        if notices:
            rows = [
                {"message_pk": pk, "notice_id": notice_id, "notice_status": status}
                for pk, notice_id in notices
            ]
            _driver_many(self.conn.dialect, _UPDATE_NOTICE, ("notice_status",)).run(self.conn, rows)

    def _set_statuses(self, column: str, message_pks: Sequence[int], status: str) -> None:
        if message_pks:
            rows = [{"message_pk": pk, column: status} for pk in message_pks]
            _driver_many(self.conn.dialect, _UPDATE_MESSAGE, (column,)).run(self.conn, rows)

    def mark_sent(self, sent: Sequence[tuple[int, datetime]], holder: str) -> set[int]:
        """Outbox items the server accepted (id, when): 'sent', their bytes kept until
        ``finish_sent`` (a crash in between leaves them for ``unfinished_sent``). Only those
        still 'sending' under ``holder``'s claim (see ``settle_outbox``): the ids written.
        One missing was queued again while it left (it may arrive twice). The common case,
        every row written, costs no read: only a count short of them looks which."""
        if not sent:
            return set()
        rows = [{"item_id": i, "at": at, "holder": holder} for i, at in sent]
        ids = {i for i, _ in sent}
        if _driver_many(self.conn.dialect, _MARK_SENT, ()).run(self.conn, rows) == len(ids):
            return ids
        query = sa.select(outbox.c.id).where(
            outbox.c.id.in_(ids),
            outbox.c.status == OutboxStatus.SENT,
            outbox.c.claimed_by == holder,
        )
        return {int(i) for i in self.conn.execute(query).scalars()}

    def finish_sent(self, item_ids: Sequence[int]) -> set[int]:
        """Purge the bytes of sent items whose bookkeeping is being written; the ids this
        call purged. An item another call finished first is not among them, so its status
        mirror and events are never written twice (the DELETE locks the body until commit,
        and finds it gone after)."""
        if not item_ids:
            return set()
        query = (
            outbox_bodies.delete()
            .where(
                outbox_bodies.c.outbox_id.in_(_param("ids", expanding=True)),
                _BODY_STATUS == OutboxStatus.SENT,
            )
            .returning(outbox_bodies.c.outbox_id)
        )
        return {int(i) for i in self.conn.execute(query, {"ids": list(item_ids)}).scalars()}

    def unfinished_sent(self, limit: int = 1000) -> list[tuple[OutboxItem, datetime]]:
        """Sent items whose bookkeeping a crash (or a failed commit) left undone, with
        when they left (found from the few rows of ``outbox_bodies``)."""
        query = (
            sa.select(outbox)
            .where(outbox.c.id.in_(_SENT_UNFINISHED))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [(outbox_item(r, raw=False), r.sent_at) for r in self.conn.execute(query)]

    def add_event_rows(self, rows: Sequence[tuple[int | None, EventKind, str, datetime]]) -> None:
        """Events of many messages in one executemany: (message, kind, detail, at)."""
        if rows:
            values = [
                fit(events, {"message_pk": pk, "kind": k, "detail": d, "at": at})
                for pk, k, d, at in rows
            ]
            _driver_rows(self.conn.dialect, events, _EVENT_KEYS).run(self.conn, values)

    def failed_to_requeue(
        self, since: datetime | None, kinds: Sequence[OutboxKind], guarded: bool = True
    ) -> list[OutboxItem]:
        """Failed mails of ``kinds`` (failed at or after ``since``) that still hold their
        bytes: failed for lack of time, never refused (a refusal's and an uncertain mail's
        bytes are deleted when settled). ``guarded``: only those that may leave now without
        a mail sent twice or out of date — not when a later mail of the same kind was
        queued for the message since (an agent's second transfer notice, a reply sent
        again by hand), nor an AR when another AR of the message did not fail, nor an AR of
        a message answered meanwhile (the reply said more than the AR would)."""
        other = outbox.alias("sibling")
        superseded = sa.exists(
            sa.select(other.c.id).where(
                other.c.message_pk == outbox.c.message_pk,
                other.c.kind == outbox.c.kind,
                other.c.id != outbox.c.id,
                sa.or_(
                    other.c.id > outbox.c.id,
                    (outbox.c.kind == OutboxKind.AR) & (other.c.status != OutboxStatus.FAILED),
                ),
            )
        )
        answered = sa.exists(
            sa.select(messages.c.id).where(
                messages.c.id == outbox.c.message_pk, messages.c.first_reply_at.is_not(None)
            )
        )
        kept = sa.exists(sa.select(outbox_bodies.c.outbox_id).where(_KEPT_BODY))
        query = (
            sa.select(outbox)
            .where(outbox.c.status == OutboxStatus.FAILED, kept)
            .where(outbox.c.kind.in_([kind.value for kind in kinds]))
            .order_by(outbox.c.id)
        )
        if since is not None:
            query = query.where(outbox.c.failed_at >= since)
        if guarded:
            query = query.where(~superseded).where(
                sa.or_(outbox.c.kind != OutboxKind.AR, ~answered)
            )
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]

    def requeue_failed(self, item_id: int, now: datetime) -> bool:
        """Put a mail failed for lack of time back in the queue, due at once, its time in
        the queue and its backoff started again; False, nothing written, unless it is still
        failed and holds its bytes (another operator's requeue came first, or it was a
        refusal). Never an uncertain mail: it may have left."""
        kept = sa.exists(sa.select(outbox_bodies.c.outbox_id).where(_KEPT_BODY))
        result = self.conn.execute(
            outbox.update()
            .where(outbox.c.id == item_id, outbox.c.status == OutboxStatus.FAILED, kept)
            .values(
                status=OutboxStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                requeued_at=now,
                failed_at=None,
                claimed_by=None,
                claimed_at=None,
            )
        )
        return result.rowcount == 1

    def interrupted_sends(
        self, own: str | None = None, only: str | None = None
    ) -> list[OutboxItem]:
        """The mails to citizens left 'sending' (by a crash), without their bytes; internal
        mail left so is ``requeue_stalled``'s. Not ``own``'s (this process's holder): its
        claims are a live delivery's, not a crash's. ``only``: that holder's alone (its
        delivery raised mid-run: ``app/delivery.recover_own``)."""
        query = (
            sa.select(outbox)
            .where(outbox.c.status == OutboxStatus.SENDING, outbox.c.kind.in_(AT_MOST_ONCE))
            .order_by(outbox.c.id)
        )
        if own is not None:
            query = query.where(not_claimed_by(own))
        if only is not None:
            query = query.where(outbox.c.claimed_by == only)
        return [outbox_item(row, raw=False) for row in self.conn.execute(query)]

    def add_events(
        self, message_pk: int | None, *kinds: tuple[EventKind, str], at: datetime | None = None
    ) -> None:
        now = at or utcnow()
        self.conn.execute(
            _INSERT_EVENT,
            [
                fit(events, {"message_pk": message_pk, "kind": k, "detail": d, "at": now})
                for k, d in kinds
            ],
        )

    # -- an intake batch's rows, written at its end ---------------------------------------
    def queue_rows(
        self, rows: Sequence[tuple[int, OutboxKind, str, str, str, bytes, datetime]]
    ) -> None:
        """Outbox mails of many messages, as ``enqueue`` writes each: (message, kind,
        recipient, envelope from, Message-ID, bytes, when queued). Each row is inserted
        on the driver's cursor for its id, their bodies in one executemany."""
        if not rows:
            return
        insert = _driver_insert(self.conn.dialect, _OUTBOX_KEYS, outbox)
        bodies = [
            {
                "outbox_id": insert.run(
                    self.conn,
                    {
                        "message_pk": pk,
                        "kind": kind,
                        "recipient": recipient,
                        "envelope_from": envelope_from,
                        "email_message_id": message_id,
                        "status": OutboxStatus.PENDING,
                        "attempts": 0,
                        "next_attempt_at": at,
                        "created_at": at,
                    },
                ),
                "raw": raw,
            }
            for pk, kind, recipient, envelope_from, message_id, raw, at in rows
        ]
        _driver_rows(self.conn.dialect, outbox_bodies, _BODY_KEYS).run(self.conn, bodies)


class Session:
    """One connection for a run of short transactions (``Store.session``)."""

    def __init__(
        self, conn: Connection, fence: Fence | None = None, desk: WriteDesk | None = None
    ) -> None:
        self.conn = conn
        self.fence = fence
        self.desk = desk

    def write(self, work: Callable[[Transaction], T]) -> T:
        """``work`` in a committed transaction: this session's, or on SQLite the open
        intake part's if there is one (see ``store/desk``); returns what it returns."""
        if self.desk is None:
            return self._alone(work)
        return self.desk.submit(work, self._alone)

    def _alone(self, work: Callable[[Transaction], T]) -> T:
        with self.transaction() as tx:
            return work(tx)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction on the session's connection: committed on leaving, rolled back on
        an exception (the connection stays usable for the next one)."""
        with self.conn.begin():
            yield Transaction(self.conn, self.fence)
