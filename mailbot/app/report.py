"""The weekly (or monthly) delay report to management: tables, a chart and a CSV.

Presentation only: every figure comes from mailbot.core.indicators (compute_arrays and
message_delays); this module chooses periods, lays them out and builds the email.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from typing import Any

import numpy as np

from mailbot.config import Config
from mailbot.core.digests import WHY
from mailbot.core.indicators import Indicators, arrays_from_store, compute_arrays, message_delays
from mailbot.core.workdays import DEADLINE, WorkingCalendar
from mailbot.render.templates import OutgoingMail, Renderer, build_email
from mailbot.store import Store

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
        self.calendar = WorkingCalendar(timezone=config.timezone)
        self.complaint = config.routing.complaint_category if config.routing else "reclamation"

    def _bounds(self, start: date, end: date) -> tuple[datetime, datetime]:
        zone = self.calendar.zone
        return datetime.combine(start, time.min, zone), datetime.combine(
            end + timedelta(days=1), time.min, zone
        )

    def figures(
        self,
        start: date,
        end: date,
        as_of: date,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> Indicators:
        since, until = self._bounds(start, end)
        columns = self.store.indicator_arrays(since, until, self.complaint, mailbox, service)
        return compute_arrays(arrays_from_store(columns, self.calendar), as_of, self.calendar)

    def build(self, period: Period, as_of: date) -> Report:
        current = self.figures(period.start, period.end, as_of)
        previous_period = period.previous()
        previous = self.figures(previous_period.start, previous_period.end, as_of)
        month = self.figures(period.end.replace(day=1), period.end, as_of)
        rows = self._messages(period, as_of)
        tracked = [r for r in rows if not r["why"]]  # the others have their own section
        variables = {
            "period": {
                "kind": period.kind,
                "label": period.label,
                "start": period.start.isoformat(),
                "end": period.end.isoformat(),
            },
            "summary": self._summary(current),
            "qualepref": self._qualepref(current, previous, month),
            "breakdown": self._breakdown(period, as_of),
            "late": [r for r in tracked if r["replied"] == "" and r["delay"] > DEADLINE],
            "unanswered": [r for r in tracked if r["replied"] == "" and r["delay"] <= DEADLINE],
            "unacknowledged": [r for r in rows if r["why"]],
            "signature": self._signatures(current, rows),
            "activity": {
                "ars_sent": current.ars_sent,
                "transfers": current.transfers,
                "notice_share": _percent(current.transfer_notice_share),
                "reorientations": sum(1 for r in rows if r["reorient"]),
            },
            "prefecture": self.config.prefecture.model_dump(),
        }
        rendered = self.renderer.render(TEMPLATE, variables)
        png = self._chart(period, as_of)
        data = self._csv(rows)
        sender = next(iter(self.config.mailboxes.values())).address
        alternative = build_email(
            rendered,
            from_address=sender,
            from_name="mailbot — Préfecture de la Seine-Maritime",
            to=sender,
            message_id_domain=self.config.sender.message_id_domain,
            auto_submitted=True,
        )
        return Report(
            period,
            rendered.subject,
            self._package(alternative, png, data, period),
            rendered.html,
            png,
            data,
        )

    # -- parts ----------------------------------------------------------------------------
    def _messages(self, period: Period, as_of: date) -> list[dict[str, Any]]:
        since, until = self._bounds(period.start, period.end)
        found = self.store.indicator_rows(since, until)
        received = np.array(
            [self.calendar.local_date(r["received_at"]) for r in found], dtype="datetime64[D]"
        )
        replied = np.array(
            [
                self.calendar.local_date(r["replied_at"]) if r["replied_at"] else "NaT"
                for r in found
            ],
            dtype="datetime64[D]",
        )
        delays = message_delays(received, replied, as_of, self.calendar)
        rows = []
        for row, got, answer, delay in zip(found, received, replied, delays, strict=True):
            rows.append(
                {
                    "reference": row["reference"] or f"#{row['id']}",
                    "why": WHY.get(row.get("attention") or "", ""),
                    "mailbox": row["mailbox"],
                    "service": row["service"] or "",
                    "category": row["category"] or "",
                    "subject": row["subject"] or "",
                    "received": str(got),
                    "replied": "" if np.isnat(answer) else str(answer),
                    "delay": int(delay),
                    "within": (not np.isnat(answer)) and int(delay) <= DEADLINE,
                    "relances": int(row["relances"] or 0),
                    "signature": row["first_reply_complete"],
                    "reorient": row.get("reorient"),
                }
            )
        return rows

    def _summary(self, current: Indicators) -> str:
        rate = _percent(current.rate_within_5)
        mean = "-" if current.mean_delay is None else f"{current.mean_delay:.2f}".replace(".", ",")
        return (
            f"{current.received} messages reçus, {current.answered} répondus, "
            f"{current.overdue} en retard. Réponses dans les 5 jours ouvrés : {rate} "
            f"(objectif > 75 %). Délai moyen : {mean} jours ouvrés (objectif < 5 jours)."
        )

    @staticmethod
    def _qualepref(
        current: Indicators, previous: Indicators, month: Indicators
    ) -> list[dict[str, str]]:
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
                    "current": _format(getattr(current, name), kind),
                    "previous": _format(getattr(previous, name), kind),
                    "month": _format(getattr(month, name), kind),
                    "mark": "✔ atteint"
                    if figure.met
                    else "✘ non atteint"
                    if figure.met is not None
                    else "– sans objet",
                    "met": "yes" if figure.met else "no" if figure.met is not None else "n/a",
                }
            )
        return table

    def _breakdown(self, period: Period, as_of: date) -> list[dict[str, str]]:
        table = []
        groups = [("Boîte", name, {"mailbox": name}) for name in self.config.mailboxes]
        groups += [("Service", name, {"service": name}) for name in self.config.services]
        for kind, name, where in groups:
            figures = self.figures(period.start, period.end, as_of, **where)
            if figures.received == 0:
                continue
            table.append(
                {
                    "kind": kind,
                    "name": name,
                    "received": str(figures.received),
                    "answered": str(figures.answered),
                    "within": _format(figures.rate_within_5, "rate"),
                    "mean": _format(figures.mean_delay, "days"),
                    "overdue": str(figures.overdue),
                    "relances": str(figures.relances),
                }
            )
        return table

    @staticmethod
    def _signatures(current: Indicators, rows: list[dict[str, Any]]) -> dict[str, Any]:
        incomplete: dict[str, int] = {}
        for row in rows:
            if row["signature"] == 0:
                incomplete[row["service"] or "-"] = incomplete.get(row["service"] or "-", 0) + 1
        return {
            "rate": _percent(current.signature_completeness),
            "incomplete": [{"service": k, "count": v} for k, v in sorted(incomplete.items())],
        }

    def _chart(self, period: Period, as_of: date) -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        weeks = [week_period(period.end - timedelta(days=7 * k)) for k in range(11, -1, -1)]
        labels = [w.label.split("-")[1] for w in weeks]
        figures = [self.figures(w.start, w.end, as_of) for w in weeks]
        rates = [np.nan if f.rate_within_5 is None else 100 * f.rate_within_5 for f in figures]
        means = [np.nan if f.mean_delay is None else f.mean_delay for f in figures]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.2, 5.0), dpi=110, sharex=True)
        top.plot(labels, rates, marker="o", color="#000091", label="Réponses ≤ 5 j. ouvrés")
        top.axhline(75, color="#c9191e", linestyle="--", linewidth=1, label="Objectif 75 %")
        top.set_ylim(0, 100)
        top.set_ylabel("%")
        top.set_title("Réponses dans les 5 jours ouvrés (par semaine)", fontsize=10)
        top.legend(loc="lower left", fontsize=8, frameon=False)
        bottom.bar(labels, means, color="#6a6af4", label="Délai moyen")
        bottom.axhline(5, color="#c9191e", linestyle="--", linewidth=1, label="Objectif 5 jours")
        bottom.set_ylabel("jours ouvrés")
        bottom.set_title("Délai moyen de réponse (par semaine)", fontsize=10)
        bottom.legend(loc="upper left", fontsize=8, frameon=False)
        for axis in (top, bottom):
            axis.spines[["top", "right"]].set_visible(False)
            axis.grid(axis="y", color="#dddddd", linewidth=0.6)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return buffer.getvalue()

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
                    ("oui" if row["within"] else "non") if row["replied"] else "",
                    row["relances"],
                    "" if row["signature"] is None else ("oui" if row["signature"] else "non"),
                ]
            )
        return buffer.getvalue().encode("utf-8-sig")  # BOM: Excel opens the accents right

    @staticmethod
    def _package(
        alternative: OutgoingMail, png: bytes, data: bytes, period: Period
    ) -> OutgoingMail:
        """mixed[ related[ alternative[text, html], chart.png ], report.csv ]"""
        inner = alternative.message
        related = MIMEMultipart("related")
        related.attach(inner)
        image = MIMEImage(png, "png")
        image.add_header("Content-ID", "<chart@mailbot>")
        image.add_header("Content-Disposition", "inline", filename="graphique.png")
        related.attach(image)
        outer = MIMEMultipart("mixed")
        for name, value in inner.items():
            if not name.lower().startswith(("content-", "mime-version")):
                outer[name] = value
        for name in list(inner.keys()):
            if not name.lower().startswith(("content-", "mime-version")):
                del inner[name]
        outer.attach(related)
        attachment = MIMEApplication(data, "csv", name=f"delais-{period.label}.csv")
        attachment.replace_header(
            "Content-Type", f'text/csv; charset=utf-8; name="delais-{period.label}.csv"'
        )
        attachment.add_header(
            "Content-Disposition", "attachment", filename=f"delais-{period.label}.csv"
        )
        outer.attach(attachment)
        return OutgoingMail(outer)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %".replace(".", ",")


def _format(value: float | int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return _percent(float(value))
    return f"{float(value):.2f} j".replace(".", ",")
