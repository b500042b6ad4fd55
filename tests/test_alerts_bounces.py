"""The digest's bounces: each working day's digest tells the bounces of our mail to citizens
recorded since the last digest actually sent (the day's ``alerts-YYYY-MM-DD`` claim), so a
day the worker was down loses none; the previous working day's when none was ever sent; at
most ``BOUNCE_LOOKBACK_DAYS`` back. Fixed days of 2026 (given as ``--date`` or ``today``,
never the clock's): 2026-11-23 is a Monday, 2026-12-25 (Christmas) a Friday."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from servers import SmtpServer, read_mail
from test_alerts import bounce, sending_config

from mailbot import jobs
from mailbot.app.context import App, build_app
from mailbot.cli import main
from mailbot.core.digests import BOUNCE_LOOKBACK_DAYS, bounce_window
from mailbot.core.workdays import WorkingCalendar
from mailbot.store import Store

PARIS = ZoneInfo("Europe/Paris")
AT = time(8, 30)  # rules.yaml's alerts.time
MONDAY = date(2026, 11, 23)
TUESDAY, WEDNESDAY = MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)
FRIDAY_BEFORE = MONDAY - timedelta(days=3)
CHRISTMAS_EVE = date(2026, 12, 24)  # a Thursday; the 25th is a public holiday, a Friday
MONDAY_AFTER_CHRISTMAS = date(2026, 12, 28)


def at(day: date, hour: time = AT) -> datetime:
    return datetime.combine(day, hour, PARIS)


def test_the_window_starts_at_the_last_digest_sent() -> None:
    """Monday's digest sent, none on Tuesday (the worker down): Wednesday's tells what
    bounced from Monday's on; sent every day, a day's window is the previous working
    day's digest to its own, as before."""
    calendar = WorkingCalendar()
    window = bounce_window(WEDNESDAY, calendar, AT, last_sent=MONDAY)
    assert window == (at(MONDAY), at(WEDNESDAY))
    assert bounce_window(WEDNESDAY, calendar, AT, last_sent=TUESDAY) == (
        at(TUESDAY),
        at(WEDNESDAY),
    )


def test_the_window_across_a_weekend_or_a_holiday() -> None:
    """Friday's digest, then Monday's: the weekend in between. Christmas (a Friday) between
    Thursday's digest and Monday's; Wednesday's the last sent, Thursday's missed: from
    Wednesday's."""
    calendar = WorkingCalendar()
    assert bounce_window(MONDAY, calendar, AT, last_sent=FRIDAY_BEFORE)[0] == at(FRIDAY_BEFORE)
    after = MONDAY_AFTER_CHRISTMAS
    assert bounce_window(after, calendar, AT, last_sent=CHRISTMAS_EVE)[0] == at(CHRISTMAS_EVE)
    wednesday = CHRISTMAS_EVE - timedelta(days=1)
    assert bounce_window(after, calendar, AT, last_sent=wednesday) == (at(wednesday), at(after))


def test_the_first_digest_ever_starts_at_the_previous_working_day() -> None:
    """No digest ever sent (a new database, or only hand runs, which record none): from the
    previous working day's alerts time, across a weekend or a holiday."""
    calendar = WorkingCalendar()
    assert bounce_window(WEDNESDAY, calendar, AT) == (at(TUESDAY), at(WEDNESDAY))
    assert bounce_window(MONDAY, calendar, AT, last_sent=None)[0] == at(FRIDAY_BEFORE)
    assert bounce_window(MONDAY_AFTER_CHRISTMAS, calendar, AT)[0] == at(CHRISTMAS_EVE)


def test_the_window_looks_back_at_most_a_month() -> None:
    """A database left without digests for a year sends at most the last month's bounces,
    not a year of them (the older ones stay on the console)."""
    calendar = WorkingCalendar()
    long_ago = WEDNESDAY - timedelta(days=365)
    since, until = bounce_window(WEDNESDAY, calendar, AT, last_sent=long_ago)
    assert BOUNCE_LOOKBACK_DAYS == 31
    assert (since, until) == (at(WEDNESDAY - timedelta(days=31)), at(WEDNESDAY))
    within = WEDNESDAY - timedelta(days=30)
    assert bounce_window(WEDNESDAY, calendar, AT, last_sent=within)[0] == at(within)


def test_the_newest_claim_before_a_day(database: str) -> None:
    """The store's read of the last digest sent: the greatest ``alerts-`` claim before the
    given day (today's or a later one, a hand run ``--date`` in the past, is not it); the
    other claims under other prefixes never."""
    store = Store(database)
    try:
        assert store.last_claim("alerts-", before="2026-11-25") is None
        with store.transaction() as tx:
            for day in ("2026-11-20", "2026-11-23", "2026-11-25", "2026-11-26"):
                assert tx.claim_once(f"alerts-{day}")
            assert tx.claim_once("report-weekly-2026-W48")
        assert store.last_claim("alerts-", before="2026-11-25") == "2026-11-23"
        assert store.last_claim("alerts-", before="2026-11-21") == "2026-11-20"
        assert store.last_claim("alerts-", before="2026-11-20") is None
        assert store.last_claim("alerts-") == "2026-11-26"
        assert store.last_claim("report-weekly-") == "2026-W48"
        with store.transaction() as tx:
            assert tx.last_claim("alerts-", before="2026-11-26") == "2026-11-25"
        with store.session() as session:  # one connection: each read sees the new claims
            assert session.write(lambda tx: tx.last_claim("alerts-")) == "2026-11-26"
            assert session.write(lambda tx: tx.claim_once("alerts-2026-11-27"))
            assert session.write(lambda tx: tx.last_claim("alerts-")) == "2026-11-27"
    finally:
        store.close()


def told(smtp_server: SmtpServer) -> set[str]:
    """The references of the bounce section of the digests the SMTP server received."""
    found: set[str] = set()
    for received in smtp_server.messages:
        digest = read_mail(received.raw)
        text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        if "COURRIELS À L'USAGER NON DISTRIBUÉS" in text:
            section = text.split("COURRIELS À L'USAGER NON DISTRIBUÉS\n", 1)[1]
            found |= set(re.findall(r"^- \[(SM-\d{4}-\d{6})\]", section, re.MULTILINE))
    return found


def scheduled(app: App, smtp_server: SmtpServer, day: date) -> set[str]:
    """The worker's alerts job of ``day`` (claimed once, then delivered): the references
    its digests told as bounced."""
    smtp_server.clear()
    jobs.send_alerts(app.config, app.store, app.renderer, app.outbox, day)
    return told(smtp_server)


def by_hand(config: Path, smtp_server: SmtpServer, day: date) -> set[str]:
    """``mailbot alerts --date day``: the references its digests told as bounced."""
    smtp_server.clear()
    assert main(["--config", str(config), "-q", "alerts", "--date", day.isoformat()]) in (0, 1)
    return told(smtp_server)


@pytest.fixture
def worker(tmp_path: Path, smtp_server: SmtpServer) -> tuple[App, Path]:
    """The app a worker builds from rules.yaml (a SQLite database of the test's own,
    sending to ``smtp_server``), and that file for the command line."""
    config, _ = sending_config(tmp_path, smtp_server)
    return build_app(config), config


def test_a_bounce_after_mondays_digest_is_told_on_wednesday_when_tuesday_had_none(
    worker: tuple[App, Path], smtp_server: SmtpServer
) -> None:
    """Monday's digest sent at 08:30; our AR bounced at 15:00; the worker was down all
    Tuesday: Wednesday's digest tells it (before: it started at Tuesday's alerts time and
    the bounce was told nowhere). Told once: Thursday's does not tell it again."""
    app, _ = worker
    try:
        assert scheduled(app, smtp_server, MONDAY) == set()
        bounce(app.store, 61, "cni-passeport", "ar", at(MONDAY, time(15)))
        assert scheduled(app, smtp_server, WEDNESDAY) == {"SM-2026-000061"}
        assert scheduled(app, smtp_server, WEDNESDAY + timedelta(days=1)) == set()
    finally:
        app.close()


def test_a_bounce_told_in_mondays_digest_is_not_told_again_on_tuesday(
    worker: tuple[App, Path], smtp_server: SmtpServer
) -> None:
    """Friday's digest, a bounce on Friday afternoon and one on Sunday: Monday's digest
    tells both (the weekend between), Tuesday's neither; a bounce on Monday after the
    digest, Tuesday's."""
    app, _ = worker
    try:
        assert scheduled(app, smtp_server, FRIDAY_BEFORE) == set()
        bounce(app.store, 62, "permis", "ar", at(FRIDAY_BEFORE, time(15)))
        bounce(app.store, 63, "permis", "reply", at(MONDAY - timedelta(days=1), time(11)))
        assert scheduled(app, smtp_server, MONDAY) == {"SM-2026-000062", "SM-2026-000063"}
        bounce(app.store, 64, "permis", "ar", at(MONDAY, time(9)))
        assert scheduled(app, smtp_server, TUESDAY) == {"SM-2026-000064"}
    finally:
        app.close()


def test_a_holiday_and_a_missed_day_between_two_digests(
    worker: tuple[App, Path], smtp_server: SmtpServer
) -> None:
    """Wednesday 23 December's digest; a bounce that afternoon; the worker down on
    Thursday 24th; Friday 25th a public holiday (no digest, nothing claimed): Monday
    28th's digest tells it."""
    app, _ = worker
    try:
        wednesday = CHRISTMAS_EVE - timedelta(days=1)
        assert scheduled(app, smtp_server, wednesday) == set()
        bounce(app.store, 65, "permis", "notice", at(wednesday, time(16)))
        assert scheduled(app, smtp_server, CHRISTMAS_EVE + timedelta(days=1)) == set()
        assert scheduled(app, smtp_server, MONDAY_AFTER_CHRISTMAS) == {"SM-2026-000065"}
    finally:
        app.close()


def test_a_hand_run_neither_records_a_digest_nor_makes_the_next_skip_bounces(
    worker: tuple[App, Path], smtp_server: SmtpServer
) -> None:
    """``mailbot alerts`` by hand records no digest: on Wednesday, after Monday's digest
    and a bounce Monday afternoon, it tells the bounce, and so does the worker's digest
    afterwards (the hand run took nothing from it); a hand run after the worker's, the
    same day, tells the same bounces as the worker's did (its window ends today too)."""
    app, config = worker
    try:
        assert scheduled(app, smtp_server, MONDAY) == set()
        bounce(app.store, 66, "etrangers", "ar", at(MONDAY, time(15)))
        assert by_hand(config, smtp_server, WEDNESDAY) == {"SM-2026-000066"}
        assert scheduled(app, smtp_server, WEDNESDAY) == {"SM-2026-000066"}
        assert by_hand(config, smtp_server, WEDNESDAY) == {"SM-2026-000066"}
        assert by_hand(config, smtp_server, WEDNESDAY + timedelta(days=1)) == set()
    finally:
        app.close()


def test_the_first_digest_ever_tells_the_bounces_since_the_previous_working_day(
    worker: tuple[App, Path], smtp_server: SmtpServer
) -> None:
    """A new database, no digest sent yet: Monday's first digest tells what bounced since
    Friday's alerts time, not before."""
    app, _ = worker
    try:
        bounce(app.store, 67, "permis", "ar", at(FRIDAY_BEFORE, time(8)))  # before
        bounce(app.store, 68, "permis", "ar", at(FRIDAY_BEFORE, time(9)))
        assert scheduled(app, smtp_server, MONDAY) == {"SM-2026-000068"}
    finally:
        app.close()


def test_digests_missed_for_two_months_tell_only_the_last_months_bounces(
    worker: tuple[App, Path], smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The last digest sent two months before: the next tells the bounces of the last
    ``BOUNCE_LOOKBACK_DAYS`` days only, and the worker's log says why the older are not."""
    app, _ = worker
    today = WEDNESDAY + timedelta(weeks=8)  # 2027-01-20, a Wednesday, after the mail (2026-11-16)
    try:
        with app.store.transaction() as tx:
            assert tx.claim_once(f"alerts-{(today - timedelta(days=60)).isoformat()}")
        bounce(app.store, 69, "permis", "ar", at(today - timedelta(days=45), time(15)))
        bounce(app.store, 70, "permis", "ar", at(today - timedelta(days=20), time(15)))
        assert scheduled(app, smtp_server, today) == {"SM-2026-000070"}
        assert "no digest sent for over a month" in caplog.text
    finally:
        app.close()
