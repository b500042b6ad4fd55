"""How the text parts of the mails we write travel: as they are (7bit or 8bit) where their
lines allow, in base64 where they do not, and re-encoded in base64 for a relay that does not
take 8-bit mail.

Every French AR holds accented letters. In base64 it grew by a third and its HTML took
~130 lines of 76 characters; as 8-bit UTF-8 it is the text itself: the AR a quarter
smaller to store, send and relay, in half the lines. Nearly every relay offers 8BITMIME
(RFC 6152) and the mail is then declared ``BODY=8BITMIME`` (``mailbot.mail.smtp_commands``);
for one that does not, or with ``smtp.eight_bit`` off, ``seven_bit`` re-encodes those parts
in base64 before DATA, as RFC 6152 §3 asks.

The HTML's line ends are joined by spaces into lines of up to 998 octets (RFC 5322 §2.1.1)
where a line end and a space mean the same to a reader: everywhere outside pre-formatted
text and attribute values. The shipped templates have neither (tests/test_compose_bytes.py
checks that every AR's HTML is joined); HTML that has either keeps its lines.
"""

from __future__ import annotations

import binascii
import re
from email import message_from_bytes
from email.encoders import encode_base64
from email.policy import compat32

from mailbot.mail.header_encoding import MAX_LINE, WIRE

SEVEN_BIT = b"7bit"
EIGHT_BIT = b"8bit"
BASE64 = b"base64"

# Where a line end is not a space: pre-formatted elements, scripts, an attribute's value (a
# title shows it, a URL drops it). Looked for in the lowered bytes: one expression that
# ignores case cost 90 µs on an AR's HTML, these 15.
_VERBATIM_TAG = re.compile(rb"<(?:pre|textarea|script|xmp|listing|plaintext)\b")
_VERBATIM_STYLE = re.compile(rb"white-space\s*:\s*(?:pre|break-spaces)")
_LINE_END_IN_VALUE = re.compile(rb"""=\s*(?:"[^"]*\n|'[^']*\n)""")


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, lines of 76 characters ending in CRLF (as base64mime)."""
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


def text_body(text: str, boundary: bytes | None, *, html: bool = False) -> tuple[bytes, bytes]:
    """A text part's Content-Transfer-Encoding and body, with CRLF line ends.

    As it is (7bit or 8bit) when every line fits in 998 octets and the text has no NUL, no
    carriage return of its own and no line that could close the multipart (``boundary``;
    None when the standard library's generator draws one, which it draws unlike any line);
    else base64, which carries anything. HTML's lines are joined first where they can be.
    """
    data = text.encode("utf-8")
    if b"\r" not in data and b"\0" not in data:
        lines = _joined(data) if html and _joinable(data) else data.split(b"\n")
        body = b"\r\n".join(lines)
        crossed = boundary is not None and b"--" + boundary in body
        if max(map(len, lines)) <= MAX_LINE and not crossed:
            return (SEVEN_BIT if data.isascii() else EIGHT_BIT), body
    return BASE64, base64_lines(data)


def _joinable(html: bytes) -> bool:
    """Whether a line end and a space mean the same everywhere in ``html``."""
    lowered = html.lower()
    if _VERBATIM_TAG.search(lowered) or _VERBATIM_STYLE.search(lowered):
        return False
    return _LINE_END_IN_VALUE.search(html) is None


def _joined(html: bytes) -> list[bytes]:
    """The lines of ``html`` joined by spaces into lines of at most 998 octets (one longer
    stays alone); its final line end stays one.

    A line end and the space that replaces it take one octet each: a line from ``start`` to
    a line end at ``cut`` takes ``cut - start`` octets, wherever the line ends between.
    """
    body = html.removesuffix(b"\n")
    flat = body.replace(b"\n", b" ")
    lines = []
    start = 0
    while len(body) - start > MAX_LINE:
        cut = body.rfind(b"\n", start, start + MAX_LINE + 1)
        if cut < 0:  # a line longer than 998 octets: alone, the part then goes in base64
            cut = body.find(b"\n", start)
            if cut < 0:
                break
        lines.append(flat[start:cut])
        start = cut + 1
    lines.append(flat[start:])
    return [*lines, b""] if len(body) < len(html) else lines


def seven_bit(raw: bytes) -> bytes:
    """``raw`` with its 8-bit text parts in base64 (a relay without 8BITMIME, or
    ``smtp.eight_bit`` off).

    Everything else is written back as it was read (compat32 keeps header lines as they
    came). A forward's ``message/rfc822`` attachment cannot be re-encoded (RFC 2046
    §5.2.1) and stays as it is.
    """
    message = message_from_bytes(raw, policy=compat32)
    for part in message.walk():
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoding != "8bit" or part.get_content_maintype() != "text":
            continue
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)  # a leaf part's payload
        del part["Content-Transfer-Encoding"]
        part.set_payload(data)
        encode_base64(part)
    return message.as_bytes(policy=WIRE)
