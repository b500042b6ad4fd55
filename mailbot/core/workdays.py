"""Working days (jours ouvrés) in Europe/Paris: Monday to Friday minus public holidays.

The delay of a reply is the number of working days d with date(received) < d <= date(replied),
in local dates: the same day counts 0, Friday → Monday counts 1, Saturday → Monday counts 1.
numpy's ``busday_count`` over a holiday array makes this O(1) per message and vectorised over
years of history (the indicators). One mail's dates (its AR's deadline, the window its
look-ups read back) are a few days walked over a set of holidays, in plain Python: the AR
path imports no numpy (a first mail's start, issue 14 point 9), and tests/test_workdays.py
checks the walk gives numpy's ``busday_offset`` dates over decades of days.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

# numpy only in the vectorised methods (the indicators, the console's queue), each importing
# it when it runs: one mail's dates are computed without it.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DEADLINE = 5
DEADLINES_KEPT = 4096  # deadlines a calendar remembers (~11 years of days)
# The years a calendar knows the public holidays of: those of the zone offsets the database
# keeps (``zone_offsets``). It once ended in 2040: from 2041 every holiday
# would silently have been a working day, and a backfill of mail before 2015 too.
YEARS = range(1970, 2100)


@lru_cache(maxsize=8)
def public_holidays(subdivision: str | None, years: range) -> frozenset[date]:
    """France's public holidays (the ``holidays`` library), computed once per process for
    every calendar that needs them."""
    public = _france()(years=years, subdiv=subdivision)
    return frozenset(public.keys())


def _france() -> Any:
    """holidays' ``France`` class, without the rest of the world. The library's top level
    loads countries lazily, but ``holidays.countries``' ``__init__`` imports all 250 of
    them, so ``from holidays.countries.france import France`` or ``country_holidays("FR")``
    cost ~150 ms of a start (measured; this: ~60 ms). France's module is run alone from
    holidays' own file (it imports only the library's base modules); through the package
    when that file is not where it was, or does not load."""
    import holidays  # countries are lazy at this level

    loaded = sys.modules.get("holidays.countries.france")
    path = Path(holidays.__file__).parent / "countries" / "france.py"
    spec = importlib.util.spec_from_file_location("holidays.countries.france", path)
    if loaded is None and spec is not None and spec.loader is not None and path.is_file():
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            return module.France
        except Exception:  # a layout this code does not know: the library's own import
            pass
    from holidays.countries.france import France

    return France


def _offset(moment: datetime) -> int:
    offset = moment.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


class WorkingCalendar:
    """Working days of one time zone. The public holidays (1970–2099, from the ``holidays``
    package: a tenth of a second with its import) are computed on first use only, so a
    calendar asked only for its zone or local dates costs nothing.

    ``public``: the public holidays of ``years`` and ``subdivision`` when the caller already
    has them (a cache of what ``public_holidays`` returned): the ``holidays`` package is then
    not loaded at all (~40 ms of the first mail's start, issue 14 point 9)."""

    def __init__(
        self,
        *,
        timezone: str = "Europe/Paris",
        subdivision: str | None = None,
        closures: Iterable[date] = (),
        years: range = YEARS,
        public: Collection[date] | None = None,
    ) -> None:
        self.zone = ZoneInfo(timezone)
        self._subdivision = subdivision
        self._closures = tuple(closures)
        self._years = years
        self._public = public
        # Deadlines by (local date received, days): one per day of mail, not per mail
        # (``busday_offset`` and its date conversions were ~2 % of a poll, issue 14).
        self._deadlines: dict[tuple[date, int], date] = {}
        self._windows: dict[tuple[date, int], datetime] = {}  # window_start's, the same way

    @cached_property
    def holidays(self) -> npt.NDArray[np.datetime64]:
        import numpy as np

        return np.array(sorted(self._closed), dtype="datetime64[D]")

    @cached_property
    def _calendar(self) -> np.busdaycalendar:
        import numpy as np

        return np.busdaycalendar(weekmask="1111100", holidays=self.holidays)

    @cached_property
    def _first(self) -> np.datetime64:
        import numpy as np

        return np.datetime64(f"{self._years.start:04d}-01-01", "D")

    @cached_property
    def _running(self) -> npt.NDArray[np.int64]:
        """The running count of working days over the holidays' years: entry i is the
        number of working days from the first day to the i-th, both included."""
        import numpy as np

        days = np.arange(self._first, np.datetime64(f"{self._years.stop:04d}-01-01", "D"))
        return np.cumsum(np.is_busday(days, busdaycal=self._calendar), dtype=np.int64)

    @property
    def busdaycal(self) -> np.busdaycalendar:
        return self._calendar

    def local_date(self, moment: datetime) -> date:
        if moment.tzinfo is None:
            raise ValueError("working-day arithmetic needs timezone-aware datetimes")
        return moment.astimezone(self.zone).date()

    @cached_property
    def _closed(self) -> frozenset[date]:
        """The days off besides weekends (public holidays, closures): what numpy's
        calendar holds, as a set of dates for one mail's arithmetic."""
        public = self._public
        if public is None:
            public = public_holidays(self._subdivision, self._years)
        return frozenset({*public, *self._closures})

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._closed

    def _moved(self, day: date, count: int, forward: bool) -> date:
        """numpy's ``busday_offset(day, count, roll)`` for one date, without numpy: a day
        off rolled to the next working day (``forward``) or the previous one, then
        ``count`` working days walked (back when negative). A mail's deadline or window
        walks a fortnight at most (tests/test_workdays.py: numpy's dates, over decades)."""
        roll = timedelta(days=1 if forward else -1)
        while not self.is_working_day(day):
            day += roll
        step, left = timedelta(days=1 if count > 0 else -1), abs(count)
        while left:
            day += step
            left -= self.is_working_day(day)
        return day

    def delay(self, received: datetime, replied: datetime) -> int:
        """Working days d with date(received) < d <= date(replied)."""
        import numpy as np

        start = np.datetime64(self.local_date(received), "D") + 1
        end = np.datetime64(self.local_date(replied), "D") + 1
        return int(np.busday_count(start, end, busdaycal=self._calendar))

    def delay_between(self, received: date, replied: date) -> int:
        """The same on local dates already computed."""
        import numpy as np

        start = np.datetime64(received, "D") + 1
        end = np.datetime64(replied, "D") + 1
        return int(np.busday_count(start, max(start, end), busdaycal=self._calendar))

    def delays(
        self, received: Sequence[datetime] | npt.NDArray[np.datetime64], replied: Sequence[datetime]
    ) -> npt.NDArray[np.int64]:
        """The same, vectorised: arrays of local dates in, working-day counts out."""
        import numpy as np

        start = self.local_dates(received) + np.timedelta64(1, "D")
        end = self.local_dates(replied) + np.timedelta64(1, "D")
        return np.busday_count(start, end, busdaycal=self._calendar).astype(np.int64)

    def working_days_after(
        self, received: npt.NDArray[np.datetime64], ends: npt.NDArray[np.datetime64]
    ) -> npt.NDArray[np.int64]:
        """Per pair of local dates, the working days d with received < d <= end (0 when
        end <= received): ``delay_between`` vectorised, as the difference of two entries of
        the running count (two lookups per message instead of ``busday_count``'s walk over
        the days), ``busday_count`` only for dates outside the calendar's years."""
        import numpy as np

        start = (received - self._first).astype(np.int64)
        stop = (np.maximum(ends, received) - self._first).astype(np.int64)
        inside = (start >= 0) & (stop < self._running.size)
        if inside.all():
            return self._running[stop] - self._running[start]
        counts = np.empty(received.size, dtype=np.int64)
        counts[inside] = self._running[stop[inside]] - self._running[start[inside]]
        one = np.timedelta64(1, "D")
        outside = ~inside
        counts[outside] = np.busday_count(
            received[outside] + one,
            np.maximum(ends, received)[outside] + one,
            busdaycal=self._calendar,
        )
        return counts

    def local_dates(
        self, moments: Sequence[datetime] | npt.NDArray[np.datetime64]
    ) -> npt.NDArray[np.datetime64]:
        import numpy as np

        if isinstance(moments, np.ndarray) and moments.dtype == np.dtype("datetime64[D]"):
            return moments
        return np.array([self.local_date(m) for m in moments], dtype="datetime64[D]")

    def local_dates_from_epoch(self, seconds: npt.NDArray[np.int64]) -> npt.NDArray[np.datetime64]:
        """Unix times → local dates, vectorised: the UTC offset is looked up per hour."""
        import numpy as np

        if seconds.size == 0:
            return np.array([], dtype="datetime64[D]")
        first = int(seconds.min()) // 3600
        hours = np.arange(first, int(seconds.max()) // 3600 + 1)
        offsets = np.array(
            [_offset(datetime.fromtimestamp(int(h) * 3600, self.zone)) for h in hours],
            dtype=np.int64,
        )
        local = seconds + offsets[seconds // 3600 - first]
        return (local // 86400).astype("datetime64[D]")

    def window_start(self, moment: datetime, days: int) -> datetime:
        """The earliest instant whose delay to ``moment`` is at most ``days`` working days:
        local midnight of the (days + 1)-th working day counted back from ``moment``'s
        local date (that date included when it is a working day). A look-up "within 10
        working days" reads from there: a fixed number of calendar days is too few around
        May's holidays (10 working days spanned 21 days in 2024 and 2035).

        Remembered per (local date, days), as ``deadline``: the intake asks it twice per
        mail, and numpy's ``busday_offset`` was ~4 % of its CPU (issue 14); walked in plain
        Python since (``_moved``: no numpy on the AR path)."""
        key = (self.local_date(moment), days)
        found = self._windows.get(key)
        if found is None:
            if len(self._windows) >= DEADLINES_KEPT:  # a backfill over years: stay bounded
                self._windows.clear()
            moved = self._moved(key[0], -days, forward=False)
            found = datetime.combine(moved, time.min, self.zone)
            self._windows[key] = found
        return found

    def add_working_days(self, day: date, count: int) -> date:
        """The working day ``count`` working days after ``day`` (the deadline of a message)."""
        return self._moved(day, count, forward=True)

    def deadline(self, received: datetime, days: int = DEADLINE) -> date:
        """Last local date on which a reply still counts as within ``days`` working days.
        Computed once per (local date, days): a calendar never changes, and every mail of
        a day shares its deadline."""
        start = self.local_date(received)
        key = (start, days)
        found = self._deadlines.get(key)
        if found is None:
            if len(self._deadlines) >= DEADLINES_KEPT:  # a backfill over years: stay bounded
                self._deadlines.clear()
            found = self._deadline(start, days)
            self._deadlines[key] = found
        return found

    def _deadline(self, start: date, days: int) -> date:
        return self.add_working_days(start + timedelta(days=1), days - 1) if days > 0 else start


@cache
def calendar_for(timezone: str) -> WorkingCalendar:
    """The working calendar of a time zone, built once per process: building one computes
    130 years of public holidays (a tenth of a second), and a calendar never changes."""
    return WorkingCalendar(timezone=timezone)


@lru_cache(maxsize=8)
def zone_offsets(zone: ZoneInfo, first: int = 1970, last: int = 2100) -> list[tuple[int, int]]:
    """The UTC offsets of ``zone`` as (from this Unix second, offset in seconds) rows, the
    first one from the beginning of time: what the database's triggers add to an instant
    to find its local day. Offsets are taken at whole UTC hours, as
    ``WorkingCalendar.local_dates_from_epoch`` takes them, so both give the same dates.
    Looked at once a day, then the hour of a change found by halving the day: a zone
    changing and changing back within 24 hours would be missed; none of the IANA zones
    does from 1970 to 2100 (checked against an hour-by-hour scan of every zone). Every new
    database's migration computes them: 0.1 s here, against 0.35 s for a scan every 6
    hours."""

    def offset(hour: int) -> int:
        found = datetime.fromtimestamp(hour * 3600, zone).utcoffset()
        return int(found.total_seconds()) if found is not None else 0

    start = int(datetime(first, 1, 1, tzinfo=UTC).timestamp()) // 3600
    stop = int(datetime(last, 1, 1, tzinfo=UTC).timestamp()) // 3600
    current = offset(start)
    rows = [(-(2**62), current)]
    for day in range(start + 24, stop + 24, 24):
        hour = min(day, stop - 1)
        if offset(hour) != current:
            changed = _first_hour_changed(offset, hour - 24, hour, current)
            current = offset(changed)
            rows.append((changed * 3600, current))
            if offset(hour) != current:  # a second change within the day: look again
                rows.extend(_changes_within(offset, changed, hour, current))
                current = rows[-1][1]
    return rows


def _first_hour_changed(offset: Callable[[int], int], before: int, after: int, was: int) -> int:
    """The first hour after ``before`` whose offset is no longer ``was``, knowing that
    ``after``'s is not."""
    while after - before > 1:
        middle = (before + after) // 2
        if offset(middle) == was:
            before = middle
        else:
            after = middle
    return after


def _changes_within(
    offset: Callable[[int], int], since: int, until: int, was: int
) -> list[tuple[int, int]]:
    """Every change of offset from hour ``since`` to ``until``, hour by hour."""
    rows = []
    for hour in range(since + 1, until + 1):
        if offset(hour) != was:
            was = offset(hour)
            rows.append((hour * 3600, was))
    return rows
