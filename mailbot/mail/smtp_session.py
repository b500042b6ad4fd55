"""One batch on one connection (``Session``): connecting, greeting and logging in, a kept
connection revived, each mail's MAIL, RCPT and DATA one command at a time (or handed to
``mailbot.mail.pipelining`` where the server offers PIPELINING), a second connection for a
large pipelined batch, and the shutdown watcher that cuts a batch only while it awaits the
network (``step``).

To know when the "." leaves, DATA is driven here rather than by ``SMTP.data()``: the DATA
command through aiosmtplib, then the body (aiosmtplib's own line-ending normalisation and
dot-stuffing) written under flow control, then the terminator on its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import aiosmtplib

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError, MailbotError
from mailbot.mail.envelope import AfterSend, BeforeSend, Envelope
from mailbot.mail.pipelining import Job, Pipelined
from mailbot.mail.smtp_commands import (
    CHUNK,
    QUIT_SECONDS,
    Stopped,
    authenticate,
    classify,
    flushed,
    interrupted,
    is_drop,
    mail_from,
    mail_options,
    rcpt_to,
    sent_bytes,
    wire_body,
)
from mailbot.mail.tls import client_context

T = TypeVar("T")

_STOP_POLL = 0.05  # how often a shutdown request is looked at, seconds
CHECK_AFTER = 5.0  # seconds: a kept connection idle longer than this is checked (NOOP) first
# A pipelined batch of at least this many mails is shared with a second connection: each
# mail costs a round trip (its "." reply), and two connections overlap them (issue 14,
# point 7). Smaller batches (a mail or a few under IDLE) keep to one connection.
SHARED_FROM = 16


class _Data:
    """Where one mail's exchange is; ``committed`` once the terminating "." was handed over;
    ``dropped`` when the connection was gone (closed, or a 421) before that."""

    stage = "MAIL FROM"
    committed = False
    dropped = False


class Session:
    """One batch, on the connection kept from the last one or a new one (reconnecting once
    a mail's failure closed it)."""

    def __init__(
        self, config: SmtpConfig, stop: threading.Event | None, check_after: float = CHECK_AFTER
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.stopping = False
        self.check_after = check_after
        self.tasks: list[asyncio.Task[Any]] = []  # the batch's tasks, cut by a shutdown
        self._stepping: dict[asyncio.Task[Any], int] = {}  # tasks awaiting the network
        self._owed: set[asyncio.Task[Any]] = set()  # cut at their next step
        self._cut: set[asyncio.Task[Any]] = set()  # cancelled by the stop in a step

    # -- shutdown ---------------------------------------------------------------------------

    async def _watch_stop(self) -> None:
        """Cut the batch as soon as a shutdown is requested; ``step`` tells what it cut.

        A task is cancelled only while it awaits the network (in a ``step``): a cancel
        landing anywhere else (the batch waiting for its helper to end, a pause before a
        kept connection is used) would escape as a CancelledError, with mails let go and
        never told. A task elsewhere is cut at its next step instead."""
        while not self.stop.is_set():
            await asyncio.sleep(_STOP_POLL)
        self.stopping = True
        for task in self.tasks:
            if task in self._stepping:
                task.cancel()
                self._cut.add(task)
            elif not task.done():
                self._owed.add(task)

    async def step(self, awaitable: Awaitable[T]) -> T:
        """Await one network step; a shutdown cutting it comes out as Stopped."""
        task = asyncio.current_task()
        assert task is not None
        if task in self._owed:
            self._owed.discard(task)
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started: no "never awaited" warning
            raise Stopped("shutdown requested")
        self._stepping[task] = self._stepping.get(task, 0) + 1
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            self._cut.discard(task)
            task.uncancel()  # handled here: the batch goes on to record and close
            raise Stopped("shutdown requested") from None
        finally:
            if self._stepping[task] == 1:
                del self._stepping[task]
            else:
                self._stepping[task] -= 1
        if task in self._cut:
            # The stop's cancel was swallowed (Python 3.11's ``wait_for``, in aiosmtplib,
            # when the reply came at the same time): the step's result stands, the cut
            # comes at the task's next step.
            self._cut.discard(task)
            task.uncancel()
            self._owed.add(task)
        return result

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> aiosmtplib.SMTP:
        """Connected, secured as configured, greeted (EHLO) and logged in; or DeliveryError,
        never permanent: a 5xx there (a 554 greeting, a 535 after a password rotation) is
        about the server or our account, not about a mail. Told to a mail whose kept
        connection dropped (``_connect_for``, ``deliver``), a permanent one would fail that
        mail for good while the rest of the batch is retried."""
        config = self.config
        where = f"SMTP {config.host}:{config.port} ({config.security})"
        refused = where  # what a server's reply refused: the connection, or the login
        client: aiosmtplib.SMTP | None = None
        try:
            client = aiosmtplib.SMTP(
                hostname=config.host,
                port=config.port,
                use_tls=config.security == "tls",
                start_tls=config.security == "starttls",
                tls_context=client_context(config) if config.security != "none" else None,
                timeout=config.timeout_seconds,
            )
            await self.step(client.connect())
            await self.step(self._greet(client))
            if config.username:
                password = config.password() or ""
                refused = f"{where}: authentication failed for user {config.username!r}"
                await self.step(authenticate(client, config.username, password))
        except Stopped:
            if client is not None:
                client.close()
            raise
        except (aiosmtplib.SMTPException, OSError, MailbotError) as exc:
            if client is not None:
                client.close()
            if isinstance(exc, MailbotError):  # an unreadable secret
                raise DeliveryError(f"{where}: {exc}", permanent=False) from None
            response = isinstance(exc, aiosmtplib.SMTPResponseException)
            error = classify(exc, refused if response else where)
            raise DeliveryError(str(error), permanent=False, code=error.code) from None
        return client

    @staticmethod
    async def _greet(client: aiosmtplib.SMTP) -> None:
        """EHLO now (after STARTTLS, again), to know the extensions before MAIL FROM."""
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:  # a 421: the server has hung up
                    raise
                await client.helo()

    async def close(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and not self.stopping:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, Stopped):
                await self.step(client.quit(timeout=QUIT_SECONDS))
        client.close()

    async def revive(self, client: aiosmtplib.SMTP, idle: float) -> aiosmtplib.SMTP | None:
        """The connection kept from the last batch if it still serves, else None (closed).

        What arrived while no event loop ran (the server's EOF, a 421) is taken in first;
        after ``check_after`` seconds idle, a NOOP asks the server (a NAT or a firewall may
        have forgotten the connection without a word).
        """
        for _ in range(3):
            await asyncio.sleep(0)
        if client.is_connected and idle >= self.check_after:
            try:
                await self.step(client.noop())
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        if not client.is_connected:
            client.close()
            return None
        return client

    async def _connect_for(self, jobs: deque[Job], after: AfterSend) -> aiosmtplib.SMTP:
        """A new connection for the next mails; when none can be made, a mail already let
        go (to be sent again after a drop) is told, the others are left to the caller."""
        try:
            return await self.connect()
        except DeliveryError as error:
            while jobs and jobs[0].approved:
                after(jobs.popleft().envelope, error)
            raise

    # -- one mail ---------------------------------------------------------------------------

    async def deliver(
        self, client: aiosmtplib.SMTP, envelope: Envelope, fresh: bool
    ) -> tuple[aiosmtplib.SMTP, DeliveryError | None]:
        """One mail; on a connection from before (not ``fresh``) found gone before its "."
        left, sent once more on a new one. Returns the connection to go on with."""
        data = _Data()
        error = await self.send(client, envelope, data)
        if error is None or fresh or data.committed or not data.dropped or self.stopping:
            return client, error
        try:
            client = await self.connect()
        except DeliveryError as failed:
            return client, failed
        except Stopped:  # the mail was let go: told, never left untold in the batch
            return client, interrupted()
        return client, await self.send(client, envelope, _Data())

    async def send(
        self, client: aiosmtplib.SMTP, envelope: Envelope, data: _Data
    ) -> DeliveryError | None:
        """MAIL, RCPT, DATA; the error says whether the server can have accepted the mail."""
        try:
            raw = sent_bytes(client, envelope, self.config.eight_bit)
            options = mail_options(client, envelope, raw)
            encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
            await self.step(mail_from(client, envelope.envelope_from, options, encoding))
            data.stage = "RCPT TO"
            await self.step(rcpt_to(client, envelope.recipient, encoding))
            data.stage = "DATA"
            await self.step(self._data(client, raw, data))
        except DeliveryError as refused:  # nothing was sent
            await self._reset(client)
            return refused
        except Stopped:
            client.close()
            if data.committed:
                return DeliveryError(
                    "shutdown after the end of DATA, before the server's reply: "
                    "it may have accepted the mail",
                    permanent=False,
                    uncertain=True,
                )
            return DeliveryError(
                "shutdown before the end of DATA: not sent", permanent=False, interrupted=True
            )
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            return await self._failed(client, exc, data)
        return None

    async def _failed(
        self, client: aiosmtplib.SMTP, exc: BaseException, data: _Data
    ) -> DeliveryError:
        answered = isinstance(exc, aiosmtplib.SMTPResponseException) and 400 <= exc.code < 600
        if data.committed and not answered:
            client.close()
            return DeliveryError(
                f"no reply after the end of DATA ({type(exc).__name__}: {exc}): "
                "the server may have accepted the mail",
                permanent=False,
                uncertain=True,
            )
        data.dropped = is_drop(exc)
        error = classify(exc, f"at {data.stage}")
        if answered and client.is_connected:
            await self._reset(client)
        else:
            client.close()
        return error

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """RSET after a refusal, so the connection serves the next mail; else drop it."""
        if client.is_connected:
            try:
                await self.step(client.rset())
            except (aiosmtplib.SMTPException, OSError, Stopped):  # the refusal is told
                client.close()

    async def _data(self, client: aiosmtplib.SMTP, raw: bytes, data: _Data) -> None:
        """DATA, the body, then the "."; ``data.committed`` from the moment the "." left."""
        timeout = self.config.timeout_seconds
        response = await client.execute_command(b"DATA", timeout=timeout)
        if response.code != 354:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost after DATA")
        data.stage = "the message body"
        body = wire_body(raw)
        for start in range(0, len(body), CHUNK):
            protocol.write(body[start : start + CHUNK])
            await flushed(protocol, CHUNK, timeout)
        await flushed(protocol, 0, timeout)
        # Let the event loop take in what the server may already have done (closed the
        # connection, sent a 421): the "." is not sent to a server that has gone.
        for _ in range(2):
            await asyncio.sleep(0)
        if not protocol.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the end of DATA")
        reply = asyncio.ensure_future(protocol.read_response(timeout=timeout))
        try:
            await asyncio.sleep(0)  # the reader is waiting before the "." leaves
            protocol.write(b".\r\n")
        except BaseException:
            reply.cancel()
            with contextlib.suppress(BaseException):
                await reply
            raise
        data.committed = True
        data.stage = "the end of DATA"
        try:
            response = await reply
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            client.close()
            raise
        if not 200 <= response.code < 300:
            raise aiosmtplib.SMTPDataError(response.code, response.message)

    # -- the batch --------------------------------------------------------------------------

    async def run(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        kept: aiosmtplib.SMTP | None = None,
        idle: float = 0.0,
        keep: bool = True,
    ) -> aiosmtplib.SMTP | None:
        """Send the batch. With ``keep``, return the connection still open for the next
        batch (None when there is none, or on shutdown); else close it."""
        client = kept
        batch = asyncio.current_task()
        assert batch is not None
        self.tasks.append(batch)
        watcher = asyncio.ensure_future(self._watch_stop())
        done = False
        jobs = deque(Job(envelope) for envelope in envelopes)
        helper: asyncio.Task[None] | None = None
        try:
            if client is not None:
                client = await self.revive(client, idle)
            while True:
                client, helper = await self._drain(client, jobs, before, after, helper)
                if helper is not None:  # its last mail may be back in ``jobs``, to send again
                    await self.step(asyncio.shield(helper))
                if not jobs or self.stopping or self.stop.is_set():
                    break
            done = True
            _left_behind(jobs, after)
        except Stopped:
            await _ended(helper)
            _left_behind(jobs, after)
        finally:
            await _ended(helper)  # a failure here: the helper sends what is left
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            kept_open = done and keep and not self.stopping
            if client is not None and not (kept_open and client.is_connected):
                await self.close(client)
                client = None
        return client

    async def _drain(
        self,
        client: aiosmtplib.SMTP | None,
        jobs: deque[Job],
        before: BeforeSend,
        after: AfterSend,
        helper: asyncio.Task[None] | None,
    ) -> tuple[aiosmtplib.SMTP | None, asyncio.Task[None] | None]:
        """Send from ``jobs`` on ``client`` (reconnecting) until none is left; a pipelined
        batch of ``SHARED_FROM`` mails or more is shared with a helper connection."""
        while jobs and not self.stop.is_set():
            fresh = client is None or not client.is_connected
            if fresh or client is None:
                client = await self._connect_for(jobs, after)
                if self.stopping:  # a stop while connecting: no mail is taken after it
                    break
            if client.supports_extension("pipelining"):
                if helper is None and len(jobs) >= SHARED_FROM:
                    helper = asyncio.ensure_future(self._helper(jobs, before, after))
                    self.tasks.append(helper)
                pipe = Pipelined(self, client, fresh, before, after)
                client = await pipe.run(jobs)
            else:
                job = jobs.popleft()
                if job.approved or before(job.envelope):
                    client, error = await self.deliver(client, job.envelope, fresh)
                    after(job.envelope, error)
            if self.stopping:
                break
        return client, helper

    async def _helper(self, jobs: deque[Job], before: BeforeSend, after: AfterSend) -> None:
        """A second connection taking mails from the same queue, in the same order (their
        claims too: ``before`` is called as each is taken). It sends while it can: if it
        cannot connect, or its connection fails, the first one sends the rest (a mail whose
        "." never left goes back to the queue, as on the first connection)."""
        try:
            client: aiosmtplib.SMTP | None = await self.connect()
        except (DeliveryError, Stopped):
            return
        try:
            while client is not None and jobs and not self.stop.is_set():
                if not client.supports_extension("pipelining"):
                    break
                client = await Pipelined(self, client, True, before, after).run(jobs)
        except Stopped:
            client = None  # closed by Pipelined
        finally:
            if client is not None:
                await self.close(client)


async def _ended(helper: asyncio.Task[None] | None) -> None:
    """Wait for the helper connection to end; what it raised was raised to the batch
    already, or comes second to what the batch raises."""
    if helper is not None:
        await asyncio.wait([helper])
        if not helper.cancelled():
            helper.exception()  # retrieved: no "never retrieved" warning


def _left_behind(jobs: deque[Job], after: AfterSend) -> None:
    """Mails let go by ``before`` but never sent (a shutdown before a resend): interrupted."""
    for job in jobs:
        if job.approved:
            after(job.envelope, interrupted())
    jobs.clear()
