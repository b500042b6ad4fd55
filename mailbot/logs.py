"""Structured, quiet logging: one logfmt line per event, library chatter at WARNING.

Only what is passed in ``extra`` is printed beside the message, so nothing (bodies,
passwords) reaches the log unless a caller names it on purpose. An exception is printed as
its type and a traceback of code locations (``traceback="..."``, newlines escaped), never
with the message of a foreign exception: those quote data (a database driver's failing
row, an ``email`` error's header, an address), and the log must not carry citizens' mail.
Our own errors (``MailbotError``) are written to be safe and keep their message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from mailbot.errors import MailbotError
from mailbot.redact import RedactingHandler

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
MAX_FRAMES = 30  # per exception of a chain: the innermost ones, where it went wrong
MAX_TRACEBACK = 12_000
MAX_ERROR = 300
_ADDRESS = re.compile(r"[^\s'\"<>(),;:\[\]]*@[^\s'\"<>(),;:\[\]]*")


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def masked(text: str) -> str:
    """``text`` with anything that looks like an address or a Message-ID masked, cut to
    MAX_ERROR: a server's answer may quote a mail's sender (stored and logged)."""
    return _ADDRESS.sub("…@…", text)[:MAX_ERROR]


def safe_error(exc: BaseException) -> str:
    """What of an exception may be logged: its type; and its message only for our own,
    with anything that looks like an address or a Message-ID masked (``MessageError``
    names the address it refused)."""
    name = type(exc).__name__
    if isinstance(exc, MailbotError):
        return masked(f"{name}: {exc}")
    return name


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost last (as Python prints them)."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in found):
        found.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return found[::-1]


def safe_traceback(exc: BaseException) -> str:
    """A traceback with code locations and exception types only (see the module docstring).

    Deep recursions are folded as Python folds them, and only the innermost frames of
    each exception are kept, so a RecursionError stays a readable line in the log.
    """
    blocks = []
    for each in _chain(exc):
        frames = traceback.extract_tb(each.__traceback__)
        skipped = max(len(frames) - MAX_FRAMES, 0)
        lines = ["Traceback (most recent call last):"]
        if skipped:
            lines.append(f"  ... {skipped} outer frames ...")
        lines += [
            line.rstrip("\n")
            for line in traceback.StackSummary.from_list(frames[skipped:]).format()
        ]
        lines.append(safe_error(each))
        blocks.append("\n".join(lines))
    text = "\n\nDuring handling of the above exception:\n\n".join(blocks)
    return text if len(text) <= MAX_TRACEBACK else "..." + text[-MAX_TRACEBACK:]


class RepeatedFailures:
    """The failures of a loop that retries every few seconds (lease renewal, delivery),
    logged once per run of the same failure: its first at WARNING when ``reason`` names it
    transient (a database locked, a connection lost), else at ERROR with the traceback;
    the same again at DEBUG; the end of the run at INFO. During a database outage each
    tick wrote an ERROR with a whole traceback: the journal filled and the line that said
    what happened scrolled away."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        recovered: str,
        reason: Callable[[BaseException], str | None] = lambda _exc: None,
        extra: Mapping[str, object] | None = None,
        lasting: Callable[[BaseException], bool] = lambda _exc: False,
        every_time: bool = False,
    ) -> None:
        self.logger, self.message, self.recovered, self.reason = logger, message, recovered, reason
        self.extra = dict(extra or {})  # on every line: what is failing (a mailbox)
        # A failure that will not end by itself (a read-only SQLite file): someone must
        # act, so its first is an ERROR (its reason, no traceback), and with ``every_time``
        # (a poll cycle, a try to register: one line per cycle) each one is.
        self.lasting, self.every_time = lasting, every_time
        self.current: str | None = None  # what is failing again and again: reason or type
        self.count = 0

    def failed(self, exc: BaseException) -> None:
        reason = self.reason(exc)
        key = reason or type(exc).__name__
        self.count += 1
        if reason is not None and self.lasting(exc):
            if key != self.current or self.every_time:  # the reason says it all
                self.logger.error(
                    self.message, extra={**self.extra, "reason": reason, "repeated": self.count}
                )
            else:
                self.logger.debug(
                    self.message,
                    extra={**self.extra, "error": safe_error(exc), "repeated": self.count},
                )
        elif key == self.current:
            self.logger.debug(
                self.message,
                extra={**self.extra, "error": safe_error(exc), "repeated": self.count},
            )
        elif reason is not None:
            self.logger.warning(
                self.message, extra={**self.extra, "error": safe_error(exc), "reason": reason}
            )
        else:
            self.logger.error(self.message, exc_info=exc, extra=self.extra)
        self.current = key

    def succeeded(self) -> None:
        if self.count:
            self.logger.info(self.recovered, extra={**self.extra, "failures": self.count})
        self.current, self.count = None, 0


# sd-daemon(3)'s priority prefixes, which journald reads at the start of a line of a
# service's stderr (SyslogLevelPrefix=, on by default) and strips.
JOURNAL_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4))
JOURNAL_INFO, JOURNAL_DEBUG = 6, 7


def journal_priority(levelno: int) -> int:
    for level, priority in JOURNAL_PRIORITIES:
        if levelno >= level:
            return priority
    return JOURNAL_INFO if levelno >= logging.INFO else JOURNAL_DEBUG


def stderr_is_the_journal() -> bool:
    """Whether stderr is systemd's journal stream: ``$JOURNAL_STREAM`` names its device
    and inode (systemd.exec(5)); a stderr redirected elsewhere by hand does not match."""
    named = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in named.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


class LogfmtFormatter(logging.Formatter):
    """One logfmt line per record. ``journal``: each line starts with its syslog priority
    (``<4>`` for a warning), which journald takes as the entry's PRIORITY: without it every
    line was stored at one priority, so that ``journalctl -p warning`` and a forwarder's
    severity saw the errors no more than the batches' INFO lines."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>" if self.journal else ""
        try:
            return prefix + self._format(record)
        except Exception as exc:  # a log line must never become an exception of its own
            return f"{prefix}level={record.levelname.lower()} msg={_quote(record.msg)} " + (
                f"format_error={type(exc).__name__}"
            )

    def _format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            message = record.getMessage()  # with its %-arguments (APScheduler's job names)
        except Exception:
            message = str(record.msg)
        fields = [f"ts={stamp}", f"level={record.levelname.lower()}", f"msg={_quote(message)}"]
        fields += [
            f"{key}={_quote(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        ]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields.append(f"error={_quote(type(exc).__name__)}")
            fields.append(f"traceback={_quote(safe_traceback(exc))}")
        return " ".join(fields)


def setup_logging(level: int = logging.INFO) -> None:
    handler = RedactingHandler(sys.stderr)  # no password, even echoed by a server
    handler.setFormatter(LogfmtFormatter(journal=stderr_is_the_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("mailbot").setLevel(level)
