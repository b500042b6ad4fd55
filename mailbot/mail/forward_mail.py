"""A citizen's mail forwarded to a service (``build_forward``): the cover note
(``mailbot.mail.forward``), then the original attached.

A forward attaches the original byte for byte (line ends made CRLF, as SMTP carries them):
the service sees exactly what the citizen sent, which re-serialising a parsed message would
not guarantee. It goes as ``message/rfc822`` (7bit or 8bit, which RFC 2046 §5.2.1 requires)
when its lines allow; a mail with longer lines cannot legally travel so, and goes as
``message/global`` in base64 instead (RFC 6532 §3.7 allows any transfer encoding there, and
clients that do not know the type still offer it as an attachment, REF.eml): once decoded it
is still the original, byte for byte.

A huge mail read only in part (``polling.max_message_bytes``: the start of its header and of
its body) is never attached as if it were the original: cut bytes would pass for the mail
and hand the service a broken attachment. Its header section alone goes, as
``text/rfc822-headers`` (RFC 6522 §4), so that the service still sees who wrote, when and
about what; the note says where the whole mail is (``mailbot.mail.forward``).
"""

from __future__ import annotations

import quopri
import uuid
from collections.abc import Collection
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

from mailbot.core.addresses import check_mailbox
from mailbot.core.message import single_line
from mailbot.core.policy import LOOP_HEADER
from mailbot.errors import MessageError
from mailbot.mail.header_encoding import (
    MAX_DISPLAY_NAME,
    MAX_LINE,
    header_value,
    name_addr,
    phrase,
)
from mailbot.mail.outgoing_mail import AUTO_GENERATED, new_message_id
from mailbot.mail.transfer_encoding import base64_lines


def _lines_fit(raw: bytes) -> bool:
    """Whether every CRLF-delimited line of ``raw`` has at most 998 octets."""
    return max(map(len, raw.split(b"\r\n"))) <= MAX_LINE


def _attachment(original: bytes, reference: str) -> list[bytes]:
    """The original's MIME part headers and body (``original`` is CRLF-normalised)."""
    disposition = f'Content-Disposition: attachment; filename="{reference}.eml"\r\n'.encode()
    if _lines_fit(original):
        encoding = b"" if original.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
        return [b"Content-Type: message/rfc822\r\n", disposition, encoding, b"\r\n", original]
    encoded = base64_lines(original).removesuffix(b"\r\n")
    return [
        b"Content-Type: message/global\r\n",
        disposition,
        b"Content-Transfer-Encoding: base64\r\n",
        b"\r\n",
        encoded,
    ]


def _header_section(original: bytes) -> bytes:
    """The header fields of ``original`` (CRLF-normalised), each line with its CRLF, without
    the empty line that ends them: all of it when there is no body."""
    if original.startswith(b"\r\n"):
        return b""
    at = original.find(b"\r\n\r\n")
    return original if at < 0 else original[: at + 2]


def _header_attachment(original: bytes, reference: str) -> list[bytes]:
    """The header section of a mail read only in part, as ``text/rfc822-headers``: as it is
    (7bit, or 8bit for raw UTF-8 fields) when its lines allow, else in base64."""
    head = _header_section(original)
    kind = b"Content-Type: text/rfc822-headers"
    if not head.isascii():
        try:
            head.decode("utf-8")
            kind += b"; charset=utf-8"
        except UnicodeDecodeError:
            pass  # bytes of an unknown charset: declared as none rather than as a wrong one
    name = f'Content-Disposition: attachment; filename="{reference}-en-tete.txt"\r\n'.encode()
    if not head or _lines_fit(head):
        encoding = b"" if head.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
        return [kind, b"\r\n", name, encoding, b"\r\n", head]
    encoded = base64_lines(head).removesuffix(b"\r\n")
    return [kind, b"\r\n", name, b"Content-Transfer-Encoding: base64\r\n", b"\r\n", encoded]


@lru_cache(maxsize=1024)
def _forward_address(value: str) -> None:
    """A forward's address checked (the configured ones once, not on every forward)."""
    if "\r" in value or "\n" in value or "@" not in value:
        raise MessageError(f"not a single address: {value!r}")
    check_mailbox(value)


@lru_cache(maxsize=256)
def _forward_from(from_name: str, from_address: str) -> str:
    """A forward's From: the mailbox's, encoded once."""
    name = single_line(from_name)[:MAX_DISPLAY_NAME]
    from_address.encode("ascii")  # as formataddr refused it: a forward's From is ASCII
    return name_addr(phrase(name, "From"), from_address) if name else from_address


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def without_fields(raw: bytes, names: Collection[str]) -> bytes:
    """``raw`` without its header fields named in ``names`` (lower case), folded lines
    included; every other byte as it was. A forward drops a contact-form relay's secret
    token this way: the service gets the mail, not the means to forge one."""
    if not names:
        return raw
    ends = [(at, len(sep) // 2) for sep in (b"\r\n\r\n", b"\n\n") if (at := raw.find(sep)) >= 0]
    at, half = min(ends, default=(len(raw), 0))
    kept: list[bytes] = []
    dropping = False
    for line in raw[: at + half].splitlines(keepends=True):
        if not line.startswith((b" ", b"\t")):
            name = line.split(b":", 1)[0].strip().lower()
            dropping = name.decode("ascii", "replace") in names
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[at + half :]


def build_forward(
    original: bytes,
    *,
    reference: str,
    subject: str,
    note: str,
    from_address: str,
    from_name: str,
    to: str,
    reply_to: str,
    message_id_domain: str,
    loop_header_value: str,
    date: datetime,
    whole: bool = True,
) -> tuple[str, bytes]:
    """Return (Message-ID, bytes) of the forward; the original is attached unaltered.

    ``whole`` False: ``original`` is only the start of a huge mail, and its header section
    alone is attached (``text/rfc822-headers``), never the cut bytes: ``note`` must say so."""
    for value in (to, reply_to, from_address):
        _forward_address(value)
    boundary = f"=_mailbot_{uuid.uuid4().hex}"
    original = _crlf(original)
    if boundary.encode() in original:  # astronomically unlikely, but never ambiguous
        raise MessageError("boundary collision")
    message_id = new_message_id(message_id_domain)
    subject = f"[{reference}] Transmis : {subject or 'message sans objet'}"
    headers = [
        ("From", _forward_from(from_name, from_address)),
        ("To", to),
        ("Reply-To", reply_to),  # the citizen; raw UTF-8 for a UTF-8 address (RFC 6532)
        ("Subject", header_value("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
        ("Auto-Submitted", AUTO_GENERATED),
        (LOOP_HEADER, loop_header_value),
        ("X-Mailbot-Reference", reference),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8")
    body = _crlf(quopri.encodestring(note.encode("utf-8")))
    parts = [
        head,
        b"\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        body,
        b"\r\n" if not body.endswith(b"\r\n") else b"",
        f"--{boundary}\r\n".encode(),
        *(_attachment(original, reference) if whole else _header_attachment(original, reference)),
        # The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1): this one
        # keeps the original's last line end, or its absence, in the attachment.
        b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return message_id, b"".join(parts)
