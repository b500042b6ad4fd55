"""Scheduling: one APScheduler job per mailbox (and the digests, the report); a delivery thread.

``poll_once`` is the cron/test entry point and ``run`` the service; both deliver on a thread
of their own, so that a batch's mail leaves while the next batch is fetched and recorded (and
in ``run`` a slow or hung SMTP server never holds up intake). ``poll_once`` returns once
everything due was attempted; ``run`` keeps going until SIGTERM/SIGINT; on a signal
each job finishes the mail in hand and the send in flight is interrupted (mail not yet sent
stays queued).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailbot.app import supervision
from mailbot.app.context import App
from mailbot.app.delivery import Outbox
from mailbot.app.delivery_loop import DeliveryLoop
from mailbot.app.delivery_recovery import recover_interrupted
from mailbot.app.intake import Pipeline
from mailbot.app.sent import SentPipeline, signature_check
from mailbot.config import Config
from mailbot.core import language
from mailbot.core.incoming import Outcome
from mailbot.core.leases import SCHEDULER_LEASE, folder_lease
from mailbot.core.schedule import parse_time, parse_weekly
from mailbot.core.workdays import WorkingCalendar
from mailbot.errors import FirstPollError, MailboxError, TransientStoreError
from mailbot.logs import RepeatedFailures
from mailbot.mail.imap import inboxes, sent_folders
from mailbot.mail.poller import Backoff, MailboxPoller, PollRecord, Processor, Source
from mailbot.store.errors import is_lasting, transient_reason

# What only `run` uses (the scheduler and its jobs, the leases' keeper, the probe, the
# metrics endpoint) is imported when used: `poll --once` starts without it.
if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from mailbot.app.cluster import Keeper
    from mailbot.metrics import Endpoint, Metrics

log = logging.getLogger(__name__)


SIGNAL_CHECK_SECONDS = 1.0
MAILBOX_JOB = "mailbox:"  # the id of a mailbox's polling job: mailbox:general
MAILS_PER_FETCHED = 2  # what a transferred mail queues: its AR and its forward
# The scheduler's threads beside one per folder: the daily and weekly jobs, their
# catch-ups, takeovers and retries, the probe (APScheduler's whole default pool).
OTHER_JOB_THREADS = 10


class _CycleOverruns(logging.Filter):
    """APScheduler warns when a job is still running at its next time ("Execution of job
    … skipped: maximum number of running instances reached"). A mailbox's cycle runs
    past its interval by design whenever a batch read near its end, or a large one, takes
    longer than what is left: the next cycle simply starts when it ends (coalesce), and
    nothing is missed. As a WARNING it came with every such batch (3 of 3 batches in the
    operations walkthrough at a 5 s interval), an alarm for nothing in the journal: it is
    DEBUG for mailbox jobs. A cycle that really hangs shows in `mailbot status` (the
    folder's lag) and in ``mailbot_poll_lag_seconds``; other jobs' skips stay WARNINGs."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if (
            record.levelno == logging.WARNING
            and str(record.msg).startswith("Execution of job")
            and "maximum number of running instances" in str(record.msg)
            and str(getattr(job, "id", "")).startswith(MAILBOX_JOB)
        ):
            if not log.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


CYCLE_OVERRUNS = _CycleOverruns()


class Worker:
    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        outbox: Outbox,
        sources: Mapping[str, Source],
        sent: Mapping[str, tuple[str, Source]] | None = None,
        sent_pipeline: Processor | None = None,
        alerts: Callable[[], object] | None = None,
        weekly_report: Callable[[], object] | None = None,
        lease_seconds: float | None = None,
        probe: Callable[[], object] | None = None,
        purge: Callable[[], object] | None = None,
    ) -> None:
        self.probe = probe
        self.purge = purge
        self.alerts = alerts
        self.weekly_report = weekly_report
        self.config = config
        self.pipeline = pipeline
        self.outbox = outbox
        # One stop for intake and delivery: SIGTERM also interrupts a send in progress.
        self.stop = outbox.stop
        self.delivery: DeliveryLoop | None = None  # delivery on its own thread, when running
        self._retries = threading.Lock()  # scheduled jobs' retries against the shutdown
        self.pollers = {
            name: MailboxPoller(
                name,
                config.mailboxes[name].imap.folder,
                source,
                pipeline,
                config.polling,
                self.deliver,
                self.stop,
            )
            for name, source in sources.items()
        }
        # Sent folders and the tracking mailbox: read like inboxes, by the reply detector.
        for name, (folder, source) in (sent or {}).items():
            assert sent_pipeline is not None
            self.pollers[f"{name}:{folder}"] = MailboxPoller(
                name,
                folder,
                source,
                sent_pipeline,
                config.polling,
                self.deliver,
                self.stop,
            )
        self.failures: dict[str, str] = {}
        self.refused: dict[str, FirstPollError] = {}  # first polls refused (mail already there)
        for poller in self.pollers.values():
            poller.observer = self._observed
        self.metrics: Metrics | None = None  # serve_metrics(): the Prometheus endpoint
        self.endpoint: Endpoint | None = None
        # Leases (issue 16): a folder is read, and the scheduled jobs run, by one worker.
        self.keeper: Keeper | None = None
        if lease_seconds is not None:
            self._share(lease_seconds)

    def _share(self, lease_seconds: float) -> None:
        from mailbot.app.cluster import Keeper, this_worker

        store = self.pipeline.store
        names = {name: folder_lease(p.name, p.folder) for name, p in self.pollers.items()}
        keeper = Keeper(
            store,
            this_worker(self.outbox.holder, store),
            [*names.values(), SCHEDULER_LEASE],
            lease_seconds,
            self.stop,
        )
        for name, poller in self.pollers.items():
            poller.may_work = functools.partial(keeper.holds, names[name])
        self.keeper = keeper

    def _observed(self, record: PollRecord) -> None:
        """Each poll's end: recorded for `mailbot status`, counted for the metrics."""
        supervision.record_poll(
            self.pipeline.store,
            record.mailbox,
            record.folder,
            self.outbox.holder,
            record.started_at,
            record.seconds,
            record.error,
            database=record.database,
        )
        if self.metrics is not None:
            self.metrics.observe(record)

    def serve_metrics(self, host: str, port: int) -> None:
        """Serve /metrics, /healthz and /readyz while ``run`` runs."""
        from mailbot.metrics import Endpoint, Metrics

        store = self.pipeline.store
        self.metrics = Metrics(self.config, store, self.pollers)
        self.endpoint = Endpoint(self.metrics, host, port, self.alive, self.ready)

    def alive(self) -> bool:
        return not self.stop.is_set()

    def ready(self) -> bool:
        shared = self.keeper is None or self.keeper.current
        return shared and supervision.reachable(self.pipeline.store)

    def recover(self) -> None:
        """Sends a crash left half done: to citizens uncertain, internal mail queued again.
        Alone on the database (SQLite, or no leases) all of them, but this process's own
        claims (its console's, live); sharing it, only a dead worker's (the keeper's job)."""
        if self.keeper is not None and self.pipeline.store.engine.dialect.name != "sqlite":
            return
        # Not this process's own claims: its console (web.enabled) may be delivering now.
        interrupted = recover_interrupted(self.pipeline.store, self.outbox.holder)
        if interrupted:
            log.error("interrupted sends marked uncertain", extra={"outbox": interrupted})

    def _scheduled(
        self,
        job: Callable[[], object],
        name: str,
        scheduler: BackgroundScheduler,
        retry: bool = True,
    ) -> Callable[[], object]:
        """A scheduled job runs on the one worker holding the scheduler's lease. A database
        busy, unreachable or read-only (a failover) is said once, not as APScheduler's
        traceback, and the job is tried again after a backoff until the day it failed on
        is over: today's alerts or the week's report are claimed once in the database, so
        a retry never sends twice, and a retry after midnight would send the next day's
        alerts at night in place of today's. ``retry=False`` (the probe: it sends before
        it records, and its interval runs it again anyway): said, not retried."""
        failures = RepeatedFailures(
            log,
            "scheduled job failed, the database busy, unreachable or read-only",
            "scheduled job done",
            transient_reason,
            extra={"job": name},
            lasting=is_lasting,
        )
        backoff = Backoff(self.config.polling.max_backoff_seconds)
        zone = ZoneInfo(self.config.timezone)
        failing_since: list[date] = []  # the local day of the first failure of a run of them

        def run_if_ours() -> object:
            if self.keeper is not None and not self.keeper.holds(SCHEDULER_LEASE):
                return None
            try:
                result = job()
            except Exception as exc:
                if transient_reason(exc) is None:
                    raise  # a bug: APScheduler logs it with its traceback
                failures.failed(exc)
                failing_since[:] = failing_since or [datetime.now(zone).date()]
                at = datetime.now(zone) + timedelta(seconds=backoff.next_delay())
                today = at.date() == failing_since[0]
                if not (retry and today and self._retry(scheduler, run_if_ours, name, at)):
                    # The next run (its schedule's, tomorrow's) starts a new day's.
                    if retry and not self.stop.is_set():
                        log.warning("scheduled job given up, its day is over", extra={"job": name})
                    failing_since.clear()
                    backoff.reset()
                return None
            failures.succeeded()
            backoff.reset()
            failing_since.clear()
            return result

        return run_if_ours

    def _retry(
        self, scheduler: BackgroundScheduler, job: Callable[[], object], name: str, at: datetime
    ) -> bool:
        """Schedule ``job`` again at ``at``, unless the worker is stopping. Under the lock
        the shutdown passes before APScheduler's: its ``shutdown(wait=True)`` holds the job
        stores' lock while it waits for the running jobs, so a job adding its retry then
        would wait for it for ever, and the shutdown for the job."""
        with self._retries:
            if self.stop.is_set():
                return False
            scheduler.add_job(
                job,
                "date",
                run_date=at,
                id=f"{name}-retry",
                replace_existing=True,
                misfire_grace_time=None,  # late in a busy pool: run, never dropped
                # A chain's next retry is added by a run of this same id, still ending
                # when it comes due if its thread was held back past the delay:
                # APScheduler counts instances per id, and at one (its default) skipped
                # and removed the retry, ending the chain (the day's alerts unsent).
                max_instances=2,
            )
            return True

    def _shut(self, scheduler: BackgroundScheduler) -> None:
        """Stop the scheduler once its running jobs are over (the stop is set)."""
        with self._retries:  # a retry being added is in; none is added after
            pass
        # Waits for a pass over the due jobs to end, and leaves none to the next: APScheduler's
        # shutdown marks it stopped before taking its lock, and a pass then removing a
        # one-off job it had started (a catch-up, a retry) raised JobLookupError in its
        # thread (a traceback at a stop).
        scheduler.remove_all_jobs()
        scheduler.shutdown(wait=True)

    def deliver(self) -> None:
        """After mail is queued: hand it to the delivery thread, or (none running) send it now."""
        if self.delivery is not None:
            self.delivery.wake()
        else:
            self.outbox.deliver_due()

    def poll_once(self, keep: bool = True) -> list[Outcome]:
        """Everything new in every mailbox, then the outbox. Failures are collected, not raised.

        ``keep=False`` (``poll --once -q``: nothing printed) returns no outcomes: each batch's
        are counted in its log line and dropped, so that the poll's memory is bounded by the
        batch, not the backlog (issue 14: peak RSS 20,000 vs 1,000 mails)."""
        for poller in self.pollers.values():
            poller.keep = keep
        if self.keeper is not None:
            try:
                self.keeper.start()  # renewed while it runs: it sends, others must see it alive
            except TransientStoreError as exc:  # nothing read: the next poll does it all
                if is_lasting(exc):  # a read-only SQLite file: for someone to mend
                    log.error("poll failed, the database refuses writes", extra={"error": str(exc)})
                else:
                    log.warning(
                        "poll failed, database busy or unreachable", extra={"error": str(exc)}
                    )
                for name, poller in self.pollers.items():
                    self.failures[name] = str(exc)
                    poller.disconnect_quietly()
                return []
        try:
            return self._poll_all()
        finally:
            if self.keeper is not None:
                self.keeper.close()

    def _poll_all(self) -> list[Outcome]:
        """Each folder in turn, each batch's mail sent by the delivery thread while the next
        batch is fetched and recorded; returns once all that is due was attempted.

        The thread only sends and claims: its claims come a group at a time
        (``Outbox.claim_group``), and on SQLite one that meets an open intake part rides on
        it (store/desk), cutting the part once per group rather than once per mail."""
        self.recover()
        delivery = self._delivery_loop()
        self.delivery = delivery
        delivery.start()
        try:
            outcomes = self._poll_folders()
        finally:
            self.delivery = None
            # More than one delivery's worth may be due (retries now due, a backlog): on
            # until a delivery takes nothing.
            delivery.finish()
        return outcomes

    def _delivery_loop(self) -> DeliveryLoop:
        """The delivery thread: it looks for due retries every half retry delay (5 s at
        least) when nobody wakes it, and takes what a FETCH batch queues at a time: its ARs,
        and the forwards between them when it was transferred. A batch's worth of mail in
        all cut a transferred batch in two deliveries, and the SMTP process waited at each
        one's start and end (bench/README, thirty-second session)."""
        interval = max(5.0, self.config.outbox.retry_base_seconds / 2)
        batch = self.config.polling.batch_size
        return DeliveryLoop(self.outbox, interval, limit=MAILS_PER_FETCHED * batch, citizens=batch)

    def _poll_folders(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for name, poller in self.pollers.items():
            if not poller.may_work():
                log.info("folder held by another worker, skipped", extra={"mailbox": name})
                poller.disconnect_quietly()
                continue
            try:
                outcomes += poller.poll_once()
            except FirstPollError as exc:
                self.refused[name] = exc
                log.error("first poll refused", extra={"mailbox": name, "error": str(exc)})
            except MailboxError as exc:
                self.failures[name] = str(exc)
                log.error("mailbox failed", extra={"mailbox": name, "error": str(exc)})
            except TransientStoreError as exc:  # rolled back: the next poll reads it again
                self.failures[name] = str(exc)
                log.log(
                    logging.ERROR if is_lasting(exc) else logging.WARNING,
                    "mailbox failed, database busy or unreachable",
                    extra={"mailbox": name, "error": str(exc)},
                )
            except Exception as exc:  # e.g. the database refused even a quarantine row
                self.failures[name] = type(exc).__name__
                log.error("mailbox failed", exc_info=True, extra={"mailbox": name})
            finally:
                poller.disconnect_quietly()
        return outcomes

    def _new_scheduler(self) -> BackgroundScheduler:
        """APScheduler with a thread for each folder's cycle and ``OTHER_JOB_THREADS`` more
        for the other jobs, and no job dropped for starting late.

        A folder's cycle holds a thread for most of its interval (IDLE). With APScheduler's
        defaults (10 threads; a job started more than a second after its time dropped as
        missed), ten folders left the day's alerts, the weekly report, the purge and any
        other folder queued behind their cycles, then dropped — every time. A late job
        runs late instead: the alerts and the reports are claimed once in the database,
        the purge and the catch-ups may run late, and a mailbox job coalesces its runs."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        threads = len(self.pollers) + OTHER_JOB_THREADS
        return BackgroundScheduler(
            timezone=self.config.timezone,
            executors={"default": ThreadPoolExecutor(threads)},
            job_defaults={"misfire_grace_time": None},
        )

    def build_scheduler(self) -> BackgroundScheduler:
        scheduler = self._new_scheduler()
        logging.getLogger("apscheduler.scheduler").addFilter(CYCLE_OVERRUNS)  # added once
        interval = self.config.polling.interval_seconds
        for name, poller in self.pollers.items():
            scheduler.add_job(
                poller.cycle,
                "interval",
                seconds=interval,
                kwargs={"budget": interval * 0.95},
                id=f"{MAILBOX_JOB}{name}",
                name=f"{MAILBOX_JOB}{name}",  # what APScheduler's own log lines show
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
            )
        self._add_daily_jobs(scheduler)
        if self.probe is not None and self.config.probe and self.config.probe.every_minutes:
            scheduler.add_job(
                self._scheduled(self.probe, "probe", scheduler, retry=False),
                "interval",
                minutes=self.config.probe.every_minutes,
                id="probe",
                max_instances=1,
                coalesce=True,
            )
        if self.weekly_report is not None:
            scheduler.add_job(
                self._scheduled(self.weekly_report, "weekly-report", scheduler),
                parse_weekly(self.config.reports.weekly.cron).trigger(self.config.timezone),
                id="weekly-report",
                max_instances=1,
                coalesce=True,
            )
            # A run missed while the worker was down is caught up at start (at most once).
            scheduler.add_job(
                self._scheduled(self.weekly_report, "weekly-report-catch-up", scheduler),
                id="weekly-report-catch-up",
            )
        return scheduler

    def _add_daily_jobs(self, scheduler: BackgroundScheduler) -> None:
        """The deadline alerts (working days) and the retention purge (every day), at their
        configured local times, on the scheduler lease's holder."""
        from apscheduler.triggers.cron import CronTrigger

        if self.alerts is not None and self.config.alerts.enabled:
            at = parse_time(self.config.alerts.time)
            scheduler.add_job(
                self._scheduled(self.alerts, "alerts", scheduler),
                CronTrigger(
                    day_of_week="mon-fri",
                    hour=at.hour,
                    minute=at.minute,
                    timezone=self.config.timezone,
                ),
                id="alerts",
                max_instances=1,
                coalesce=True,
            )
            if self.alerts_due(datetime.now(ZoneInfo(self.config.timezone))):
                # Today's, missed while no worker ran at their time: now (claimed once a
                # day in the database, so a restart after they left sends nothing).
                scheduler.add_job(
                    self._scheduled(self.alerts, "alerts-catch-up", scheduler), id="alerts-catch-up"
                )
        purge_time = self.config.retention.purge_time
        if self.purge is not None and purge_time is not None:
            at = parse_time(purge_time)
            scheduler.add_job(
                self._scheduled(self.purge, "retention-purge", scheduler),
                CronTrigger(hour=at.hour, minute=at.minute, timezone=self.config.timezone),
                id="retention-purge",
                max_instances=1,
                coalesce=True,
            )

    def run(self, install_signals: bool = True) -> None:
        """Run until ``stop`` is set (by SIGTERM/SIGINT, or by a caller). The signals are
        taken first: a SIGTERM while the models load still ends in a clean stop."""
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        if self.keeper is not None:
            self._start_keeper(self.keeper)
            if not self.keeper.started:
                # Stopped before it could register: it holds no lease nor, on SQLite, the
                # sole-worker lock, which another process may hold now and be sending
                # under. Nothing started, so nothing to recover either: its 'sending'
                # mails are that process's, not a crash's.
                self._stopped_before_start()
                return
        if self.endpoint is not None:
            self.endpoint.start()
        try:
            self._run()
        finally:
            if self.endpoint is not None:
                self.endpoint.stop()
            if self.keeper is not None:
                self.keeper.close()

    def _start_keeper(self, keeper: Keeper) -> None:
        """Register this worker, trying again after a backoff while the database cannot
        (a transient error: a WARNING with the reason, its repeats at DEBUG) or until a
        stop; a stop before it succeeded leaves it unstarted (``close`` does nothing)."""
        failures = RepeatedFailures(
            log,
            "worker registration failed, the database busy, unreachable or read-only, trying again",
            "worker registered",
            transient_reason,
            lasting=is_lasting,  # a read-only SQLite file: an ERROR at each try
            every_time=True,
        )
        backoff = Backoff(self.config.polling.max_backoff_seconds)
        while not self.stop.is_set():
            try:
                keeper.start()
            except TransientStoreError as exc:
                failures.failed(exc)
                self.stop.wait(backoff.next_delay())
            else:
                failures.succeeded()
                return

    def _run(self) -> None:
        self.recover()
        for poller in self.pollers.values():
            poller.keep = False  # nobody reads a cycle's outcomes: counts only (metrics)
        if self.config.polling.warm_language_models:
            self._warm_language_models()
        if self.stop.is_set():  # a stop asked while starting: nothing was started yet
            self._stopped_before_start()
            return
        self.delivery = self._delivery_loop()
        self.delivery.start()
        scheduler = self.build_scheduler()
        if self.keeper is not None:  # before the start: the catch-ups check the lease then
            self.keeper.on_taken = functools.partial(self._taken, scheduler)
        scheduler.start()
        log.info("worker started", extra={"mailboxes": ",".join(self.pollers)})
        try:
            # Woken each second: the kernel may deliver SIGTERM to any of the worker's threads,
            # and Python runs its handler only when the main thread runs again; a wait without
            # timeout could then miss the signal for good.
            while not self.stop.wait(SIGNAL_CHECK_SECONDS):
                pass
        finally:
            self.stop.set()
            self.delivery.join()
            self._shut(scheduler)
            for poller in self.pollers.values():
                poller.disconnect_quietly()
            self.outbox.transport.close()  # the SMTP connection kept between batches
            self.pipeline.close()  # the routing helper, if one was started
            log.info("worker stopped")
        self.refused.update({n: p.refused for n, p in self.pollers.items() if p.refused})

    def _taken(self, scheduler: BackgroundScheduler, lease: str) -> None:
        """Taking the jobs over from a dead worker: a weekly report or today's alerts it
        missed, now (each is claimed once in the database, whoever sends it)."""
        if lease != SCHEDULER_LEASE:
            return
        if self.weekly_report is not None:
            job = self._scheduled(self.weekly_report, "weekly-report-takeover", scheduler)
            scheduler.add_job(job, id="weekly-report-takeover", replace_existing=True)
        if self.alerts is not None and self.alerts_due(
            datetime.now(ZoneInfo(self.config.timezone))
        ):
            job = self._scheduled(self.alerts, "alerts-takeover", scheduler)
            scheduler.add_job(job, id="alerts-takeover", replace_existing=True)

    def alerts_due(self, now: datetime) -> bool:
        """Whether today's alerts are past their time at ``now`` (local time), so that a
        worker starting or taking the jobs over sends them if nobody did (a day off sends
        none: ``alerts.send_alerts`` knows the working days)."""
        alerts = self.config.alerts
        return self.alerts is not None and alerts.enabled and now.time() >= parse_time(alerts.time)

    def _warm_language_models(self) -> None:
        """Now, not while the first mail in Russian or in a short English line waits."""
        started = time.perf_counter()
        language.warm_up(stopping=self.stop.is_set)
        seconds = round(time.perf_counter() - started, 2)
        log.info("language models loaded", extra={"seconds": seconds})

    def _stopped_before_start(self) -> None:
        """Stop before the delivery thread and the scheduler start: a scheduled catch-up
        (the weekly report) must not begin only to be waited for by the stop."""
        for poller in self.pollers.values():
            poller.disconnect_quietly()
        log.info("worker stopped", extra={"before_start": True})

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        self.stop.set()


# --------------------------------------------------------------------------- wiring


def imap_sources(config: Config) -> dict[str, Source]:
    """Each mailbox's inbox, on a connection of its own."""
    return dict(inboxes(config))


def sent_sources(config: Config) -> dict[str, tuple[str, Source]]:
    """Each mailbox's Sent folder, and the tracking mailbox's inbox, on their own connections."""
    return dict(sent_folders(config))


def make_worker(
    app: App,
    sources: Mapping[str, Source] | None = None,
    sent: Mapping[str, tuple[str, Source]] | None = None,
) -> Worker:
    """The worker of ``mailbot run`` and ``poll``: every mailbox, Sent folder and tracking
    mailbox, the daily alerts, the weekly report and the retention purge, on the
    configuration's schedules.
    ``sources`` and ``sent``: the inboxes and the Sent folders, when the command made them
    already (``imap.inboxes``, ``imap.sent_folders``: connecting early)."""
    zone = WorkingCalendar(timezone=app.config.timezone).zone

    def alerts() -> object:
        from mailbot import jobs

        today = datetime.now(zone).date()
        return jobs.send_alerts(app.config, app.store, app.renderer, app.outbox, today)

    def weekly_report() -> object:
        from mailbot import jobs

        now = datetime.now(zone)
        return jobs.send_weekly_report(app.config, app.store, app.renderer, app.outbox, now)

    stop = app.outbox.stop  # the worker's stop (see Worker.__init__)

    def probe() -> object:
        from mailbot.app.probe import Prober

        prober = Prober(app.config, app.store, app.outbox.transport, app.outbox, stop=stop)
        return prober.run()

    def purge() -> object:
        from mailbot import jobs

        return jobs.purge_retention(app.config, app.store)

    worker = Worker(
        app.config,
        app.pipeline,
        app.outbox,
        dict(sources) if sources is not None else imap_sources(app.config),
        dict(sent) if sent is not None else sent_sources(app.config),
        SentPipeline(app.config, app.store, signature_check),
        alerts,
        weekly_report,
        lease_seconds=app.config.cluster.lease_seconds,
        probe=probe if app.config.probe is not None else None,
        purge=purge,
    )
    if app.config.status.metrics_port is not None:
        worker.serve_metrics(app.config.status.metrics_host, app.config.status.metrics_port)
    return worker
