"""Dates, times and numbers as each language writes them (CLDR data, through Babel).

French keeps the prefecture's house style, which CLDR does not give: "jeudi 26 novembre
2026 à 14 h 05", "1er" for the first day of a month, "26/11/2026 à 14 h 05". Its day and
month names are CLDR's, written out below (a test checks them against Babel's): loading
Babel's French data for them was ~15 ms of the first AR of every start (issue 14, point 9).
Every other language uses its CLDR formats, through Babel, imported when first needed:
"Tuesday, December 8, 2026", "الثلاثاء، 8 ديسمبر 2026", "8 Aralık 2026 Salı".

Times are always shown in the prefecture's time zone; a naive datetime is refused: we never
guess the zone a mail was received in.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

STYLES = ("full", "date", "time", "numeric")
FRENCH = "fr"
# CLDR's French names (Babel's ``EEEE`` and ``MMMM``), by ``date.weekday()`` and month - 1.
FRENCH_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
FRENCH_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def _localise(value: datetime | date, timezone: str, style: str) -> datetime | date:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("dates need a timezone-aware datetime, got a naive one")
        return value.astimezone(ZoneInfo(timezone))
    if isinstance(value, date):
        if style != "date":
            raise ValueError(f"date style {style!r} needs a datetime, got a date")
        return value
    raise ValueError(f"expected a datetime, got {type(value).__name__}")


def _french(value: datetime | date, style: str) -> str:
    """Babel's ``EEEE d MMMM y`` (``'1er'`` for the day 1), ``H 'h' mm`` and ``dd/MM/y``,
    without loading Babel: the value is already in the prefecture's time zone."""
    day = "1er" if value.day == 1 else str(value.day)
    month = FRENCH_MONTHS[value.month - 1]
    long_date = f"{FRENCH_DAYS[value.weekday()]} {day} {month} {value.year}"
    if style == "date":
        return long_date
    assert isinstance(value, datetime)
    clock = f"{value.hour} h" if value.minute == 0 else f"{value.hour} h {value.minute:02d}"
    if style == "full":
        return f"{long_date} à {clock}"
    if style == "time":
        return clock
    return f"{value.day:02d}/{value.month:02d}/{value.year} à {clock}"


def _combine(language: str, day: str, clock: str) -> str:
    from babel import dates as cldr

    # What babel.dates.format_datetime does with CLDR's "{1}, {0}" patterns.
    pattern = str(cldr.get_datetime_format("long", locale=language))
    return pattern.replace("'", "").replace("{0}", clock).replace("{1}", day)


def _cldr(value: datetime | date, language: str, style: str) -> str:
    from babel import dates as cldr

    if style == "date":
        return cldr.format_date(value, "full", locale=language)
    assert isinstance(value, datetime)
    clock = cldr.format_time(value, "short", locale=language)
    if style == "time":
        return clock
    if style == "full":
        return _combine(language, cldr.format_date(value, "long", locale=language), clock)
    return _combine(language, cldr.format_date(value, "short", locale=language), clock)


def format_date(
    value: datetime | date, language: str = FRENCH, *, timezone: str, style: str = "full"
) -> str:
    """A date in ``language``. Styles: ``full`` (date and time), ``date`` (with the day of the
    week), ``time``, ``numeric``."""
    if style not in STYLES:
        raise ValueError(f"unknown date style {style!r} ({', '.join(STYLES)})")
    local = _localise(value, timezone, style)
    if language == FRENCH:
        return _french(local, style)
    return _cldr(local, language, style)


def format_number(value: int | float, language: str = FRENCH) -> str:
    from babel.numbers import format_decimal

    return str(format_decimal(value, locale=language))


def check_language(language: str) -> None:
    """Raise ValueError when CLDR does not know the language (a typo in a file name)."""
    from babel import Locale, UnknownLocaleError

    try:
        Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        raise ValueError(f"unknown language code {language!r}") from None


def date_fr(value: datetime | date, *, timezone: str = "Europe/Paris", style: str = "full") -> str:
    """Format a date in French, in the given time zone: the templates' ``date_fr`` filter.

    Styles: ``full`` "jeudi 26 novembre 2026 à 14 h 05", ``date`` "jeudi 26 novembre 2026",
    ``time`` "14 h 05", ``numeric`` "26/11/2026 à 14 h 05". Whole hours read "14 h".
    A naive datetime is refused: we never guess the zone a mail was received in.
    """
    try:
        return format_date(value, FRENCH, timezone=timezone, style=style)
    except ValueError as exc:
        raise ValueError(str(exc).replace("dates need", "date_fr needs")) from None
