"""Header values as mailbot writes them: addresses parsed strictly (``one_address``) and
written back (``Mailbox``: a display name as one RFC 2047 encoded-word, or several where one
would pass 75 characters), text encoded only when it must be (``encoded``, a forward's
``header``), and a header line written as the standard library's compat32 folds it
(``header_line``, ``WIRE``), within RFC 5322's 998 octets. Used by the mails of
``mailbot.mail.outgoing_mail`` and the forwards of ``mailbot.mail.forward_mail``."""

from __future__ import annotations

import re
import unicodedata
from email import base64mime, quoprimime
from email.charset import QP, Charset
from email.errors import NonASCIILocalPartDefect
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, compat32
from email.utils import formataddr
from typing import NamedTuple

from mailbot.core.addresses import check_mailbox
from mailbot.core.message import single_line
from mailbot.core.plaintext import one_line
from mailbot.errors import MessageError

MAX_DISPLAY_NAME = 100  # characters: an encoded name stays well within a header line
_MAX_ENCODED_WORD = 75  # characters (RFC 2047 §2)
_SOFT_LINE = 78  # characters a header line should not exceed (RFC 5322 §2.1.1)
_MAX_WORD = 900  # the longest run without a space an ASCII header value may hold
MAX_LINE = 998  # octets, CRLF excluded (RFC 5322 §2.1.1)


def _has_break(value: str) -> bool:
    return len(value.splitlines()) > 1 or "\r" in value or "\n" in value


def foldable(value: str) -> bool:
    """One line that folds into lines of at most 998 octets (RFC 5322 §2.1.1).

    ASCII text folds at spaces only; non-ASCII text is RFC 2047-encoded in short words.
    """
    if _has_break(value):
        return False
    return not value.isascii() or all(len(word) <= _MAX_WORD for word in value.split())


class Mailbox(NamedTuple):
    display_name: str
    addr_spec: str  # what an SMTP server accepts: quoted local parts, UTF-8 (SMTPUTF8)

    def header(self, field: str = "To") -> str:
        """The header value; a UTF-8 address goes out as raw UTF-8 (RFC 6532), never encoded.

        compat32 writes a str holding surrogate escapes back as the original bytes.
        """
        if not self.display_name:
            raw = self.addr_spec
        else:
            raw = name_addr(phrase(self.display_name, field), self.addr_spec)
        if self.addr_spec.isascii():
            return raw
        return raw.encode("utf-8").decode("ascii", "surrogateescape")


def phrase(display_name: str, field: str) -> str:
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


def name_addr(phrase: str, addr_spec: str) -> str:
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


def one_address(value: str, what: str) -> Mailbox:
    """Parse one mailbox ("a@b" or "Name <a@b>"), refusing anything that is not exactly that."""
    if isinstance(value, str) and _PLAIN_ADDRESS.fullmatch(value):
        try:
            check_mailbox(value)
        except MessageError as exc:
            raise MessageError(f"{what}: {value!r} is not a valid address: {exc}") from None
        return Mailbox(display_name="", addr_spec=value)
    return _parsed_address(value, what)


def _parsed_address(value: str, what: str) -> Mailbox:
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
    name = one_line(address.display_name)[:MAX_DISPLAY_NAME]
    return Mailbox(display_name=name, addr_spec=address.addr_spec)


_UTF8_QP = Charset("utf-8")  # headers: quoted-printable words, readable in raw sources
_UTF8_QP.header_encoding = QP
_UTF8_QP.body_encoding = QP
WIRE = compat32.clone(linesep="\r\n", max_line_length=998)  # never fold a Message-ID

# Header lines written directly, byte for byte what compat32 writes (the bytes of a mail:
# ``mailbot.mail.outgoing_mail``); the standard library's own code where they could differ.


def header_line(name: str, value: str) -> bytes:
    """``name: value`` and CRLF, as compat32 folds it within 998 octets.

    A value of printable ASCII lines (the first after "name: ", the others folded with one
    space), none over 998 octets nor with spaces at its ends, comes out unchanged; the
    standard library folds anything else.
    """
    if value.isascii():
        lines = value.split("\r\n")
        first, rest = lines[0], lines[1:]
        if (
            len(name) + 2 + len(first) <= MAX_LINE
            and first.isprintable()
            and first.strip() == first
            and all(_continuation(line) for line in rest)
        ):
            return f"{name}: {value}\r\n".encode("ascii")
    return WIRE.fold_binary(name, value)


def _continuation(line: str) -> bool:
    """A folded line the standard library writes back as it is: " " then printable words."""
    return (
        len(line) <= MAX_LINE
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


def encoded_value(value: str, name: str) -> str:
    """RFC 2047 only when needed, folded here into encoded words of at most 75 characters.

    Left to the generator, Header would fold at 998 octets without counting the field name,
    giving over-long lines and encoded words far beyond RFC 2047's limit.
    """
    if value.isascii():
        return value
    return _qp_header(value, name, 76)


def header_value(name: str, value: str) -> str:
    """One header value, folded into lines of at most 78 characters where it can be."""
    value = single_line(value)
    if value.isascii() and all(len(word) <= _MAX_WORD for word in value.split()):
        if len(name) + 2 + len(value) <= 78 and value.isprintable() and value.strip() == value:
            return value  # what Header writes back when there is nothing to fold
        return Header(value, "us-ascii", header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return _qp_header(value, name, 76)
