"""Keeping the passwords mailbot holds out of everything it writes: logs, stored errors.

Servers echo what they were sent: an SMTP server's 535 reply may quote the AUTH exchange
(base64 of the password, or of ``\\0user\\0password`` for AUTH PLAIN), an IMAP server's NO may
quote the LOGIN command (the password as an IMAP quoted string, backslash-escaped). So a
secret is registered once, when the configuration reads it, in every form a reply or a
library's error message can carry, and ``redact`` replaces each of them with ``***``.

Two nets use it: the project's errors redact their message when they are created
(``DeliveryError``, ``MailboxError``: what the outbox and the events table store), and the
log handler redacts every formatted line, tracebacks included.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading

MASK = "***"
# Shorter forms would mask ordinary words in every log line; such a password is refused
# by any sensible server policy anyway.
MIN_SECRET_LENGTH = 4
_MIN_BASE64_CORE = 8
_B64 = "A-Za-z0-9+/"

_lock = threading.Lock()
_forms: tuple[str, ...] = ()
_cores: tuple[str, ...] = ()
_TOKEN = re.compile(f"[{_B64}]{{{_MIN_BASE64_CORE},}}={{0,2}}")
_registered: set[tuple[str, str]] = set()


def _escaped_forms(secret: str) -> set[str]:
    """The secret as quoting layers write it: IMAP quoted string, repr, JSON, logfmt."""
    imap = secret.replace("\\", "\\\\").replace('"', '\\"')
    forms = {secret, imap, secret.replace('"', '\\"')}
    for form in list(forms):
        forms.add(repr(form)[1:-1])
        forms.add(repr(form.encode("utf-8"))[2:-1])
        forms.add(json.dumps(form)[1:-1])
        forms.add(json.dumps(form, ensure_ascii=False)[1:-1])
    return forms


def _base64_forms(secret: str, username: str) -> set[str]:
    """AUTH LOGIN sends base64(password); AUTH PLAIN base64(authzid NUL user NUL password)."""
    password = secret.encode("utf-8")
    user = username.encode("utf-8")
    forms = set()
    for blob in (password, b"\0" + user + b"\0" + password, user + b"\0" + password):
        encoded = base64.b64encode(blob).decode("ascii")
        forms |= {encoded, encoded.rstrip("=")}
    return forms


def _base64_cores(secret: str) -> set[str]:
    """The base64 characters that depend on the password alone, at each of the 3 alignments.

    Whatever precedes the password in a base64 blob (AUTH PLAIN with another user name,
    XOAUTH-like wrappers), one of these runs appears in it: the whole token is masked.
    """
    password = secret.encode("utf-8")
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + password).decode("ascii")
        first = -(-offset // 3)  # first 3-byte group made only of password bytes
        last = (offset + len(password)) // 3
        core = encoded[4 * first : 4 * last]
        if len(core) >= _MIN_BASE64_CORE:
            cores.add(core)
    return cores


def register_secret(secret: str | None, *, username: str | None = None) -> None:
    """Remember ``secret`` (a password just read) so that it is masked from now on."""
    global _forms, _cores
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return
    key = (secret, username or "")
    with _lock:
        if key in _registered:
            return
        _registered.add(key)
        forms = set(_forms) | _escaped_forms(secret) | _base64_forms(secret, username or "")
        # Longest first: a form that contains another is masked whole.
        _forms = tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len)[::-1])
        _cores = tuple(
            {core for registered, _user in _registered for core in _base64_cores(registered)}
        )


def redact(text: str) -> str:
    """``text`` with every registered secret, in any of its known forms, replaced by ***."""
    forms, cores = _forms, _cores
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    if cores:
        text = _TOKEN.sub(lambda m: MASK if any(c in m[0] for c in cores) else m[0], text)
    return text


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    global _forms, _cores
    with _lock:
        _registered.clear()
        _forms = ()
        _cores = ()


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose every line, once formatted (tracebacks too), is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
