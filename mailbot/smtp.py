"""Outgoing mail: one SMTP connection per batch (aiosmtplib), or .eml files for the demo.

Errors are sorted into permanent (5xx: record, do not retry) and temporary (4xx, network:
retry later), which is all the outbox needs to know.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError, SecretError


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
    """

    def send_batch(
        self, envelopes: Sequence[Envelope], before: BeforeSend, after: AfterSend
    ) -> None: ...


def tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _classify(exc: Exception) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return DeliveryError(
            f"recipient refused: {first.code} {first.message}",
            permanent=first.code >= 500,
            code=first.code,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"SMTP {exc.code}: {exc.message}", permanent=exc.code >= 500, code=exc.code
        )
    return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)


async def _reset(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


class SmtpTransport:
    """aiosmtplib client reusing one connection for a whole batch."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _client(self) -> aiosmtplib.SMTP:
        security = self.config.security
        return aiosmtplib.SMTP(
            hostname=self.config.host,
            port=self.config.port,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=tls_context(self.config) if security != "none" else None,
            timeout=self.config.timeout_seconds,
        )

    async def _send_all(
        self, envelopes: Sequence[Envelope], before: BeforeSend, after: AfterSend
    ) -> None:
        client = self._client()
        try:
            await client.connect()
            if self.config.username:
                await client.login(self.config.username, self.config.password() or "")
        except SecretError as exc:
            raise DeliveryError(str(exc), permanent=False) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _classify(exc) from None
        try:
            for envelope in envelopes:
                if before(envelope):
                    after(envelope, await self._send_one(client, envelope))
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def _send_one(self, client: aiosmtplib.SMTP, envelope: Envelope) -> DeliveryError | None:
        """MAIL, RCPT, DATA step by step, to know whether a failure can be retried safely."""
        try:
            if not client.is_connected:
                await client.connect()
            await client.mail(envelope.envelope_from)
            await client.rcpt(envelope.recipient)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _reset(client)
            return _classify(exc)
        try:
            await client.data(envelope.raw)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _classify(exc)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            return DeliveryError(
                f"connection lost during DATA: {type(exc).__name__}",
                permanent=False,
                uncertain=True,
            )
        return None

    def send_batch(
        self, envelopes: Sequence[Envelope], before: BeforeSend, after: AfterSend
    ) -> None:
        """Raises DeliveryError when no connection could be made (nothing was sent)."""
        if envelopes:
            asyncio.run(self._send_all(envelopes, before, after))


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
        self, envelopes: Sequence[Envelope], before: BeforeSend, after: AfterSend
    ) -> None:
        for envelope in envelopes:
            if before(envelope):
                self._path(envelope).write_bytes(envelope.raw)
                after(envelope, None)
