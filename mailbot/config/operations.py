"""Running the service: polling, the outbox's retries and claims, the cluster's leases,
`mailbot status`'s thresholds, retention, the daily alerts, the weekly report and the
mystery e-mail probe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from mailbot.config.base import Email, Model, beside, read_secret
from mailbot.config.servers import ImapConfig
from mailbot.core.schedule import parse_time, parse_weekly


class PollingConfig(Model):
    interval_seconds: float = Field(default=60, gt=0)
    batch_size: int = Field(default=200, ge=1, le=5000)
    use_idle: bool = True
    idle_timeout_seconds: float = Field(default=1500, gt=0, le=1740)
    max_backoff_seconds: float = Field(default=300, gt=0)
    # Larger mails are read as header + first 256 KiB (bounded memory); never skipped.
    max_message_bytes: int = Field(default=25_000_000, ge=100_000)
    # `run` loads the language-detection models before its first poll (~4 s of CPU and
    # ~250 MB, once); false: they load on the first mail whose language is not plainly
    # French, which then waits for them.
    warm_language_models: bool = True
    # The CPU the worker's own process keeps to (mailbot/cpu.py): "auto" (the last one, for
    # the only worker of a SQLite database), a number, or "off". Its helpers use every CPU.
    worker_cpu: Annotated[int, Field(ge=0)] | Literal["auto", "off"] = "auto"

    @field_validator("worker_cpu", mode="before")
    @classmethod
    def _cpu_words(cls, value: Any) -> Any:
        """One message for every wrong value; YAML reads ``off`` as false, and a true is
        not CPU 1."""
        if value is False:
            return "off"
        if value in ("auto", "off"):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError(f'expected "auto", "off" or a CPU number such as 0 (got {value!r})')


class OutboxConfig(Model):
    """How the outbox retries, and how many mails one durable claim covers. A claim commits
    before a group's first DATA: a crash mid-group leaves up to ``claim_group`` mails to
    citizens 'uncertain' (never resent, flagged for an agent), plus up to 3 of the group
    before still in flight at the claim (pipelined sends: app/delivery), or up to 16 handed
    ahead to the SMTP process (``smtp.own_process``, mail/smtp_process). The internal mails
    between them (forwards, digests, reports: up to 4 × ``claim_group``) ride in the same
    claim, and a crash queues them again (app/delivery). 1 is the strictest; on SQLite each
    claim also cuts the intake's transaction, so 1 is slower on a backlog.

    A mail the SMTP server defers (4xx) is tried again after ``retry_base_seconds``, then
    twice as long each time up to ``retry_max_seconds``, until it has been queued for
    ``max_queue_hours`` (5 days, as Postfix's ``maximal_queue_lifetime``): an SMTP relay
    down for a night or a weekend loses no AR. Then it fails, its bytes kept for
    `mailbot outbox retry --failed`.

    ``max_attempts`` is no longer read (a mail failed after 10 attempts, about 3 hours: a
    night's outage failed every AR queued meanwhile). Still accepted, so that a file that
    sets it loads; a WARNING says so (``mailbot check``, and each start). A count of
    attempts says little of time under a backoff; ``max_queue_hours`` is the bound."""

    max_queue_hours: float = Field(default=120, gt=0, le=24 * 366)
    max_attempts: int | None = Field(default=None, ge=1)  # deprecated: not read
    retry_base_seconds: float = Field(default=30, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    claim_group: int = Field(default=8, ge=1, le=256)

    def warnings(self) -> list[str]:
        """What ``mailbot check`` and the delivery's start say of these settings."""
        if self.max_attempts is None:
            return []
        return [
            f"outbox.max_attempts ({self.max_attempts}) is no longer read: a deferred mail"
            f" fails once queued for longer than outbox.max_queue_hours"
            f" ({self.max_queue_hours:g} h); remove it from the configuration"
        ]


class ClusterConfig(Model):
    """Several workers on one PostgreSQL database (issue 16): how long a worker's lease on
    a mailbox folder (and its row in ``workers``) lasts without renewal, 2 to 120 s. The
    keeper renews every quarter of it, 5 s at most (``core.leases.Timing``). A killed
    worker's folders are taken over after about ``lease_seconds`` and that quarter more.
    Shorter leases mean more database writes, and a live worker held up longer than its
    lease (a loaded host, a paused VM) is taken for dead: its folders move to another
    worker (the fence keeps them from being recorded twice) and the mails it was sending
    are flagged uncertain. The 2 s floor serves tests; production keeps the default."""

    lease_seconds: float = Field(default=15, ge=2, le=120)


class Limits(Model):
    """A figure's WARNING and CRITICAL thresholds (reached at or above)."""

    warning: float = Field(ge=0)
    critical: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.critical < self.warning:
            raise ValueError(
                f"critical ({self.critical:g}) must not be below warning ({self.warning:g})"
            )
        return self


def _limits(warning: float, critical: float) -> Any:
    return Field(default_factory=lambda: Limits(warning=warning, critical=critical))


class StatusConfig(Model):
    """Thresholds of `mailbot status` (Nagios/Centreon exit codes) and of the metrics."""

    lag_seconds: Limits = _limits(300, 900)  # since a folder's last successful poll
    imap_errors: Limits = _limits(1, 5)  # failed polls in a row
    outbox_depth: Limits = _limits(50, 200)  # mail waiting to be sent
    # how long the oldest of it has waited: an AR leaves at once, so a stuck delivery shows
    # within minutes, not once 50 mails have piled up
    oldest_pending_seconds: Limits = _limits(900, 3600)
    deferred: Limits = _limits(1, 20)  # mail the SMTP server refused for now
    failed: Limits = _limits(1, 10)  # sends that failed for good, last 24 hours
    uncertain: Limits = _limits(1, 5)  # sends interrupted, last 7 days
    quarantined: Limits = _limits(1, 10)  # mail waiting for a person
    # mail the database refused even to quarantine (7 days): no row, no AR, out of the
    # indicators until retried, so its own bounds (raising ``quarantined`` hides none)
    passed_over: Limits = _limits(1, 3)
    overdue: Limits = _limits(1, 20)  # messages unanswered past 5 working days
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # None: no endpoint


def _valid_time(value: str) -> str:
    parse_time(value)
    return value


def _valid_weekly(value: str) -> str:
    parse_weekly(value)
    return value


# Checked here, at load, by the same parser the worker uses: a schedule that passes
# `mailbot check` cannot crash the worker later.
ClockTime = Annotated[str, AfterValidator(_valid_time)]
WeeklySchedule = Annotated[str, AfterValidator(_valid_weekly)]

RETENTION_MAX_DAYS = 36500


class RetentionConfig(Model):
    """How long citizens' data is kept. The worker purges what is older every day at
    ``purge_time`` (local time, on the worker holding the scheduler's lease), so retention
    holds without an operator's cron; None leaves it to ``mailbot purge``."""

    # At most a century: beyond, the cut-off date is no date (every purge failed with an
    # OverflowError while `mailbot check` said OK). Strict: `days: true` is no duration.
    days: int = Field(default=730, ge=1, le=RETENTION_MAX_DAYS, strict=True)
    purge_time: ClockTime | None = "03:30"


class AlertsConfig(Model):
    """The daily deadline digest to services (working days only)."""

    enabled: bool = True
    time: ClockTime = "08:30"


class WeeklyReportConfig(Model):
    to: list[Email] = Field(default_factory=list)
    cron: WeeklySchedule = "mon 08:00"
    # Late and unanswered messages listed in the mail's body, the oldest first: a manager
    # reads a screen of them, not thousands; the attached CSV lists every message.
    listed: int = Field(default=100, ge=0)
    # The listed messages' subjects (60 characters), which name a citizen's affair: the
    # report stays in its recipients' mailboxes beyond mailbot's retention. False: the
    # references, services and ages alone (the CSV never holds subjects).
    subjects: bool = True


class ReportsConfig(Model):
    weekly: WeeklyReportConfig = WeeklyReportConfig()


class ProbeConfig(Model):
    """The mystery e-mail (issue 16): a test mail from this mailbox to each watched one,
    whose AR must come back here, on time and complete. Marked with an HMAC of its
    Message-ID (``secret_env``/``secret_file``): only mailbot's own probes are kept out of
    the indicators and of routing."""

    address: Email
    imap: ImapConfig
    secret_env: str | None = None
    secret_file: Path | None = None
    mailboxes: list[str] = Field(default_factory=list)  # default: every mailbox
    every_minutes: int = Field(default=60, ge=0)  # the worker's schedule; 0: never
    wait_seconds: float = Field(default=600, gt=0)  # no AR by then: missing
    late_seconds: float = Field(default=300, gt=0)  # an AR after this long: late
    alert_to: list[Email] = Field(default_factory=list)

    @field_validator("secret_file")
    @classmethod
    def _secret_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else beside(value, info)

    @model_validator(mode="after")
    def _one_secret(self) -> ProbeConfig:
        if bool(self.secret_env) == bool(self.secret_file):
            raise ValueError("give secret_env or secret_file (one of them)")
        return self

    def secret(self) -> str:
        return read_secret(self.secret_env, self.secret_file, "probe") or ""
