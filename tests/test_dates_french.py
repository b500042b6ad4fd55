"""French dates written without Babel agree with Babel's CLDR patterns (issue 14, point 9).

``core.dates`` writes French day and month names from its own table so that an AR's dates
do not load Babel's French data; these tests render the same dates with Babel's patterns,
as the module did before, and require the very same text."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel import dates as cldr

from mailbot.core.dates import FRENCH_DAYS, FRENCH_MONTHS, format_date

PARIS = ZoneInfo("Europe/Paris")


def babel_french(value: datetime, style: str) -> str:
    """What ``core.dates`` returned when Babel wrote every French date."""
    day = "'1er'" if value.day == 1 else "d"
    long_date = cldr.format_date(value, f"EEEE {day} MMMM y", locale="fr")
    clock = cldr.format_time(value, "H 'h'" if value.minute == 0 else "H 'h' mm", locale="fr")
    return {
        "date": long_date,
        "full": f"{long_date} à {clock}",
        "time": clock,
        "numeric": f"{cldr.format_date(value, 'dd/MM/y', locale='fr')} à {clock}",
    }[style]


def test_the_names_are_cldr_names() -> None:
    monday = date(2024, 1, 1)  # a Monday
    assert list(FRENCH_DAYS) == [
        cldr.format_date(monday + timedelta(days=n), "EEEE", locale="fr") for n in range(7)
    ]
    assert list(FRENCH_MONTHS) == [
        cldr.format_date(date(2024, month, 1), "MMMM", locale="fr") for month in range(1, 13)
    ]


def test_every_day_of_a_leap_year_reads_as_babel_wrote_it() -> None:
    """Every day of 2028 at a time that changes each day, in every style, across both
    changes of summer time."""
    start = datetime(2028, 1, 1, 0, 0, tzinfo=PARIS)
    for n in range(366):
        value = (start + timedelta(days=n, minutes=37 * n)).astimezone(PARIS)
        for style in ("full", "date", "time", "numeric"):
            shown = format_date(value, "fr", timezone="Europe/Paris", style=style)
            assert shown == babel_french(value, style), (value, style)


def test_the_minutes_of_a_day_read_as_babel_wrote_them() -> None:
    start = datetime(2026, 11, 26, 0, 0, tzinfo=PARIS)
    for n in range(0, 24 * 60, 7):  # every hour, every minute's last digit
        value = start + timedelta(minutes=n)
        assert format_date(value, "fr", timezone="Europe/Paris", style="time") == babel_french(
            value, "time"
        )


def test_a_date_alone_and_the_other_languages_still_go_through_babel() -> None:
    first = date(2026, 8, 1)
    assert format_date(first, "fr", timezone="Europe/Paris", style="date") == "samedi 1er août 2026"
    when = datetime(2026, 12, 8, 9, 30, tzinfo=PARIS)
    assert format_date(when, "en", timezone="Europe/Paris", style="date") == (
        cldr.format_date(when, "full", locale="en")
    )
