"""Outgoing mail: one SMTP connection per batch (aiosmtplib), or .eml files for the demo.

What the outbox needs to know about a failed send is whether the server can have accepted
the mail. It cannot before the terminating "." of DATA has been handed to the network: a
failure there (greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, the DATA command, the body) is
retried. It can once the "." has left and no reply came (the connection dropped, the
server hung): that send is *uncertain* and never retried, for mailbot never sends two ARs.
A reply (4xx, 5xx) is an answer either way: retried or failed.

To know when the "." leaves, DATA is driven here rather than by ``SMTP.data()``: the DATA
command through aiosmtplib, then the body (aiosmtplib's own line-ending normalisation and
dot-stuffing) written under flow control, then the terminator on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError, MailbotError
from mailbot.mail.tls import client_context

T = TypeVar("T")

_CHUNK = 64 * 1024  # body bytes written at a time
_POLL = 0.005  # how often a stalled write is looked at, seconds
_STOP_POLL = 0.05  # how often a shutdown request is looked at, seconds
_QUIT_SECONDS = 2.0  # a polite QUIT, but not a long wait for it


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


class _Stopped(MailbotError):
    """A shutdown was requested while a network step was in progress."""


class _Data:
    """Where one mail's exchange is; ``committed`` once the terminating "." was handed over."""

    stage = "MAIL FROM"
    committed = False


def needs_smtputf8(envelope: Envelope) -> bool:
    """RFC 6531: a non-ASCII address, or UTF-8 in the header section, needs SMTPUTF8."""
    head = envelope.raw.split(b"\r\n\r\n", 1)[0]
    return not (
        envelope.envelope_from.isascii() and envelope.recipient.isascii() and head.isascii()
    )


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
    """One batch on one connection (reconnecting once a mail's failure closed it)."""

    def __init__(self, config: SmtpConfig, stop: threading.Event | None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.stopping = False

    # -- shutdown ---------------------------------------------------------------------------

    async def _watch_stop(self, batch: asyncio.Task[Any]) -> None:
        """Cancel the batch as soon as a shutdown is requested; ``step`` tells what it cut."""
        while not self.stop.is_set():
            await asyncio.sleep(_STOP_POLL)
        self.stopping = True
        batch.cancel()

    async def step(self, awaitable: Awaitable[T]) -> T:
        """Await one network step; a shutdown cancelling it comes out as _Stopped."""
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # handled here: the batch goes on to record and close
            raise _Stopped("shutdown requested") from None

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> aiosmtplib.SMTP:
        """Connected, secured as configured, greeted (EHLO) and logged in; or DeliveryError."""
        config = self.config
        where = f"SMTP {config.host}:{config.port} ({config.security})"
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
                await self.step(client.login(config.username, config.password() or ""))
        except _Stopped:
            if client is not None:
                client.close()
            raise
        except (aiosmtplib.SMTPException, OSError, MailbotError) as exc:
            if client is not None:
                client.close()
            if isinstance(exc, MailbotError):  # an unreadable secret
                raise DeliveryError(f"{where}: {exc}", permanent=False) from None
            raise _classify(exc, where) from None
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

    # -- one mail ---------------------------------------------------------------------------

    async def send(self, client: aiosmtplib.SMTP, envelope: Envelope) -> DeliveryError | None:
        """MAIL, RCPT, DATA; the error says whether the server can have accepted the mail."""
        data = _Data()
        try:
            options = self._mail_options(client, envelope)
            encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
            await self.step(client.mail(envelope.envelope_from, options=options, encoding=encoding))
            data.stage = "RCPT TO"
            await self.step(client.rcpt(envelope.recipient, encoding=encoding))
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
            except (aiosmtplib.SMTPException, OSError):
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
        body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw))
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
        self, envelopes: Sequence[Envelope], before: BeforeSend, after: AfterSend
    ) -> None:
        client: aiosmtplib.SMTP | None = None
        batch = asyncio.current_task()
        assert batch is not None
        watcher = asyncio.ensure_future(self._watch_stop(batch))
        try:
            for envelope in envelopes:
                if self.stop.is_set():
                    break
                if client is None or not client.is_connected:
                    client = await self.connect()
                if before(envelope):
                    after(envelope, await self.send(client, envelope))
                if self.stopping:
                    break
        except _Stopped:
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if client is not None:
                await self.close(client)


class SmtpTransport:
    """aiosmtplib client reusing one connection for a whole batch."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None:
        if envelopes:
            asyncio.run(_Session(self.config, stop).run(envelopes, before, after))


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
