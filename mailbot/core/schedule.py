"""Schedules written in rules.yaml: the one parser, used by the configuration's validation,
the worker's scheduler and the weekly report's "is it due" test.

A schedule that passes ``mailbot check`` must never crash the worker later, so every
schedule is parsed here, at load time, into the APScheduler trigger the worker will use.

Two forms are accepted for a weekly schedule:

* ``"<day> HH:MM"`` such as ``"mon 08:00"`` (days ``mon``…``sun``; a list ``mon,thu`` or a
  range ``mon-fri`` also works);
* a standard 5-field crontab ``"minute hour day-of-month month day-of-week"`` such as
  ``"0 8 * * mon"``, with day *names* in the day-of-week field: APScheduler 3 counts
  weekday numbers from Monday = 0 while crontab counts from Sunday = 0, so a number there
  would silently mean another day, and is refused; so is restricting both the day of the
  month and the day of the week (Vixie cron ORs them, APScheduler ANDs them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING

from mailbot.errors import ScheduleError

if TYPE_CHECKING:  # APScheduler is imported when a trigger is built: not by `poll --once`
    from apscheduler.triggers.cron import CronTrigger

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_SPEC = re.compile(rf"^{_DAYS}(?:-{_DAYS})?(?:,{_DAYS}(?:-{_DAYS})?)*$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DAY_FORM = 'expected "<day> HH:MM" such as "mon 08:00"'
CRONTAB_FORM = 'or a 5-field crontab such as "0 8 * * mon"'
TIME_FORM = 'expected "HH:MM" such as "08:30"'


def parse_time(text: str) -> time:
    """``"08:30"`` → 08:30. Two-digit hours and minutes, 24-hour clock."""
    match = _CLOCK.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ScheduleError(f"{TIME_FORM} (got {text!r})")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the APScheduler cron fields, and what the user wrote."""

    text: str
    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str

    def trigger(self, timezone: tzinfo | str) -> CronTrigger:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger(
            minute=self.minute,
            hour=self.hour,
            day=self.day,
            month=self.month,
            day_of_week=self.day_of_week,
            timezone=timezone,
        )

    def first_in_week(self, day: date, zone: tzinfo) -> datetime | None:
        """The schedule's first instant in the Monday-to-Sunday week of ``day``, if any."""
        monday = day - timedelta(days=day.weekday())
        start = datetime.combine(monday, time.min, zone)
        found = self.trigger(zone).get_next_fire_time(None, start)
        if found is None or found >= start + timedelta(days=7):
            return None
        return found  # type: ignore[no-any-return]


def parse_weekly(text: str) -> Schedule:
    """``"mon 08:00"`` or ``"0 8 * * mon"`` → Schedule; ScheduleError naming both forms."""
    if not isinstance(text, str):
        raise ScheduleError(f"{DAY_FORM}, {CRONTAB_FORM} (got {text!r})")
    fields = text.lower().split()
    if len(fields) == 5:
        return _crontab(text, fields)
    if len(fields) == 2 and _DAY_SPEC.match(fields[0]):
        try:
            clock = parse_time(fields[1])
        except ScheduleError:
            pass
        else:
            return Schedule(text, str(clock.minute), str(clock.hour), "*", "*", fields[0])
    raise ScheduleError(f"{DAY_FORM}, {CRONTAB_FORM} (got {text!r})")


def _crontab(text: str, fields: list[str]) -> Schedule:
    minute, hour, day, month, day_of_week = fields
    if re.search(r"\d", day_of_week):
        raise ScheduleError(
            f"crontab day-of-week must use day names such as mon or mon-fri, not numbers"
            f" (they mean different days in different cron dialects) (got {text!r})"
        )
    if day != "*" and day_of_week != "*":
        raise ScheduleError(
            "crontab: restrict the day of the month or the day of the week, not both"
            f" (cron dialects disagree on what that means) (got {text!r})"
        )
    schedule = Schedule(text, minute, hour, day, month, day_of_week)
    try:
        schedule.trigger("UTC")
    except ValueError as exc:
        raise ScheduleError(f"invalid crontab: {exc} (got {text!r})") from None
    return schedule
