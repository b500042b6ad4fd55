"""Schedules (alerts.time, reports.weekly.cron): one parser, validated at load with the key
path, and the worker and the weekly report's due test reading them the same way."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
from rulesfile import dump_rules, load_rules

from mailbot.app.report import report_due
from mailbot.config import load_config
from mailbot.core.schedule import parse_time, parse_weekly
from mailbot.errors import ConfigError, ScheduleError

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from mailbot.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
WEEKLY_EXPECTED = (
    'expected "<day> HH:MM" such as "mon 08:00", or a 5-field crontab such as "0 8 * * mon"'
)


def write_rules(tmp_path: Path, **changes: Any) -> Path:
    data = load_rules()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data["database"] = f"sqlite:///{tmp_path / 'mailbot.db'}"
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("mon 08:00", ("0", "8", "*", "*", "mon")),
        ("MON 08:00", ("0", "8", "*", "*", "mon")),
        ("fri 17:45", ("45", "17", "*", "*", "fri")),
        ("mon-fri 07:30", ("30", "7", "*", "*", "mon-fri")),
        ("mon,thu 09:05", ("5", "9", "*", "*", "mon,thu")),
        ("0 8 * * mon", ("0", "8", "*", "*", "mon")),
        ("30 7 * * mon-fri", ("30", "7", "*", "*", "mon-fri")),
        ("0 8 * * *", ("0", "8", "*", "*", "*")),
    ],
)
def test_weekly_schedules_accepted(text: str, fields: tuple[str, ...]) -> None:
    parsed = parse_weekly(text)
    assert (parsed.minute, parsed.hour, parsed.day, parsed.month, parsed.day_of_week) == fields


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lundi 8h", f"{WEEKLY_EXPECTED} (got 'lundi 8h')"),
        ("lundi 08:00", f"{WEEKLY_EXPECTED} (got 'lundi 08:00')"),
        ("mon 8h", f"{WEEKLY_EXPECTED} (got 'mon 8h')"),
        ("mon 8:00", f"{WEEKLY_EXPECTED} (got 'mon 8:00')"),
        ("mon 24:00", f"{WEEKLY_EXPECTED} (got 'mon 24:00')"),
        ("monday", f"{WEEKLY_EXPECTED} (got 'monday')"),
        ("", f"{WEEKLY_EXPECTED} (got '')"),
        ("0 8 * * 1", "day-of-week must use day names"),
        ("0 25 * * mon", "invalid crontab"),
        ("0 8 * * lundi", "invalid crontab"),
        ("0 8 1-7 * mon", "not both"),
    ],
)
def test_weekly_schedules_refused_with_the_expected_form(text: str, expected: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_weekly(text)
    assert expected in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["8h30", "8:30", "08:60", "24:00", "08:30:00", "huit heures"])
def test_clock_times_refused(text: str) -> None:
    with pytest.raises(ScheduleError, match=r'expected "HH:MM" such as "08:30"'):
        parse_time(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"reports__weekly__cron": "lundi 8h"},
            f"reports.weekly.cron: {WEEKLY_EXPECTED} (got 'lundi 8h')",
        ),
        (
            {"reports__weekly__cron": "0 8 * * 1"},
            "reports.weekly.cron: crontab day-of-week must use day names",
        ),
        ({"alerts__time": "8h30"}, 'alerts.time: expected "HH:MM" such as "08:30" (got \'8h30\')'),
        ({"timezone": "Europe/Pariss"}, "timezone: unknown time zone 'Europe/Pariss'"),
        (
            {"retention__purge_time": "3h"},
            'retention.purge_time: expected "HH:MM" such as "08:30" (got \'3h\')',
        ),
        (
            {"polling__interval_seconds": 0},
            "polling.interval_seconds: Input should be greater than 0",
        ),
    ],
)
def test_schedules_are_validated_at_load_with_their_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = write_rules(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_mailbot_check_refuses_a_bad_cron(tmp_path: Path) -> None:
    """The reported case: "lundi 8h" passed `mailbot check`, then crashed the worker."""
    path = write_rules(tmp_path, reports__weekly__cron="lundi 8h")
    result = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}: reports.weekly.cron: {WEEKLY_EXPECTED} (got 'lundi 8h')" in result.stderr


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("mon 08:00", datetime(2026, 11, 25, 12, 0), datetime(2026, 11, 30, 8, 0)),
        ("tue 09:15", datetime(2026, 11, 25, 12, 0), datetime(2026, 12, 1, 9, 15)),
        ("0 8 * * mon", datetime(2026, 11, 25, 12, 0), datetime(2026, 11, 30, 8, 0)),
        ("30 6 * * wed,fri", datetime(2026, 11, 25, 12, 0), datetime(2026, 11, 27, 6, 30)),
    ],
)
def test_the_worker_schedules_what_the_config_says(
    tmp_path: Path, cron: str, after: datetime, expected: datetime
) -> None:
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    path = write_rules(tmp_path, reports__weekly__cron=cron, alerts__time="07:45")
    app = build_app(path)
    try:
        jobs = {job.id: job for job in make_worker(app).build_scheduler().get_jobs()}
    finally:
        app.store.close()
    weekly = jobs["weekly-report"].trigger.get_next_fire_time(None, after.replace(tzinfo=PARIS))
    assert weekly == expected.replace(tzinfo=PARIS)
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=PARIS)
    alerts = jobs["alerts"].trigger.get_next_fire_time(None, saturday)
    assert alerts == datetime(2026, 11, 30, 7, 45, tzinfo=PARIS)  # the next working day


def test_the_worker_purges_every_day_at_the_configured_time(tmp_path: Path) -> None:
    """Retention holds without an operator's cron: the worker's scheduler purges daily, at
    the configured local time, what is older than retention.days (a Sunday too)."""
    from test_store import new_message

    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    app = build_app(write_rules(tmp_path, retention__purge_time="02:10", retention__days=365))
    try:
        worker = make_worker(app)
        jobs = {job.id: job for job in worker.build_scheduler().get_jobs()}
        saturday = datetime(2026, 11, 28, 12, 0, tzinfo=PARIS)
        purge = jobs["retention-purge"].trigger.get_next_fire_time(None, saturday)
        assert purge == datetime(2026, 11, 29, 2, 10, tzinfo=PARIS)
        now = datetime.now(UTC)
        with app.store.transaction() as tx:
            tx.insert_message(new_message(received_at=now - timedelta(days=366)))
            tx.insert_message(
                new_message(uid=2, message_id="<b@x>", reference="SM-2026-000002", received_at=now)
            )
        assert worker.purge is not None and worker.purge() == 1
        assert [row.uid for row in app.store.messages()] == [2]
    finally:
        app.store.close()


def test_no_scheduled_purge_when_the_operator_runs_it(tmp_path: Path) -> None:
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    app = build_app(write_rules(tmp_path, retention__purge_time=None))
    try:
        jobs = {job.id for job in make_worker(app).build_scheduler().get_jobs()}
    finally:
        app.store.close()
    assert "retention-purge" not in jobs and "weekly-report" in jobs


@pytest.mark.parametrize(
    ("cron", "now", "due"),
    [
        ("mon 08:00", datetime(2026, 11, 23, 7, 59), False),
        ("mon 08:00", datetime(2026, 11, 23, 8, 0), True),
        ("mon 08:00", datetime(2026, 11, 29, 23, 59), True),
        ("0 8 * * mon", datetime(2026, 11, 23, 7, 59), False),
        ("0 8 * * mon", datetime(2026, 11, 23, 8, 0), True),
        ("wed,fri 06:30", datetime(2026, 11, 24, 12, 0), False),
        ("wed,fri 06:30", datetime(2026, 11, 25, 6, 30), True),
        ("0 8 * * *", datetime(2026, 11, 23, 7, 0), False),  # every day: Monday's counts
        ("0 8 * * *", datetime(2026, 11, 23, 8, 0), True),
    ],
)
def test_report_due_reads_the_same_schedule(cron: str, now: datetime, due: bool) -> None:
    assert report_due(now.replace(tzinfo=PARIS), cron, PARIS) is due


def test_a_worker_started_after_the_alerts_time_catches_them_up(tmp_path: Path) -> None:
    """Every worker down at the alerts' time (a reboot at 7:40, back at 8:10): the worker
    that starts afterwards sends the day's alerts at once (claimed once a day, so a
    restart after they left sends nothing), not the next working day."""
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    for time_of_day, enabled, caught_up in (("00:00", True, True), ("00:00", False, False)):
        root = tmp_path / f"{enabled}"
        root.mkdir()
        app = build_app(write_rules(root, alerts__time=time_of_day, alerts__enabled=enabled))
        try:
            worker = make_worker(app)
            jobs = {job.id for job in worker.build_scheduler().get_jobs()}
        finally:
            app.store.close()
        assert ("alerts-catch-up" in jobs) is caught_up
    app = build_app(write_rules(tmp_path, alerts__time="07:45"))
    try:
        worker = make_worker(app)
        assert not worker.alerts_due(datetime(2026, 12, 3, 7, 44, tzinfo=PARIS))
        assert worker.alerts_due(datetime(2026, 12, 3, 7, 45, tzinfo=PARIS))
    finally:
        app.store.close()


def test_a_mailbox_cycle_running_past_its_interval_is_no_warning(tmp_path: Path) -> None:
    """A batch read near the end of a cycle, or a large one, runs the cycle past its
    interval: the next starts when it ends. APScheduler's "skipped: maximum number of
    running instances reached" came as a WARNING with every such batch (the operations
    walkthrough: after 3 of 3 batches), an alarm for nothing; DEBUG now. Here each
    mailbox's cycle lasts until the scheduler has skipped one of its runs."""
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    skips: list[logging.LogRecord] = []
    skipped = threading.Event()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "maximum number of running instances" in record.getMessage():
                skips.append(record)
                skipped.set()

    def long_cycle(budget: float) -> list[object]:
        skipped.wait(60)  # a large batch
        return []

    handler, root, ours = Capture(), logging.getLogger(), logging.getLogger("mailbot")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)  # `mailbot -v run`: the skip is shown, at DEBUG
    app = build_app(write_rules(tmp_path, polling__interval_seconds=0.2))
    scheduler = None
    try:
        worker = make_worker(app)
        for poller in worker.pollers.values():
            poller.cycle = long_cycle  # type: ignore[method-assign,assignment]
        scheduler = worker.build_scheduler()
        for job in scheduler.get_jobs():
            if not job.id.startswith("mailbox:"):
                job.remove()  # no report nor alert: the mailboxes' jobs alone
        scheduler.start()
        assert skipped.wait(60), "no run of a mailbox's job was skipped"
    finally:
        skipped.set()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        root.removeHandler(handler)
        ours.setLevel(level)
        app.store.close()
    assert skips and {record.levelname for record in skips} == {"DEBUG"}


def shut_down(scheduler: Any) -> None:
    """``shutdown(wait=True)`` once the scheduler's pass over the due jobs is over (its lock
    taken and given back): APScheduler marks itself stopped before it takes that lock, and
    a pass then removing the date job it just started finds no such job (JobLookupError in
    its thread, a warning in the test's report)."""
    scheduler.get_jobs()
    scheduler.shutdown(wait=True)


def test_a_scheduled_job_meeting_a_read_only_database_says_it_once_and_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI, stop 38: PostgreSQL turned read-only under a running worker while it sent the
    day's alerts; the job's delivery met SQLSTATE 25006 and APScheduler logged a whole
    traceback (the job lost, today's alerts left unsent). Now a WARNING naming the job
    and the reason, and the job tried again after a backoff until it runs."""
    import psycopg
    import sqlalchemy as sa

    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    records: list[logging.LogRecord] = []
    ran = threading.Event()
    calls: list[int] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    def alerts() -> object:
        calls.append(len(calls))
        if len(calls) == 1:
            refusal = psycopg.errors.ReadOnlySqlTransaction("read-only transaction")
            raise sa.exc.InternalError("SELECT … FOR UPDATE", {}, refusal)
        ran.set()
        return {}

    handler, root, ours = Capture(), logging.getLogger(), logging.getLogger("mailbot")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    import mailbot.worker as worker_module

    class Noon(datetime):  # the retry is within the day whenever the test runs (not
        @classmethod  # at 23:59:59, a retry given up); in the past: it runs at once
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            noon = datetime(2026, 12, 3, 12, 0, tzinfo=PARIS)
            return noon.astimezone(tz) if tz is not None else noon

    monkeypatch.setattr(worker_module, "datetime", Noon)
    app = build_app(write_rules(tmp_path, alerts__time="00:00"))
    scheduler = None
    try:
        worker = make_worker(app)
        worker.alerts = alerts
        worker.keeper = None  # alone: no lease to hold before a job runs
        scheduler = worker.build_scheduler()
        for job in scheduler.get_jobs():
            if job.id != "alerts-catch-up":
                job.remove()
        scheduler.start()
        assert ran.wait(30), "the alerts were not tried again"
    finally:
        if scheduler is not None:
            shut_down(scheduler)
        root.removeHandler(handler)
        ours.setLevel(level)
        app.store.close()
    assert len(calls) == 2
    assert not [r for r in records if r.exc_info is not None], "a traceback was logged"
    failed = [r for r in records if r.getMessage().startswith("scheduled job failed")]
    assert [(r.levelname, getattr(r, "job", None)) for r in failed] == [
        ("WARNING", "alerts-catch-up")
    ]
    assert "read-only" in getattr(failed[0], "reason", "")
    assert [r.levelname for r in records if r.getMessage() == "scheduled job done"] == ["INFO"]


def _refused() -> Exception:
    import psycopg
    import sqlalchemy as sa

    refusal = psycopg.errors.ReadOnlySqlTransaction("read-only transaction")
    return sa.exc.InternalError("UPDATE …", {}, refusal)


@contextlib.contextmanager
def lone_worker(tmp_path: Path) -> Iterator[tuple[Worker, BackgroundScheduler]]:
    """A worker alone (no lease to hold before a job runs) and its scheduler, no job in
    it: the tests add the jobs they watch."""
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    app = build_app(write_rules(tmp_path))
    try:
        worker = make_worker(app)
        worker.keeper = None
        scheduler = worker.build_scheduler()
        scheduler.remove_all_jobs()
        yield worker, scheduler
    finally:
        app.store.close()


def test_a_retry_stays_within_the_day_and_the_probe_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The review of the retry: a retry is never dropped for starting late in a busy
    pool (no misfire grace); the probe, which sends before it records, is not retried
    (its interval runs it again: a retry beside it could send two rounds); and a retry
    that would run after midnight is given up — it would send the next day's alerts at
    night in place of the day's — and the next day's run starts a chain of its own."""
    import mailbot.worker as worker_module

    def refused() -> object:
        raise _refused()

    late = datetime(2026, 12, 3, 23, 59, 59, 500000, tzinfo=PARIS)
    with lone_worker(tmp_path) as (worker, scheduler):
        worker._scheduled(refused, "alerts", scheduler)()
        (retry,) = scheduler.get_jobs()
        assert retry.id == "alerts-retry" and retry.misfire_grace_time is None
        scheduler.remove_all_jobs()
        worker._scheduled(refused, "probe", scheduler, retry=False)()
        assert scheduler.get_jobs() == []

        class LateClock(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return late.astimezone(tz) if tz is not None else late

        monkeypatch.setattr(worker_module, "datetime", LateClock)
        caplog.set_level(logging.WARNING, logger="mailbot")
        at_midnight = worker._scheduled(refused, "alerts", scheduler)
        at_midnight()
        assert scheduler.get_jobs() == []
        assert "scheduled job given up, its day is over" in caplog.messages
        late = datetime(2026, 12, 4, 10, 0, tzinfo=PARIS)  # the next day's run, failing
        at_midnight()
        assert [job.id for job in scheduler.get_jobs()] == ["alerts-retry"]


def test_a_retry_added_as_the_worker_stops_does_not_hang_its_shutdown(tmp_path: Path) -> None:
    """The review of the retry: APScheduler's ``shutdown(wait=True)`` holds its job stores'
    lock while it waits for the running jobs; a job that failed just before the stop and
    adds its retry as the shutdown begins waited for that lock for ever, and the shutdown
    for the job (a hung worker, killed by systemd). The retry is now added before the
    shutdown begins, or not at all."""

    adding, shutting = threading.Event(), threading.Event()

    def refused() -> object:
        raise _refused()

    with lone_worker(tmp_path) as (worker, scheduler):
        add_job, shutdown = scheduler.add_job, scheduler.shutdown

        def late_add_job(*args: Any, **kwargs: Any) -> Any:
            adding.set()  # the job passed its look at the stop: the stop comes now
            shutting.wait(2)  # the shutdown begins meanwhile, if nothing holds it back
            return add_job(*args, **kwargs)

        def traced_shutdown(wait: bool = True) -> None:
            shutting.set()
            shutdown(wait=wait)

        scheduler.add_job = late_add_job  # type: ignore[method-assign]
        scheduler.shutdown = traced_shutdown  # type: ignore[method-assign]
        scheduler.start()
        add_job(worker._scheduled(refused, "alerts", scheduler), id="alerts-now")
        assert adding.wait(30), "the job did not fail"
        worker.stop.set()
        stopping = threading.Thread(target=worker._shut, args=(scheduler,), daemon=True)
        stopping.start()
        stopping.join(20)
        assert not stopping.is_alive(), "the shutdown hangs on the job adding its retry"


def test_a_retry_due_while_the_run_that_added_it_still_ends_is_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry chain's second failure adds the next retry under the same job id
    (``<name>-retry``) from the run of that id: APScheduler counts running instances per
    id, and with one allowed (its default), a retry that came due while the run that
    added it was still ending (a thread held back past the backoff's delay on a loaded
    machine) was skipped ("maximum number of running instances reached") and removed:
    the chain ended there, the day's alerts never sent. Here each run that adds a retry
    ends only once the scheduler has decided about that retry."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED, JobEvent

    import mailbot.worker as worker_module
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    class Noon(datetime):  # within the day; in the past: each retry is due at once
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            noon = datetime(2026, 12, 3, 12, 0, tzinfo=PARIS)
            return noon.astimezone(tz) if tz is not None else noon

    monkeypatch.setattr(worker_module, "datetime", Noon)
    calls: list[int] = []
    decided: list[int] = []  # the scheduler's decisions about the retry job, by event code
    settled = threading.Condition()

    def alerts() -> object:
        calls.append(len(calls))
        if len(calls) <= 2:
            raise _refused()
        with settled:
            settled.notify_all()
        return {}

    def on_event(event: JobEvent) -> None:
        if event.job_id == "alerts-retry":
            with settled:
                decided.append(event.code)
                settled.notify_all()

    app = build_app(write_rules(tmp_path))
    scheduler = None
    try:
        worker = make_worker(app)
        worker.keeper = None
        scheduler = worker.build_scheduler()
        scheduler.remove_all_jobs()
        scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES)
        add_job = scheduler.add_job

        def add_then_end_late(*args: Any, **kwargs: Any) -> Any:
            with settled:
                before = len(decided)
            job = add_job(*args, **kwargs)
            with settled:  # the run that added the retry is still running meanwhile
                settled.wait_for(lambda: len(decided) > before, timeout=30)
            return job

        scheduler.add_job = add_then_end_late  # type: ignore[method-assign]
        scheduler.start()
        add_job(worker._scheduled(alerts, "alerts", scheduler), id="alerts-now")
        with settled:
            settled.wait_for(lambda: len(calls) == 3 or EVENT_JOB_MAX_INSTANCES in decided, 30)
    finally:
        if scheduler is not None:
            shut_down(scheduler)
        app.store.close()
    assert EVENT_JOB_MAX_INSTANCES not in decided, "a retry was skipped: the chain ended"
    assert calls == [0, 1, 2]


def test_a_daily_job_due_while_every_mailbox_cycle_runs_still_runs(tmp_path: Path) -> None:
    """Each folder's cycle holds one of the scheduler's threads for most of its interval
    (IDLE): with APScheduler's defaults (10 threads, a job started more than 1 s after its
    time dropped as missed), ten folders (five mailboxes and their Sent folders) left the
    day's alerts queued behind their cycles, then dropped ("was missed by") — every day,
    and the weekly report, the purge and the catch-ups with them. Here twelve folders'
    cycles last until the alerts have run (or 3 s, more than the old grace)."""
    from apscheduler.events import EVENT_JOB_MISSED, JobEvent

    from mailbot.app.context import build_app
    from mailbot.worker import MAILBOX_JOB, make_worker

    ran, missed = threading.Event(), threading.Event()

    class Cycling:
        def __init__(self) -> None:
            self.started = threading.Event()

        def cycle(self, budget: float) -> list[object]:
            self.started.set()
            ran.wait(3)  # the folder waits for new mail (IDLE) meanwhile
            return []

    def alerts() -> object:
        ran.set()
        return {}

    def on_missed(event: JobEvent) -> None:
        if not event.job_id.startswith(MAILBOX_JOB):
            missed.set()

    app = build_app(write_rules(tmp_path, alerts__time="00:00"))
    scheduler = None
    try:
        worker = make_worker(app)
        worker.alerts = alerts
        worker.keeper = None
        folders = [Cycling() for _ in range(12)]
        worker.pollers = {f"box{n}": folder for n, folder in enumerate(folders)}  # type: ignore[assignment]
        scheduler = worker.build_scheduler()
        for job in scheduler.get_jobs():
            if not job.id.startswith(MAILBOX_JOB) and job.id != "alerts-catch-up":
                job.remove()
        scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
        scheduler.start()
        deadline = time.monotonic() + 30
        while not (ran.is_set() or missed.is_set()) and time.monotonic() < deadline:
            ran.wait(0.05)
    finally:
        ran.set()
        if scheduler is not None:
            shut_down(scheduler)
        app.store.close()
    assert not missed.is_set(), "a scheduled job was dropped for starting late"
    assert ran.is_set()


def test_a_stop_during_the_schedulers_pass_over_a_one_off_job_is_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APScheduler's shutdown marks the scheduler stopped before it takes its lock: a pass
    over the due jobs that had just started a one-off job (a catch-up at start, a retry)
    then failed to remove it, a JobLookupError in the scheduler's thread — a traceback in
    the journal at a stop. The worker's shutdown waits for the pass first."""
    from apscheduler.schedulers.base import STATE_STOPPED

    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    submitted = threading.Event()
    with lone_worker(tmp_path) as (worker, scheduler):
        executor = scheduler._lookup_executor("default")
        submit = executor.submit_job

        def submit_then_linger(job: Any, run_times: Any) -> None:
            submit(job, run_times)
            submitted.set()  # the pass goes on to remove the one-off job: the stop comes now
            deadline = time.monotonic() + 2
            while scheduler.state != STATE_STOPPED and time.monotonic() < deadline:
                time.sleep(0.01)

        monkeypatch.setattr(executor, "submit_job", submit_then_linger)
        scheduler.start()
        scheduler.add_job(lambda: None, id="catch-up")
        assert submitted.wait(30), "the one-off job was not started"
        worker.stop.set()
        worker._shut(scheduler)
    assert raised == []
