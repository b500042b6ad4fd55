"""The weekly (or monthly) delay report to management: tables, a chart and a CSV.

Presentation only: every figure comes from mailbot.core.indicators (compute_arrays and
message_delays); this module chooses periods, lays them out and builds the email.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from mailbot.app import indicators, no_reply, quarantine
from mailbot.app.outgoing import Queued, enqueue
from mailbot.config import Config
from mailbot.core.digests import WHY
from mailbot.core.indicators import Indicators, answered_by, message_delays
from mailbot.core.periods import Period, week_period
from mailbot.core.schedule import parse_weekly
from mailbot.core.statuses import OutboxKind
from mailbot.core.workdays import DEADLINE, calendar_for
from mailbot.errors import ConfigError
from mailbot.mail.compose import Composer, OutgoingMail
from mailbot.render.chart import weekly_chart
from mailbot.render.templates import Renderer
from mailbot.store import Store, Transaction

log = logging.getLogger(__name__)

TEMPLATE = "rapport-delais"
CSV_COLUMNS = (
    "Référence",
    "Boîte",
    "Service",
    "Catégorie",
    "Reçu le",
    "Répondu le",
    "Délai (jours ouvrés)",
    "Dans les 5 jours ouvrés",
    "Relances",
    "Signature complète",
)


@dataclass(frozen=True)
class Report:
    period: Period
    subject: str
    mail: OutgoingMail
    html: str
    png: bytes
    csv: bytes


class ReportBuilder:
    def __init__(self, config: Config, store: Store, renderer: Renderer) -> None:
        self.config = config
        self.store = store
        self.renderer = renderer
        self.composer = Composer.from_config(config)
        self.calendar = calendar_for(config.timezone)
        # figures(start, end, as_of, mailbox=None, service=None): the indicators' own.
        self.figures = functools.partial(indicators.figures, config, store)

    def build(self, period: Period, as_of: date) -> Report:
        # The period, the one before, the month so far and the chart's twelve weeks: the
        # figures of each from ONE read of the messages (figures_of_periods).
        before = period.previous()
        weeks = weeks_to(period.end)
        spans = [(period.start, period.end), (before.start, before.end)]
        spans += [(period.end.replace(day=1), period.end)]
        found = indicators.figures_of_periods(
            self.config, self.store, spans + [(w.start, w.end) for w in weeks], as_of
        )
        current, previous, month = found[:3]
        rows = self._messages(period, as_of)
        tracked = [r for r in rows if not r["why"]]  # the others have their own section
        late = [r for r in tracked if r["replied"] == "" and r["delay"] > DEADLINE]
        unanswered = [r for r in tracked if r["replied"] == "" and r["delay"] <= DEADLINE]
        shown = self._oldest_first(late + unanswered)[: self.config.reports.weekly.listed]
        variables = {
            "period": {
                "kind": period.kind,
                "label": period.label,
                "start": period.start.strftime("%d/%m/%Y"),  # French order, as the weeks'
                "end": period.end.strftime("%d/%m/%Y"),
            },
            "summary": self._summary(current),
            "qualepref": qualepref_table(current, previous, month),
            "breakdown": self._breakdown(period, as_of),
            "weeks": chart_figures(list(zip(weeks, found[3:], strict=True))),
            "late": [self._named(r) for r in shown if r["delay"] > DEADLINE],
            "unanswered": [self._named(r) for r in shown if r["delay"] <= DEADLINE],
            "waiting": {"late": len(late), "unanswered": len(unanswered), "listed": len(shown)},
            "unacknowledged": [self._named(r) for r in rows if r["why"]],
            "excluded": [
                self._named(r)
                for r in no_reply.excluded_rows(
                    self.config,
                    self.store,
                    *indicators.period_bounds(self.calendar, period.start, period.end),
                    self.calendar.zone,
                )
            ],
            "passed_over": self._passed_over(period),
            "signature": self._signatures(current, rows),
            "activity": {
                "ars_sent": current.ars_sent,
                "transfers": current.transfers,
                "notice_share": _percent(current.transfer_notice_share),
                "reorientations": sum(1 for r in rows if r["reorient"]),
            },
            "prefecture": self.config.prefecture.model_dump(),
            "subjects": self.config.reports.weekly.subjects,
        }
        rendered = self.renderer.render(TEMPLATE, variables)
        png = chart_png(list(zip(weeks, found[3:], strict=True)))
        data = self._csv(rows)
        mail = self.composer.report(rendered, png, data, f"delais-{period.label}.csv")
        return Report(period, rendered.subject, mail, rendered.html, png, data)

    # -- parts ----------------------------------------------------------------------------
    @staticmethod
    def _oldest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The longest waits first; among equal waits, the order received (a stable sort)."""
        return sorted(rows, key=lambda row: -row["delay"])

    def _messages(self, period: Period, as_of: date) -> list[dict[str, Any]]:
        """The period's messages as they stood on ``as_of``: those received by then, with
        the replies and relances made by then, as the figures count them."""
        last = min(period.end, as_of)
        since, until = indicators.period_bounds(self.calendar, period.start, last)
        found = self.store.indicator_listing(since, until)
        later = indicators.relances_after(self.store, self.calendar, as_of, since, until)
        relanced_later = later.after_per_message(as_of)
        seconds = np.array([r["received"] for r in found], dtype=np.int64)
        answers = np.array([-1 if r["replied"] is None else r["replied"] for r in found])
        received = self.calendar.local_dates_from_epoch(seconds)
        replied = np.full(len(found), np.datetime64("NaT"), dtype="datetime64[D]")
        replied[answers >= 0] = self.calendar.local_dates_from_epoch(answers[answers >= 0])
        answered = answered_by(replied, as_of)  # a reply after ``as_of`` is not listed
        delays = message_delays(received, replied, as_of, self.calendar).tolist()
        # Plain Python values from here on: a numpy scalar per row and field is slow.
        days, answers_on = received.astype(str).tolist(), replied.astype(str).tolist()
        rows = []
        for row, got, answer, is_answered, delay in zip(
            found, days, answers_on, answered.tolist(), delays, strict=True
        ):
            rows.append(
                {
                    "reference": row["reference"] or f"#{row['id']}",
                    "why": WHY.get(row["attention"] or "", ""),
                    "mailbox": row["mailbox"],
                    "service": row["service"] or "",
                    "category": row["category"] or "",
                    "subject": row["subject"] or "",
                    "received": got,
                    "replied": answer if is_answered else "",
                    "delay": delay,
                    "within": is_answered and delay <= DEADLINE,
                    "overdue": not is_answered and delay > DEADLINE,
                    "relances": int(row["relances"] or 0) - relanced_later.get(row["id"], 0),
                    "signature": row["first_reply_complete"] if is_answered else None,
                    "reorient": row["reorient"],
                }
            )
        return rows

    def _passed_over(self, period: Period) -> dict[str, Any]:
        """The mail passed over by the end of the period that still waits for a person (no
        retry recorded it, nobody dismissed it), whatever week it was passed over in: no
        row records it, so no figure, table or CSV line counts it. How many, and the
        oldest ones (``reports.weekly.listed``): its mailbox, day, ``P7`` and why in
        short — what `mailbot quarantine list` shows, no traceback."""
        _, until = indicators.period_bounds(self.calendar, period.start, period.end)
        found = quarantine.passed_over(self.store, until=until)[::-1]  # oldest first
        listed = [
            {
                "reference": passed.id,
                "mailbox": passed.mailbox or "?",
                "day": self.calendar.local_date(passed.at).strftime("%d/%m/%Y"),
                "why": passed.short_why(),
            }
            for passed in found[: self.config.reports.weekly.listed]
        ]
        return {"count": len(found), "listed": listed}

    def _summary(self, current: Indicators) -> str:
        rate = _percent(current.rate_within_5)
        mean = "-" if current.mean_delay is None else f"{current.mean_delay:.2f}".replace(".", ",")
        received = plural(current.received, "message reçu", "messages reçus")
        return (
            f"{received}, {plural(current.answered, 'répondu', 'répondus')}, "
            f"{current.overdue} en retard. Réponses dans les 5 jours ouvrés : {rate} "
            f"(objectif > 75 %). Délai moyen : {mean} jours ouvrés (objectif < 5 jours)."
        )

    def _breakdown(self, period: Period, as_of: date) -> list[dict[str, str]]:
        """The table per mailbox and per service, each named as a manager knows it: the
        mailbox's address, the service's name in rules.yaml (« Direction des migrations et
        de l'intégration », not its key ``etrangers``); the CSV keeps the keys."""
        groups = [("Boîte", name, {"mailbox": name}) for name in self.config.mailboxes]
        groups += [("Service", name, {"service": name}) for name in self.config.services]
        table = breakdown_table(self.figures, groups, period, as_of)
        return [
            {**row, "name": self._mailbox_label(row["name"])}
            if row["kind"] == "Boîte"
            else {**row, "name": self._service_label(row["name"])}
            for row in table
        ]

    def _service_label(self, service: str) -> str:
        known = self.config.services.get(service)
        return known.name if known is not None else service

    def _mailbox_label(self, mailbox: str) -> str:
        known = self.config.mailboxes.get(mailbox)
        return known.address if known is not None else mailbox

    def _named(self, row: dict[str, Any]) -> dict[str, Any]:
        """A listed message's row for the mail's body: its service and mailbox by their
        names (a copy: the CSV, built from the same rows, keeps the keys)."""
        named = dict(row)
        if not self.config.reports.weekly.subjects:
            named.pop("subject", None)  # not in the report's data at all, not merely unshown
        if "service" in row:
            named["service"] = self._service_label(row["service"]) if row["service"] else "-"
        if "mailbox" in row:
            named["mailbox"] = self._mailbox_label(row["mailbox"])
        return named

    def _signatures(self, current: Indicators, rows: list[dict[str, Any]]) -> dict[str, Any]:
        incomplete: dict[str, int] = {}
        for row in rows:
            if row["signature"] == 0:
                incomplete[row["service"] or "-"] = incomplete.get(row["service"] or "-", 0) + 1
        return {
            "rate": _percent(current.signature_completeness),
            "incomplete": [
                {"service": self._service_label(k), "count": v}
                for k, v in sorted(incomplete.items())
            ],
        }

    @staticmethod
    def _csv(rows: list[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row["reference"],
                    row["mailbox"],
                    row["service"],
                    row["category"],
                    row["received"],
                    row["replied"],
                    row["delay"] if row["replied"] else "",
                    _within_cell(row),
                    row["relances"],
                    "" if row["signature"] is None else ("oui" if row["signature"] else "non"),
                ]
            )
        return buffer.getvalue().encode("utf-8-sig")  # BOM: Excel opens the accents right


def qualepref_table(
    current: Indicators, previous: Indicators, month: Indicators
) -> list[dict[str, str]]:
    """The Qual-e-pref rows (label, target, this period, the previous one, the month so far,
    a mark): the report's table, which the console's indicators page shows as it is."""
    table = []
    for name, label, kind in (
        ("rate_within_5", "Réponses dans les 5 jours ouvrés", "rate"),
        ("mean_delay", "Délai moyen de réponse", "days"),
        ("complaint_rate_within_5", "Réclamations répondues dans les 5 jours ouvrés", "rate"),
        ("complaint_mean_delay", "Délai moyen de réponse aux réclamations", "days"),
    ):
        figure = next(f for f in current.figures() if f.name == name)
        table.append(
            {
                "label": label,
                "target": figure.target or "",
                "current": format_value(getattr(current, name), kind),
                "previous": format_value(getattr(previous, name), kind),
                "month": format_value(getattr(month, name), kind),
                "mark": "✔ atteint"
                if figure.met
                else "✘ non atteint"
                if figure.met is not None
                else "– sans objet",
                "met": "yes" if figure.met else "no" if figure.met is not None else "n/a",
            }
        )
    return table


def breakdown_table(
    figures: Callable[..., Indicators],
    groups: Sequence[tuple[str, str, dict[str, str]]],
    period: Period,
    as_of: date,
) -> list[dict[str, str]]:
    """One row per group (kind, name, filter: ``{"service": "permis"}``) that received mail
    in the period: received, answered, within 5 wd, mean delay, overdue, relances. The
    report's table per mailbox and per service, and the console's per service."""
    table = []
    for kind, name, where in groups:
        found = figures(period.start, period.end, as_of, **where)
        if found.received == 0:
            continue
        table.append(
            {
                "kind": kind,
                "name": name,
                "received": str(found.received),
                "answered": str(found.answered),
                "within": format_value(found.rate_within_5, "rate"),
                "mean": format_value(found.mean_delay, "days"),
                "overdue": str(found.overdue),
                "relances": str(found.relances),
            }
        )
    return table


def report_as_of(period: Period, today: date) -> date:
    """The day a period's figures are taken as of: a week after its end (replies to its
    last mails can still come in time), or today if sooner."""
    return min(today, period.end + timedelta(days=7))


def weeks_to(end: date) -> list[Period]:
    """The 12 ISO weeks up to the one holding ``end``, oldest first: the chart's."""
    return [week_period(end - timedelta(days=7 * k)) for k in range(11, -1, -1)]


def twelve_weeks(
    config: Config, store: Store, end: date, as_of: date, service: str | None = None
) -> list[tuple[Period, Indicators]]:
    """The 12 ISO weeks up to the one holding ``end``, oldest first, with their figures (the
    indicators' own, from one read of the messages): the report's chart."""
    weeks = weeks_to(end)
    spans = [(week.start, week.end) for week in weeks]
    figures = indicators.figures_of_periods(config, store, spans, as_of, service)
    return list(zip(weeks, figures, strict=True))


def chart_png(weeks: Sequence[tuple[Period, Indicators]]) -> bytes:
    """The chart of the rate within 5 working days and the mean delay, week by week."""
    return weekly_chart(
        [week.label.split("-")[1] for week, _ in weeks],
        [np.nan if f.rate_within_5 is None else 100 * f.rate_within_5 for _, f in weeks],
        [np.nan if f.mean_delay is None else f.mean_delay for _, f in weeks],
    )


def chart_figures(weeks: Sequence[tuple[Period, Indicators]]) -> list[dict[str, str]]:
    """The chart's figures in words, week by week: the picture's text alternative (a mail
    client that blocks images, the text part, a screen reader)."""
    return [
        {
            "label": week.label,
            "start": week.start.strftime("%d/%m/%Y"),
            "end": week.end.strftime("%d/%m/%Y"),
            "received": plural(f.received, "reçu", "reçus"),
            "within": format_value(f.rate_within_5, "rate"),
            "mean": format_value(f.mean_delay, "days"),
        }
        for week, f in weeks
    ]


def plural(count: int, one: str, many: str) -> str:
    """``count`` and its noun, agreed as French agrees it: singular for 0 and 1."""
    return f"{count} {one if count <= 1 else many}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %".replace(".", ",")


def format_value(value: float | int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return _percent(float(value))
    return f"{float(value):.2f} j".replace(".", ",")


# --------------------------------------------------------------------------- sending


def check_recipients(config: Config, source: str, recipients: Sequence[str] = ()) -> list[str]:
    """The report's recipients (default: reports.weekly.to); each must be a configured
    address, since a report is mailbot writing to the prefecture's staff."""
    found = list(recipients) or list(config.reports.weekly.to)
    if not found:
        raise ConfigError(source, "reports.weekly.to", "no recipient configured")
    for recipient in found:
        if recipient.lower() not in config.configured_recipients:
            raise ConfigError(
                source, "reports.weekly.to", f"{recipient} is not a configured address"
            )
    return found


def queue_report(
    tx: Transaction, config: Config, report: Report, recipients: Sequence[str]
) -> list[int]:
    """One copy of the report for each recipient; their outbox ids."""
    queued = []
    for recipient in recipients:
        report.mail.readdress(recipient)
        mail = Queued.of(OutboxKind.REPORT, report.mail, recipient, config.sender.envelope_from)
        queued += enqueue(tx, None, [mail])
    return queued


def send_report(
    config: Config, store: Store, report: Report, recipients: Sequence[str]
) -> list[int]:
    """Queue a report built on demand (``mailbot report --send``)."""
    with store.transaction() as tx:
        return queue_report(tx, config, report, recipients)


def report_due(now: datetime, cron: str, zone: Any) -> bool:
    """Whether this week's report time (``"mon 08:00"``, or the first time a crontab names
    in the week) has passed: the week before is then due."""
    local = now.astimezone(zone)
    scheduled = parse_weekly(cron).first_in_week(local.date(), zone)
    return scheduled is not None and local >= scheduled


CATCH_UP_WEEKS = 4  # missed weeks a start sends at most; older ones: `mailbot report weekly`
_WEEKLY_CLAIM = "report-weekly-"


def send_weekly_report(
    config: Config, store: Store, renderer: Renderer, now: datetime
) -> str | None:
    """Queue each complete week's report once, ever: the claim and the queued mails commit
    together, so a restart neither skips nor repeats a week. A worker down for several
    weeks sends every week missed since the last report sent (the management's series has
    no hole), at most ``CATCH_UP_WEEKS``; a first start, only last week. Returns the last
    week queued."""
    calendar = calendar_for(config.timezone)
    if not report_due(now, config.reports.weekly.cron, calendar.zone):
        return None
    recipients = list(config.reports.weekly.to)
    if not recipients:
        return None
    today = now.astimezone(calendar.zone).date()
    queued = None
    for period in _weeks_due(store, week_period(today - timedelta(days=7))):
        report = ReportBuilder(config, store, renderer).build(period, today)
        with store.transaction() as tx:
            if not tx.claim_once(f"{_WEEKLY_CLAIM}{period.label}"):
                continue
            queue_report(tx, config, report, recipients)
        log.info("weekly report queued", extra={"week": period.label})
        queued = period.label
    return queued


def _weeks_due(store: Store, last: Period) -> list[Period]:
    """The weeks after the last one reported, up to ``last`` (the last complete week)."""
    with store.transaction() as tx:
        reported = tx.last_claim(_WEEKLY_CLAIM)
    weeks = [last]
    while reported is not None and len(weeks) <= CATCH_UP_WEEKS:
        before = week_period(weeks[-1].start - timedelta(days=7))
        if before.label <= reported:
            break
        weeks.append(before)
    if len(weeks) > CATCH_UP_WEEKS:
        skipped = weeks.pop()
        log.warning(
            "weekly reports missed: only the last weeks are sent",
            extra={"sent": CATCH_UP_WEEKS, "last_missed_not_sent": skipped.label},
        )
    return weeks[::-1]


def _within_cell(row: dict[str, Any]) -> str:
    """« oui »/« non » for an answered mail; « non » too for one left unanswered past the
    deadline, as the rate counts it (answered late or overdue: its denominator), so the CSV's
    oui/(oui+non) gives the report's rate; blank while the deadline has not passed."""
    if row["replied"]:
        return "oui" if row["within"] else "non"
    return "non" if row["overdue"] else ""
