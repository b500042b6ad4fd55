"""What supervision reads (issue 16): `mailbot status`, the worker's metrics and readiness.

Every worker records each poll of a folder (``record_poll``), so the figures are the
same whichever process reads them: a folder's last success and lag, its IMAP errors in a
row, the outbox, uncertain sends, quarantined and overdue mail. ``status`` grades them
against ``status:`` of rules.yaml (``mailbot.core.health``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailbot.app.model_retention import model_retention_warnings
from mailbot.config import Config
from mailbot.config import Limits as ConfigLimits
from mailbot.core import health
from mailbot.core.clock import utcnow
from mailbot.core.health import Check, Figures, FolderFigures, Limits
from mailbot.core.incoming import PassedOver
from mailbot.core.statuses import ArStatus, Health, ProbeStatus
from mailbot.core.workdays import DEADLINE, WorkingCalendar
from mailbot.errors import TransientStoreError
from mailbot.store import Store, probes
from mailbot.store import supervision as sql
from mailbot.store.errors import transient_reason

# Open (unanswered) citizens' messages by age in working days, for the metrics.
AGE_BANDS = ((0, 2, "0-2"), (3, DEADLINE, f"3-{DEADLINE}"), (DEADLINE + 1, 10, "6-10"))
OLDEST_BAND = "over-10"
# The mail passed over that `mailbot status` and the metrics count: the last 7 days'.
PASSED_OVER_WINDOW = timedelta(days=7)

reachable = sql.reachable
ar_counts = sql.ar_counts


def record_poll(
    store: Store,
    mailbox: str,
    folder: str,
    holder: str,
    started_at: datetime,
    seconds: float,
    error: str | None,
    database: bool = False,
) -> None:
    """A poll's end recorded (``store.supervision.record_poll``). A transient database
    error (a read-only database, a lost connection) becomes TransientStoreError naming it,
    for the poller to log once, not a traceback per poll: the same outage fails the poll
    itself, and its line says so already."""
    try:
        sql.record_poll(store, mailbox, folder, holder, started_at, seconds, error, database)
    except Exception as exc:
        reason = transient_reason(exc)
        if reason is None:
            raise
        raise TransientStoreError(
            f"mailbox {mailbox}, folder {folder}: the poll could not be recorded now ({reason})"
        ) from exc


def watched_folders(config: Config) -> list[tuple[str, str]]:
    """(mailbox, folder) of every folder a worker reads: inboxes, Sent folders, tracking."""
    found = []
    for name, box in config.mailboxes.items():
        found.append((name, box.imap.folder))
        if box.imap.sent_folder:
            found.append((name, box.imap.sent_folder))
    if config.tracking is not None:
        found.append(("tracking", config.tracking.imap.folder))
    return found


def age_band(days: int) -> str:
    for low, high, label in AGE_BANDS:
        if low <= days <= high:
            return label
    return OLDEST_BAND


def open_messages(config: Config, store: Store, now: datetime) -> dict[str, Counter[str]]:
    """Unanswered citizens' messages per mailbox, counted by age band."""
    from mailbot.app import indicators  # not imported by `poll --once`, which records beats

    today = WorkingCalendar(timezone=config.timezone).local_date(now)
    found: dict[str, Counter[str]] = {name: Counter() for name in config.mailboxes}
    for age, row in indicators.unanswered(config, store, today):
        found.setdefault(str(row["mailbox"]), Counter())[age_band(age)] += 1
    return found


def _failure(beat: Any) -> str | None:
    """The last poll's error while it is the latest news of the folder: a poll that failed on
    the database counts no IMAP error, yet the operator must read why the folder lags."""
    if beat is None or beat.error_at is None:
        return None
    if beat.success_at is not None and beat.success_at >= beat.error_at:
        return None
    return str(beat.error)


def figures(config: Config, store: Store, now: datetime, extra: tuple[Check, ...] = ()) -> Figures:
    beats = sql.folder_beats(store)
    folders = []
    for mailbox, folder in watched_folders(config):
        beat = beats.get((mailbox, folder))
        success = beat.success_at if beat is not None else None
        folders.append(
            FolderFigures(
                mailbox,
                folder,
                success,
                None if success is None else (now - success).total_seconds(),
                int(beat.errors) if beat is not None else 0,
                _failure(beat),
            )
        )
    box = sql.outbox_counts(store, now)
    oldest = box["oldest"]
    quarantined = sql.quarantined(store)
    # Waiting still: a retry that recorded one gave its event a row (app/quarantine).
    passed = [
        PassedOver.of_event(row.id, row.at, row.detail)
        for row in sql.passed_over(store, now - PASSED_OVER_WINDOW)
    ]
    bands = open_messages(config, store, now)
    late = {label for low, _h, label in AGE_BANDS if low > DEADLINE} | {OLDEST_BAND}
    return Figures(
        folders=folders,
        outbox_depth=box["depth"],
        oldest_pending_seconds=None if oldest is None else (now - oldest).total_seconds(),
        deferred=box["deferred"],
        failed=box["failed"],
        uncertain=box["uncertain"],
        quarantined={name: quarantined.get(name, 0) for name in config.mailboxes},
        overdue={name: sum(n for b, n in c.items() if b in late) for name, c in bands.items()},
        passed_over=[p.location + ": " + p.why for p in passed],
        passed_over_per_mailbox=_per_mailbox(config, passed),
        extra=extra,
        restored=sql.ar_counts(store).get(ArStatus.RESTORED, 0),
    )


def _per_mailbox(config: Config, passed: list[PassedOver]) -> dict[str, int]:
    """The mail passed over in each mailbox: every configured one (0 when none), and one
    no longer configured that still has some (its mail waits all the same)."""
    found = {name: 0 for name in config.mailboxes}
    for mail in passed:
        found[mail.mailbox or "?"] = found.get(mail.mailbox or "?", 0) + 1
    return found


def limits(config: Config) -> dict[str, Limits]:
    """The thresholds of ``status:`` by field name (``lag_seconds``, ``outbox_depth``…)."""
    return {
        name: Limits(value.warning, value.critical)
        for name, value in config.status
        if isinstance(value, ConfigLimits)
    }


@dataclass(frozen=True)
class Status:
    state: Health
    headline: str
    figures: Figures
    checks: list[Check]


def probe_checks(config: Config, store: Store, now: datetime) -> tuple[Check, ...]:
    """The latest probe of each probed mailbox: CRITICAL when its AR was missing, late or
    wrong; WARNING when no probe ran for three of its periods (the schedule stopped), or
    none ever while a worker has run that long (a probe failing before it sends: its own
    mailbox unreachable)."""
    if config.probe is None:
        return ()
    latest = probes.latest(store)
    checks = []
    period = config.probe.every_minutes * 60
    overdue = 3 * period + config.probe.wait_seconds
    running = sql.running_since(store, now) if period else None
    for mailbox in config.probed:
        row = latest.get(mailbox)
        what = f"{mailbox} probe"
        if row is None:
            up = 0.0 if running is None else (now - running).total_seconds()
            if up > overdue:
                text = f"{what}: never ran, a worker has run for {up:.0f} s"
                checks.append(Check(what, None, Health.WARNING, text))
            else:
                checks.append(Check(what, None, Health.OK, f"{what}: none yet"))
            continue
        state = ProbeStatus(row.status)
        age = (now - row.sent_at).total_seconds()
        if state.failed:
            checks.append(Check(what, None, Health.CRITICAL, f"{what} {state}: {row.problems}"))
        elif period and age > overdue:
            checks.append(Check(what, None, Health.WARNING, f"{what}: last ran {age:.0f} s ago"))
        else:
            latency = "" if row.latency_seconds is None else f" in {row.latency_seconds:.1f} s"
            checks.append(Check(what, None, Health.OK, f"{what} {state}{latency}"))
    return tuple(checks)


def database_checks(store: Store) -> tuple[Check, ...]:
    """CRITICAL when the database refuses writes (``store.supervision.read_only``): no mail
    is recorded, no AR sent, while every figure reads as before and the folders' lag grows
    for minutes before it says anything. Nothing when it takes them."""
    why = sql.read_only(store)
    if why is None:
        return ()
    text = f"database read-only: {why}; no mail is recorded nor any AR sent"
    return (Check("database read-only", None, Health.CRITICAL, text),)


def model_checks(config: Config, now: datetime) -> tuple[Check, ...]:
    """WARNING when the routing model learned from corrected mail past the retention (or
    not dated): the purge has deleted those citizens' mails, the model file still holds
    what it learned of them until an operator trains it again — an action owed, as a
    passed-over mail's is, not a figure to note (``restored``)."""
    return tuple(
        Check("routing model retention", None, Health.WARNING, text)
        for text in model_retention_warnings(config, now)
    )


def status(config: Config, store: Store, now: datetime | None = None) -> Status:
    """Every figure, graded; the worst state is the plugin's state."""
    now = now or utcnow()
    extra = database_checks(store) + probe_checks(config, store, now) + model_checks(config, now)
    found = figures(config, store, now, extra)
    checks = health.evaluate(found, limits(config))
    return Status(health.overall(checks), health.headline(checks), found, checks)
