"""The Qual-e-pref email indicators, as pure functions over per-message facts.

Every figure is defined here once (and in the README); the weekly report and the CLI only
present what this module computes. Delays are working days (mailbot.core.workdays), arrays are
numpy so a year of history is computed in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.core.workdays import DEADLINE, WorkingCalendar

TARGET_RATE = 0.75  # answered within 5 working days: more than 75 %
TARGET_MEAN = 5.0  # mean delay: less than 5 days


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


@dataclass(frozen=True)
class FactArrays:
    """The same facts, one numpy array per field: how a year of history is computed."""

    received: npt.NDArray[np.datetime64]  # local dates, datetime64[D]
    replied: npt.NDArray[np.datetime64]  # local dates, NaT when unanswered
    complaint: npt.NDArray[np.bool_]
    transferred: npt.NDArray[np.bool_]
    ar_sent: npt.NDArray[np.bool_]
    relances: npt.NDArray[np.int64]
    signature: npt.NDArray[np.int8]  # 1 complete, 0 incomplete, -1 not checked / no reply

    def received_between(self, start: date, end: date) -> FactArrays:
        """The messages received from ``start`` to ``end`` (local dates, inclusive)."""
        inside = (self.received >= np.datetime64(start, "D")) & (
            self.received <= np.datetime64(end, "D")
        )
        return FactArrays(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})


def arrays_from_store(columns: Mapping[str, Any], calendar: WorkingCalendar) -> FactArrays:
    """Store.indicator_arrays (Unix times) → FactArrays (local dates)."""
    replied = columns["replied"]
    answered = replied >= 0
    replied_dates = np.full(replied.size, np.datetime64("NaT"), dtype="datetime64[D]")
    replied_dates[answered] = calendar.local_dates_from_epoch(replied[answered])
    return FactArrays(
        received=calendar.local_dates_from_epoch(columns["received"]),
        replied=replied_dates,
        complaint=columns["complaint"],
        transferred=columns["transferred"],
        ar_sent=columns["ar_sent"],
        relances=columns["relances"],
        signature=columns["signature"],
    )


def message_delays(
    received: npt.NDArray[np.datetime64],
    replied: npt.NDArray[np.datetime64],
    today: date,
    calendar: WorkingCalendar,
) -> npt.NDArray[np.int64]:
    """Per message: the reply's delay in working days, or the age so far when unanswered."""
    ends = np.where(np.isnat(replied), np.datetime64(today, "D"), replied)
    return calendar.working_days_after(received, ends)


def compute_arrays(facts: FactArrays, today: date, calendar: WorkingCalendar) -> Indicators:
    received, answered = facts.received, ~np.isnat(facts.replied)
    delays = message_delays(received, facts.replied, today, calendar)
    late = ~answered & (delays > DEADLINE)
    complaint = facts.complaint
    rate, mean, median = _delay_stats(delays, answered, int(np.count_nonzero(late)))
    c_rate, c_mean, c_median = _delay_stats(
        delays[complaint], answered[complaint], int(np.count_nonzero(late & complaint))
    )
    transfers = int(np.count_nonzero(facts.transferred))
    checked = facts.signature >= 0
    return Indicators(
        received=int(received.size),
        answered=int(np.count_nonzero(answered)),
        pending=int(np.count_nonzero(~answered & ~late)),
        overdue=int(np.count_nonzero(late)),
        rate_within_5=rate,
        mean_delay=mean,
        median_delay=median,
        complaints=int(np.count_nonzero(complaint)),
        complaint_rate_within_5=c_rate,
        complaint_mean_delay=c_mean,
        complaint_median_delay=c_median,
        ars_sent=int(np.count_nonzero(facts.ar_sent)),
        transfers=transfers,
        transfer_notice_share=_share(
            int(np.count_nonzero(facts.transferred & facts.ar_sent)), transfers
        ),
        relances=int(facts.relances.sum()),
        signature_completeness=_share(
            int(np.count_nonzero(facts.signature == 1)), int(np.count_nonzero(checked))
        ),
    )
