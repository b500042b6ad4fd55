"""Working days in Europe/Paris: French public holidays, weekends, DST, midnight edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import pytest
from fresh_imports import modules_after

from mailbot.core.workdays import DEADLINES_KEPT, YEARS, WorkingCalendar, public_holidays

PARIS = ZoneInfo("Europe/Paris")
CAL = WorkingCalendar()


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 1, 1), "Jour de l'an"),
        (date(2026, 4, 6), "Lundi de Pâques"),
        (date(2026, 5, 1), "Fête du travail (vendredi)"),
        (date(2026, 5, 8), "Victoire 1945 (vendredi)"),
        (date(2026, 5, 14), "Ascension"),
        (date(2026, 5, 25), "Lundi de Pentecôte"),
        (date(2026, 7, 14), "Fête nationale"),
        (date(2026, 8, 15), "Assomption (samedi)"),
        (date(2026, 11, 1), "Toussaint (dimanche)"),
        (date(2026, 11, 11), "Armistice"),
        (date(2026, 12, 25), "Noël"),
        (date(2027, 5, 1), "1er mai un samedi"),
        (date(2027, 5, 8), "8 mai un samedi"),
    ],
)
def test_public_holidays_are_not_working_days(day: date, name: str) -> None:
    assert not CAL.is_working_day(day), name


def test_alsace_moselle_is_a_subdivision_not_the_default() -> None:
    good_friday = date(2026, 4, 3)
    assert CAL.is_working_day(good_friday)
    assert not WorkingCalendar(subdivision="57").is_working_day(good_friday)
    assert CAL.is_working_day(date(2026, 12, 28))


def test_extra_closure_days() -> None:
    closed = WorkingCalendar(closures=[date(2026, 11, 27)])
    assert not closed.is_working_day(date(2026, 11, 27))
    assert closed.delay(at(2026, 11, 26), at(2026, 11, 30)) == 1


@pytest.mark.parametrize(
    ("received", "replied", "expected"),
    [
        (at(2026, 11, 26, 9), at(2026, 11, 26, 17), 0),  # same day
        (at(2026, 11, 27), at(2026, 11, 30), 1),  # Friday -> Monday
        (at(2026, 11, 28), at(2026, 11, 30), 1),  # Saturday -> Monday
        (at(2026, 11, 29), at(2026, 11, 30), 1),  # Sunday -> Monday
        (at(2026, 11, 23), at(2026, 11, 30), 5),  # Monday -> next Monday
        (at(2026, 11, 10), at(2026, 11, 12), 1),  # across 11 November
        (at(2026, 4, 3), at(2026, 4, 7), 1),  # Good Friday (working) -> Tuesday over Easter Monday
        (at(2026, 5, 13), at(2026, 5, 15), 1),  # across Ascension
        (at(2026, 5, 22), at(2026, 5, 26), 1),  # across Whit Monday
        (at(2026, 4, 30), at(2026, 5, 4), 1),  # 1 May on a Friday
        (at(2026, 7, 13), at(2026, 7, 15), 1),  # 14 July
        (at(2026, 12, 24), at(2026, 12, 28), 1),  # Christmas
        (at(2026, 12, 31), at(2027, 1, 4), 1),  # New Year
    ],
)
def test_delay_definition(received: datetime, replied: datetime, expected: int) -> None:
    assert CAL.delay(received, replied) == expected


def test_midnight_edges_use_local_dates() -> None:
    assert CAL.delay(at(2026, 11, 24, 23, 59), at(2026, 11, 25, 0, 1)) == 1
    # 23:30 UTC on 24 Nov is already 25 Nov in Paris
    received = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    assert CAL.local_date(received) == date(2026, 11, 25)
    assert CAL.delay(received, at(2026, 11, 25, 15)) == 0


def test_dst_changes() -> None:
    # 29 March 2026: clocks go forward; 25 October 2026: clocks go back.
    assert CAL.delay(at(2026, 3, 27, 23, 30), at(2026, 3, 30, 0, 30)) == 1
    assert CAL.delay(datetime(2026, 10, 24, 22, 30, tzinfo=UTC), at(2026, 10, 26, 8)) == 1
    # 22:30 UTC on 24 Oct is 00:30 on Sunday 25 Oct in Paris (UTC+2 until 03:00)
    assert CAL.local_date(datetime(2026, 10, 24, 22, 30, tzinfo=UTC)) == date(2026, 10, 25)


def test_vectorised_matches_scalar() -> None:
    received = [at(2026, 11, 27), at(2026, 11, 10), at(2026, 12, 24, 23, 59)]
    replied = [at(2026, 11, 30), at(2026, 11, 20), at(2027, 1, 4)]
    assert CAL.delays(received, replied).tolist() == [
        CAL.delay(r, p) for r, p in zip(received, replied, strict=True)
    ]


def test_deadline_is_the_fifth_working_day() -> None:
    assert CAL.deadline(at(2026, 11, 26)) == date(2026, 12, 3)  # Thu -> next Thu
    assert CAL.deadline(at(2026, 11, 7)) == date(2026, 11, 16)  # Saturday, across 11 Nov
    assert CAL.delay(at(2026, 11, 7), datetime(2026, 11, 16, 12, tzinfo=PARIS)) == 5


def test_remembered_deadlines_are_the_computed_ones() -> None:
    """Deadlines are remembered per local date and number of days: every seventh hour of
    400 days (DST changes, holidays, local midnight in UTC), asked twice, gives what
    ``add_working_days`` computes; the memory stays bounded."""
    cal = WorkingCalendar()
    first = datetime(2026, 1, 1, tzinfo=UTC)
    for hour in range(0, 400 * 24, 7):
        moment = first + timedelta(hours=hour)
        for days in (0, 1, 5):
            start = cal.local_date(moment)
            computed = cal.add_working_days(start + timedelta(days=1), days - 1)
            expected = computed if days > 0 else start
            assert cal.deadline(moment, days) == cal.deadline(moment, days) == expected
    assert len(cal._deadlines) <= DEADLINES_KEPT


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.delay(datetime(2026, 1, 5), at(2026, 1, 6))


@pytest.mark.parametrize("subdivision", [None, "57", "971"])
def test_france_loaded_alone_gives_the_librarys_holidays(subdivision: str | None) -> None:
    """France's module is run without holidays' list of every country (a start-up cost):
    the same dates as the library's public entry point."""
    years = range(2015, 2041)
    expected = holidays.country_holidays("FR", years=years, subdiv=subdivision)
    assert public_holidays(subdivision, years) == frozenset(expected.keys())


def test_a_calendar_does_not_import_every_country() -> None:
    loaded = modules_after(
        "from mailbot.core.workdays import WorkingCalendar\nWorkingCalendar().holidays"
    )
    assert sorted(m for m in loaded if m.startswith("holidays.countries")) == []


def test_holidays_given_spare_the_library_and_count_the_same() -> None:
    """A calendar given the public holidays (the render cache's) loads no ``holidays``
    package and counts what a calendar asking the library counts."""
    given = WorkingCalendar(public=public_holidays(None, YEARS), closures=[date(2026, 11, 27)])
    asked = WorkingCalendar(closures=[date(2026, 11, 27)])
    assert np.array_equal(given.holidays, asked.holidays)
    assert given.deadline(at(2026, 4, 30)) == asked.deadline(at(2026, 4, 30))
    loaded = modules_after(
        "from datetime import date\nfrom mailbot.core.workdays import WorkingCalendar\n"
        "WorkingCalendar(public=[date(2026, 5, 1)]).is_working_day(date(2026, 5, 1))"
    )
    assert "holidays" not in loaded


def test_running_count_equals_busday_count_inside_and_outside_the_years() -> None:
    """``working_days_after`` (lookups in a running count) counts what ``busday_count``
    counts, on random pairs, answered or not, some beyond the holidays' years."""
    rng = np.random.default_rng(3)
    narrow = WorkingCalendar(years=range(2015, 2041))
    received = np.datetime64("2013-06-01") + rng.integers(0, 365 * 30, 20_000).astype("m8[D]")
    ends = received + rng.integers(-5, 60, received.size).astype("m8[D]")
    one = np.timedelta64(1, "D")
    expected = np.busday_count(
        received + one, np.maximum(ends, received) + one, busdaycal=narrow.busdaycal
    )
    assert (received < np.datetime64("2015-01-01")).any()
    assert (ends > np.datetime64("2040-12-31")).any()
    assert narrow.working_days_after(received, ends).tolist() == expected.tolist()


def test_public_holidays_are_known_decades_ahead_and_back() -> None:
    """No horizon the calendar's years reach in a deployment's life: twenty years from now
    (whatever now is) and before 2015 (a backfill), Christmas, 1 May and Ascension are
    days off, as the ``holidays`` library says."""
    for year in (date.today().year + 20, 2041, 2005):
        expected = holidays.country_holidays("FR", years=year)
        ascension = next(day for day, name in expected.items() if "Ascension" in name)
        for day in (date(year, 12, 25), date(year, 5, 1), ascension):
            assert not CAL.is_working_day(day), day
    assert CAL.delay(at(2041, 4, 30), at(2041, 5, 2)) == 1  # 1 May 2041 is a Wednesday


def test_window_start_is_the_earliest_instant_within_n_working_days() -> None:
    """For every day of twelve years, at 09:00 and on a Sunday evening alike: the window
    of a relance (10 working days) starts at the earliest instant whose delay is 10, and a
    second earlier is 11. Around May's holidays it reaches back 21 calendar days (2035)."""
    for offset in range(365 * 12):
        day = date(2024, 1, 1) + timedelta(days=offset)
        for moment in (at(day.year, day.month, day.day, 9), at(day.year, day.month, day.day, 23)):
            for days in (0, 10):
                start = CAL.window_start(moment, days)
                assert start.tzinfo is not None and (start.hour, start.minute) == (0, 0)
                assert CAL.delay(start, moment) <= days
                assert CAL.delay(start - timedelta(seconds=1), moment) > days
    assert CAL.window_start(at(2035, 5, 20), 10) == at(2035, 4, 30, 0)  # 20 days were too few


@pytest.mark.parametrize(
    "calendar",
    [
        CAL,
        WorkingCalendar(subdivision="57"),
        WorkingCalendar(closures=[date(2026, 5, 15), date(2026, 12, 24), date(2031, 8, 14)]),
    ],
    ids=["france", "alsace-moselle", "closures"],
)
def test_one_mail_s_dates_are_numpy_s_without_numpy(calendar: WorkingCalendar) -> None:
    """The AR path walks a few days over a set of holidays instead of numpy's
    ``busday_offset`` (no numpy in a first mail's process, issue 14 point 9): the same date
    for every day of 2020-2036, every count the deadlines, relances and digests ask (and
    more), both rolls, and the same working days."""
    numpy_calendar = calendar.busdaycal
    for offset in range(366 * 17):
        day = date(2020, 1, 1) + timedelta(days=offset)
        numpy_day = np.datetime64(day, "D")
        assert calendar.is_working_day(day) == bool(
            np.is_busday(numpy_day, busdaycal=numpy_calendar)
        ), day
        for count in range(-12, 13):
            forward = np.busday_offset(numpy_day, count, roll="forward", busdaycal=numpy_calendar)
            assert calendar.add_working_days(day, count) == forward.astype(date), (day, count)
            backward = np.busday_offset(numpy_day, count, roll="backward", busdaycal=numpy_calendar)
            assert calendar._moved(day, count, forward=False) == backward.astype(date)
