"""The Qual-e-pref email indicators, as pure functions over per-message facts.

Every figure is defined here once (and in the README); the weekly report and the CLI only
present what this module computes. Delays are working days (mailbot.workdays), arrays are
numpy so a year of history is computed in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.workdays import DEADLINE, WorkingCalendar

TARGET_RATE = 0.75  # answered within 5 working days: more than 75 %
TARGET_MEAN = 5.0  # mean delay: less than 5 days


@dataclass(frozen=True)
class MessageFacts:
    """One citizen's message, as the indicators need it (no body, no address)."""

    reference: str
    mailbox: str
    service: str | None
    category: str | None
    received: date  # local date of receipt (Europe/Paris)
    replied: date | None  # local date of the first substantive reply
    automatic_reply: bool = False
    transferred: bool = False
    notice_sent: bool = False
    ar_sent: bool = False
    relances: int = 0
    signature_complete: bool | None = None  # None: no checked reply


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | int | None
    target: str | None = None
    met: bool | None = None


@dataclass(frozen=True)
class Indicators:
    received: int
    answered: int
    pending: int
    overdue: int
    rate_within_5: float | None
    mean_delay: float | None
    median_delay: float | None
    complaints: int
    complaint_rate_within_5: float | None
    complaint_mean_delay: float | None
    complaint_median_delay: float | None
    ars_sent: int
    transfers: int
    transfer_notice_share: float | None
    relances: int
    signature_completeness: float | None

    def figures(self) -> list[Figure]:
        rate, mean = self.rate_within_5, self.mean_delay
        c_rate, c_mean = self.complaint_rate_within_5, self.complaint_mean_delay
        return [
            Figure("received", self.received),
            Figure("answered", self.answered),
            Figure("pending", self.pending),
            Figure("overdue", self.overdue),
            Figure("rate_within_5", rate, "> 75 %", None if rate is None else rate > TARGET_RATE),
            Figure("mean_delay", mean, "< 5 j", None if mean is None else mean < TARGET_MEAN),
            Figure("median_delay", self.median_delay),
            Figure("complaints", self.complaints),
            Figure(
                "complaint_rate_within_5",
                c_rate,
                "> 75 %",
                None if c_rate is None else c_rate > TARGET_RATE,
            ),
            Figure(
                "complaint_mean_delay",
                c_mean,
                "< 5 j",
                None if c_mean is None else c_mean < TARGET_MEAN,
            ),
            Figure("complaint_median_delay", self.complaint_median_delay),
            Figure("ars_sent", self.ars_sent),
            Figure("transfers", self.transfers),
            Figure("transfer_notice_share", self.transfer_notice_share),
            Figure("relances", self.relances),
            Figure("signature_completeness", self.signature_completeness),
        ]


def facts_from_rows(
    rows: Sequence[Mapping[str, Any]], calendar: WorkingCalendar
) -> list[MessageFacts]:
    """Rows of Store.indicator_rows → facts with local dates."""
    return [
        MessageFacts(
            reference=row["reference"] or "",
            mailbox=row["mailbox"],
            service=row["service"],
            category=row["category"],
            received=calendar.local_date(row["received_at"]),
            replied=calendar.local_date(row["replied_at"]) if row["replied_at"] else None,
            automatic_reply=bool(row.get("automatic_reply")),
            transferred=row["transferred"] is not None,
            notice_sent=row["ar_status"] == "sent",
            ar_sent=row["ar_status"] == "sent",
            relances=int(row["relances"] or 0),
            signature_complete=row.get("signature_complete"),
        )
        for row in rows
    ]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _delay_stats(
    delays: npt.NDArray[np.int64], answered: npt.NDArray[np.bool_], late_unanswered: int
) -> tuple[float | None, float | None, float | None]:
    """Rate within 5 wd (denominator: answered + unanswered past deadline), mean, median."""
    answered_delays = delays[answered]
    within = int(np.count_nonzero(answered_delays <= DEADLINE))
    rate = _share(within, answered_delays.size + late_unanswered)
    if answered_delays.size == 0:
        return rate, None, None
    return rate, float(answered_delays.mean()), float(np.median(answered_delays))


def compute(
    facts: Sequence[MessageFacts], today: date, calendar: WorkingCalendar, complaint: str
) -> Indicators:
    """The indicators for these messages, as of ``today`` (for pending vs overdue)."""
    n = len(facts)
    received = np.array([f.received for f in facts], dtype="datetime64[D]")
    replied = np.array([f.replied or date.max for f in facts], dtype="datetime64[D]")
    answered = np.array([f.replied is not None for f in facts], dtype=bool)
    today_d = np.datetime64(today, "D")
    one = np.timedelta64(1, "D")
    ends = np.where(answered, replied, today_d) + one
    delays = np.busday_count(
        received + one, np.maximum(ends, received + one), busdaycal=calendar.busdaycal
    )
    late = ~answered & (delays > DEADLINE)
    is_complaint = np.array([f.category == complaint for f in facts], dtype=bool)
    rate, mean, median = _delay_stats(delays, answered, int(np.count_nonzero(late)))
    c_rate, c_mean, c_median = _delay_stats(
        delays[is_complaint], answered[is_complaint], int(np.count_nonzero(late & is_complaint))
    )
    transfers = sum(f.transferred for f in facts)
    checked = [f.signature_complete for f in facts if f.signature_complete is not None]
    return Indicators(
        received=n,
        answered=int(np.count_nonzero(answered)),
        pending=int(np.count_nonzero(~answered & ~late)),
        overdue=int(np.count_nonzero(late)),
        rate_within_5=rate,
        mean_delay=mean,
        median_delay=median,
        complaints=int(np.count_nonzero(is_complaint)),
        complaint_rate_within_5=c_rate,
        complaint_mean_delay=c_mean,
        complaint_median_delay=c_median,
        ars_sent=sum(f.ar_sent for f in facts),
        transfers=transfers,
        transfer_notice_share=_share(
            sum(f.transferred and f.notice_sent for f in facts), transfers
        ),
        relances=sum(f.relances for f in facts),
        signature_completeness=_share(sum(checked), len(checked)),
    )
