"""Every outgoing mail is built here: ARs, replies, transfer notices, forwards, reports and
alerts. One place makes the Message-IDs, writes the loop header and encodes the headers.

Nothing a citizen sent can add a header or a recipient: addresses are parsed strictly,
header values are one line (RFC 2047-encoded words when needed), and every line of a mail
stays within RFC 5322's 998 octets. Bytes leave with CRLF line ends, ready for SMTP.

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

import base64
import binascii
import logging
import quopri
import random
import re
import sys
import unicodedata
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from email import base64mime, message_from_bytes, quoprimime
from email.charset import BASE64, QP, Charset
from email.encoders import encode_base64
from email.errors import NonASCIILocalPartDefect
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import SMTP, compat32, default
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache
from typing import NamedTuple

from mailbot.config import Config, SenderConfig
from mailbot.core.addresses import check_mailbox
from mailbot.core.message import MAX_HEADER_ID_LENGTH, MSGID, message_ids, single_line
from mailbot.core.plaintext import one_line
from mailbot.core.policy import LOOP_HEADER
from mailbot.core.probe import PROBE_HEADER, mark
from mailbot.errors import MessageError
from mailbot.render.catalogue import TemplateAttachment
from mailbot.render.templates import RenderedMail, clean_subject

log = logging.getLogger(__name__)

_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_MAX_DISPLAY_NAME = 100  # characters: an encoded name stays well within a header line
_MAX_ENCODED_WORD = 75  # characters (RFC 2047 §2)
_SOFT_LINE = 78  # characters a header line should not exceed (RFC 5322 §2.1.1)
_MAX_MESSAGE_ID = MAX_HEADER_ID_LENGTH  # "In-Reply-To: <id>" within 998 octets
_MAX_WORD = 900  # the longest run without a space an ASCII header value may hold
_MAX_REFERENCES = 20
# RFC 3834 §5: Auto-Submitted of a mail sent in reply to another (an AR, a transfer notice,
# a re-orientation), and of one sent on a schedule or an event, in reply to none (a report,
# the deadline alerts, the probe's alerts, a forward to a service).
AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"
_MAX_LINE = 998  # octets, CRLF excluded (RFC 5322 §2.1.1)

# Headers build_email sets itself, or that would add recipients: extra_headers may not set them.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "x-auto-response-suppress",
        LOOP_HEADER.lower(),
        "content-language",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


def new_message_id(domain: str) -> str:
    """A fresh Message-ID on our domain: how the policy recognises our own mail."""
    return make_msgid(domain=domain)


def _has_break(value: str) -> bool:
    return len(value.splitlines()) > 1 or "\r" in value or "\n" in value


def _foldable(value: str) -> bool:
    """One line that folds into lines of at most 998 octets (RFC 5322 §2.1.1).

    ASCII text folds at spaces only; non-ASCII text is RFC 2047-encoded in short words.
    """
    if _has_break(value):
        return False
    return not value.isascii() or all(len(word) <= _MAX_WORD for word in value.split())


class _Mailbox(NamedTuple):
    display_name: str
    addr_spec: str  # what an SMTP server accepts: quoted local parts, UTF-8 (SMTPUTF8)

    def header(self, field: str = "To") -> str:
        """The header value; a UTF-8 address goes out as raw UTF-8 (RFC 6532), never encoded.

        compat32 writes a str holding surrogate escapes back as the original bytes.
        """
        if not self.display_name:
            raw = self.addr_spec
        else:
            raw = _name_addr(_phrase(self.display_name, field), self.addr_spec)
        if self.addr_spec.isascii():
            return raw
        return raw.encode("utf-8").decode("ascii", "surrogateescape")


def _phrase(display_name: str, field: str) -> str:
    """A display name as ``formataddr`` writes it: ASCII quoted where needed, anything else
    one RFC 2047 encoded-word (B or Q, whichever is shorter).

    Except where that word would exceed 75 characters (RFC 2047 §2: a long Arabic, Chinese
    or Ukrainian service name, a citizen's long name): then several encoded-words, in the
    same encoding, on lines of their own (§5: separated by folding whitespace), each at
    most 75 characters and the first within the line that starts with ``field``
    (``_encoded_words``). A name one word holds is written exactly as before."""
    phrase = formataddr((display_name, "x@x"), charset="utf-8")[: -len(" <x@x>")]
    if display_name.isascii() or len(phrase) <= _MAX_ENCODED_WORD:
        return phrase
    base64_words = phrase.startswith("=?utf-8?b?")
    first = min(_MAX_ENCODED_WORD, _SOFT_LINE - len(field) - len(": "))
    return "\r\n ".join(_encoded_words(display_name, base64_words, first))


def _name_addr(phrase: str, addr_spec: str) -> str:
    """``phrase <addr_spec>``; after a folded phrase, the address on a line of its own when
    it would take the last line beyond 78 characters."""
    last = phrase.rpartition("\r\n")[2]
    if "\r\n" in phrase and len(last) + len(addr_spec) + len(" <>") > _SOFT_LINE:
        return f"{phrase}\r\n <{addr_spec}>"
    return f"{phrase} <{addr_spec}>"


# Where a display name may be cut between two encoded-words: after a space, or after the
# closing punctuation Chinese writes without one ("王伟（鲁昂大学中国留学生，" | "居留证续签）").
_BREAKS = "\\s，。、：；！？）」』】》"
_PIECES = re.compile(f"[^{_BREAKS}]*[{_BREAKS}]+|[^{_BREAKS}]+")
_JOINERS = frozenset("\u200c\u200d\ufe0e\ufe0f")  # ZWNJ, ZWJ, variation selectors


def _clusters(text: str) -> list[str]:
    """``text`` in characters as a reader sees them: a combining mark (Arabic harakat, an
    accent written apart), a joiner or a variation selector stays with what it belongs to."""
    clusters: list[str] = []
    for char in text:
        if clusters and (
            unicodedata.category(char).startswith("M")
            or char in _JOINERS
            or clusters[-1][-1] == "\u200d"
        ):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _encoded_words(text: str, base64_words: bool, first: int) -> list[str]:
    """``text`` as UTF-8 encoded-words of at most ``first`` characters for the first, 75
    for the others (RFC 2047 §2), greedily.

    A word ends after a space of the text (or a Chinese comma, full stop, bracket…: the
    text's words) where they allow it, else between two characters (``_clusters``), never
    inside one (§5: each word decodes alone, its UTF-8 octets whole). Cutting between words
    matters to readers that keep the folding whitespace between two encoded-words, against
    §6.2: the standard library's ``email.policy.default`` parser does in display names
    (CPython gh-128110, Python 3.11), and then shows one more space where the name has a
    space or a pause, not a space inside a word."""
    encode = base64mime.header_encode if base64_words else quoprimime.header_encode
    words: list[str] = []
    current = ""

    def fits(chunk: str) -> bool:
        limit = _MAX_ENCODED_WORD if words else first
        return len(encode(chunk.encode("utf-8"), "utf-8")) <= limit

    for piece in _PIECES.findall(text):
        if fits(current + piece):
            current += piece
            continue
        if current:
            words.append(encode(current.encode("utf-8"), "utf-8"))
            current = ""
        for cluster in _clusters(piece):
            if current and not fits(current + cluster):
                words.append(encode(current.encode("utf-8"), "utf-8"))
                current = ""
            current += cluster
    words.append(encode(current.encode("utf-8"), "utf-8"))
    return words


# The parser flags a UTF-8 local part; SMTPUTF8 (RFC 6531) makes it legal, the transport
# checks that the server offers it.
_TOLERATED_DEFECTS = (NonASCIILocalPartDefect,)


# A bare address every parser reads the same way: dot-atom "@" dot-atom, ASCII (RFC 5322
# §3.4.1). The header parser finds no defect in it and gives it back unchanged, so the
# strict parse below is needed only for anything else (a name, quotes, UTF-8, literals).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")


def _one_address(value: str, what: str) -> _Mailbox:
    """Parse one mailbox ("a@b" or "Name <a@b>"), refusing anything that is not exactly that."""
    if isinstance(value, str) and _PLAIN_ADDRESS.fullmatch(value):
        try:
            check_mailbox(value)
        except MessageError as exc:
            raise MessageError(f"{what}: {value!r} is not a valid address: {exc}") from None
        return _Mailbox(display_name="", addr_spec=value)
    return _parsed_address(value, what)


def _parsed_address(value: str, what: str) -> _Mailbox:
    """The strict parse (the standard library's address parser, then the SMTP grammar)."""
    if not isinstance(value, str) or not value.strip() or _has_break(value):
        raise MessageError(f"{what}: {value!r} is not a single address on one line")
    try:
        header = SMTP.header_factory("to", value.strip())
    except ValueError:  # an encoded display name that decodes to CR or LF
        raise MessageError(f"{what}: {value!r} is not exactly one valid address") from None
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    defects = [d for d in header.defects if not isinstance(d, _TOLERATED_DEFECTS)]
    if len(addresses) != 1 or defects:
        raise MessageError(f"{what}: {value!r} is not exactly one valid address")
    address = addresses[0]
    try:
        check_mailbox(address.addr_spec)
    except MessageError as exc:
        raise MessageError(f"{what}: {value!r} is not a valid address: {exc}") from None
    name = one_line(address.display_name)[:_MAX_DISPLAY_NAME]
    return _Mailbox(display_name=name, addr_spec=address.addr_spec)


def _thread_ids(values: Sequence[str]) -> list[str]:
    """Message-IDs found in ``values``, in order, without duplicates or over-long ones.

    An identifier that would not fit on a 998-octet header line is dropped: the mail then
    threads a little less, which beats a line no server has to accept, or no mail at all.
    A WARNING says so, with the identifier's length only (it may hold personal data).
    """
    every = message_ids(values)
    found = dict.fromkeys(mid for mid in every if len(mid) <= _MAX_MESSAGE_ID)
    if len(found) < len(set(every)):
        longest = max(len(mid) for mid in every)
        log.warning(
            "a Message-ID of %d characters does not fit a header line (%d at most): the"
            " mail is threaded without it",
            longest,
            _MAX_MESSAGE_ID,
        )
    ids = list(found)
    if len(ids) > _MAX_REFERENCES:  # keep the thread root and the most recent ones
        ids = [ids[0], *ids[-(_MAX_REFERENCES - 1) :]]
    return ids


_UTF8_QP = Charset("utf-8")  # headers: quoted-printable words, readable in raw sources
_UTF8_QP.header_encoding = QP
_UTF8_QP.body_encoding = QP
_UTF8_B64 = Charset("utf-8")  # bodies: base64 is encoded in C, QP in pure Python (5x slower)
_UTF8_B64.body_encoding = BASE64
_WIRE = compat32.clone(linesep="\r\n", max_line_length=998)  # never fold a Message-ID

# ----------------------------------------------------------------- writing the bytes directly
#
# The standard library's generator re-parses and re-folds every header and re-encodes each
# part on the way out: most of an AR's cost. The mails below are written directly, byte for
# byte what that generator wrote (tests/test_compose_bytes.py compares them with the
# builder this replaced, tests/compose_reference.py); anything outside the simple cases
# handled here goes through the standard library's own code (``_WIRE.fold_binary``).


def _header_line(name: str, value: str) -> bytes:
    """``name: value`` and CRLF, as compat32 folds it within 998 octets.

    A value of printable ASCII lines (the first after "name: ", the others folded with one
    space), none over 998 octets nor with spaces at its ends, comes out unchanged; the
    standard library folds anything else.
    """
    if value.isascii():
        lines = value.split("\r\n")
        first, rest = lines[0], lines[1:]
        if (
            len(name) + 2 + len(first) <= _MAX_LINE
            and first.isprintable()
            and first.strip() == first
            and all(_continuation(line) for line in rest)
        ):
            return f"{name}: {value}\r\n".encode("ascii")
    return _WIRE.fold_binary(name, value)


def _continuation(line: str) -> bool:
    """A folded line the standard library writes back as it is: " " then printable words."""
    return (
        len(line) <= _MAX_LINE
        and line[:1] == " "
        and line.isprintable()
        and line[1:].strip() == line[1:]
        and bool(line[1:])
    )


_RFC2047_CHROME = len("=?utf-8?q??=")


_Q_PREFIX = len("=?utf-8?q?")


def _qp_words(value: str, first: int, rest: int) -> list[str] | None:
    """``value`` cut into "Q" encoded words as ``Header.encode`` cuts it (greedily, never
    inside a character): at most ``first`` encoded characters in the first word, ``rest``
    in the others. None where Header would do something else (a word with no room).

    The whole value is encoded at once (the standard library's translation table, in C) and
    cut in the encoded text: each word ends at the last place within its limit that is
    neither inside an "=XX" nor before a UTF-8 continuation octet (=80 to =BF), which is
    where the greedy character-by-character cut ends it too (tests/test_compose_bytes.py
    checks them against each other)."""
    encoded = quoprimime.header_encode(value.encode("utf-8"), "utf-8")[_Q_PREFIX:-2]
    words: list[str] = []
    start, limit = 0, first - _RFC2047_CHROME
    while len(encoded) - start > limit:
        cut = start + limit
        while cut > start and not _boundary(encoded, cut):
            cut -= 1
        if cut == start:
            return None
        words.append(f"=?utf-8?q?{encoded[start:cut]}?=")
        start, limit = cut, rest - _RFC2047_CHROME
    words.append(f"=?utf-8?q?{encoded[start:]}?=" if encoded else "")
    return words


def _boundary(encoded: str, at: int) -> bool:
    """Whether a "Q" encoded text may be cut at ``at``: between two characters."""
    if "=" in encoded[max(at - 2, 0) : at]:
        return False  # inside an "=XX"
    return not (encoded[at : at + 1] == "=" and encoded[at + 1 : at + 2] in "89AB")


def _qp_header(value: str, name: str, maxlinelen: int) -> str:
    """``Header(value, utf-8 QP, header_name=name, maxlinelen=…).encode(linesep=CRLF)``,
    computed directly; the standard library's own call where its result could differ."""
    words = None
    try:
        value.encode("utf-8")
        if value.splitlines() == [value]:  # Header cuts lines apart first
            words = _qp_words(value, maxlinelen - len(name) - 2, maxlinelen - 1)
    except UnicodeEncodeError:
        pass
    if words is None:
        header = Header(value, _UTF8_QP, header_name=name, maxlinelen=maxlinelen)
        return header.encode(linesep="\r\n")
    return "\r\n ".join(words)


def _base64_lines(text: str) -> bytes:
    """The UTF-8 text in base64, lines of 76 characters ending in CRLF (as base64mime)."""
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


_PART_HEAD = (
    'MIME-Version: 1.0\r\nContent-Type: text/{}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n"
)
_PLAIN_HEAD = _PART_HEAD.format("plain").encode("ascii")
_HTML_HEAD = _PART_HEAD.format("html").encode("ascii")
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))


def _new_boundary() -> str:
    """A boundary as the standard library's generator draws it (``Generator._make_boundary``).

    It never needs checking against the parts: they are base64, whose lines never start
    with "--".
    """
    token = random.randrange(sys.maxsize)
    return "=" * 15 + str(token).zfill(_BOUNDARY_WIDTH) + "=="


class OutgoingMail:
    """A built mail: its headers, and its bytes with CRLF line ends, ready for SMTP.

    An AR is written directly from its headers and two texts; ``message`` (a compat32
    Message, built from the same values on first use) is there for what changes a mail
    after it was built: attachments, a report's copies, a probe's mark.
    """

    def __init__(
        self,
        message: Message | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
        texts: tuple[str, str] = ("", ""),
        boundary: str = "",
    ) -> None:
        self._message = message
        self._headers = list(headers)
        self._texts = texts
        self._boundary = boundary

    @property
    def message(self) -> Message:
        if self._message is None:
            msg = MIMEMultipart("alternative")
            for name, value in self._headers:
                msg[name] = value
            if self._boundary:  # else the generator draws one, when it writes the mail
                msg.set_boundary(self._boundary)
            msg.attach(_text_part(self._texts[0], "plain"))
            msg.attach(_text_part(self._texts[1], "html"))
            self._message = msg
        return self._message

    def __getitem__(self, name: str) -> str | None:
        if self._message is not None:
            value = self._message[name]
            return None if value is None else str(value)
        key = name.lower()
        for header, found in self._headers:
            if header.lower() == key:
                return str(compat32.header_fetch_parse(header, found))
        return None

    def as_bytes(self) -> bytes:
        if self._message is not None:
            return self._message.as_bytes(policy=_WIRE)
        boundary = self._boundary.encode("ascii")
        text, html = self._texts
        return b"".join(
            [
                f'Content-Type: multipart/alternative; boundary="{self._boundary}"\r\n'
                "MIME-Version: 1.0\r\n".encode("ascii"),
                *(_header_line(name, value) for name, value in self._headers),
                b"\r\n--%s\r\n" % boundary,
                _PLAIN_HEAD,
                _base64_lines(text),
                b"\r\n--%s\r\n" % boundary,
                _HTML_HEAD,
                _base64_lines(html),
                b"\r\n--%s--\r\n" % boundary,
            ]
        )

    def readdress(self, to: str) -> None:
        """The same mail to another recipient (one copy of a report each): ``to`` is a
        configured address, never a citizen's."""
        del self.message["To"]
        self.message["To"] = to

    def parsed(self) -> EmailMessage:
        """The mail as a reader sees it (modern API), for previews and tests."""
        parsed = message_from_bytes(self.as_bytes(), policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _encoded(value: str, name: str) -> str:
    """RFC 2047 only when needed, folded here into encoded words of at most 75 characters.

    Left to the generator, Header would fold at 998 octets without counting the field name,
    giving over-long lines and encoded words far beyond RFC 2047's limit.
    """
    if value.isascii():
        return value
    return _qp_header(value, name, 76)


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, charset=_UTF8_B64)
    return part


def _thread(in_reply_to: str | None, references: Sequence[str]) -> list[tuple[str, str]]:
    """In-Reply-To and References: the mail threads with the one it answers."""
    if in_reply_to and not MSGID.search(in_reply_to):
        raise MessageError(f"in_reply_to: {in_reply_to!r} is not a Message-ID")
    parent = _thread_ids([in_reply_to]) if in_reply_to else []
    thread = _thread_ids([*references, *parent])
    headers = []
    if parent:
        headers.append(("In-Reply-To", parent[0]))
    if thread:
        headers.append(("References", " ".join(thread)))
    return headers


def _more_headers(
    loop_header_value: str | None, extra_headers: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Our loop header, and headers a caller adds: one line each, none that would set a
    recipient or one of the headers built here."""
    headers = []
    if loop_header_value is not None:
        if not _foldable(loop_header_value) or not loop_header_value.strip():
            raise MessageError(f"loop_header_value: {loop_header_value!r} is not one line")
        headers.append((LOOP_HEADER, loop_header_value.strip()))
    for name, value in extra_headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise MessageError(f"extra_headers: {name!r} may not be set here")
        if not isinstance(value, str) or not _foldable(value):
            raise MessageError(f"extra_headers: the value of {name} must be one line of text")
        headers.append((name, _encoded(value, name)))
    return headers


@lru_cache(maxsize=256)
def _from_header(from_address: str, from_name: str) -> str:
    """The From header of a configured sender, checked and encoded once (a few per config)."""
    sender = _one_address(from_address, "from_address")
    if sender.display_name:
        raise MessageError("from_address: give the bare address; the name goes in from_name")
    name = one_line(from_name)[:_MAX_DISPLAY_NAME]
    sender.addr_spec.encode("ascii")  # as formataddr refused it: a From is ASCII
    return _Mailbox(name, sender.addr_spec).header("From")


@lru_cache(maxsize=256)
def _checked_domain(domain: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", domain or ""):
        raise MessageError(f"message_id_domain: {domain!r} is not a domain name")
    return domain


def build_email(
    rendered: RenderedMail,
    *,
    from_address: str,
    from_name: str,
    to: str,
    message_id_domain: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: bool | str = True,
    loop_header_value: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> OutgoingMail:
    """Build the outgoing multipart/alternative message (text/plain, then text/html).

    Raises MessageError for an unusable address or header value: nothing a citizen sent
    can add a header or a recipient. ``date`` defaults to now. ``auto_submitted``: True
    for ``auto-replied`` (a mail in reply to another), a value (``AUTO_GENERATED``), or
    False for none (a person's mail).
    """
    sender = _from_header(from_address, from_name)
    recipient = _one_address(to, "to")
    _checked_domain(message_id_domain)
    if date is None:
        date = datetime.now(UTC)
    elif date.tzinfo is None or date.utcoffset() is None:
        raise MessageError("date must be timezone-aware")
    headers = [
        ("From", sender),
        ("To", recipient.header()),
        ("Subject", _encoded(clean_subject(rendered.subject), "Subject")),
        ("Date", format_datetime(date)),
        ("Message-ID", new_message_id(message_id_domain)),
        *_thread(in_reply_to, references),
    ]
    if auto_submitted:
        kind = AUTO_REPLIED if auto_submitted is True else auto_submitted
        headers.append(("Auto-Submitted", kind))
    headers.append(("X-Auto-Response-Suppress", "All"))
    headers += _more_headers(loop_header_value, extra_headers or {})
    # Every language the mail is written in, French first (RFC 3282 § 2 allows a list): a
    # bilingual AR said "fr" alone, though its HTML's lang attributes said both.
    headers.append(("Content-Language", ", ".join(rendered.languages)))
    texts = (rendered.text, rendered.html)
    if not all(texts):  # an empty part: written by the standard library, as before
        mail = OutgoingMail(headers=headers, texts=texts)
        assert mail.message is not None
        return mail
    return OutgoingMail(headers=headers, texts=texts, boundary=_new_boundary())


# --------------------------------------------------------------------------- forwards


def _header(name: str, value: str) -> str:
    """One header value, folded into lines of at most 78 characters where it can be."""
    value = single_line(value)
    if value.isascii() and all(len(word) <= _MAX_WORD for word in value.split()):
        if len(name) + 2 + len(value) <= 78 and value.isprintable() and value.strip() == value:
            return value  # what Header writes back when there is nothing to fold
        return Header(value, "us-ascii", header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return _qp_header(value, name, 76)


def _lines_fit(raw: bytes) -> bool:
    """Whether every CRLF-delimited line of ``raw`` has at most 998 octets."""
    return max(map(len, raw.split(b"\r\n"))) <= _MAX_LINE


def _attachment(original: bytes, reference: str) -> list[bytes]:
    """The original's MIME part headers and body (``original`` is CRLF-normalised)."""
    disposition = f'Content-Disposition: attachment; filename="{reference}.eml"\r\n'.encode()
    if _lines_fit(original):
        encoding = b"" if original.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
        return [b"Content-Type: message/rfc822\r\n", disposition, encoding, b"\r\n", original]
    encoded = base64.encodebytes(original).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
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
    encoded = base64.encodebytes(head).replace(b"\n", b"\r\n").removesuffix(b"\r\n")
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
    name = single_line(from_name)[:_MAX_DISPLAY_NAME]
    from_address.encode("ascii")  # as formataddr refused it: a forward's From is ASCII
    return _name_addr(_phrase(name, "From"), from_address) if name else from_address


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
        ("Subject", _header("Subject", subject)),
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


def _mixed(inner: Message) -> MIMEMultipart:
    """A multipart/mixed that takes over ``inner``'s mail headers (From, Subject...)."""
    outer = MIMEMultipart("mixed")
    for header, value in inner.items():
        if not header.lower().startswith(("content-", "mime-version")):
            outer[header] = value
    for header in list(inner.keys()):
        if not header.lower().startswith(("content-", "mime-version")):
            del inner[header]
    return outer


def _file_part(file: TemplateAttachment) -> MIMEBase:
    """One attached file in base64; a non-ASCII name RFC 2231-encoded (filename*=utf-8'')."""
    maintype, _, subtype = file.content_type.partition("/")
    part = MIMEBase(maintype, subtype or "octet-stream")
    part.set_payload(file.data)
    encode_base64(part)
    name: str | tuple[str, str, str] = (
        file.filename if file.filename.isascii() else ("utf-8", "", file.filename)
    )
    if maintype == "text":
        part.set_param("charset", "utf-8")
    part.set_param("name", file.filename, charset=None if file.filename.isascii() else "utf-8")
    part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def _with_files(alternative: OutgoingMail, files: Sequence[TemplateAttachment]) -> OutgoingMail:
    """mixed[ alternative[text, html], file, ... ] (the mail itself when no file)."""
    if not files:
        return alternative
    outer = _mixed(alternative.message)
    outer.attach(alternative.message)
    for file in files:
        outer.attach(_file_part(file))
    return OutgoingMail(outer)


def _with_chart_and_table(
    alternative: OutgoingMail, png: bytes, data: bytes, name: str
) -> OutgoingMail:
    """mixed[ related[ alternative[text, html], chart.png ], name.csv ]"""
    inner = alternative.message
    related = MIMEMultipart("related")
    related.attach(inner)
    image = MIMEImage(png, "png")
    image.add_header("Content-ID", "<chart@mailbot>")
    image.add_header("Content-Disposition", "inline", filename="graphique.png")
    related.attach(image)
    outer = _mixed(inner)
    outer.attach(related)
    attachment = MIMEApplication(data, "csv", name=name)
    attachment.replace_header("Content-Type", f'text/csv; charset=utf-8; name="{name}"')
    attachment.add_header("Content-Disposition", "attachment", filename=name)
    outer.attach(attachment)
    return OutgoingMail(outer)


# --------------------------------------------------------------------------- the builder


class Composer:
    """Builds every mail mailbot sends, signed off as rules.yaml says (``sender`` and
    ``organisation.internal_sender``): the Message-ID domain, the loop header, the From."""

    def __init__(self, sender: SenderConfig, internal_sender: tuple[str, str]) -> None:
        self.sender = sender
        self.internal_name, self.internal_address = internal_sender

    @classmethod
    def from_config(cls, config: Config) -> Composer:
        return cls(config.sender, config.internal_sender)

    def to_citizen(
        self,
        rendered: RenderedMail,
        *,
        mailbox_address: str,
        to: str,
        in_reply_to: str | None,
        references: Sequence[str],
        automatic: bool = True,
        attachments: Sequence[TemplateAttachment] = (),
    ) -> OutgoingMail:
        """A mail to a citizen in the thread of their message, from the mailbox they wrote
        to. ``automatic`` (ARs, notices) marks it ``Auto-Submitted`` with our loop header;
        an agent's reply is a person's answer and carries neither. ``attachments``: the
        files its template declares."""
        mail = build_email(
            rendered,
            from_address=mailbox_address,
            from_name=self.sender.from_name,
            to=to,
            message_id_domain=self.sender.message_id_domain,
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=automatic,
            loop_header_value=self.sender.loop_header_value if automatic else None,
        )
        return _with_files(mail, attachments)

    def internal(self, rendered: RenderedMail, *, to: str, loop: bool = True) -> OutgoingMail:
        """A mail to the prefecture's staff (alerts, reports), from the internal sender:
        ``auto-generated``, in reply to no message (RFC 3834 §5)."""
        return build_email(
            rendered,
            from_address=self.internal_address,
            from_name=self.internal_name,
            to=to,
            message_id_domain=self.sender.message_id_domain,
            auto_submitted=AUTO_GENERATED,
            loop_header_value=self.sender.loop_header_value if loop else None,
        )

    def probe(
        self, rendered: RenderedMail, *, from_address: str, to: str, secret: str
    ) -> OutgoingMail:
        """The mystery e-mail to a watched mailbox: a person's mail as far as the policy
        can tell (no Auto-Submitted, no X-Auto-Response-Suppress, no loop header, a
        Message-ID of the probe's own domain), marked with the HMAC of its Message-ID."""
        domain = from_address.rpartition("@")[2]
        mail = build_email(
            rendered,
            from_address=from_address,
            from_name="Sonde mailbot",
            to=to,
            message_id_domain=domain,
            auto_submitted=False,
        )
        del mail.message["X-Auto-Response-Suppress"]  # it asks for no automatic answer
        mail.message[PROBE_HEADER] = mark(secret, str(mail["Message-ID"]))
        return mail

    def report(
        self, rendered: RenderedMail, chart: bytes, table: bytes, table_name: str
    ) -> OutgoingMail:
        """A report to management, with its chart shown inline (Outlook shows a CID image)
        and its table as a CSV attachment; addressed to the internal sender until
        ``readdress``-ed to each recipient."""
        alternative = self.internal(rendered, to=self.internal_address, loop=False)
        return _with_chart_and_table(alternative, chart, table, table_name)

    def forward(
        self,
        original: bytes,
        *,
        mailbox_address: str,
        reference: str,
        subject: str,
        note: str,
        to: str,
        citizen: str,
    ) -> tuple[str, bytes]:
        """A citizen's mail transferred to a service: (Message-ID, bytes)."""
        return build_forward(
            original,
            reference=reference,
            subject=subject,
            note=note,
            from_address=mailbox_address,
            from_name=self.sender.from_name,
            to=to,
            reply_to=citizen,
            message_id_domain=self.sender.message_id_domain,
            loop_header_value=self.sender.loop_header_value,
            date=datetime.now(UTC),
        )

    def forward_header(
        self,
        start: bytes,
        *,
        mailbox_address: str,
        reference: str,
        subject: str,
        note: str,
        to: str,
        citizen: str,
    ) -> tuple[str, bytes]:
        """A citizen's mail too large to be read whole (``start``: what was read of it)
        transferred to a service: (Message-ID, bytes), with the mail's header section
        attached instead of the mail. A method of its own, not a flag of ``forward``: a
        mail read whole goes through ``forward`` exactly as before."""
        return build_forward(
            start,
            reference=reference,
            subject=subject,
            note=note,
            from_address=mailbox_address,
            from_name=self.sender.from_name,
            to=to,
            reply_to=citizen,
            message_id_domain=self.sender.message_id_domain,
            loop_header_value=self.sender.loop_header_value,
            date=datetime.now(UTC),
            whole=False,
        )
