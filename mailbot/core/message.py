"""Parse raw mail into a plain, immutable record that the pure modules can reason about.

Parsing never raises on bad input: a citizen's malformed mail must still be recorded
(and usually acknowledged). Whatever could not be understood is listed in ``defects``.
We parse with the ``compat32`` policy because it never throws while reading headers;
decoding is then done by hand with ``errors="replace"``.

Parsing is also *bounded*: one crafted mail must not cost minutes or gigabytes. The header
block, the number of header fields, the length of each header, the subject, the MIME depth
and the number of parts all have a ceiling; whatever lies beyond is not read and the
limit that was hit is recorded as a defect (``HeaderFieldsLimit``, ``MimeDepthLimit``...).
"""

from __future__ import annotations

import codecs
import email
import email.errors
import email.message
import email.parser
import email.utils
import functools
import hashlib
import html
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses, parseaddr

BODY_TEXT_LIMIT = 100_000
# Ceilings of what is read from one mail (see the module docstring).
MAX_HEADER_BLOCK = 256 * 1024  # bytes of header block parsed
MAX_HEADER_FIELDS = 500  # header fields kept, in order
MAX_HEADER_CHARS = 16 * 1024  # characters kept per header name, all its fields together
SUBJECT_LIMIT = 998  # one RFC 5322 line: the stored, logged and routed subject is shorter
MAX_MIME_DEPTH = 20  # nesting of multipart/message parts walked
MAX_PARTS = 200  # MIME parts walked
MAX_CONTAINERS = 500  # multipart boundaries declared: beyond, the tree is not parsed
MAX_DEFECTS = 30
# Codecs Python knows that are not character sets: never used to decode mail.
_NOT_CHARSETS = frozenset(
    {"undefined", "punycode", "idna", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
)
# What says who wrote what (not how it travelled): two copies of one mail agree on these
# and on the body even when their trace headers (Received, Delivered-To...) differ.
_IDENTITY_FIELDS = ("message-id", "from", "date", "subject", "to", "cc")
_BOUNDARY = re.compile(rb"boundary\s*=")
_FEEDBACK_FIELD = re.compile(r"^feedback-type:[ \t]*([\w-]+)", re.IGNORECASE | re.MULTILINE)
_CTL = re.compile(r"[\x00-\x1f\x7f]+")
# Printable ASCII between angle brackets (RFC 5322 msg-id), as outgoing_mail.build_email accepts.
MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# A script or style element whole, else a tag. Each scan stops where another would start
# (a script or style element at the next one's opening, a tag at the next "<"): from each
# "<" of a part of tags that never close, the old pattern (".*?", "[^>]+") went to the
# end of the part — quadratic, 6 s of CPU for 100,000 characters anyone can send.
_TAG = re.compile(
    r"<(script|style)\b(?:(?!<(?:script|style)\b).)*?</\1\s*>|<[^<>]+>",
    re.IGNORECASE | re.DOTALL,
)
_BLANKS = re.compile(r"[ \t\r\f\v]+")
# An address as nearly every mail writes it: "Name <local@domain>", "<local@domain>" or
# "local@domain", with plain words for the name and dot-atoms for the address. Read by this
# regex, as the email package reads it; anything else goes to the email package (issue 14:
# its character-by-character parser was a sixth of the parse).
_ADDR = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_ADDRESS = re.compile(rf"(?:(?:((?:[A-Za-z0-9]+ )*[A-Za-z0-9]+) ?)?<({_ADDR})>|({_ADDR}))")


def single_line(text: str) -> str:
    """Collapse control characters (CR, LF, TAB, NUL...) so text is safe in one header line."""
    return _CTL.sub(" ", text).strip()


def clean_text(text: str) -> str:
    """Text any database, terminal or log accepts: lone surrogates (from 8-bit bytes or
    exotic codecs) become U+FFFD instead of an encoding error further down."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 words; undecodable bytes become U+FFFD instead of an exception.

    Every word is decoded by ``_decode_bytes``: an encoded word may name any codec Python
    knows (``undefined``, ``punycode``, a name with an 8-bit byte...) and the ``email``
    package raises on several of them. ``make_header`` then only joins decoded text, with
    the RFC 2047 rules for the blanks between words.

    A value without "=?" holds no encoded word: ``decode_header`` returns it whole and
    ``make_header`` gives it back unchanged, so it is only cleaned (most header values of
    most mails; the email package's objects were a fifth of the parse, issue 14).
    """
    if "=?" not in value:
        return clean_text(value)
    try:
        parts = decode_header(value)
    except Exception:  # HeaderParseError, ValueError, or worse on hostile input
        return clean_text(value)  # an undecodable encoded-word stays as written
    decoded: list[tuple[bytes | str, str | None]] = []
    for raw, charset in parts:
        if isinstance(raw, str):
            decoded.append((raw, None))
        elif charset is None:  # the unencoded runs, which decode_header escaped
            decoded.append((raw.decode("raw-unicode-escape", "replace"), None))
        else:
            label = "us-ascii" if _codec(charset) == "ascii" else "utf-8"
            text = _decode_bytes(raw, charset)
            if decoded and decoded[-1][1] == label:  # adjacent words: no blank between them
                text = str(decoded.pop()[0]) + text
            decoded.append((text, label))
    try:
        return clean_text(str(make_header(decoded)))
    except Exception:
        return clean_text("".join(str(text) for text, _charset in decoded))


def _codec(charset: str | None) -> str | None:
    """The codec for a MIME charset name, or None when it is unknown or not a charset."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset.strip().strip('"'))
    except Exception:  # LookupError, or a name with NUL or 8-bit bytes
        return None
    if not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return None
    return info.name


def _decode_bytes(raw: bytes, charset: str | None) -> str:
    for candidate in (_codec(charset), "utf-8", "cp1252"):
        if not candidate:
            continue
        try:
            return clean_text(raw.decode(candidate))
        except Exception:  # UnicodeError, or a codec that fails in its own way
            continue
    return raw.decode("utf-8", errors="replace")


def _unescape_8bit(value: str) -> str:
    """Raw 8-bit header bytes (RFC 6532 UTF-8, or legacy Latin-1) arrive as surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _decode_bytes(value.encode("utf-8", "surrogateescape"), None)
    return value


# A quoted local part that needs no quotes: "pref-contact"@… is pref-contact@… (RFC 5322
# 3.4.1: the same mailbox), so that our own addresses, written so, are still ours.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_NEEDLESS_QUOTES = re.compile(rf'^"({_ATEXT}(?:\.{_ATEXT})*)"@')


def normalize_address(address: str) -> str:
    return _NEEDLESS_QUOTES.sub(r"\1@", address.strip().strip("<>").strip().lower())


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
    # Same for two copies of one mail (trace headers aside), different for two mails
    # that share a Message-ID: what deduplication compares.
    fingerprint: str = ""
    parts: tuple[str, ...] = ()  # content types of the MIME parts walked, in order
    feedback_type: str | None = None  # an abuse/feedback report's Feedback-Type, if any

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


# A reply's References (RFC 5322 §3.6.4) are its parent's References and the parent's own
# Message-ID. What is kept of the parent's: the thread's root and the latest, 19 at most
# (with the parent's, the 20 ``mail.compose`` writes), none longer than 250 characters: a
# hostile References of thousands of identifiers makes neither a huge row nor a huge header.
MAX_THREAD_IDS = 19
MAX_THREAD_ID_LENGTH = 250
# The longest Message-ID a mail answering it can carry: "In-Reply-To: <id>" on one line of
# 998 octets (RFC 5322 §2.1.1; a Message-ID is never folded). Mail clients write IDs of
# 300 characters and more; a longer one costs the thread, never the mail.
MAX_HEADER_ID_LENGTH = 998 - len("In-Reply-To: ")


def threading_id(message_id: str | None) -> str | None:
    """The Message-ID a reply's In-Reply-To can carry: one ``<...>`` identifier alone that
    fits its header line, else None (the reply then threads without it)."""
    if message_id and len(message_id) <= MAX_HEADER_ID_LENGTH and MSGID.fullmatch(message_id):
        return message_id
    return None


def parent_thread(references: Sequence[str], in_reply_to: Sequence[str]) -> tuple[str, ...]:
    """What a reply to this mail takes of its thread before the mail's own Message-ID: its
    References, or its In-Reply-To when it has none and that holds a single identifier
    (RFC 5322 §3.6.4); in order, without duplicates, the first and the latest kept."""
    ids = references or (in_reply_to if len(in_reply_to) == 1 else ())
    kept = list(dict.fromkeys(i for i in ids if len(i) <= MAX_THREAD_ID_LENGTH))
    if len(kept) > MAX_THREAD_IDS:
        kept = [kept[0], *kept[-(MAX_THREAD_IDS - 1) :]]
    return tuple(kept)


def message_ids(values: Iterable[str | None]) -> tuple[str, ...]:
    """Every Message-ID (``<...>``) written in ``values``, in order."""
    found: list[str] = []
    for value in values:
        found.extend(MSGID.findall(value or ""))
    return tuple(found)


def _lenient() -> dict[str, bool]:
    """``strict=False`` where email.utils parses strictly by default (Python 3.11.10+,
    3.12.6+, 3.13: gh-102988). Strict parsing reads "'a@b' <a@b>" (Outlook), "a@b; c@d" or
    "a@b," as no address at all: a citizen's mail would be not addressed to the mailbox and
    get no AR. Read as mail clients write them, on every patch level; no address read here
    is trusted for more than a comparison (the AR goes to the return path)."""
    return {"strict": False} if getattr(email.utils, "supports_strict_parsing", False) else {}


def parse_address(value: str) -> tuple[str, str]:
    """``email.utils.parseaddr``, the common forms read at once (``_SIMPLE_ADDRESS``)."""
    simple = _SIMPLE_ADDRESS.fullmatch(value.strip(" \t"))
    if simple is None:
        name, address = parseaddr(value, **_lenient())
        return _named_address(value) or (name, address)
    name, bracketed, bare = simple.groups()
    return name or "", bracketed or bare


# One name-addr whose display name is written as an address and not as a phrase: Outlook's
# "'a@b.fr' <a@b.fr>". The email package reads the name as the address; RFC 5322 puts the
# address in the angle brackets.
_ADDRESS_AS_NAME = re.compile(r"\s*'([^'<>,\"]*@[^'<>,\"]*)'\s*<([^<>\s]+)>\s*")


def _named_address(value: str) -> tuple[str, str] | None:
    found = _ADDRESS_AS_NAME.fullmatch(value)
    return (found.group(1), found.group(2)) if found else None


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    """``email.utils.getaddresses``, one common-form address read at once."""
    if len(values) == 1 and _SIMPLE_ADDRESS.fullmatch(values[0].strip(" \t")):
        return [parse_address(values[0])]
    if len(values) == 1 and (named := _named_address(values[0])):
        return [named]
    return getaddresses(values, **_lenient())


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:  # no such header (most mails have no Cc, Reply-To, Resent-*)
        return ()
    pairs = parse_addresses([single_line(v) for v in values])
    return tuple(normalize_address(addr) for _, addr in pairs if "@" in addr)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        return ()
    pairs = parse_addresses([single_line(v) for v in values])
    return tuple(single_line(decode_header_value(name)) for name, addr in pairs if "@" in addr)


def _body_start(raw: bytes, start: int = 0, stop: int | None = None) -> int:
    """Where the body begins (after the first blank line), or -1 when there is none."""
    found = [
        (i, i + len(sep))
        for sep in (b"\r\n\r\n", b"\n\n")
        if (i := raw.find(sep, start, stop)) >= 0
    ]
    return min(found)[1] if found else -1


def _bounded_source(raw: bytes, defects: list[str]) -> bytes:
    """The mail as the parser sees it: the header block cut at MAX_HEADER_BLOCK bytes, and
    field names followed by white space before their colon joined to it.

    The parser reads every header line into memory and the rest of this module decodes
    them: a mail of duplicated headers (a 100 MB subject) is cut here, before any work.
    """
    if len(raw) <= MAX_HEADER_BLOCK or _body_start(raw, 0, MAX_HEADER_BLOCK) >= 0:
        return _obsolete_names_joined(raw, defects)
    head = raw[:MAX_HEADER_BLOCK]
    head = head[: head.rfind(b"\n") + 1] or head
    body = _body_start(raw, MAX_HEADER_BLOCK)
    defects.append("HeaderBlockLimit")
    return _obsolete_names_joined(head, defects) + b"\r\n" + (raw[body:] if body >= 0 else b"")


# RFC 5322 4.5.1, obs-optional: white space between a field's name and its colon ("X-Mailer
# : …", old clients). The email package takes such a line for the end of the header block:
# the To and Subject after it were read as body, and the mail skipped as not addressed.
_OBSOLETE_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)


def _obsolete_names_joined(raw: bytes, defects: list[str]) -> bytes:
    end = _body_start(raw)
    head = raw if end < 0 else raw[:end]
    if _OBSOLETE_NAME.search(head) is None:
        return raw
    defects.append("ObsoleteFieldName")
    return _OBSOLETE_NAME.sub(rb"\1:", head) + raw[len(head) :]


@functools.lru_cache(maxsize=1024)
def _header_key(name: str) -> str:
    """A field name as the parsed headers key it: the same few names in every mail."""
    return single_line(clean_text(name)).lower()[:100]


def _collect_headers(msg: email.message.Message, defects: list[str]) -> dict[str, tuple[str, ...]]:
    """Raw (still RFC 2047 encoded) header values by lower-case name, within the limits."""
    headers: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    items = msg.raw_items()  # raw: items() would turn 8-bit bytes into U+FFFD
    for count, (name, value) in enumerate(items):
        if count >= MAX_HEADER_FIELDS:
            defects.append("HeaderFieldsLimit")
            break
        key = _header_key(name)
        text = str(value)
        room = MAX_HEADER_CHARS - sizes.get(key, 0)
        if len(text) > room:
            defects.append(f"HeaderLengthLimit:{key}")
            text = text[: max(room, 0)]
            if not text and key in headers:
                continue
        sizes[key] = sizes.get(key, 0) + len(text)
        headers.setdefault(key, []).append(_unescape_8bit(text))
    return {name: tuple(values) for name, values in headers.items()}


def _walk(msg: email.message.Message, defects: list[str]) -> Iterator[email.message.Message]:
    """Every part, depth first, as Message.walk() — but iterative and bounded in depth and
    count, so a mail of a thousand nested parts costs no more than MAX_PARTS parts."""
    stack = [(msg, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            defects.append("MimePartsLimit")
            return
        yield part
        if not part.is_multipart():  # never get_payload() on a leaf: it decodes (and raises)
            continue
        payload = part.get_payload()
        if depth >= MAX_MIME_DEPTH:
            defects.append("MimeDepthLimit")
            continue
        children = [child for child in payload if isinstance(child, email.message.Message)]
        stack.extend((child, depth + 1) for child in reversed(children[:MAX_PARTS]))


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: the part is unreadable, not the mail
        return ""
    if not isinstance(payload, bytes):
        return ""
    return _decode_bytes(payload, _content_charset(part))


# A Content-Type of one parameter, a charset written as a token, quoted or not: what most
# text parts say. ``get_content_charset`` gives its token lower-cased (checked against it:
# tests/test_parse_fast.py); anything else goes through the email package.
_SIMPLE_CHARSET = re.compile(
    r'[ \t]*[^;"\\=/\s]+/[^;"\\=\s]+[ \t]*;[ \t]*charset[ \t]*=[ \t]*'
    r'(?:"([A-Za-z0-9_.:+-]+)"|([A-Za-z0-9_.:+-]+))[ \t]*',
    re.IGNORECASE,
)


def _content_charset(part: email.message.Message) -> str | None:
    """The part's charset, as ``get_content_charset`` reads it; a simple Content-Type by
    one regex (the package parses every parameter, RFC 2231 and all, ~10 µs a part)."""
    value = part.get("content-type")
    simple = _SIMPLE_CHARSET.fullmatch(value) if isinstance(value, str) else None
    if simple is not None:
        return (simple.group(1) or simple.group(2)).lower()
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return charset if isinstance(charset, str) else None


def _content_type(part: email.message.Message) -> str:
    try:
        return clean_text(part.get_content_type())[:100]
    except Exception:
        return "text/plain"


def _is_attachment(part: email.message.Message, ctype: str) -> bool:
    given = part.get("Content-Disposition")
    disposition = clean_text(str(given or "")).lower()
    if "attachment" in disposition:
        return True
    return (_named(part, given) and "inline" not in disposition) or not ctype.startswith("text/")


def _named(part: email.message.Message, disposition: object) -> bool:
    """Whether the part has a file name (``get_filename``). Without a Content-Disposition
    the name can only be a "name" parameter of the Content-Type: none when its text does
    not hold "name" (most text parts), without parsing its parameters."""
    if disposition is None:
        ctype = part.get("content-type")
        if ctype is None or (isinstance(ctype, str) and "name" not in ctype.lower()):
            return False
    try:
        return bool(part.get_filename())
    except Exception:  # RFC 2231 filename in an unknown charset: still a named part
        return True


def html_to_text(markup: str) -> str:
    """Crude but safe HTML-to-text: enough for language detection and keyword routing."""
    text = _TAG.sub(" ", markup)
    text = html.unescape(text)
    return "\n".join(_BLANKS.sub(" ", line).strip() for line in text.splitlines() if line.strip())


@dataclass
class _Body:
    plain: str | None = None
    markup: str | None = None
    has_attachments: bool = False
    parts: list[str] = field(default_factory=list)
    feedback_type: str | None = None


def _read_parts(msg: email.message.Message, defects: list[str]) -> _Body:
    """The mail's text, attachments and part types. A mail attached to it (a forwarded
    .eml, message/rfc822) is an attachment: its text is read apart, and is the body only
    when the mail has no text of its own, so that routing and language detection read
    the citizen's words rather than the mail they forward."""
    body, attached = _Body(), _Body()
    inside: set[int] = set()  # id() of the parts of an attached mail
    for part in _walk(msg, defects):
        ctype = _content_type(part)
        body.parts.append(ctype)
        if part.is_multipart():
            if ctype == "message/feedback-report" and id(part) not in inside:
                _note_feedback(_report_fields(part), body)
            if id(part) in inside or (ctype.startswith("message/") and part is not msg):
                body.has_attachments = True
                inside.update(id(child) for child in _children(part))
            continue
        try:
            _read_part(part, ctype, attached if id(part) in inside else body)
        except Exception as exc:  # one unreadable part; the others still count
            defects.append(f"part: {type(exc).__name__}")
    if not (body.plain or "").strip() and not (body.markup or "").strip():
        body.plain, body.markup = attached.plain, attached.markup
    return body


def _report_fields(part: email.message.Message) -> str:
    """An ARF part's fields as text: the email package parses message/feedback-report as
    a message, so its fields are the headers of its one child."""
    try:
        return "\n".join(f"{k}: {v}" for child in _children(part) for k, v in child.items())
    except Exception:  # a field the package cannot render: no Feedback-Type read
        return ""


def _children(part: email.message.Message) -> list[email.message.Message]:
    payload = part.get_payload()
    return [child for child in payload if isinstance(child, email.message.Message)]


def _read_part(part: email.message.Message, ctype: str, body: _Body) -> None:
    if _is_attachment(part, ctype):
        body.has_attachments = True
    elif ctype == "text/plain":
        text = _part_text(part)[:BODY_TEXT_LIMIT]
        _note_feedback(text, body)  # abuse reports sent as plain multipart/mixed say it here
        body.plain = text if body.plain is None else body.plain
    elif ctype == "text/html" and body.markup is None:
        body.markup = _part_text(part)[:BODY_TEXT_LIMIT]


def _note_feedback(text: str, body: _Body) -> None:
    """An ARF ``Feedback-Type:`` field at the start of a line (RFC 5965 §3.1)."""
    if body.feedback_type is None:
        head = text[:10_000]
        # The regex scans every position (~17 µs on a 3 KB body, 7 % of a parse, issue
        # 14); a lower-cased copy searched in C says first whether the field can be there:
        # every character the regex's IGNORECASE matches lowers to the pattern's own.
        if "\nfeedback-type:" in "\n" + head.lower():
            found = _FEEDBACK_FIELD.search(head)
            body.feedback_type = found.group(1).lower() if found else None


def _return_path(headers: Mapping[str, tuple[str, ...]]) -> str | None:
    values = headers.get("return-path")
    if not values:
        return None
    # The delivering server prepends Return-Path: the first one is the envelope sender.
    return normalize_address(parse_address(single_line(values[0]))[1] or values[0])


def _fingerprint(raw_headers: Mapping[str, tuple[str, ...]], source: bytes) -> str:
    digest = hashlib.sha256()
    for name in _IDENTITY_FIELDS:
        for value in raw_headers.get(name, ()):
            unfolded = " ".join(value.split())
            digest.update(f"{name}:{unfolded}\n".encode("utf-8", "replace"))
    start = _body_start(source)
    digest.update(b"\n" + (source[start:] if start >= 0 else source))  # no body: all of it
    return digest.hexdigest()


def _parse_tree(source: bytes, defects: list[str]) -> email.message.Message:
    """compat32 parse; a MIME tree too deep for the (recursive) parser is read as headers
    and an opaque body rather than not at all. More multipart containers than MAX_PARTS
    (each declares a boundary) are not even tried: the parser would only spend time on
    a tree that the walk would then cut."""
    headers_only = email.parser.BytesParser(policy=compat32)
    if len(_BOUNDARY.findall(source.lower())) > MAX_CONTAINERS:
        defects.append("MimePartsLimit")
        return headers_only.parsebytes(source, headersonly=True)
    try:
        return email.message_from_bytes(source, policy=compat32)
    except RecursionError:
        defects.append("MimeDepthLimit")
        return headers_only.parsebytes(source, headersonly=True)


def _subject(headers: Mapping[str, tuple[str, ...]], defects: list[str]) -> str:
    subject = single_line(" ".join(headers.get("subject", ())))
    if len(subject) > SUBJECT_LIMIT:
        defects.append("SubjectLengthLimit")
        subject = subject[:SUBJECT_LIMIT]
    return subject


def parse_message(raw: bytes) -> ParsedMessage:
    """Turn raw RFC 5322 bytes into a ParsedMessage. Never raises on malformed input."""
    defects: list[str] = []
    source = _bounded_source(raw, defects)
    msg = _parse_tree(source, defects)
    raw_headers = _collect_headers(msg, defects)
    headers = {
        name: tuple(decode_header_value(v) for v in values) for name, values in raw_headers.items()
    }
    for part in _walk(msg, []):
        defects.extend(type(d).__name__ for d in part.defects)
    body = _read_parts(msg, defects)
    from_name, from_address = _first_address(raw_headers.get("from", ()))
    own_ids = message_ids(headers.get("message-id", ()))
    resent: list[str] = []
    for name in ("resent-to", "resent-cc", "resent-bcc"):
        resent.extend(_addresses(raw_headers.get(name, ())))
    plain = body.plain if body.plain and body.plain.strip() else None
    return ParsedMessage(
        message_id=own_ids[0] if own_ids else None,
        subject=_subject(headers, defects),
        from_address=normalize_address(from_address),
        from_name=single_line(decode_header_value(from_name)),
        return_path=_return_path(raw_headers),
        reply_to=_addresses(raw_headers.get("reply-to", ())),
        reply_to_names=_names(raw_headers.get("reply-to", ())),
        to=_addresses(raw_headers.get("to", ())),
        cc=_addresses(raw_headers.get("cc", ())),
        resent_to=tuple(resent),
        in_reply_to=message_ids(headers.get("in-reply-to", ())),
        references=message_ids(headers.get("references", ())),
        content_type=body.parts[0] if body.parts else "text/plain",
        has_attachments=body.has_attachments,
        body_text=(plain or html_to_text(body.markup or ""))[:BODY_TEXT_LIMIT],
        content_hash=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        headers=headers,
        defects=tuple(dict.fromkeys(d[:100] for d in defects))[:MAX_DEFECTS],
        body_html=(body.markup or "")[:BODY_TEXT_LIMIT],
        fingerprint=_fingerprint(raw_headers, source),
        parts=tuple(body.parts),
        feedback_type=body.feedback_type,
    )


def _first_address(values: tuple[str, ...]) -> tuple[str, str]:
    name, address = parse_address(single_line(" ".join(values)))
    return clean_text(name), clean_text(address)


# --------------------------------------------------------------------------- display


def mime_leaves(raw: bytes) -> Iterator[tuple[email.message.Message, str, bool, str | None]]:
    """The mail's leaf parts as a reader sees them (the console shows a mail): each with
    its content type, whether it is an attachment and its IMAP section (RFC 3501 §6.4.5:
    "2", "1.3"), within the same bounds as ``parse_message`` (header block, MIME depth,
    number of parts).

    The section lets the console fetch one part alone from the server when the mail was
    read only in part: leaves come in the order of their bytes, so those of the start of a
    mail have the same position and section as in the whole mail. A leaf inside a
    ``message/*`` other than ``message/rfc822`` (the parser opens a delivery status, which
    IMAP does not) has no section: None."""
    defects: list[str] = []
    msg = _parse_tree(_bounded_source(raw, defects), defects)
    sections: dict[int, str | None] = {id(msg): ""}  # by part: its section, as a message
    messages = {id(msg)}  # parts that are a message (the mail, an attached mail)
    for part in _walk(msg, defects):
        own = sections.get(id(part))
        if own is not None and id(part) in messages and not _is_multipart_type(part):
            own = _section(own, 1)  # a message's single body is its part 1
        if not part.is_multipart():
            ctype = _content_type(part)
            yield part, ctype, _is_attachment(part, ctype), own or None
            continue
        children = [
            child for child in part.get_payload() if isinstance(child, email.message.Message)
        ]
        encapsulates = _content_type(part) == "message/rfc822" and len(children) == 1
        for number, child in enumerate(children[:MAX_PARTS], start=1):
            if own is None or not (_is_multipart_type(part) or encapsulates):
                sections[id(child)] = None
            elif encapsulates:
                sections[id(child)] = own  # the attached mail's parts are own.1, own.2...
                messages.add(id(child))
            else:
                sections[id(child)] = _section(own, number)


def _is_multipart_type(part: email.message.Message) -> bool:
    return _content_type(part).startswith("multipart/")


def _section(parent: str, number: int) -> str:
    return f"{parent}.{number}" if parent else str(number)


def part_text(part: email.message.Message) -> str:
    """A text part decoded (its charset, else UTF-8, else cp1252); "" when unreadable."""
    return _part_text(part)
