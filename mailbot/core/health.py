"""Grading what supervision sees (issue 16): figures against WARNING/CRITICAL thresholds,
the worst state wins, as Nagios/Centreon plugins report it (exit code 0 to 3).

Pure: the figures are gathered by ``mailbot.app.supervision``, printed by the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailbot.core.statuses import Health


@dataclass(frozen=True)
class Limits:
    warning: float
    critical: float


@dataclass(frozen=True)
class FolderFigures:
    """One watched folder as its last polls left it."""

    mailbox: str
    folder: str
    success_at: datetime | None  # None: never polled successfully
    lag_seconds: float | None  # now - success_at
    errors: int  # failed polls since the last success
    last_error: str | None  # the last poll's, when it failed


@dataclass(frozen=True)
class Figures:
    folders: Sequence[FolderFigures]
    outbox_depth: int  # pending
    oldest_pending_seconds: float | None
    deferred: int  # pending again after a temporary SMTP failure
    failed: int  # last 24 hours
    uncertain: int  # last 7 days
    quarantined: Mapping[str, int]  # per mailbox
    overdue: Mapping[str, int]  # per mailbox
    # Mail the database would not record even quarantined, passed over (last 7 days) and
    # not recorded since by a retry: on the server without an AR, found by where its event
    # says it is (app/mail_failures, app/quarantine).
    passed_over: Sequence[str] = ()  # each one's location and why
    passed_over_per_mailbox: Mapping[str, int] = field(default_factory=dict)  # (the metrics)
    extra: Sequence[Check] = field(default_factory=tuple)  # e.g. the probe's verdicts
    # Messages recorded without AR after a restore (``mailbot restored``): the lost database
    # presumably sent it; said, not graded (agents answer them as any other).
    restored: int = 0


@dataclass(frozen=True)
class Check:
    """One graded figure: ``what`` names it for an operator (``general/INBOX lag``)."""

    what: str
    value: float | None
    state: Health
    text: str
    limits: Limits | None = None  # the thresholds it was graded against (perfdata)
    unit: str = ""  # of the value, as Nagios perfdata writes it ("s"), "" for a count


def grade(value: float, limits: Limits) -> Health:
    if value >= limits.critical:
        return Health.CRITICAL
    if value >= limits.warning:
        return Health.WARNING
    return Health.OK


def _check(what: str, value: float, limits: Limits, unit: str = "") -> Check:
    state = grade(value, limits)
    text = f"{what} {value:g}{unit}"
    if state is not Health.OK:
        bound = limits.critical if state is Health.CRITICAL else limits.warning
        text += f" ({state.value.lower()} at {bound:g}{unit})"
    return Check(what, value, state, text, limits, unit.strip())


def _folder_checks(folder: FolderFigures, limits: Mapping[str, Limits]) -> list[Check]:
    name = f"{folder.mailbox}/{folder.folder}"
    checks = [_check(f"{name} imap errors", folder.errors, limits["imap_errors"])]
    if folder.lag_seconds is None:
        checks.append(Check(f"{name} lag", None, Health.UNKNOWN, f"{name} never polled"))
    else:
        checks.append(_check(f"{name} lag", round(folder.lag_seconds), limits["lag_seconds"], " s"))
    return checks


def _oldest_pending_check(seconds: float | None, limits: Limits) -> list[Check]:
    """The age of the oldest mail waiting to be sent: a delivery thread that died or hangs
    leaves few mails pending on a quiet day, so the depth alone would say nothing for hours."""
    if seconds is None:
        return []
    return [_check("oldest pending", round(seconds), limits, " s")]


def evaluate(figures: Figures, limits: Mapping[str, Limits]) -> list[Check]:
    """Every figure graded; ``limits`` maps the StatusConfig field names to thresholds."""
    checks = [c for folder in figures.folders for c in _folder_checks(folder, limits)]
    checks += [
        _check("outbox depth", figures.outbox_depth, limits["outbox_depth"]),
        *_oldest_pending_check(figures.oldest_pending_seconds, limits["oldest_pending_seconds"]),
        _check("deferred sends", figures.deferred, limits["deferred"]),
        _check("failed sends (24 h)", figures.failed, limits["failed"]),
        _check("uncertain sends (7 d)", figures.uncertain, limits["uncertain"]),
        _check("mail passed over (7 d)", len(figures.passed_over), limits["passed_over"]),
    ]
    for mailbox, count in sorted(figures.quarantined.items()):
        checks.append(_check(f"{mailbox} quarantined", count, limits["quarantined"]))
    for mailbox, count in sorted(figures.overdue.items()):
        checks.append(_check(f"{mailbox} overdue", count, limits["overdue"]))
    return checks + list(figures.extra)


def overall(checks: Sequence[Check]) -> Health:
    return Health.worst(*(c.state for c in checks))


def headline(checks: Sequence[Check]) -> str:
    """The plugin's first line: ``MAILBOT WARNING - outbox depth 60 (warning at 50)``."""
    state = overall(checks)
    bad = [c.text for c in checks if c.state is state and state is not Health.OK]
    return f"MAILBOT {state.value} - " + ("; ".join(bad) if bad else "all checks OK")
