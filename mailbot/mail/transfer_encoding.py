"""How the text parts of the mails we write travel: as they are (7bit or 8bit) where their
lines allow, in base64 where they do not, and re-encoded in base64 for a relay that does not
take 8-bit mail.

Every French AR holds accented letters. In base64 it grew by a third and its HTML became
~120 lines of 76 characters; as 8-bit UTF-8 it is the text itself, 27 % fewer bytes to
store, send and relay. Nearly every relay offers 8BITMIME (RFC 6152) and the mail is then
declared ``BODY=8BITMIME`` (``mailbot.mail.smtp_commands``); for one that does not,
``seven_bit`` re-encodes those parts in base64 before DATA, as RFC 6152 §3 asks.

The HTML's line ends are joined by spaces into lines of up to 998 octets (RFC 5322 §2.1.1)
where a line end and a space mean the same to a reader: everywhere outside pre-formatted
text and attribute values. Our HTML has neither (``mailbot.render.checks`` keeps templates
free of them); HTML that has either keeps its lines.
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

# Where a line end is not a space: pre-formatted elements and styles, scripts.
_VERBATIM = re.compile(
    r"<(?:pre|textarea|script|xmp|listing|plaintext)\b|white-space\s*:\s*(?:pre|break-spaces)",
    re.IGNORECASE,
)
# An attribute value that holds a line end (a title shows it, a URL drops it).
_LINE_END_IN_VALUE = re.compile(r"""=\s*(?:"[^"]*\n|'[^']*\n)""")


def joined_html(html: str) -> str:
    """``html`` with its line ends joined by spaces, in lines of at most 998 octets; as it
    is when a line end may mean more than a space there."""
    if _VERBATIM.search(html) or _LINE_END_IN_VALUE.search(html):
        return html
    body = html.removesuffix("\n")  # the last line end stays one
    lines: list[str] = []
    current: list[str] = []
    width = -1  # octets of the line being joined, with the spaces between its pieces
    for piece in body.split("\n"):
        size = len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        if current and width + 1 + size > MAX_LINE:
            lines.append(" ".join(current))
            current, width = [], -1
        current.append(piece)
        width += 1 + size
    lines.append(" ".join(current))
    return "\n".join(lines) + html[len(body) :]


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, lines of 76 characters ending in CRLF (as base64mime)."""
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


def text_body(text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
    """A text part's Content-Transfer-Encoding and body, with CRLF line ends.

    As it is (7bit or 8bit) when every line fits in 998 octets and the text has no NUL, no
    carriage return of its own and no line that could close the multipart (``boundary``;
    None when the standard library's generator draws one, which it draws unlike any line);
    else base64, which carries anything.
    """
    data = text.encode("utf-8")
    if b"\r" not in data and b"\0" not in data:
        body = data.replace(b"\n", b"\r\n")
        crossed = boundary is not None and b"--" + boundary in body
        if max(map(len, data.split(b"\n"))) <= MAX_LINE and not crossed:
            return (SEVEN_BIT if data.isascii() else EIGHT_BIT), body
    return BASE64, base64_lines(data)


def seven_bit(raw: bytes) -> bytes:
    """``raw`` with its 8-bit text parts in base64, for a relay without 8BITMIME.

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
