"""The agents' queue: a service's open messages — acknowledged, unanswered, not closed
without a reply, no reply on its way — in the order of their deadlines, each with its age
and its deadline in working days (``core.workdays``), and the month's figures of the
services shown (``app.indicators``, the same as ``mailbot indicators``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from mailbot.app import indicators
from mailbot.app.bounces import bounce_notes
from mailbot.app.message_view import service_of
from mailbot.config import Config
from mailbot.core.indicators import TARGET_RATE, Indicators
from mailbot.core.workdays import DEADLINE, WorkingCalendar
from mailbot.store import Store
from mailbot.store import console as stored

PAGE_SIZE = 50
MAX_WORDS = 6
_WORD = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*", re.UNICODE)


class Show(StrEnum):
    """Which open messages a queue shows (the console's "état" filter)."""

    OPEN = "ouverts"  # every open message
    OVERDUE = "en-retard"  # past the 5th working day
    RELANCED = "relances"  # the citizen wrote again
    MINE = "mes-courriels"  # assigned to the agent
    UNASSIGNED = "non-attribues"
    TO_CHECK = "a-verifier"  # routing was unsure: the service or category needs a look
    WRITTEN_AGAIN = "nouveaux-messages"  # answered, then the citizen wrote again


class Urgency(StrEnum):
    """Where a message stands against its deadline (shown in words, not colour alone)."""

    ON_TIME = "on_time"
    DUE_TODAY = "due_today"
    OVERDUE = "overdue"


class Settled(StrEnum):
    """Why a message is out of the queue, which its page's badge says instead of its
    deadline (an answered message is not "en retard")."""

    ANSWERED = "answered"  # a reply accepted by the server, or answered otherwise
    SENDING = "sending"  # a reply queued, not yet accepted (a failure brings it back)
    CLOSED = "closed"  # closed without a reply


@dataclass(frozen=True)
class QueueQuery:
    services: tuple[str, ...]  # the services the agent may see (after any service filter)
    show: Show = Show.OPEN
    category: str | None = None
    search: str = ""
    agent: str | None = None  # for Show.MINE
    page: int = 1


@dataclass(frozen=True)
class QueueRow:
    id: int
    reference: str
    subject: str
    citizen: str  # the name the citizen's mail showed ("" when none): never the address
    mailbox: str
    service: str
    category: str | None
    received_at: datetime  # local time
    age: int  # working days since receipt
    deadline: date  # the 5th working day
    days_left: int  # working days until the deadline (0: due today; negative: overdue,
    # -1 on the days off right after the deadline)
    urgency: Urgency
    relances: int
    assignee: str | None
    to_check: bool
    language: str | None = None  # the citizen's, as detected: the subject is marked in it
    # Answered, then the citizen wrote again (local time of the first unread follow-up):
    # new mail to read, shown so instead of the deadline, which the answer met or missed.
    written_again: datetime | None = None
    # Our last mail to the citizen bounced (app/bounces): its status (``5.1.1``, or "?"
    # when the report gave none); "" when none did. The row's marker.
    bounced: str = ""


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class ServiceFigures:
    """A service's figures for the month so far: what the queue's header shows."""

    service: str
    month: Indicators
    start: date
    end: date


def search_words(text: str) -> list[str]:
    """The words of a search (a reference is one word): at most MAX_WORDS."""
    return _WORD.findall(text.strip())[:MAX_WORDS]


def overdue_cutoff(calendar: WorkingCalendar, today: date) -> datetime:
    """Messages received before this instant are past their deadline today: the badge's
    rule (``_row``), as an instant the queue's SQL filters on.

    A message is overdue once its deadline (the DEADLINE-th working day after its local
    day of receipt) is before today: DEADLINE working days passed up to yesterday, so it
    was received before the (DEADLINE - 1)-th working day before yesterday's last working
    day (yesterday itself when it is one). On a working day this is the day DEADLINE
    working days back; on the Saturday after a Friday deadline, it already includes the
    messages due that Friday."""
    yesterday = np.datetime64(today - timedelta(days=1), "D")
    day = np.busday_offset(
        yesterday, -(DEADLINE - 1), roll="backward", busdaycal=calendar.busdaycal
    )
    return datetime.combine(date.fromisoformat(str(day)), time.min, calendar.zone)


def _filter(
    config: Config, query: QueueQuery, calendar: WorkingCalendar, today: date
) -> stored.OpenFilter:
    own = [name for name, box in config.mailboxes.items() if box.service in query.services]
    return stored.OpenFilter(
        services=query.services,
        mailbox_services=own,
        category=query.category,
        received_before=overdue_cutoff(calendar, today) if query.show is Show.OVERDUE else None,
        relanced=query.show is Show.RELANCED,
        assignee=query.agent if query.show is Show.MINE else None,
        unassigned=query.show is Show.UNASSIGNED,
        to_check=query.show is Show.TO_CHECK,
        written_again=query.show is Show.WRITTEN_AGAIN,
        words=search_words(query.search),
    )


def listing(config: Config, store: Store, query: QueueQuery, today: date) -> QueuePage:
    """One page of the queue (PAGE_SIZE messages), earliest deadline first."""
    calendar = _calendar(config)
    if not query.services:
        return QueuePage([], 0, 1, 1)
    where = _filter(config, query, calendar, today)
    page = max(1, query.page)
    found, total = stored.open_messages(store.engine, where, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    rows = [_row(config, calendar, row, today) for row in found]
    notes = bounce_notes(store, (row.id for row in rows))
    rows = [replace(r, bounced=notes[r.id].status or "?") if r.id in notes else r for r in rows]
    return QueuePage(rows, total, min(page, pages), pages)


def standing(config: Config, row: Any, today: date) -> QueueRow:
    """A message as the queue would show it today (its age, deadline and badge)."""
    return _row(config, _calendar(config), row, today)


def settled(store: Store, row: Any) -> Settled | None:
    """Where a message out of the queue stands (None: open, its deadline badge applies)."""
    if row.first_reply_at is not None:
        return Settled.ANSWERED
    if row.no_reply is not None:
        return Settled.CLOSED
    with store.engine.connect() as conn:
        _answered, in_flight = stored.reply_state(conn, row.id)
    return Settled.SENDING if in_flight else None


def _row(config: Config, calendar: WorkingCalendar, row: Any, today: date) -> QueueRow:
    """A message as the queue shows it. Overdue once the deadline shown beside the badge
    is past — on the Saturday after a Friday deadline too, though the indicators count no
    working day late until Monday: no working day is left to answer in time, and "due
    today" under a date already gone would mislead. ``overdue_cutoff`` is the same rule
    for the "en retard" filter and the header's count."""
    local: datetime = row.received_at.astimezone(calendar.zone)
    deadline = calendar.deadline(row.received_at)
    age = calendar.delay_between(local.date(), today)
    if deadline < today:
        urgency, left = Urgency.OVERDUE, min(DEADLINE - age, -1)
    elif deadline == today:
        urgency, left = Urgency.DUE_TODAY, 0
    else:
        urgency, left = Urgency.ON_TIME, calendar.delay_between(today, deadline)
    return QueueRow(
        id=int(row.id),
        reference=row.reference or "",
        subject=row.subject or "",
        citizen=row.sender_name or "",
        mailbox=row.mailbox,
        service=service_of(config, row),
        category=row.category,
        received_at=local,
        age=age,
        deadline=deadline,
        days_left=left,
        urgency=urgency,
        relances=int(row.relances or 0),
        assignee=row.assignee,
        to_check=bool(row.to_check),
        language=row.language,
        written_again=(
            row.written_again_at.astimezone(calendar.zone)
            if row.written_again_at is not None
            else None
        ),
    )


def month_figures(
    config: Config, store: Store, services: tuple[str, ...], today: date
) -> list[ServiceFigures]:
    """This month's indicators (1st to today) of each service: the figure the prefecture
    is audited on (within 5 working days, target 75 %) and the overdue count."""
    start = today.replace(day=1)
    return [
        ServiceFigures(
            s, indicators.figures(config, store, start, today, today, service=s), start, today
        )
        for s in services
    ]


@dataclass(frozen=True)
class Header:
    """The queue's header for one service: this month's rate within 5 working days
    (the audited figure, against TARGET_RATE) and its open messages, how many overdue."""

    service: str
    rate: float | None  # None: nothing received this month yet
    received: int
    open: int
    overdue: int

    @property
    def on_target(self) -> bool | None:
        return None if self.rate is None else self.rate > TARGET_RATE


def header(config: Config, store: Store, services: tuple[str, ...], today: date) -> list[Header]:
    """Each service's header: the month's figures and its open and overdue messages."""
    calendar = _calendar(config)
    cutoff = overdue_cutoff(calendar, today)
    found = []
    for figures in month_figures(config, store, services, today):
        where = _filter(config, QueueQuery(services=(figures.service,)), calendar, today)
        late = replace(where, received_before=cutoff)
        found.append(
            Header(
                figures.service,
                figures.month.rate_within_5,
                figures.month.received,
                stored.count_open(store.engine, where),
                stored.count_open(store.engine, late),
            )
        )
    return found


def _calendar(config: Config) -> WorkingCalendar:
    return _CALENDARS.setdefault(config.timezone, WorkingCalendar(timezone=config.timezone))


_CALENDARS: dict[str, WorkingCalendar] = {}
