"""Parse raw mail into a plain, immutable record that the pure modules can reason about.

Parsing never raises on bad input: a citizen's malformed mail must still be recorded
(and usually acknowledged). Whatever could not be understood is listed in ``defects``.
We parse with the ``compat32`` policy because it never throws while reading headers;
decoding is then done by hand with ``errors="replace"``.
"""

from __future__ import annotations

import email
import email.message
import hashlib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses, parseaddr

BODY_TEXT_LIMIT = 100_000
_CTL = re.compile(r"[\x00-\x1f\x7f]+")
_MSGID = re.compile(r"<[^<>\s]+>")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_BLANKS = re.compile(r"[ \t\r\f\v]+")


def single_line(text: str) -> str:
    """Collapse control characters (CR, LF, TAB, NUL...) so text is safe in one header line."""
    return _CTL.sub(" ", text).strip()


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 words; undecodable bytes become U+FFFD instead of an exception."""
    try:
        return str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        pass
    try:
        parts = decode_header(value)
    except (ValueError, email.errors.HeaderParseError):
        return value  # an undecodable encoded-word stays as written
    chunks = []
    for raw, charset in parts:
        chunks.append(_decode_bytes(raw, charset) if isinstance(raw, bytes) else raw)
    return "".join(chunks)


def _decode_bytes(raw: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8", "cp1252"):
        if not candidate:
            continue
        try:
            return raw.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("utf-8", errors="replace")


def _unescape_8bit(value: str) -> str:
    """Raw 8-bit header bytes (RFC 6532 UTF-8, or legacy Latin-1) arrive as surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _decode_bytes(value.encode("utf-8", "surrogateescape"), None)
    return value


def normalize_address(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


@dataclass(frozen=True)
class Verified:
    """What cryptography or a shared secret proved about a mail, found outside parsing
    (DKIM needs keys from DNS): the domains of valid DKIM signatures, and the contact-form
    relays whose secret token the mail carries. Empty until a verifier fills it in."""

    dkim_domains: frozenset[str] = frozenset()
    token_relays: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ParsedMessage:
    """What mailbot knows about one incoming mail. No I/O, no references to the raw bytes."""

    message_id: str | None
    subject: str
    from_address: str
    from_name: str
    return_path: str | None
    reply_to: tuple[str, ...]
    reply_to_names: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    resent_to: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    content_type: str
    has_attachments: bool
    body_text: str
    content_hash: str
    size: int
    headers: Mapping[str, tuple[str, ...]] = field(repr=False)
    defects: tuple[str, ...] = ()
    body_html: str = field(default="", repr=False)  # the HTML part, when there is one
    verified: Verified = Verified()

    def header(self, name: str) -> tuple[str, ...]:
        """All values of a header, decoded, by case-insensitive name."""
        return self.headers.get(name.lower(), ())

    def has_header(self, name: str) -> bool:
        return name.lower() in self.headers

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this mail answers or follows, most direct first."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)


def _message_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        found.extend(_MSGID.findall(value))
    return tuple(found)


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    pairs = getaddresses([single_line(v) for v in values])
    return tuple(normalize_address(addr) for _, addr in pairs if "@" in addr)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    pairs = getaddresses([single_line(v) for v in values])
    return tuple(single_line(decode_header_value(name)) for name, addr in pairs if "@" in addr)


def _collect_headers(msg: email.message.Message) -> dict[str, tuple[str, ...]]:
    """Raw (still RFC 2047 encoded) header values by lower-case name."""
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():  # raw: items() would turn 8-bit bytes into U+FFFD
        headers.setdefault(name.strip().lower(), []).append(_unescape_8bit(str(value)))
    return {name: tuple(values) for name, values in headers.items()}


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, AssertionError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    return _decode_bytes(payload, part.get_content_charset())


def html_to_text(markup: str) -> str:
    """Crude but safe HTML-to-text: enough for language detection and keyword routing."""
    text = _TAG.sub(" ", markup)
    text = html.unescape(text)
    return "\n".join(_BLANKS.sub(" ", line).strip() for line in text.splitlines() if line.strip())


def _body_and_attachments(msg: email.message.Message) -> tuple[str, str, bool]:
    plain: str | None = None
    markup: str | None = None
    has_attachments = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition") or "").lower()
        ctype = part.get_content_type()
        if "attachment" in disposition or (part.get_filename() and "inline" not in disposition):
            has_attachments = True
            continue
        if ctype == "text/plain" and plain is None:
            plain = _part_text(part)
        elif ctype == "text/html" and markup is None:
            markup = _part_text(part)
        elif not ctype.startswith("text/"):
            has_attachments = True
    body = plain if plain and plain.strip() else html_to_text(markup or "")
    return body[:BODY_TEXT_LIMIT], (markup or "")[:BODY_TEXT_LIMIT], has_attachments


def _return_path(headers: Mapping[str, tuple[str, ...]]) -> str | None:
    values = headers.get("return-path")
    if not values:
        return None
    # The delivering server prepends Return-Path: the first one is the envelope sender.
    return normalize_address(parseaddr(single_line(values[0]))[1] or values[0])


def parse_message(raw: bytes) -> ParsedMessage:
    """Turn raw RFC 5322 bytes into a ParsedMessage. Never raises on malformed input."""
    msg = email.message_from_bytes(raw, policy=compat32)
    raw_headers = _collect_headers(msg)
    headers = {
        name: tuple(decode_header_value(v) for v in values) for name, values in raw_headers.items()
    }
    defects = [type(d).__name__ for d in msg.defects]
    for part in msg.walk():
        if part is not msg:
            defects.extend(type(d).__name__ for d in part.defects)
    from_name, from_address = parseaddr(single_line(" ".join(raw_headers.get("from", ()))))
    message_ids = _message_ids(headers.get("message-id", ()))
    try:
        body_text, body_html, has_attachments = _body_and_attachments(msg)
    except Exception as exc:  # a broken MIME tree must not stop the pipeline
        defects.append(f"body: {type(exc).__name__}")
        body_text, body_html, has_attachments = "", "", False
    resent: list[str] = []
    for name in ("resent-to", "resent-cc", "resent-bcc"):
        resent.extend(_addresses(raw_headers.get(name, ())))
    return ParsedMessage(
        message_id=message_ids[0] if message_ids else None,
        subject=single_line(" ".join(headers.get("subject", ()))),
        from_address=normalize_address(from_address),
        from_name=single_line(decode_header_value(from_name)),
        return_path=_return_path(raw_headers),
        reply_to=_addresses(raw_headers.get("reply-to", ())),
        reply_to_names=_names(raw_headers.get("reply-to", ())),
        to=_addresses(raw_headers.get("to", ())),
        cc=_addresses(raw_headers.get("cc", ())),
        resent_to=tuple(resent),
        in_reply_to=_message_ids(headers.get("in-reply-to", ())),
        references=_message_ids(headers.get("references", ())),
        content_type=msg.get_content_type(),
        has_attachments=has_attachments,
        body_text=body_text,
        content_hash=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        headers=headers,
        defects=tuple(dict.fromkeys(defects)),
        body_html=body_html,
    )
