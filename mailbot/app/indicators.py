"""The response-time indicators over a period, and the messages still waiting for a reply:
what ``mailbot indicators``, ``mailbot unanswered``, the report and the console show."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from mailbot.config import Config
from mailbot.core.indicators import Indicators, arrays_from_store, compute_arrays
from mailbot.core.workdays import WorkingCalendar
from mailbot.store import Store

UNANSWERED_LOOKBACK_DAYS = 365


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
    calendar = WorkingCalendar(timezone=config.timezone)
    since, until = period_bounds(calendar, start, end)
    columns = store.indicator_arrays(since, until, config.complaint_category, mailbox, service)
    return compute_arrays(arrays_from_store(columns, calendar), as_of, calendar)


def unanswered(
    config: Config,
    store: Store,
    today: date,
    mailbox: str | None = None,
    service: str | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """The citizens' messages of the last year with no reply, with their age in working
    days, oldest first."""
    calendar = WorkingCalendar(timezone=config.timezone)
    since, until = period_bounds(calendar, today - timedelta(days=UNANSWERED_LOOKBACK_DAYS), today)
    rows = store.indicator_rows(since, until, mailbox, service)
    waiting = [
        (calendar.delay_between(calendar.local_date(r["received_at"]), today), r)
        for r in rows
        if r["replied_at"] is None
    ]
    return sorted(waiting, key=lambda item: -item[0])
