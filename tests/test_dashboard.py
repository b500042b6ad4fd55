"""The indicators page's use case (app/dashboard): periods a picker offers and accepts,
the figures shown as the report writes them, the CSV as the CLI's values; and the weekly
report unchanged by sharing its table and chart with the page."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from datetime import date, timedelta
from pathlib import Path

import pytest

from mailbot.app import dashboard
from mailbot.core.indicators import Figure, Indicators
from mailbot.core.periods import Period, month_period, week_period
from mailbot.errors import RequestError

ROOT = Path(__file__).resolve().parent.parent


def test_parse_period_takes_a_week_or_a_month() -> None:
    today = date.today()
    year = today.year  # any year: nothing here depends on the calendar's
    week = dashboard.parse_period(f"{year}-W10", today)
    assert week.kind == "semaine" and week.start == date.fromisocalendar(year, 10, 1)
    assert week.end - week.start == timedelta(days=6)
    month = dashboard.parse_period(f"{year}-02", today)
    assert (month.kind, month.start, month.end) == ("mois", date(year, 2, 1), month.end)
    assert month.end == date(year, 3, 1) - timedelta(days=1)


@pytest.mark.parametrize("text", ["", "2026", "2026-W54", "2026-13", "2026-W1", "x-11", "2026-00"])
def test_parse_period_refuses_anything_else(text: str) -> None:
    with pytest.raises(RequestError):
        dashboard.parse_period(text, date.today())


@pytest.mark.parametrize(
    "text", ["9999-12", "9999-W52", "0001-W01", "0001-01", "1999-12", "1999-W52", "2042-01"]
)
def test_parse_period_refuses_a_year_out_of_range(text: str) -> None:
    """date's own limits gave an OverflowError (a 500 on the page) for 9999-12, 9999-W52
    and, once the previous week was asked for, 0001-W01: years run from 2000 to the year
    after today's, a RequestError (a 400) beyond."""
    today = date(2040, 6, 15)
    with pytest.raises(RequestError, match="expected a year from 2000 to 2041"):
        dashboard.parse_period(text, today)


def test_parse_period_bounds_follow_the_date_given() -> None:
    """The last year is today's next (a December's week may be next year's W01), whatever
    today is; at either end, the previous period and the 12 weeks before are dates."""
    for today in (date(2026, 11, 25), date(2040, 1, 1)):
        last = today.year + 1
        for text in ("2000-W01", "2000-01", f"{last}-W52", f"{last}-12"):
            period = dashboard.parse_period(text, today)
            assert period.previous().end == period.start - timedelta(days=1)
            assert period.start - timedelta(weeks=12) < period.start < period.end
        with pytest.raises(RequestError):
            dashboard.parse_period(f"{last + 1}-01", today)


def test_default_and_offered_periods() -> None:
    today = date.today()
    assert dashboard.default_period(today) == week_period(today - timedelta(days=7))
    offered = dashboard.offered_periods(today)
    weeks = [p for p in offered if p.kind == "semaine"]
    months = [p for p in offered if p.kind == "mois"]
    assert len(weeks) == dashboard.WEEKS_OFFERED and weeks[0] == week_period(today)
    assert len(months) == dashboard.MONTHS_OFFERED and months[0] == month_period(today)
    assert all(a.start - b.start == timedelta(days=7) for a, b in itertools.pairwise(weeks))
    assert all(a.start > b.end for a, b in itertools.pairwise(months))


def test_shown_writes_figures_as_the_report() -> None:
    assert dashboard.shown(Figure("rate_within_5", 2 / 3)) == (
        "Réponses dans les 5 jours ouvrés",
        "66,7 %",
    )
    assert dashboard.shown(Figure("mean_delay", 2.0))[1] == "2,00 j"
    assert dashboard.shown(Figure("received", 13))[1] == "13"
    assert dashboard.shown(Figure("median_delay", None))[1] == "-"
    assert set(dashboard.LABELS) == {f.name for f in _board().figures()}


def _board() -> dashboard.Dashboard:
    figures = Indicators(
        received=13, answered=7, pending=4, overdue=2, rate_within_5=2 / 3, mean_delay=2.0,
        median_delay=1.0, complaints=0, complaint_rate_within_5=None,
        complaint_mean_delay=None, complaint_median_delay=None, ars_sent=12, transfers=1,
        transfer_notice_share=1.0, relances=3, signature_completeness=0.5,
    )  # fmt: skip
    period = Period("semaine", "2026-W47", date(2026, 11, 16), date(2026, 11, 22))
    return dashboard.Dashboard(period, "permis", date(2026, 11, 25), figures, [], [], [])


def test_csv_has_the_cli_names_and_exact_values() -> None:
    """The CLI's names and exact values, decimals written with a comma: a French
    spreadsheet read ``0.6666666666666666`` as text (or ``2.5`` as a date)."""
    body = dashboard.figures_csv(_board())
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows[:6] == [
        ["indicateur", "valeur", "objectif", "atteint"],
        ["periode", "2026-W47", "", ""],
        ["du", "2026-11-16", "", ""],
        ["au", "2026-11-22", "", ""],
        ["situation_au", "2026-11-25", "", ""],
        ["service", "permis", "", ""],
    ]
    values = {r[0]: r[1:] for r in rows[6:]}
    assert values["received"] == ["13", "", ""]
    assert values["rate_within_5"][0] == "0,6666666666666666"  # repr's digits: exact
    assert float(values["rate_within_5"][0].replace(",", ".")) == 2 / 3
    assert values["rate_within_5"][1:] == ["> 75 %", "non"]
    assert values["mean_delay"] == ["2,0", "< 5 j", "oui"]
    assert values["signature_completeness"][0] == "0,5"
    assert values["complaint_rate_within_5"] == ["", "> 75 %", ""]
    assert values["relances"][0] == "3"  # integers unchanged
    assert not any("." in value for value, _target, _met in values.values())


def test_csv_writes_small_decimals_without_an_exponent() -> None:
    """``repr`` writes one in a million ``1e-06``: the spreadsheet gets its digits."""
    figures = dataclasses.replace(_board().current, rate_within_5=1e-06, mean_delay=12.5)
    board = dataclasses.replace(_board(), current=figures)
    rows = list(
        csv.reader(io.StringIO(dashboard.figures_csv(board).decode("utf-8-sig")), delimiter=";")
    )
    values = {r[0]: r[1] for r in rows[6:]}
    assert (values["rate_within_5"], values["mean_delay"]) == ("0,000001", "12,5")


def test_the_page_as_of_a_day_leaves_out_the_relances_received_after_it(tmp_path: Path) -> None:
    """Week 47 seen on Thursday 19 November (as of that day): message 24 (received the 17th,
    cartes-grises) was relanced twice on the 20th. The page counted them that day already,
    in its figures and its row per service; seen on the 25th, it does."""
    from test_indicators import load_scenario

    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(ROOT / "rules.yaml")
    store = Store(f"sqlite:///{tmp_path / 'page.db'}")
    try:
        load_scenario(store)
        week = dashboard.parse_period("2026-W47", date(2026, 11, 19))
        for day, relances in ((19, 0), (25, 2)):
            board = dashboard.build(
                config, store, week, date(2026, 11, day), None, ["cartes-grises", "general"]
            )
            assert board.as_of == date(2026, 11, day)
            assert board.current.relances == relances, day
            assert {r["name"]: r["relances"] for r in board.per_service} == {
                "cartes-grises": str(relances),
                "general": "0",
            }, day
    finally:
        store.close()
