"""Security events of the console: logins, logouts, refusals. One logfmt line each.

``AuditSink`` is what the app calls; the default writes the log line. The store's event log
can be plugged in later by passing another sink to ``create_app``. Fields are agent ids,
actions, services, paths and client addresses: never a mail's content, never a password.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("mailbot.web.audit")


class AuditSink(Protocol):
    def __call__(self, event: str, **fields: str) -> None: ...


def log_event(event: str, **fields: str) -> None:
    log.info(event, extra={f"web_{key}": value for key, value in fields.items()})


class Recorder:
    """An AuditSink that also keeps the events in memory (tests, or a later bridge)."""

    def __init__(self, forward: AuditSink = log_event) -> None:
        self.events: list[tuple[str, dict[str, str]]] = []
        self.forward = forward

    def __call__(self, event: str, **fields: str) -> None:
        self.events.append((event, fields))
        self.forward(event, **fields)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]
