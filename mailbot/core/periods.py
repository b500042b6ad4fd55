"""Report periods: ISO weeks (Monday to Sunday) and calendar months, labelled as the
reports print them (``2026-W47``, ``2026-11``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Period:
    kind: str  # "semaine" or "mois"
    label: str  # 2026-W47 or 2026-11
    start: date
    end: date  # inclusive

    def previous(self) -> Period:
        if self.kind == "semaine":
            return week_period(self.start - timedelta(days=7))
        return month_period(self.start - timedelta(days=1))


def week_period(day: date) -> Period:
    year, number, _ = day.isocalendar()
    start = date.fromisocalendar(year, number, 1)
    return Period("semaine", f"{year}-W{number:02d}", start, start + timedelta(days=6))


def parse_week(label: str) -> Period:
    year, number = label.split("-W")
    return week_period(date.fromisocalendar(int(year), int(number), 1))


def month_period(day: date) -> Period:
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return Period("mois", f"{start:%Y-%m}", start, following - timedelta(days=1))


def default_period(kind: str, today: date, week: str | None, month: str | None) -> Period:
    """The period a report covers: the given week or month, else the last complete one."""
    if kind == "weekly":
        return parse_week(week) if week else week_period(today - timedelta(days=7))
    if month:
        return month_period(date.fromisoformat(month + "-01"))
    return month_period(today.replace(day=1) - timedelta(days=1))
