"""Whether the mail servers the worker talks to can be reached, for `mailbot check
--connect`: IMAP (connect, TLS as configured, LOGIN, EXAMINE of each folder read, LOGOUT)
and SMTP (connect, EHLO, STARTTLS, AUTH as configured, QUIT: no mail is sent).

The steps are taken one by one here, rather than through ``ImapMailbox`` and the outbox's
SMTP session, so that a failure names the step that failed and why in a few words
("connection refused 10.0.0.5:993", "certificate verify failed (...)", "authentication
failed for user 'accueil'") instead of a library's exception: IT reads it while installing.
Trust is decided where the worker's is (``mail/tls.client_context``) and the same libraries
speak the protocols with the same settings, so what passes here passes the worker.

Read-only, as ``mail/imap`` is: folders are opened with EXAMINE, nothing is fetched, no flag
is changed; nothing is sent over SMTP. Each reason is redacted (``mailbot.redact``): a
server that echoes the password back shows ``***``.
"""

from __future__ import annotations

import asyncio
import imaplib
import socket
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import aiosmtplib
from imapclient import IMAPClient

from mailbot.config import ImapConfig, ServerConfig, SmtpConfig
from mailbot.errors import MailbotError
from mailbot.mail.smtp import authenticate
from mailbot.mail.tls import client_context
from mailbot.redact import redact

# What a failed step can raise: the network, TLS, and either protocol's refusals.
_STEP_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # sockets, timeouts, ssl.SSLError, an unreadable CA file
    imaplib.IMAP4.error,  # imapclient's LoginError, CapabilityError, IMAP4.abort
    aiosmtplib.SMTPException,
    ValueError,  # imapclient's parser on a garbled response
)


class Unreachable(MailbotError):
    """A step failed; the message is the reason (redacted), without the server's name,
    which the caller shows beside it."""

    def __init__(self, reason: str) -> None:
        super().__init__(redact(reason))


def imap(config: ImapConfig, folders: Sequence[str], timeout: float) -> str:
    """Connect, secure, LOGIN and EXAMINE each of ``folders`` on ``config``'s server,
    each network wait bounded by ``timeout`` seconds; what was done, or Unreachable."""
    where = f"{config.host}:{config.port}"
    if not config.username:
        raise Unreachable("no IMAP username configured")
    password = _password(config, "IMAP")
    client: Any = None
    try:
        with _step(where, timeout, "cannot connect"):
            client = IMAPClient(
                config.host,
                port=config.port,
                ssl=config.security == "tls",
                ssl_context=client_context(config) if config.security == "tls" else None,
                timeout=timeout,
            )
        if config.security == "starttls":
            with _step(where, timeout, "STARTTLS refused"):
                client.starttls(client_context(config))
        with _step(where, timeout, f"authentication failed for user {config.username!r}"):
            client.login(config.username, password)
        for folder in folders:
            with _step(where, timeout, f"folder {folder!r} cannot be opened"):
                client.select_folder(folder, readonly=True)  # EXAMINE: no flag changes
        with suppress(*_STEP_ERRORS):
            client.logout()
    except BaseException:
        if client is not None:
            with suppress(Exception):
                client.shutdown()
        raise
    examined = ", ".join(repr(folder) for folder in folders)
    return f"login as {config.username!r} accepted, {examined} examined (read-only)"


def smtp(config: SmtpConfig, timeout: float) -> str:
    """Connect, EHLO, STARTTLS and AUTH as configured, then QUIT, nothing sent; each
    network wait bounded by ``timeout`` seconds. What was done, or Unreachable."""
    password = _password(config, "SMTP") if config.username else None
    return asyncio.run(_smtp(config, password, timeout))


async def _smtp(config: SmtpConfig, password: str | None, timeout: float) -> str:
    where = f"{config.host}:{config.port}"
    done = ["greeting"]
    client: aiosmtplib.SMTP | None = None
    try:
        with _step(where, timeout, "cannot connect"):
            client = aiosmtplib.SMTP(
                hostname=config.host,
                port=config.port,
                use_tls=config.security == "tls",
                start_tls=False,  # below, as a step of its own
                tls_context=client_context(config) if config.security != "none" else None,
                timeout=timeout,
            )
            await client.connect()
        with _step(where, timeout, "EHLO refused"):
            await client.ehlo()
        done.append("EHLO")
        if config.security == "starttls":
            with _step(where, timeout, "STARTTLS refused"):
                await client.starttls()
                await client.ehlo()
            done.append("STARTTLS")
        if config.username:
            with _step(where, timeout, f"authentication failed for user {config.username!r}"):
                await authenticate(client, config.username, password or "")
            done.append(f"AUTH as {config.username!r}")
        with _step(where, timeout, "QUIT refused"):
            await client.quit()
    finally:
        if client is not None:
            client.close()
    return f"{', '.join(done)} accepted, QUIT (nothing sent)"


def _password(config: ServerConfig, protocol: str) -> str:
    """The password as the worker reads it (registered for redaction); Unreachable naming
    its source when it cannot be read, never its value."""
    try:
        password = config.password()
    except MailbotError as exc:  # SecretError: names the variable or the file
        raise Unreachable(f"no {protocol} password: {exc}") from None
    if password is None:
        raise Unreachable(f"no {protocol} password configured")
    return password


@contextmanager
def _step(where: str, timeout: float, refused: str) -> Iterator[None]:
    """One step: a library's failure becomes Unreachable, in a few words; ``refused`` says
    what a server's refusal of this step means."""
    try:
        yield
    except _STEP_ERRORS as exc:
        raise Unreachable(reason(exc, where, timeout, refused)) from None


def reason(exc: BaseException, where: str, timeout: float, refused: str) -> str:
    """What went wrong, for a person: the network's or TLS's failure found anywhere in the
    exception's chain (aiosmtplib wraps the socket's), else the server's refusal."""
    root = _network_cause(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"certificate verify failed ({root.verify_message}) with {where}"
    if isinstance(root, ssl.SSLError):
        return f"TLS failed with {where} ({root.reason or root})"
    if isinstance(root, ConnectionRefusedError):
        return f"connection refused {where}"
    if isinstance(root, socket.gaierror):
        return f"host not found: {where.rsplit(':', 1)[0]} ({root.strerror})"
    if isinstance(root, TimeoutError):
        return f"no answer from {where} within {timeout:g} s"
    if isinstance(exc, (imaplib.IMAP4.abort, aiosmtplib.SMTPServerDisconnected)):
        return f"connection lost with {where} ({_text(exc)})"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{refused}: SMTP {exc.code} {exc.message}"
    if root is not None:  # another network failure: unreachable network, reset...
        return f"{refused}: {where}: {root.strerror or _text(root)}"
    return f"{refused}: {_text(exc)}"


def _network_cause(exc: BaseException) -> OSError | None:
    """The innermost OSError of ``exc``'s chain (causes and contexts), if any."""
    found: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _text(exc: BaseException) -> str:
    """A library exception's words: imapclient gives the server's bytes as ``b'...'``."""
    parts = [
        arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg) for arg in exc.args
    ]
    text = " ".join(part for part in parts if part) or type(exc).__name__
    if len(text) > 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        return text[2:-1]
    return text
