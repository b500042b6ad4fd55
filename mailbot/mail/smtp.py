"""Outgoing mail over SMTP (aiosmtplib), one connection kept from batch to batch; or .eml
files for the demo.

What the outbox needs to know about a failed send is whether the server can have accepted
the mail. It cannot before the terminating "." of DATA has been handed to the network: a
failure there (greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, the DATA command, the body) is
retried. It can once the "." has left and no reply came (the connection dropped, the
server hung): that send is *uncertain* (the outbox never retries one to a citizen, for
mailbot never sends two ARs; internal mail is retried: app/delivery).
A reply (4xx, 5xx) to a mail's MAIL, RCPT, DATA or "." is an answer either way: retried
or failed. One while connecting (greeting, EHLO, STARTTLS, AUTH) is about the server, not a
mail: retried, also for the mail whose kept connection had dropped.

To know when the "." leaves, mailbot drives DATA rather than ``SMTP.data()`` does
(``smtp_session``, the body as ``smtp_commands.wire_body`` writes it): the DATA command
through aiosmtplib, then the body (aiosmtplib's own line-ending normalisation and
dot-stuffing) written under flow control, then the terminator on its own.

The connection outlives a batch (``SmtpTransport``): the next batch reuses it, after a NOOP
if it sat idle for a while; one idle for ``IDLE_CLOSE`` seconds is closed (QUIT), and
``close()`` ends it at shutdown. A kept connection the server dropped in the meantime is
found out at the latest at the next mail's MAIL FROM: that mail is sent again at once on a
new connection, which is safe, for the server cannot have accepted a mail whose "." never
left.

PIPELINING (RFC 2920) where the server offers it (Postfix does): the body and "." of a
mail leave with the MAIL, RCPT and DATA of the next one, and their replies come back
together, one round trip per mail instead of four (``pipelining.Pipelined``, a protocol of ours on
aiosmtplib's connection for the batch: aiosmtplib's keeps one reply outstanding and drops
the others). Each mail keeps its own result; the rules above hold unchanged. Without the
extension, one command at a time as before.

A pipelined batch of ``SHARED_FROM`` mails or more is shared with a second connection
(``smtp_session.Session._helper``), opened for the batch and closed after it: both take
mails from the same queue, in order (each mail's ``before``, its claim, is still called in
the batch's order), so their round trips overlap. A transferred mail sends two mails (the AR and the
forward): on one connection, delivery lagged behind intake (issue 14; bench/lag.py). The
helper's failures follow the rules above; a mail whose "." never left goes back to the
queue for the first connection.

This module is the transports' face (``Transport``, ``SmtpTransport``, ``FileTransport``;
``Envelope`` from ``envelope``). The SMTP one is in parts, in ``mailbot.mail``:
``smtp_commands`` (the commands, AUTH, the body on the wire, what a failure means),
``smtp_session`` (one batch on one connection, the shutdown watcher, the helper
connection), ``pipelining`` (RFC 2920), ``kept_connection`` (the connection kept between
batches and its idle close).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from mailbot.config import SmtpConfig
from mailbot.mail.envelope import AfterSend, BeforeSend, Envelope
from mailbot.mail.kept_connection import Kept, close_when_idle, shut_unless_busy
from mailbot.mail.smtp_commands import authenticate, needs_smtputf8
from mailbot.mail.smtp_session import CHECK_AFTER, SHARED_FROM, Session

__all__ = [
    "CHECK_AFTER",
    "IDLE_CLOSE",
    "SHARED_FROM",
    "AfterSend",
    "BeforeSend",
    "Envelope",
    "FileTransport",
    "SmtpTransport",
    "Transport",
    "authenticate",
    "needs_smtputf8",
]

IDLE_CLOSE = 30.0  # seconds: a kept connection idle this long is closed (QUIT)


class Transport(Protocol):
    """Sends a batch of mails over one connection.

    ``before`` runs just before each mail leaves and may veto it (returns False); ``after``
    gets None when the mail was accepted, else the DeliveryError. The callbacks let the
    outbox commit "sending" before each mail, which is what makes at-most-once possible.
    ``stop``, once set, ends the batch within a fraction of a second: the mail in flight gets
    an ``interrupted`` (before the ".") or ``uncertain`` (after it) DeliveryError, and the
    mails not yet started are left alone. Raises DeliveryError when no connection could be
    made; mails it did not pass to ``before`` were not sent.
    """

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None: ...

    def close(self) -> None:
        """End what the transport keeps open between batches (a connection), at shutdown."""


class SmtpTransport:
    """aiosmtplib client keeping one connection from batch to batch (see the module's
    docstring). Two batches at once (the delivery thread and a probe, say) do not wait for
    each other: the second one gets a connection of its own for its batch, as before."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        idle_close: float = IDLE_CLOSE,
        check_after: float = CHECK_AFTER,
    ) -> None:
        self.config = config
        self.idle_close = idle_close
        self.check_after = check_after
        self._kept = Kept()
        self._timer: threading.Timer | None = None
        weakref.finalize(self, shut_unless_busy, self._kept)  # at exit too: a polite QUIT

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None:
        if not envelopes:
            return
        session = Session(self.config, stop, self.check_after)
        if not self._kept.lock.acquire(blocking=False):
            asyncio.run(session.run(envelopes, before, after, keep=False))
            return
        try:
            self._kept.run(session, envelopes, before=before, after=after)
        finally:
            self._idle_timer()
            self._kept.lock.release()

    def _idle_timer(self) -> None:
        """A new idle timer for the kept connection, if there is one (the lock held)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self._kept.client is None:
            return
        self._timer = threading.Timer(
            self.idle_close, close_when_idle, args=(self._kept, self.idle_close)
        )
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        """QUIT the kept connection (at shutdown); a later batch opens a new one."""
        if self._timer is not None:
            self._timer.cancel()
        with self._kept.lock:
            self._kept.shut()


class FileTransport:
    """Writes each mail as an .eml file: the demo's outbox, and a safe dry-run.

    ``name`` gives a file's name (without .eml) from its envelope (default: the envelope's
    name); a name already taken gets -2, -3…
    """

    def __init__(self, directory: Path, name: Callable[[Envelope], str] | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name or (lambda envelope: envelope.name)

    def _path(self, envelope: Envelope) -> Path:
        stem = self.name(envelope)
        path, count = self.directory / f"{stem}.eml", 1
        while path.exists():
            count += 1
            path = self.directory / f"{stem}-{count}.eml"
        return path

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None:
        for envelope in envelopes:
            if stop is not None and stop.is_set():
                break
            if before(envelope):
                self._path(envelope).write_bytes(envelope.raw)
                after(envelope, None)

    def close(self) -> None:
        """Nothing is kept open."""
