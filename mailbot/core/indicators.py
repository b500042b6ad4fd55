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
    # Transferred, and the mail that told the citizen sent: the AR of a transfer at
    # receipt, the notice of an agent's (the AR said nothing of a later transfer).
    announced: npt.NDArray[np.bool_]
    relances: npt.NDArray[np.int64]
    signature: npt.NDArray[np.int8]  # 1 complete, 0 incomplete, -1 not checked / no reply

    def received_between(self, start: date, end: date) -> FactArrays:
        """The messages received from ``start`` to ``end`` (local dates, inclusive)."""
        inside = (self.received >= np.datetime64(start, "D")) & (
            self.received <= np.datetime64(end, "D")
        )
        return FactArrays(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})

    def received_by(self, day: date) -> FactArrays:
        """The messages received on or before ``day``: those known that day."""
        inside = self.received <= np.datetime64(day, "D")
        return FactArrays(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})


@dataclass(frozen=True)
class Relances:
    """Relances received after some day, one row each: the message relanced (its row id and
    local date of receipt) and the local date the relance came. The counts the facts and
    the buckets hold (``messages.relances``) are every relance recorded so far; figures as
    of an earlier day take away those received after it (``after``): a reminder that had
    not come yet was no relance that day."""

    message: npt.NDArray[np.int64]  # the relanced message's row id
    received: npt.NDArray[np.datetime64]  # its local date of receipt, datetime64[D]
    relanced: npt.NDArray[np.datetime64]  # the relance's local date, datetime64[D]

    def received_between(self, start: date, end: date) -> Relances:
        """The relances of the messages received from ``start`` to ``end`` (inclusive)."""
        inside = (self.received >= np.datetime64(start, "D")) & (
            self.received <= np.datetime64(end, "D")
        )
        return Relances(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})

    def _after(self, day: date) -> npt.NDArray[np.bool_]:
        """Received after ``day``, of a message received by then: a message received after
        it is no message yet, relances and all (``received_by``)."""
        limit = np.datetime64(day, "D")
        return (self.received <= limit) & (self.relanced > limit)

    def after(self, day: date) -> int:
        """How many of them came after ``day``, of the messages known that day."""
        return int(np.count_nonzero(self._after(day)))

    def after_per_message(self, day: date) -> dict[int, int]:
        """``after`` per message row id (the report's listing)."""
        ids, counts = np.unique(self.message[self._after(day)], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist(), strict=True))


def relances_from_store(columns: Mapping[str, Any], calendar: WorkingCalendar) -> Relances:
    """Store.relances_after (Unix times) → Relances (local dates)."""
    return Relances(
        message=np.asarray(columns["message"], dtype=np.int64),
        received=calendar.local_dates_from_epoch(np.asarray(columns["received"], dtype=np.int64)),
        relanced=calendar.local_dates_from_epoch(np.asarray(columns["relanced"], dtype=np.int64)),
    )


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
        announced=columns["announced"],
        relances=columns["relances"],
        signature=columns["signature"],
    )


def answered_by(replied: npt.NDArray[np.datetime64], as_of: date) -> npt.NDArray[np.bool_]:
    """Which messages had their reply on or before ``as_of`` (NaT: none). Figures as of a
    date are what was known that day: a reply after it leaves the message waiting, aged to
    that day, as a message still unanswered is; counting the late reply instead would put
    it in the rate while a message never answered stayed pending, out of it."""
    return replied <= np.datetime64(as_of, "D")


def message_delays(
    received: npt.NDArray[np.datetime64],
    replied: npt.NDArray[np.datetime64],
    today: date,
    calendar: WorkingCalendar,
) -> npt.NDArray[np.int64]:
    """Per message: the reply's delay in working days, or its age on ``today`` when it was
    not answered by then (``answered_by``)."""
    ends = np.where(answered_by(replied, today), replied, np.datetime64(today, "D"))
    return calendar.working_days_after(received, ends)


def compute_arrays(
    facts: FactArrays, today: date, calendar: WorkingCalendar, later: Relances | None = None
) -> Indicators:
    """The figures of ``facts`` as they stood on ``today``: a message received after it is
    not counted (it was no message yet, not one pending), a reply after it is not either
    (``answered_by``), nor a relance of ``later`` (those of the same messages received
    since ``today``, which the stored counts include; None: none came since)."""
    facts = facts.received_by(today)
    received, answered = facts.received, answered_by(facts.replied, today)
    delays = message_delays(received, facts.replied, today, calendar)
    late = ~answered & (delays > DEADLINE)
    complaint = facts.complaint
    rate, mean, median = _delay_stats(delays, answered, int(np.count_nonzero(late)))
    c_rate, c_mean, c_median = _delay_stats(
        delays[complaint], answered[complaint], int(np.count_nonzero(late & complaint))
    )
    transfers = int(np.count_nonzero(facts.transferred))
    checked = (facts.signature >= 0) & answered
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
            int(np.count_nonzero(facts.transferred & facts.announced)), transfers
        ),
        relances=int(facts.relances.sum()) - (0 if later is None else later.after(today)),
        signature_completeness=_share(
            int(np.count_nonzero(checked & (facts.signature == 1))), int(np.count_nonzero(checked))
        ),
    )


# -- the daily buckets (issue 14, point 10) ------------------------------------------------
#
# A message's figures depend on its local day of receipt, its local day of first reply (the
# delay in working days needs both ends), its complaint flag and a few counts. The store
# keeps, per (received day, replied day, mailbox, service, category), how many messages and
# the sums the figures need (``indicator_days``, kept by triggers): a year is then a few
# thousand buckets instead of a million messages, and every figure stays exact.

EPOCH_DAY = date(1970, 1, 1)


def day_number(day: date) -> int:
    """A local date as the store's buckets number it: days since 1970-01-01."""
    return (day - EPOCH_DAY).days


@dataclass(frozen=True)
class DayBuckets:
    """The stored buckets, one numpy array per field: what the figures are computed from."""

    received: npt.NDArray[np.datetime64]  # local dates, datetime64[D]
    replied: npt.NDArray[np.datetime64]  # local dates, NaT when unanswered
    complaint: npt.NDArray[np.bool_]
    mails: npt.NDArray[np.int64]  # messages in the bucket
    ars_sent: npt.NDArray[np.int64]
    transfers: npt.NDArray[np.int64]
    notices: npt.NDArray[np.int64]  # transferred and announced (FactArrays.announced)
    relances: npt.NDArray[np.int64]
    complete: npt.NDArray[np.int64]  # first reply's signature complete
    checked: npt.NDArray[np.int64]  # first reply's signature checked

    def received_between(self, start: date, end: date) -> DayBuckets:
        """The buckets of messages received from ``start`` to ``end`` (inclusive)."""
        inside = (self.received >= np.datetime64(start, "D")) & (
            self.received <= np.datetime64(end, "D")
        )
        return DayBuckets(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})

    def received_by(self, day: date) -> DayBuckets:
        """The buckets of messages received on or before ``day``: those known that day."""
        inside = self.received <= np.datetime64(day, "D")
        return DayBuckets(**{f.name: getattr(self, f.name)[inside] for f in fields(self)})


def buckets_from_store(columns: Mapping[str, Any]) -> DayBuckets:
    """Store.indicator_days (day numbers, -1: no reply) → DayBuckets (local dates)."""
    replied = np.asarray(columns["replied_day"], dtype=np.int64)
    replied_dates = replied.astype("datetime64[D]")
    replied_dates[replied < 0] = np.datetime64("NaT")
    counts = {
        name: np.asarray(columns[name], dtype=np.int64)
        for name in ("mails", "ars_sent", "transfers", "notices", "relances", "complete")
    }
    return DayBuckets(
        received=np.asarray(columns["received_day"], dtype=np.int64).astype("datetime64[D]"),
        replied=replied_dates,
        complaint=np.asarray(columns["complaint"], dtype=bool),
        checked=np.asarray(columns["checked"], dtype=np.int64),
        **counts,
    )


def _count(weights: npt.NDArray[np.int64], where: npt.NDArray[np.bool_] | None = None) -> int:
    return int(weights.sum() if where is None else weights[where].sum())


def _weighted_median(values: npt.NDArray[np.int64], weights: npt.NDArray[np.int64]) -> float:
    """``np.median`` of ``values`` each repeated ``weights`` times, without repeating them:
    the middle one, or the mean of the two middle ones."""
    order = np.argsort(values, kind="stable")
    values, ends = values[order], np.cumsum(weights[order])
    total = int(ends[-1])
    upper = int(values[np.searchsorted(ends, total // 2, side="right")])
    if total % 2:
        return float(upper)
    lower = int(values[np.searchsorted(ends, total // 2 - 1, side="right")])
    return (lower + upper) / 2


def _bucket_delay_stats(
    delays: npt.NDArray[np.int64],
    weights: npt.NDArray[np.int64],
    answered: npt.NDArray[np.bool_],
    late_unanswered: int,
) -> tuple[float | None, float | None, float | None]:
    """``_delay_stats`` over buckets: the same rate, mean and median."""
    answered_delays, answered_weights = delays[answered], weights[answered]
    count = _count(answered_weights)
    within = _count(answered_weights, answered_delays <= DEADLINE)
    rate = _share(within, count + late_unanswered)
    if count == 0:
        return rate, None, None
    total = int((answered_delays * answered_weights).sum())
    return rate, total / count, _weighted_median(answered_delays, answered_weights)


def compute_buckets(
    buckets: DayBuckets, today: date, calendar: WorkingCalendar, later: Relances | None = None
) -> Indicators:
    """``compute_arrays`` over the daily buckets: the same figures, to the last bit."""
    buckets = buckets.received_by(today)
    mails = buckets.mails
    answered = answered_by(buckets.replied, today)
    delays = message_delays(buckets.received, buckets.replied, today, calendar)
    late = ~answered & (delays > DEADLINE)
    complaint = buckets.complaint
    rate, mean, median = _bucket_delay_stats(delays, mails, answered, _count(mails, late))
    c_rate, c_mean, c_median = _bucket_delay_stats(
        delays[complaint], mails[complaint], answered[complaint], _count(mails, late & complaint)
    )
    transfers = _count(buckets.transfers)
    return Indicators(
        received=_count(mails),
        answered=_count(mails, answered),
        pending=_count(mails, ~answered & ~late),
        overdue=_count(mails, late),
        rate_within_5=rate,
        mean_delay=mean,
        median_delay=median,
        complaints=_count(mails, complaint),
        complaint_rate_within_5=c_rate,
        complaint_mean_delay=c_mean,
        complaint_median_delay=c_median,
        ars_sent=_count(buckets.ars_sent),
        transfers=transfers,
        transfer_notice_share=_share(_count(buckets.notices), transfers),
        relances=_count(buckets.relances) - (0 if later is None else later.after(today)),
        signature_completeness=_share(
            _count(buckets.complete, answered), _count(buckets.checked, answered)
        ),
    )
