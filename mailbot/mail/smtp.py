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

To know when the "." leaves, DATA is driven here rather than by ``SMTP.data()``: the DATA
command through aiosmtplib, then the body (aiosmtplib's own line-ending normalisation and
dot-stuffing) written under flow control, then the terminator on its own.

The connection outlives a batch (``SmtpTransport``): the next batch reuses it, after a NOOP
if it sat idle for a while; one idle for ``IDLE_CLOSE`` seconds is closed (QUIT), and
``close()`` ends it at shutdown. A kept connection the server dropped in the meantime is
found out at the latest at the next mail's MAIL FROM: that mail is sent again at once on a
new connection, which is safe, for the server cannot have accepted a mail whose "." never
left.

PIPELINING (RFC 2920) where the server offers it (Postfix does): the body and "." of a
mail leave with the MAIL, RCPT and DATA of the next one, and their replies come back
together, one round trip per mail instead of four (``_Pipelined``, a protocol of ours on
aiosmtplib's connection for the batch: aiosmtplib's keeps one reply outstanding and drops
the others). Each mail keeps its own result; the rules above hold unchanged. Without the
extension, one command at a time as before.

A pipelined batch of ``SHARED_FROM`` mails or more is shared with a second connection
(``_Session._helper``), opened for the batch and closed after it: both take mails from the
same queue, in order (each mail's ``before``, its claim, is still called in the batch's
order), so their round trips overlap. A transferred mail sends two mails (the AR and the
forward): on one connection, delivery lagged behind intake (issue 14; bench/lag.py). The
helper's failures follow the rules above; a mail whose "." never left goes back to the
queue for the first connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError, MailbotError
from mailbot.mail.tls import client_context

T = TypeVar("T")

_CHUNK = 64 * 1024  # body bytes written at a time
_POLL = 0.005  # how often a stalled write is looked at, seconds
_STOP_POLL = 0.05  # how often a shutdown request is looked at, seconds
_QUIT_SECONDS = 2.0  # a polite QUIT, but not a long wait for it
CHECK_AFTER = 5.0  # seconds: a kept connection idle longer than this is checked (NOOP) first
IDLE_CLOSE = 30.0  # seconds: a kept connection idle this long is closed (QUIT)
# A pipelined batch of at least this many mails is shared with a second connection: each
# mail costs a round trip (its "." reply), and two connections overlap them (issue 14,
# point 7). Smaller batches (a mail or a few under IDLE) keep to one connection.
SHARED_FROM = 16


@dataclass(frozen=True)
class Envelope:
    envelope_from: str
    recipient: str
    raw: bytes
    name: str = "mail"


BeforeSend = Callable[[Envelope], bool]
AfterSend = Callable[[Envelope, DeliveryError | None], None]


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


class _Stopped(MailbotError):
    """A shutdown was requested while a network step was in progress."""


class _Data:
    """Where one mail's exchange is; ``committed`` once the terminating "." was handed over;
    ``dropped`` when the connection was gone (closed, or a 421) before that."""

    stage = "MAIL FROM"
    committed = False
    dropped = False


def _is_drop(exc: BaseException) -> bool:
    """The connection went away (closed, reset, or the server's 421 "closing channel")."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == 421
    return isinstance(exc, ConnectionError)


def needs_smtputf8(envelope: Envelope) -> bool:
    """RFC 6531: a non-ASCII address, or UTF-8 in the header section, needs SMTPUTF8."""
    head = envelope.raw.split(b"\r\n\r\n", 1)[0]
    return not (
        envelope.envelope_from.isascii() and envelope.recipient.isascii() and head.isascii()
    )


# A bare ASCII address (dot-atom "@" dot-atom): aiosmtplib's ``quote_address`` (through
# ``email.utils.parseaddr``, a tenth of a millisecond) gives back "<address>" for it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _quoted(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO, as aiosmtplib's ``mail``/``rcpt`` write it."""
    if not address:
        return b"<>"  # the null sender
    if _BARE_ADDRESS.fullmatch(address):
        return f"<{address}>".encode(encoding)
    return quote_address(address).encode(encoding)


def _wire_body(raw: bytes) -> bytes:
    """The body as DATA carries it: CRLF line ends, ending in CRLF, lines starting with "."
    doubled (aiosmtplib's own functions); the regular expressions only where the body is not
    already so (a mail built by mailbot always has CRLF line ends and seldom a leading ".")."""
    crlf = raw.count(b"\r\n")
    if not (raw.count(b"\r") == crlf == raw.count(b"\n") and raw.endswith(b"\r\n")):
        raw = normalize_message_line_endings(raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = PERIOD_REGEX.sub(b"..", raw)
    return raw


# AUTH replies that refuse the mechanism, not the password (RFC 4954: 504 unrecognized
# type, 534 mechanism too weak): only then is the next mechanism the server offers tried.
_MECHANISM_REFUSED = frozenset({504, 534})


async def authenticate(client: aiosmtplib.SMTP, username: str, password: str) -> None:
    """AUTH with the first mechanism both sides know (aiosmtplib's order: CRAM-MD5, PLAIN,
    LOGIN), the next one only when the server refuses the mechanism itself.

    aiosmtplib's ``login`` tries every mechanism the server offers after any refusal: a
    wrong password was two failed logins per connection (PLAIN, then LOGIN, against the
    test relay), and a directory that locks an account after a few failures (Active
    Directory behind Exchange) locked the relay account twice as fast, for the
    delivery's retries and `check --connect` alike. A 535 is the answer: one per try."""
    methods = client.supported_auth_methods
    if not methods:
        await client.login(username, password)  # raises aiosmtplib's own words for it
        return
    for method in methods:
        try:
            await getattr(client, f"auth_{method.replace('-', '')}")(username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code not in _MECHANISM_REFUSED or method == methods[-1]:
                raise
        else:
            return


async def _mail_from(
    client: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str
) -> None:
    """``client.mail(...)`` without its address parser (the greeting is done at connect)."""
    words = [b"FROM:" + _quoted(sender, encoding), *(option.encode("ascii") for option in options)]
    response = await client.execute_command(b"MAIL", *words)
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt_to(client: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    """``client.rcpt(...)`` without its address parser."""
    response = await client.execute_command(b"RCPT", b"TO:" + _quoted(recipient, encoding))
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


def _reply_error(exc: aiosmtplib.SMTPResponseException, what: str) -> DeliveryError:
    return DeliveryError(
        f"{what}: SMTP {exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code
    )


def _network_error(exc: BaseException, what: str) -> DeliveryError:
    detail = str(exc) or type(exc).__name__
    return DeliveryError(f"{what}: {type(exc).__name__}: {detail}", permanent=False)


def _classify(exc: BaseException, what: str) -> DeliveryError:
    """A server's definite answer (4xx/5xx), or a network/protocol failure (retry)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 400 <= exc.code < 600:
        return _reply_error(exc, what)
    return _network_error(exc, what)


async def _flushed(protocol: SMTPProtocol, limit: int, timeout: float) -> None:
    """Wait until at most ``limit`` bytes are left in our write buffer.

    A server that stops reading fills the socket buffers and the wait times out; one that
    closes the connection ends it at once. Either way, nothing after the buffer has left.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        transport = cast(asyncio.WriteTransport | None, protocol.transport)
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost while sending the data")
        if transport.get_write_buffer_size() <= limit:
            return
        if loop.time() >= deadline:
            raise aiosmtplib.SMTPReadTimeoutError("the server stopped reading the data")
        await asyncio.sleep(_POLL)


class _Session:
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
        """Await one network step; a shutdown cutting it comes out as _Stopped."""
        task = asyncio.current_task()
        assert task is not None
        if task in self._owed:
            self._owed.discard(task)
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never started: no "never awaited" warning
            raise _Stopped("shutdown requested")
        self._stepping[task] = self._stepping.get(task, 0) + 1
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            self._cut.discard(task)
            task.uncancel()  # handled here: the batch goes on to record and close
            raise _Stopped("shutdown requested") from None
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
        except _Stopped:
            if client is not None:
                client.close()
            raise
        except (aiosmtplib.SMTPException, OSError, MailbotError) as exc:
            if client is not None:
                client.close()
            if isinstance(exc, MailbotError):  # an unreadable secret
                raise DeliveryError(f"{where}: {exc}", permanent=False) from None
            response = isinstance(exc, aiosmtplib.SMTPResponseException)
            error = _classify(exc, refused if response else where)
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
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, _Stopped):
                await self.step(client.quit(timeout=_QUIT_SECONDS))
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

    async def _connect_for(self, jobs: deque[_Job], after: AfterSend) -> aiosmtplib.SMTP:
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
        except _Stopped:  # the mail was let go: told, never left untold in the batch
            return client, _interrupted()
        return client, await self.send(client, envelope, _Data())

    async def send(
        self, client: aiosmtplib.SMTP, envelope: Envelope, data: _Data
    ) -> DeliveryError | None:
        """MAIL, RCPT, DATA; the error says whether the server can have accepted the mail."""
        try:
            options = self._mail_options(client, envelope)
            encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
            await self.step(_mail_from(client, envelope.envelope_from, options, encoding))
            data.stage = "RCPT TO"
            await self.step(_rcpt_to(client, envelope.recipient, encoding))
            data.stage = "DATA"
            await self.step(self._data(client, envelope.raw, data))
        except DeliveryError as refused:  # nothing was sent
            await self._reset(client)
            return refused
        except _Stopped:
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
        data.dropped = _is_drop(exc)
        error = _classify(exc, f"at {data.stage}")
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
            except (aiosmtplib.SMTPException, OSError, _Stopped):  # the refusal is told
                client.close()

    @staticmethod
    def _mail_options(client: aiosmtplib.SMTP, envelope: Envelope) -> list[str]:
        options = []
        if needs_smtputf8(envelope):
            if not client.supports_extension("smtputf8"):
                raise DeliveryError(
                    "the mail needs SMTPUTF8 (a non-ASCII address or header, RFC 6531) "
                    "and the SMTP server does not offer it",
                    permanent=True,
                )
            options.append("SMTPUTF8")
        if not envelope.raw.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

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
        body = _wire_body(raw)
        for start in range(0, len(body), _CHUNK):
            protocol.write(body[start : start + _CHUNK])
            await _flushed(protocol, _CHUNK, timeout)
        await _flushed(protocol, 0, timeout)
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
        jobs = deque(_Job(envelope) for envelope in envelopes)
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
        except _Stopped:
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
        jobs: deque[_Job],
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
                pipe = _Pipelined(self, client, fresh, before, after)
                client = await pipe.run(jobs)
            else:
                job = jobs.popleft()
                if job.approved or before(job.envelope):
                    client, error = await self.deliver(client, job.envelope, fresh)
                    after(job.envelope, error)
            if self.stopping:
                break
        return client, helper

    async def _helper(self, jobs: deque[_Job], before: BeforeSend, after: AfterSend) -> None:
        """A second connection taking mails from the same queue, in the same order (their
        claims too: ``before`` is called as each is taken). It sends while it can: if it
        cannot connect, or its connection fails, the first one sends the rest (a mail whose
        "." never left goes back to the queue, as on the first connection)."""
        try:
            client: aiosmtplib.SMTP | None = await self.connect()
        except (DeliveryError, _Stopped):
            return
        try:
            while client is not None and jobs and not self.stop.is_set():
                if not client.supports_extension("pipelining"):
                    break
                client = await _Pipelined(self, client, True, before, after).run(jobs)
        except _Stopped:
            client = None  # closed by _Pipelined
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


@dataclass
class _Job:
    """A mail of the batch; ``approved`` once ``before`` let it go (a mail sent again on a
    new connection is not asked twice)."""

    envelope: Envelope
    approved: bool = False
    resent: bool = False


class _Replies(asyncio.Protocol):
    """The connection's protocol while commands are pipelined (RFC 2920): every reply the
    server sends kept, in order (aiosmtplib's protocol keeps one and drops the rest)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.replies: deque[aiosmtplib.SMTPResponse] = deque()
        self.lost: aiosmtplib.SMTPException | None = None
        self.lines: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) != -1:
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            self.lines.append(line)
            if line[3:4] != b"-":
                self._reply()
        if len(self.buffer) > 8192:
            self._lose(aiosmtplib.SMTPResponseException(-1, "reply line too long"))
        self._wake()

    def _reply(self) -> None:
        lines, self.lines = self.lines, []
        try:
            code = int(lines[-1][:3])
        except ValueError:
            self._lose(aiosmtplib.SMTPResponseException(-1, f"malformed reply {lines[-1]!r}"))
            return
        text = "\n".join(line[4:].strip(b" \t\r\n").decode("utf-8", "replace") for line in lines)
        self.replies.append(aiosmtplib.SMTPResponse(code, text))

    def _lose(self, error: aiosmtplib.SMTPException) -> None:
        if self.lost is None:
            self.lost = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lose(aiosmtplib.SMTPServerDisconnected("unexpected EOF"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(aiosmtplib.SMTPServerDisconnected(f"connection lost ({exc})"))

    def pause_writing(self) -> None:
        """Flow control is read from the transport's buffer size (``_flushed``)."""

    def resume_writing(self) -> None:
        """See ``pause_writing``."""

    async def reply(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply in order; SMTPServerDisconnected or a timeout if none comes."""
        if self.replies:  # came with the one before (a pipelined group): no wait, no timer
            return self.replies.popleft()
        loop = asyncio.get_running_loop()
        try:
            # Not ``wait_for``: it returns normally when the cancel of a shutdown meets a
            # waiter just woken, and the shutdown would then wait for the next timeout.
            async with asyncio.timeout(timeout):
                while not self.replies:
                    if self.lost is not None:
                        raise self.lost
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("no reply from the server") from None
        return self.replies.popleft()


class _Flushing:
    """What ``_flushed`` needs of a protocol: its transport."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class _Pipelined:
    """One connection's share of a batch, pipelined (RFC 2920, when the server offers it).

    Each mail costs one round trip: its body and "." leave together with the MAIL, RCPT and
    DATA of the next mail, and the "." reply comes back with theirs. Each mail still gets
    its own result: a refused RCPT fails that mail only (the server refuses its DATA too,
    RSET clears the envelope); the "." of a mail leaves only after ``before`` let it go. A
    drop after a "." leaves that mail uncertain; the mail whose commands were in flight had
    sent no ".": it is sent once more on a new connection, as in ``_Session.deliver``.
    """

    def __init__(
        self,
        session: _Session,
        client: aiosmtplib.SMTP,
        fresh: bool,
        before: BeforeSend,
        after: AfterSend,
    ) -> None:
        self.session = session
        self.client = client
        self.fresh = fresh  # the connection was opened for the first of these mails
        self.before = before
        self.after = after
        self.timeout = session.config.timeout_seconds
        self.replies = _Replies()
        self.open: _Job | None = None  # its "." left, its reply not read yet
        self.current: _Job | None = None  # let go by ``before``, its "." not sent yet
        self.sent = 0  # mails whose commands went out on this connection

    async def run(self, jobs: deque[_Job]) -> aiosmtplib.SMTP | None:
        """Send ``jobs`` from the left until none is left, the connection fails (then the
        connection is closed and None returned) or a shutdown (the batch ends)."""
        protocol = self.client.protocol
        transport = cast(asyncio.Transport | None, protocol and protocol.transport)
        if protocol is None or transport is None:
            return None
        transport.set_protocol(self.replies)
        try:
            while jobs and not self.session.stop.is_set():
                job = jobs.popleft()
                if not await self._one(job, jobs, transport):
                    return None
            if self.open is not None:
                return None if not await self._closing(transport) else self.client
        except _Stopped:
            self._stopped()
            self.client.close()
            raise
        finally:
            if not transport.is_closing():
                transport.set_protocol(protocol)
        return self.client

    async def _one(self, job: _Job, jobs: deque[_Job], transport: asyncio.Transport) -> bool:
        """One mail; False once the connection is gone."""
        envelope = job.envelope
        try:
            if not (job.approved or self.before(envelope)):
                return True
        except BaseException:  # the claim failed: the mail before is told first
            with contextlib.suppress(Exception):
                await self._closing(transport)
            raise
        job.approved = True
        try:
            commands = self._commands(envelope)
        except DeliveryError as refused:
            self.after(envelope, refused)
            return True
        self.current = job  # told nothing yet: a shutdown now interrupts it
        self.sent += 1
        try:
            self._write(transport, commands)
        except aiosmtplib.SMTPException as exc:
            return self._dropped(job, jobs, exc, "MAIL FROM")
        if not await self._closing(transport):
            return self._dropped(job, jobs, self.replies.lost, "MAIL FROM")
        return await self._data(job, jobs, transport)

    def _commands(self, envelope: Envelope) -> bytes:
        """MAIL, RCPT and DATA for ``envelope``; DeliveryError if it cannot be sent here
        (SMTPUTF8 not offered: permanent; a line end in an address: as aiosmtplib refuses
        it, a ValueError, retried)."""
        options = _Session._mail_options(self.client, envelope)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        try:
            words = [b"FROM:" + _quoted(envelope.envelope_from, encoding)]
            words += [option.encode("ascii") for option in options]
            rcpt = b"TO:" + _quoted(envelope.recipient, encoding)
            if any(b"\r" in word or b"\n" in word for word in (*words, rcpt)):
                raise ValueError("Command arg contains a prohibited control character")
        except ValueError as error:  # an address aiosmtplib refuses to write
            raise _network_error(error, "at MAIL FROM") from None
        return b"MAIL " + b" ".join(words) + b"\r\nRCPT " + rcpt + b"\r\nDATA\r\n"

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        if transport.is_closing() or self.replies.lost is not None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        transport.write(data)

    async def _closing(self, transport: asyncio.Transport) -> bool:
        """The reply to the open mail's "." read and told to ``after``; False if the
        connection failed (the open mail then told it is uncertain)."""
        job, self.open = self.open, None
        if job is None:
            return True
        try:
            response = await self.session.step(self.replies.reply(self.timeout))
        except _Stopped:
            self.open = job
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.client.close()
            self.after(job.envelope, _uncertain(exc))
            return False
        if 200 <= response.code < 300:
            self.after(job.envelope, None)
        else:
            error = aiosmtplib.SMTPDataError(response.code, response.message)
            self.after(job.envelope, _classify(error, "at the end of DATA"))
        if response.code == 421:  # the server is closing the connection
            self.client.close()
            return False
        return True

    async def _data(self, job: _Job, jobs: deque[_Job], transport: asyncio.Transport) -> bool:
        """The MAIL, RCPT and DATA replies; then the body and its "." (left open)."""
        failure: aiosmtplib.SMTPResponseException | None = None
        stages = ("MAIL FROM", "RCPT TO", "DATA")
        for stage, accepted in zip(stages, ((250,), (250, 251), (354,)), strict=True):
            try:
                response = await self.session.step(self.replies.reply(self.timeout))
            except (aiosmtplib.SMTPException, OSError) as exc:
                return self._dropped(job, jobs, exc, stage)
            if response.code == 421:
                closing = aiosmtplib.SMTPResponseException(response.code, response.message)
                return self._dropped(job, jobs, closing, stage)
            if failure is None and response.code not in accepted:
                failure = _refusal(stage, response)
                failed_at = stage
        if failure is not None:
            self.current = None
            self.after(job.envelope, _classify(failure, f"at {failed_at}"))
            return await self._reset(transport, data_open=response.code == 354)
        try:
            await self._body(transport, job.envelope.raw)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._dropped(job, jobs, exc, "the message body")
        self.open, self.current = job, None
        return True

    async def _body(self, transport: asyncio.Transport, raw: bytes) -> None:
        """The body, then the "." once the body has left (a server that stops reading: the
        "." never leaves, the mail is retried, not uncertain).

        A body of one chunk (an AR, a forward of a short mail) goes with its "." in one
        write: one system call and one turn of the GIL fewer per mail (issue 14). Handed to
        the kernel whole, it left as the "." written after it would have; otherwise the
        "." is at the end of what waits in the transport's buffer, and should that wait
        fail (a server that stops reading, a shutdown) the transport is aborted, its buffer
        dropped (a close would send it on its way): the "." never leaves, as before."""
        body = _wire_body(raw)
        flushing = cast(SMTPProtocol, _Flushing(transport))
        if len(body) <= _CHUNK and not transport.get_write_buffer_size():
            self._write(transport, body + b".\r\n")
            if transport.get_write_buffer_size():
                try:
                    await self.session.step(_flushed(flushing, 0, self.timeout))
                except BaseException:
                    transport.abort()
                    raise
            return
        for start in range(0, len(body), _CHUNK):
            self._write(transport, body[start : start + _CHUNK])
            await self.session.step(_flushed(flushing, _CHUNK, self.timeout))
        if transport.get_write_buffer_size():
            await self.session.step(_flushed(flushing, 0, self.timeout))
        self._write(transport, b".\r\n")

    async def _reset(self, transport: asyncio.Transport, data_open: bool) -> bool:
        """RSET after a refused MAIL, RCPT or DATA; a server that opened DATA anyway is
        left (no "." ever ends an empty mail): the connection is closed."""
        if data_open:
            self.client.close()
            return False
        try:
            self._write(transport, b"RSET\r\n")
            response = await self.session.step(self.replies.reply(self.timeout))
        except (aiosmtplib.SMTPException, OSError):
            self.client.close()
            return False
        if response.code != 250:
            self.client.close()
            return False
        return True

    def _dropped(
        self,
        job: _Job,
        jobs: deque[_Job],
        exc: BaseException | None,
        stage: str,
    ) -> bool:
        """The connection failed before ``job``'s "." left: sent once more on a new
        connection (the server cannot have accepted it), unless it was the first on a new
        one or was sent again already."""
        self.client.close()
        self.current = None  # told now, or sent again (``_left_behind`` on a shutdown)
        if self.open is not None:
            self.after(self.open.envelope, _uncertain(exc))
            self.open = None
        error = exc or aiosmtplib.SMTPServerDisconnected("connection lost")
        if (self.fresh and self.sent == 1) or job.resent or not _is_drop(error):
            self.after(job.envelope, _classify(error, f"at {stage}"))
        else:
            job.resent = True
            jobs.appendleft(job)
        return False

    def _stopped(self) -> None:
        """A shutdown: the open mail's "." left without its reply (uncertain); the mail
        under way had sent no "." (interrupted, as if never tried)."""
        if self.current is not None:
            self.after(self.current.envelope, _interrupted())
        self.current = None
        if self.open is not None:
            self.after(
                self.open.envelope,
                DeliveryError(
                    "shutdown after the end of DATA, before the server's reply: "
                    "it may have accepted the mail",
                    permanent=False,
                    uncertain=True,
                ),
            )
            self.open = None


def _refusal(stage: str, response: aiosmtplib.SMTPResponse) -> aiosmtplib.SMTPResponseException:
    if stage == "MAIL FROM":
        return aiosmtplib.SMTPSenderRefused(response.code, response.message, "")
    if stage == "RCPT TO":
        return aiosmtplib.SMTPRecipientRefused(response.code, response.message, "")
    return aiosmtplib.SMTPDataError(response.code, response.message)


def _left_behind(jobs: deque[_Job], after: AfterSend) -> None:
    """Mails let go by ``before`` but never sent (a shutdown before a resend): interrupted."""
    for job in jobs:
        if job.approved:
            after(job.envelope, _interrupted())
    jobs.clear()


def _interrupted() -> DeliveryError:
    return DeliveryError(
        "shutdown before the end of DATA: not sent", permanent=False, interrupted=True
    )


def _uncertain(exc: BaseException | None) -> DeliveryError:
    what = f"{type(exc).__name__}: {exc}" if exc is not None else "connection lost"
    return DeliveryError(
        f"no reply after the end of DATA ({what}): the server may have accepted the mail",
        permanent=False,
        uncertain=True,
    )


class _Kept:
    """The connection kept between batches, the event loop it belongs to, and the lock of
    whoever uses them (one batch at a time; the idle timer; ``close``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: aiosmtplib.SMTP | None = None
        self.last_used = time.monotonic()

    def run(self, session: _Session, envelopes: Sequence[Envelope], **callbacks: Any) -> None:
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
            await client.quit(timeout=_QUIT_SECONDS)
    client.close()


def _shut_unless_busy(kept: _Kept) -> None:
    """The transport is gone (or the interpreter exits): close what it kept, unless a
    thread left in the middle of a batch still holds it (then exit closes the socket)."""
    if kept.lock.acquire(timeout=1.0):
        try:
            kept.shut()
        finally:
            kept.lock.release()


def _close_when_idle(kept: _Kept, idle_close: float) -> None:
    """The idle timer: QUIT the kept connection if no batch used it for ``idle_close``."""
    if not kept.lock.acquire(blocking=False):
        return  # a batch is using it; it sets a new timer when done
    try:
        if kept.client is not None and kept.idle_for() >= idle_close * 0.99:
            kept.shut()
    finally:
        kept.lock.release()


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
        self._kept = _Kept()
        self._timer: threading.Timer | None = None
        weakref.finalize(self, _shut_unless_busy, self._kept)  # at exit too: a polite QUIT

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None:
        if not envelopes:
            return
        session = _Session(self.config, stop, self.check_after)
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
            self.idle_close, _close_when_idle, args=(self._kept, self.idle_close)
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
