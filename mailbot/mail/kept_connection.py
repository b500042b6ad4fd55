"""The connection kept from batch to batch (``Kept``), the event loop it belongs to, and
its end: idle for ``smtp.IDLE_CLOSE`` seconds (``close_when_idle``), at shutdown, or when the
transport is gone (``shut_unless_busy``). ``SmtpTransport`` (``mailbot.mail.smtp``) holds
one."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import aiosmtplib

from mailbot.mail.envelope import Envelope
from mailbot.mail.smtp_commands import QUIT_SECONDS
from mailbot.mail.smtp_session import Session


class Kept:
    """The connection kept between batches, the event loop it belongs to, and the lock of
    whoever uses them (one batch at a time; the idle timer; ``close``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: aiosmtplib.SMTP | None = None
        self.last_used = time.monotonic()

    def run(self, session: Session, envelopes: Sequence[Envelope], **callbacks: Any) -> None:
        """The batch on the kept loop, run by the calling thread (the lock held)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        client, self.client = self.client, None
        idle = time.monotonic() - self.last_used
        try:
            self.client = self.loop.run_until_complete(
                session.run(envelopes, kept=client, idle=idle, **callbacks)
            )
        except BaseException as exc:
            # An error: the session closed its connection, the loop is fine. An interrupt
            # (KeyboardInterrupt) may have left the batch half-way: start afresh next time.
            if not isinstance(exc, Exception):
                self.abandon()
            raise
        finally:
            self.last_used = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last_used

    def shut(self) -> None:
        """QUIT the kept connection and close its loop (the lock held, or no one else left).

        Where another event loop runs in this thread (a finalizer called from async code),
        the loop cannot run: the connection is only closed.
        """
        loop, client, self.loop, self.client = self.loop, self.client, None, None
        if loop is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            with contextlib.suppress(Exception):
                if client is not None:
                    loop.run_until_complete(_quit(client))
                loop.run_until_complete(loop.shutdown_default_executor())
        if client is not None:
            client.close()
        loop.close()

    def abandon(self) -> None:
        loop, client, self.loop, self.client = self.loop, self.client, None, None
        if client is not None:
            client.close()
        if loop is not None and not loop.is_running():
            loop.close()


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit(timeout=QUIT_SECONDS)
    client.close()


def shut_unless_busy(kept: Kept) -> None:
    """The transport is gone (or the interpreter exits): close what it kept, unless a
    thread left in the middle of a batch still holds it (then exit closes the socket)."""
    if kept.lock.acquire(timeout=1.0):
        try:
            kept.shut()
        finally:
            kept.lock.release()


def close_when_idle(kept: Kept, idle_close: float) -> None:
    """The idle timer: QUIT the kept connection if no batch used it for ``idle_close``."""
    if not kept.lock.acquire(blocking=False):
        return  # a batch is using it; it sets a new timer when done
    try:
        if kept.client is not None and kept.idle_for() >= idle_close * 0.99:
            kept.shut()
    finally:
        kept.lock.release()
