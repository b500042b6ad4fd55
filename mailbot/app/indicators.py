"""The response-time indicators over a period, and the messages still waiting for a reply:
what ``mailbot indicators``, ``mailbot unanswered``, the report and the console show."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from mailbot.app.bounces import bounce_notes
from mailbot.config import Config
from mailbot.core.indicators import (
    DayBuckets,
    Indicators,
    Relances,
    arrays_from_store,
    buckets_from_store,
    compute_arrays,
    compute_buckets,
    day_number,
    relances_from_store,
)
from mailbot.core.workdays import WorkingCalendar, calendar_for
from mailbot.store import Store, indicator_days

log = logging.getLogger(__name__)


def period_bounds(calendar: WorkingCalendar, start: date, end: date) -> tuple[datetime, datetime]:
    """[start, end] in local dates as the instants the store compares: [since, until)."""
    zone = calendar.zone
    since = datetime.combine(start, time.min, zone)
    return since, datetime.combine(end + timedelta(days=1), time.min, zone)


def figures(
    config: Config,
    store: Store,
    start: date,
    end: date,
    as_of: date,
    mailbox: str | None = None,
    service: str | None = None,
) -> Indicators:
    """The indicators of the citizens' messages received from ``start`` to ``end``
    (local dates, inclusive), pending and overdue as of ``as_of``."""
    calendar = calendar_for(config.timezone)
    since, until = period_bounds(calendar, start, end)
    later = relances_after(store, calendar, as_of, since, until, mailbox, service)
    buckets = _buckets(config, store, start, end, mailbox, service)
    if buckets is not None:
        return compute_buckets(buckets, as_of, calendar, later)
    columns = store.indicator_arrays(since, until, config.complaint_category, mailbox, service)
    return compute_arrays(arrays_from_store(columns, calendar), as_of, calendar, later)


def relances_after(
    store: Store,
    calendar: WorkingCalendar,
    as_of: date,
    since: datetime,
    until: datetime,
    mailbox: str | None = None,
    service: str | None = None,
) -> Relances:
    """The relances received after ``as_of`` (local date) of the messages received in
    [since, until): the stored counts include them, the figures as of that day do not."""
    _today, after = period_bounds(calendar, as_of, as_of)
    found = store.relances_after(after, since, until, mailbox, service)
    return relances_from_store(found, calendar)


def _buckets(
    config: Config,
    store: Store,
    start: date,
    end: date,
    mailbox: str | None = None,
    service: str | None = None,
) -> DayBuckets | None:
    """The daily buckets of [start, end]; None when they are kept in another time zone than
    the configuration's (``rebuild`` puts them in it; the facts give the figures meanwhile)."""
    columns = indicator_days.read(
        store,
        config.timezone,
        day_number(start),
        day_number(end),
        config.complaint_category,
        mailbox,
        service,
    )
    if columns is None:
        log.warning(
            "the indicators' daily buckets are not in %s: reading every message instead"
            " (run `mailbot rebuild-indicators` once)",
            config.timezone,
        )
        return None
    return buckets_from_store(columns)


def rebuild(config: Config, store: Store) -> None:
    """The daily buckets computed again from the facts, in the configuration's time zone:
    after a change of ``timezone`` (or of the zone's rules), in one transaction."""
    with store.engine.begin() as conn:
        indicator_days.refill(conn, config.timezone)


def figures_of_periods(
    config: Config,
    store: Store,
    periods: Sequence[tuple[date, date]],
    as_of: date,
    service: str | None = None,
) -> list[Indicators]:
    """``figures`` of several periods (the report's twelve weeks) from one read of the
    messages, split by local date of receipt: the same figures, one scan instead of many."""
    calendar = calendar_for(config.timezone)
    first, last = min(start for start, _ in periods), max(end for _, end in periods)
    since, until = period_bounds(calendar, first, last)
    later = relances_after(store, calendar, as_of, since, until, None, service)
    buckets = _buckets(config, store, first, last, None, service)
    if buckets is not None:
        return [
            compute_buckets(
                buckets.received_between(start, end),
                as_of,
                calendar,
                later.received_between(start, end),
            )
            for start, end in periods
        ]
    columns = store.indicator_arrays(since, until, config.complaint_category, None, service)
    facts = arrays_from_store(columns, calendar)
    return [
        compute_arrays(
            facts.received_between(start, end), as_of, calendar, later.received_between(start, end)
        )
        for start, end in periods
    ]


def unanswered(
    config: Config,
    store: Store,
    today: date,
    mailbox: str | None = None,
    service: str | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """The citizens' messages with no reply, however old, with their age in working days,
    oldest first: the figures count every one of them as overdue, so the list shows them.
    Each row's ``bounce``: the ``BounceNote`` of our last mail to the citizen that bounced
    (app/bounces), or None."""
    calendar = calendar_for(config.timezone)
    _since, until = period_bounds(calendar, today, today)
    waiting = _aged(calendar, store.open_rows(until, mailbox, service), "received_at", today)
    notes = bounce_notes(store, (row["id"] for _age, row in waiting))
    for _age, row in waiting:  # our mail to the citizen bounced: contact them otherwise
        row["bounce"] = notes.get(row["id"])
    return sorted(waiting, key=lambda item: -item[0])


def written_again(
    config: Config,
    store: Store,
    today: date,
    mailbox: str | None = None,
    service: str | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """The answered messages the citizen wrote again about by ``today`` (its end), unread
    by any agent, each with the working days since that new mail, earliest first. Listed
    apart from ``unanswered``: they are answered (the figures count their answer, once),
    yet wait for an agent. A new mail after ``today`` (a list as of an earlier day) is not
    in it, as the alerts of that day leave it out."""
    calendar = calendar_for(config.timezone)
    _since, until = period_bounds(calendar, today, today)
    rows = store.written_again_rows(mailbox, service, until)
    return _aged(calendar, rows, "written_again_at", today)


def _aged(
    calendar: WorkingCalendar, rows: list[dict[str, Any]], since: str, today: date
) -> list[tuple[int, dict[str, Any]]]:
    """Each row with the working days from its ``since`` column's moment to ``today``."""
    return [(calendar.delay_between(calendar.local_date(r[since]), today), r) for r in rows]
