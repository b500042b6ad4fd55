"""The SMTP commands of one mail sent one at a time (MAIL, RCPT: aiosmtplib's, without its
address parser), the AUTH of a connection, the body as DATA carries it and its flow control,
and what a failure means for the mail (``classify``: a server's answer or a network failure;
``interrupted``: a shutdown before the "."). Shared by one connection's steps
(``mailbot.mail.smtp_session``) and the pipelined exchange (``mailbot.mail.pipelining``);
the rules are in ``mailbot.mail.smtp``'s docstring."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings

from mailbot.errors import DeliveryError, MailbotError
from mailbot.mail.envelope import Envelope
from mailbot.mail.transfer_encoding import seven_bit

CHUNK = 64 * 1024  # body bytes written at a time
_POLL = 0.005  # how often a stalled write is looked at, seconds
QUIT_SECONDS = 2.0  # a polite QUIT, but not a long wait for it


class Stopped(MailbotError):
    """A shutdown was requested while a network step was in progress."""


def is_drop(exc: BaseException) -> bool:
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


def quoted(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL FROM or RCPT TO, as aiosmtplib's ``mail``/``rcpt`` write it."""
    if not address:
        return b"<>"  # the null sender
    if _BARE_ADDRESS.fullmatch(address):
        return f"<{address}>".encode(encoding)
    return quote_address(address).encode(encoding)


def wire_body(raw: bytes) -> bytes:
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


async def mail_from(
    client: aiosmtplib.SMTP, sender: str, options: Sequence[str], encoding: str
) -> None:
    """``client.mail(...)`` without its address parser (the greeting is done at connect)."""
    words = [b"FROM:" + quoted(sender, encoding), *(option.encode("ascii") for option in options)]
    response = await client.execute_command(b"MAIL", *words)
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def rcpt_to(client: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    """``client.rcpt(...)`` without its address parser."""
    response = await client.execute_command(b"RCPT", b"TO:" + quoted(recipient, encoding))
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


def _reply_error(exc: aiosmtplib.SMTPResponseException, what: str) -> DeliveryError:
    return DeliveryError(
        f"{what}: SMTP {exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code
    )


def network_error(exc: BaseException, what: str) -> DeliveryError:
    detail = str(exc) or type(exc).__name__
    return DeliveryError(f"{what}: {type(exc).__name__}: {detail}", permanent=False)


def classify(exc: BaseException, what: str) -> DeliveryError:
    """A server's definite answer (4xx/5xx), or a network/protocol failure (retry)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 400 <= exc.code < 600:
        return _reply_error(exc, what)
    return network_error(exc, what)


async def flushed(protocol: SMTPProtocol, limit: int, timeout: float) -> None:
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


def mail_options(client: aiosmtplib.SMTP, envelope: Envelope, raw: bytes) -> list[str]:
    """MAIL FROM's parameters for ``envelope``, sent as ``raw`` (``sent_bytes``)."""
    options = []
    if needs_smtputf8(envelope):
        if not client.supports_extension("smtputf8"):
            raise DeliveryError(
                "the mail needs SMTPUTF8 (a non-ASCII address or header, RFC 6531) "
                "and the SMTP server does not offer it",
                permanent=True,
            )
        options.append("SMTPUTF8")
    if not raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def sent_bytes(client: aiosmtplib.SMTP, envelope: Envelope, eight_bit: bool) -> bytes:
    """The mail as DATA carries it to this server: 8-bit parts re-encoded for one that does
    not offer 8BITMIME (RFC 6152 §3), or everywhere when ``smtp.eight_bit`` is off."""
    if envelope.raw.isascii() or (eight_bit and client.supports_extension("8bitmime")):
        return envelope.raw
    return seven_bit(envelope.raw)


def interrupted() -> DeliveryError:
    return DeliveryError(
        "shutdown before the end of DATA: not sent", permanent=False, interrupted=True
    )
