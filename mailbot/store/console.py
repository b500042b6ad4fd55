"""What the agents' console reads and writes beyond the pipeline: the queue of open
messages, who handles a message, messages closed without a reply, and who has a message
open, and the sessions ended before their expiry. The use cases (``mailbot.app.queue``,
``assignment``, ``no_reply``, ``presence``, ``sessions``) decide; this module only runs the
SQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mailbot.core.fold import search_fold
from mailbot.core.statuses import Decision, EventKind, NoReplyReason, OutboxKind, OutboxStatus
from mailbot.store.schema import ended_sessions, events, messages, outbox, viewings

QUEUE_COLUMNS = (
    messages.c.id,
    messages.c.reference,
    messages.c.subject,
    messages.c.sender_name,
    messages.c.mailbox,
    messages.c.service,
    messages.c.category,
    messages.c.received_at,
    messages.c.relances,
    messages.c.assignee,
    messages.c.to_check,
    messages.c.language,  # the subject's, as detected
    messages.c.written_again_at,  # answered, then the citizen wrote again (unread)
)


@dataclass(frozen=True)
class OpenFilter:
    """Which open messages a queue page lists. ``services``: the services shown (a mailbox
    whose messages carry no service counts as its own service: ``mailbox_services``)."""

    services: Sequence[str]
    mailbox_services: Sequence[str] = ()  # mailboxes whose own service is listed
    category: str | None = None
    received_before: datetime | None = None  # overdue: received before this instant
    relanced: bool = False
    assignee: str | None = None
    unassigned: bool = False
    to_check: bool = False
    written_again: bool = False  # only the answered messages the citizen wrote again about
    words: Sequence[str] = ()  # each in the subject (case and accents aside) or the reference


def _reply_in_flight() -> sa.ColumnElement[bool]:
    """A reply queued and not yet accepted by the server: the message has left the queue
    (a failed reply brings it back)."""
    return sa.exists(
        sa.select(outbox.c.id).where(
            outbox.c.message_pk == messages.c.id,
            outbox.c.kind == OutboxKind.REPLY,
            outbox.c.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
        )
    )


def _open_where(where: OpenFilter) -> list[sa.ColumnElement[bool]]:
    service = sa.or_(
        messages.c.service.in_(list(where.services)),
        sa.and_(messages.c.service.is_(None), messages.c.mailbox.in_(list(where.mailbox_services))),
    )
    conditions = [
        # Unanswered, or answered and written about again since, unread (``written_again_at``)
        sa.or_(messages.c.first_reply_at.is_(None), messages.c.written_again_at.is_not(None)),
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.no_reply.is_(None),
        messages.c.probe == 0,  # the supervision's test mails are nobody's to answer
        service,
        sa.not_(_reply_in_flight()),
    ]
    if where.category:
        conditions.append(messages.c.category == where.category)
    if where.received_before is not None:  # overdue: an answered message never is
        conditions.append(messages.c.received_at < where.received_before)
        conditions.append(messages.c.first_reply_at.is_(None))
    if where.relanced:
        conditions.append(messages.c.relances > 0)
    if where.assignee:
        conditions.append(messages.c.assignee == where.assignee)
    if where.unassigned:
        conditions.append(messages.c.assignee.is_(None))
    if where.to_check:
        conditions.append(messages.c.to_check == 1)
    if where.written_again:
        conditions.append(messages.c.written_again_at.is_not(None))
    for word in where.words:  # folded both sides, in Python: see core.fold
        conditions.append(
            sa.or_(
                messages.c.subject_search.contains(search_fold(word), autoescape=True),
                messages.c.reference.contains(word.upper(), autoescape=True),
            )
        )
    return conditions


def open_messages(
    engine: Engine, where: OpenFilter, offset: int, limit: int
) -> tuple[list[sa.Row[Any]], int]:
    """One page of open messages, and how many match in all. First those the citizen
    wrote again about after their answer (new mail to read, whose deadline is long gone
    or met: by receipt they would sink among the overdue), earliest first; then those
    held "to check" (the routing was unsure: re-routed soon, the right service still has
    time), then oldest first (the earliest deadline first)."""
    conditions = _open_where(where)
    page = (
        sa.select(*QUEUE_COLUMNS)
        .where(*conditions)
        .order_by(
            messages.c.written_again_at.is_(None),  # false (0) first: the new mail
            messages.c.written_again_at,
            messages.c.to_check.desc(),
            messages.c.received_at,
            messages.c.id,
        )
        .offset(offset)
        .limit(limit)
    )
    total = sa.select(sa.func.count()).select_from(messages).where(*conditions)
    with engine.connect() as conn:
        return list(conn.execute(page)), int(conn.execute(total).scalar_one())


def count_open(engine: Engine, where: OpenFilter) -> int:
    """How many open messages match."""
    total = sa.select(sa.func.count()).select_from(messages).where(*_open_where(where))
    with engine.connect() as conn:
        return int(conn.execute(total).scalar_one())


def follow_ups(engine: Engine, message_pk: int) -> list[sa.Row[Any]]:
    """The citizen's later mails in the thread (relances), oldest first."""
    query = (
        sa.select(messages.c.id, messages.c.received_at, messages.c.subject, messages.c.language)
        .where(messages.c.parent_id == message_pk, messages.c.decision == Decision.FOLLOW_UP)
        .order_by(messages.c.received_at, messages.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def last_event_id(engine: Engine, message_pk: int, kinds: Collection[str] = ()) -> int:
    """The id of the message's latest event (0 for none), of one of ``kinds`` when given:
    its state, as a form saw it."""
    query = sa.select(sa.func.max(events.c.id)).where(events.c.message_pk == message_pk)
    if kinds:
        query = query.where(events.c.kind.in_(list(kinds)))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one_or_none() or 0)


def events_after(conn: Connection, message_pk: int, event_id: int, kinds: Collection[str]) -> int:
    """How many events of ``kinds`` the message has after ``event_id``, read with the
    message's row locked until the transaction ends (PostgreSQL: SELECT … FOR UPDATE;
    SQLite's write transaction already serialises): two transactions that check, then
    write such an event, run one after the other, and the second sees the first's."""
    conn.execute(sa.select(messages.c.id).where(messages.c.id == message_pk).with_for_update())
    query = (
        sa.select(sa.func.count())
        .select_from(events)
        .where(
            events.c.message_pk == message_pk,
            events.c.id > event_id,
            events.c.kind.in_(list(kinds)),
        )
    )
    return int(conn.execute(query).scalar_one())


def owner_locked(conn: Connection, message_pk: int) -> sa.Row[Any] | None:
    """Whose the message is — its ``service``, ``mailbox`` and ``assignee`` — read with its
    row locked until the transaction ends, for a request that checks them where it writes:
    a head moving the message, or another agent taking it, waits for that transaction or
    is seen by it. PostgreSQL: SELECT … FOR UPDATE. SQLite: the write lock taken first
    (BEGIN IMMEDIATE) when the transaction has written nothing yet — its driver opens a
    transaction only at the first write, so a read before it sees the file as it is and a
    move committed between that read and the write would go unseen."""
    if conn.dialect.name == "sqlite":
        driver = conn.connection.dbapi_connection
        if driver is not None and not getattr(driver, "in_transaction", True):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    query: sa.Select[Any] = (
        sa.select(messages.c.id, messages.c.service, messages.c.mailbox, messages.c.assignee)
        .where(messages.c.id == message_pk)
        .with_for_update()
    )
    return conn.execute(query).first()


def set_assignee(conn: Connection, message_pk: int, agent: str | None) -> None:
    conn.execute(messages.update().where(messages.c.id == message_pk).values(assignee=agent))


def reply_state(conn: Connection, message_pk: int) -> tuple[bool, bool]:
    """(answered, a reply queued or being sent) for one message."""
    query = sa.select(messages.c.first_reply_at.is_not(None), _reply_in_flight()).where(
        messages.c.id == message_pk
    )
    found = conn.execute(query).first()
    return (bool(found[0]), bool(found[1])) if found is not None else (False, False)


def closed_reason(conn: Connection, message_pk: int) -> str | None:
    """Why the message was closed without a reply (``NoReplyReason``), None if it is not."""
    query = sa.select(messages.c.no_reply).where(messages.c.id == message_pk)
    return conn.execute(query).scalar_one_or_none()


def assignee_of(conn: Connection, message_pk: int) -> str | None:
    query = sa.select(messages.c.assignee).where(messages.c.id == message_pk)
    return conn.execute(query).scalar_one_or_none()


def set_no_reply(conn: Connection, message_pk: int, reason: NoReplyReason) -> bool:
    """Close a message still unanswered; False when an answer is on the row. The guard is
    in the UPDATE because PostgreSQL's read committed lets a reply commit between the
    state read and this write: unguarded, the message ended both answered and closed."""
    closed = conn.execute(
        messages.update()
        .where(messages.c.id == message_pk, messages.c.first_reply_at.is_(None))
        .values(no_reply=reason)
    )
    return closed.rowcount == 1


def closed_without_reply(engine: Engine, since: datetime, until: datetime) -> list[sa.Row[Any]]:
    """Messages received in [since, until) closed without a reply, oldest first."""
    query = (
        sa.select(
            messages.c.id,
            messages.c.reference,
            messages.c.mailbox,
            messages.c.service,
            messages.c.received_at,
            messages.c.no_reply,
        )
        .where(
            messages.c.no_reply.is_not(None),
            messages.c.received_at >= since,
            messages.c.received_at < until,
        )
        .order_by(messages.c.received_at, messages.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def touch_viewing(conn: Connection, message_pk: int, agent: str, now: datetime) -> None:
    """Record that ``agent`` has the message open now (one row per agent and message)."""
    values = {"message_pk": message_pk, "agent": agent, "seen_at": now}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(viewings).values(**values)
        conn.execute(
            pg.on_conflict_do_update(index_elements=["message_pk", "agent"], set_={"seen_at": now})
        )
    else:
        lite = sqlite.insert(viewings).values(**values)
        conn.execute(
            lite.on_conflict_do_update(
                index_elements=["message_pk", "agent"], set_={"seen_at": now}
            )
        )


def forget_viewings(conn: Connection, before: datetime) -> None:
    conn.execute(viewings.delete().where(viewings.c.seen_at < before))


def end_session(conn: Connection, session_id: str, expires_at: datetime) -> None:
    """Record the session as ended (once: a second logout with the same cookie is a no-op)."""
    values = {"id": session_id, "expires_at": expires_at}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(ended_sessions).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(ended_sessions).values(**values).on_conflict_do_nothing())


def session_ended(engine: Engine, session_id: str) -> bool:
    """Whether the session was ended: one lookup of the primary key."""
    query = sa.select(ended_sessions.c.id).where(ended_sessions.c.id == session_id)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def forget_ended_sessions(conn: Connection, before: datetime) -> int:
    """Delete the ended sessions that expired before ``before``; how many."""
    deleted = conn.execute(ended_sessions.delete().where(ended_sessions.c.expires_at < before))
    return int(deleted.rowcount)


def viewers(engine: Engine, message_pk: int, since: datetime) -> list[sa.Row[Any]]:
    """Who has had the message open since ``since``, latest first."""
    query = (
        sa.select(viewings.c.agent, viewings.c.seen_at)
        .where(viewings.c.message_pk == message_pk, viewings.c.seen_at >= since)
        .order_by(viewings.c.seen_at.desc())
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def agent_replies(
    engine: Engine, since: datetime, until: datetime, services: Sequence[str] = ()
) -> tuple[int, int]:
    """Agents' replies queued in [since, until) (of ``services``' messages; () : all), and
    how many of them went with a text the agent edited (``"edited": true`` in the event)."""
    edited = sa.case((events.c.detail.like('%"edited": true%'), 1), else_=0)
    query = (
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(edited), 0))
        .select_from(events.join(messages, messages.c.id == events.c.message_pk))
        .where(events.c.kind == EventKind.REPLY_QUEUED, events.c.at >= since)
        .where(events.c.at < until)
    )
    if services:
        query = query.where(messages.c.service.in_(list(services)))
    with engine.connect() as conn:
        total, changed = conn.execute(query).one()
    return int(total), int(changed)
