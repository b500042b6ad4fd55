"""The indicators of one service (or all) over a week or a month, as the console's indicators
page shows them: the weekly report's Qual-e-pref table and 12-week chart, and every figure
of ``mailbot indicators``, computed by the same functions (``app/indicators``, ``app/report``)
so that the page, the CLI and the report can never disagree.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from mailbot.app import indicators
from mailbot.app.report import (
    breakdown_table,
    chart_png,
    format_value,
    qualepref_table,
    report_as_of,
    twelve_weeks,
)
from mailbot.config import Config
from mailbot.core.indicators import Figure, Indicators
from mailbot.core.periods import Period, month_period, parse_week, week_period
from mailbot.core.workdays import WorkingCalendar
from mailbot.errors import RequestError
from mailbot.store import Store
from mailbot.store import console as stored

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
CSV_COLUMNS = ("indicateur", "valeur", "objectif", "atteint")
WEEKS_OFFERED = 26
# The first year a period may be asked for: before mailbot, and far enough from date's
# year 1 for the previous period and the 12 weeks before to be dates.
FIRST_YEAR = 2000
# The figures of `mailbot indicators`, in French, and how each reads (rate, days, count).
LABELS: dict[str, tuple[str, str]] = {
    "received": ("Messages reçus", "count"),
    "answered": ("Messages répondus", "count"),
    "pending": ("Sans réponse, dans le délai", "count"),
    "overdue": ("Sans réponse, délai dépassé", "count"),
    "rate_within_5": ("Réponses dans les 5 jours ouvrés", "rate"),
    "mean_delay": ("Délai moyen de réponse", "days"),
    "median_delay": ("Délai médian de réponse", "days"),
    "complaints": ("Réclamations reçues", "count"),
    "complaint_rate_within_5": ("Réclamations répondues dans les 5 jours ouvrés", "rate"),
    "complaint_mean_delay": ("Délai moyen de réponse aux réclamations", "days"),
    "complaint_median_delay": ("Délai médian de réponse aux réclamations", "days"),
    "ars_sent": ("Accusés de réception envoyés", "count"),
    "transfers": ("Messages transférés à un service", "count"),
    "transfer_notice_share": ("Transferts annoncés à l'usager", "rate"),
    "relances": ("Relances des usagers", "count"),
    "signature_completeness": ("Réponses à la signature complète", "rate"),
}
MONTHS_OFFERED = 12


@dataclass(frozen=True)
class Week:
    """One point of the 12-week chart (its data table, for those who cannot see it)."""

    label: str
    start: date
    end: date
    received: int
    rate_within_5: float | None
    mean_delay: float | None


@dataclass(frozen=True)
class Dashboard:
    period: Period
    service: str | None  # None: every service
    as_of: date
    current: Indicators
    qualepref: list[dict[str, str]]
    weeks: list[Week]
    per_service: list[dict[str, str]]  # the report's rows per service, with mail
    replies: tuple[int, int] = (0, 0)  # agents' replies queued in the period, edited ones

    def figures(self) -> list[Figure]:
        return self.current.figures()


def shown(figure: Figure) -> tuple[str, str]:
    """A figure's French label and its value as the report writes it (``66,7 %``, ``2,00 j``)."""
    label, kind = LABELS.get(figure.name, (figure.name, "count"))
    if kind == "count" or figure.value is None:
        return label, "-" if figure.value is None else str(figure.value)
    return label, format_value(figure.value, kind)


def parse_period(text: str, today: date) -> Period:
    """``2026-W47`` (an ISO week) or ``2026-11`` (a month) of a year from ``FIRST_YEAR`` to
    the year after ``today``'s; RequestError otherwise.

    The page also shows the previous period and the 12 weeks before: with any 4-digit year,
    ``9999-12``'s end or ``0001-W01``'s previous week is no ``date`` (OverflowError, a 500
    instead of a 400). The year after today's: in late December, the picker's own week may
    be next year's W01.
    """
    text = text.strip()
    week, month = _WEEK.match(text), _MONTH.match(text)
    found = week or month
    last_year = today.year + 1
    if found and not FIRST_YEAR <= int(found.group(1)) <= last_year:
        raise RequestError("period", text, f"expected a year from {FIRST_YEAR} to {last_year}")
    try:
        if week:
            return parse_week(text)
        if month:
            return month_period(date(int(month.group(1)), int(month.group(2)), 1))
    except (ValueError, OverflowError):  # overflow: 9999-12, allowed only in the year 9998
        pass
    raise RequestError("period", text, "expected a week (2026-W47) or a month (2026-11)")


def default_period(today: date) -> Period:
    """The last complete ISO week, as the weekly report."""
    return week_period(today - timedelta(days=7))


def offered_periods(today: date) -> list[Period]:
    """The periods a picker offers: this week and the 25 before, this month and the 11
    before, newest first."""
    weeks = [week_period(today - timedelta(days=7 * k)) for k in range(WEEKS_OFFERED)]
    months = [month_period(today)]
    for _ in range(MONTHS_OFFERED - 1):
        months.append(month_period(months[-1].start - timedelta(days=1)))
    return weeks + months


def build(
    config: Config,
    store: Store,
    period: Period,
    today: date,
    service: str | None,
    breakdown: Sequence[str] = (),
) -> Dashboard:
    """The figures of ``period`` for ``service``, as of the report's day (``report_as_of``),
    and the report's row for each service of ``breakdown`` that received mail."""
    figures = functools.partial(indicators.figures, config, store)
    where = {} if service is None else {"service": service}
    as_of = report_as_of(period, today)
    current = figures(period.start, period.end, as_of, **where)
    previous_period = period.previous()
    previous = figures(previous_period.start, previous_period.end, as_of, **where)
    month = figures(period.end.replace(day=1), period.end, as_of, **where)
    weeks = [
        Week(week.label, week.start, week.end, f.received, f.rate_within_5, f.mean_delay)
        for week, f in twelve_weeks(config, store, period.end, as_of, service)
    ]
    groups = [("Service", name, {"service": name}) for name in breakdown]
    per_service = breakdown_table(figures, groups, period, as_of)
    table = qualepref_table(current, previous, month)
    since, until = indicators.period_bounds(
        WorkingCalendar(timezone=config.timezone), period.start, period.end
    )
    scope = [service] if service is not None else list(breakdown)
    replies = stored.agent_replies(store.engine, since, until, scope)
    return Dashboard(period, service, as_of, current, table, weeks, per_service, replies)


def chart(config: Config, store: Store, period: Period, today: date, service: str | None) -> bytes:
    """The PNG chart of the 12 weeks up to ``period``'s end (the report's chart)."""
    as_of = report_as_of(period, today)
    return chart_png(twelve_weeks(config, store, period.end, as_of, service))


def figures_csv(dashboard: Dashboard) -> bytes:
    """The figures as ``mailbot indicators --format csv`` gives them (same names, same
    values, rates as fractions), for a French spreadsheet: ``;``, a BOM, decimals with a
    comma (``0,75``: Excel and LibreOffice in French read ``0.75`` as text, ``2.5`` as a
    date), and first lines saying which period, service and day they are. The command's
    CSV keeps its point: it is for programs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow(["periode", dashboard.period.label, "", ""])
    writer.writerow(["du", dashboard.period.start.isoformat(), "", ""])
    writer.writerow(["au", dashboard.period.end.isoformat(), "", ""])
    writer.writerow(["situation_au", dashboard.as_of.isoformat(), "", ""])
    writer.writerow(["service", dashboard.service or "tous", "", ""])
    for figure in dashboard.figures():
        writer.writerow(_figure_row(figure))
    return buffer.getvalue().encode("utf-8-sig")


def _figure_row(figure: Figure) -> Sequence[str]:
    value = figure.value
    shown = (
        "" if value is None else _french_decimal(value) if isinstance(value, float) else str(value)
    )
    met = "" if figure.met is None else ("oui" if figure.met else "non")
    return [figure.name, shown, figure.target or "", met]


def _french_decimal(value: float) -> str:
    """``value`` exactly (``repr``'s digits, which read back as the same float), with a
    decimal comma and never an exponent (``1e-06`` → ``0,000001``): what a spreadsheet in
    French reads as a number."""
    return format(Decimal(repr(value)), "f").replace(".", ",")
