"""A mail built to be sent (``OutgoingMail``, ``build_email``): an AR, a transfer notice, a
re-orientation, an agent's reply, a report, an alert, a probe. multipart/alternative (text,
then HTML), its headers checked and encoded (``mailbot.mail.header_encoding``), threaded
with the mail it answers (In-Reply-To, References), written directly as bytes with CRLF line
ends, ready for SMTP."""

from __future__ import annotations

import logging
import random
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32, default
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from mailbot.core.message import MAX_HEADER_ID_LENGTH, MSGID, message_ids
from mailbot.core.plaintext import one_line
from mailbot.core.policy import LOOP_HEADER
from mailbot.errors import MessageError
from mailbot.mail.header_encoding import (
    MAX_DISPLAY_NAME,
    WIRE,
    Mailbox,
    encoded_value,
    foldable,
    header_line,
    one_address,
)
from mailbot.mail.transfer_encoding import text_body
from mailbot.render.rendering import RenderedMail, clean_subject

log = logging.getLogger(__name__)

_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_MAX_MESSAGE_ID = MAX_HEADER_ID_LENGTH  # "In-Reply-To: <id>" within 998 octets
_MAX_REFERENCES = 20
# RFC 3834 §5: Auto-Submitted of a mail sent in reply to another (an AR, a transfer notice,
# a re-orientation), and of one sent on a schedule or an event, in reply to none (a report,
# the deadline alerts, the probe's alerts, a forward to a service).
AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"

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


# ----------------------------------------------------------------- writing the bytes directly
#
# The standard library's generator re-parses and re-folds every header and re-encodes each
# part on the way out: most of an AR's cost. The mails below are written directly: their
# headers byte for byte what that generator wrote, their texts 8-bit where they can
# (``mailbot.mail.transfer_encoding``; tests/test_compose_bytes.py compares them with the
# builder this replaced, tests/compose_reference.py); anything outside the simple cases
# handled here goes through the standard library's own code (``WIRE.fold_binary``).


_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))


def _new_boundary() -> str:
    """A boundary as the standard library's generator draws it (``Generator._make_boundary``).

    A part that holds a line starting with it goes in base64 (``text_body``).
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
            boundary = self._boundary.encode("ascii") or None  # None: the generator draws one
            msg.attach(_text_part("plain", self._texts[0], boundary))
            msg.attach(_text_part("html", self._texts[1], boundary))
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
            return self._message.as_bytes(policy=WIRE)
        boundary = self._boundary.encode("ascii")
        text, html = self._texts
        return b"".join(
            [
                f'Content-Type: multipart/alternative; boundary="{self._boundary}"\r\n'
                "MIME-Version: 1.0\r\n".encode("ascii"),
                *(header_line(name, value) for name, value in self._headers),
                b"\r\n--%s\r\n" % boundary,
                *_part("plain", text, boundary),
                b"\r\n--%s\r\n" % boundary,
                *_part("html", html, boundary),
                b"\r\n--%s--\r\n" % boundary,
            ]
        )

    def readdress(self, to: str) -> None:
        """The same mail to another recipient (one copy of a report each): ``to`` is a
        configured address, never a citizen's."""
        del self.message["To"]
        self.message["To"] = to

    def parsed(self) -> EmailMessage:
        """The mail as a reader sees it (modern API), for previews and tests: with the line
        ends a mailbox stores, not SMTP's CRLF, which its 8-bit texts would keep."""
        parsed = message_from_bytes(self.as_bytes().replace(b"\r\n", b"\n"), policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _part(subtype: str, text: str, boundary: bytes) -> tuple[bytes, ...]:
    """A text part's header and body, written directly: the bytes of ``_text_part``."""
    encoding, body = _encoded(subtype, text, boundary)
    head = b'MIME-Version: 1.0\r\nContent-Type: text/%s; charset="utf-8"\r\n' % subtype.encode()
    return head, b"Content-Transfer-Encoding: %s\r\n\r\n" % encoding, body


def _text_part(subtype: str, text: str, boundary: bytes | None) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_param("charset", "utf-8")  # written after MIME-Version, as set_charset did
    encoding, body = _encoded(subtype, text, boundary)
    part["Content-Transfer-Encoding"] = encoding.decode("ascii")
    part.set_payload(body.decode("ascii", "surrogateescape"))  # the bytes, as the parser keeps them
    return part


def _encoded(subtype: str, text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
    return text_body(text, boundary, html=subtype == "html")


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
        if not foldable(loop_header_value) or not loop_header_value.strip():
            raise MessageError(f"loop_header_value: {loop_header_value!r} is not one line")
        headers.append((LOOP_HEADER, loop_header_value.strip()))
    for name, value in extra_headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise MessageError(f"extra_headers: {name!r} may not be set here")
        if not isinstance(value, str) or not foldable(value):
            raise MessageError(f"extra_headers: the value of {name} must be one line of text")
        headers.append((name, encoded_value(value, name)))
    return headers


@lru_cache(maxsize=256)
def _from_header(from_address: str, from_name: str) -> str:
    """The From header of a configured sender, checked and encoded once (a few per config)."""
    sender = one_address(from_address, "from_address")
    if sender.display_name:
        raise MessageError("from_address: give the bare address; the name goes in from_name")
    name = one_line(from_name)[:MAX_DISPLAY_NAME]
    sender.addr_spec.encode("ascii")  # as formataddr refused it: a From is ASCII
    return Mailbox(name, sender.addr_spec).header("From")


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
    recipient = one_address(to, "to")
    _checked_domain(message_id_domain)
    if date is None:
        date = datetime.now(UTC)
    elif date.tzinfo is None or date.utcoffset() is None:
        raise MessageError("date must be timezone-aware")
    headers = [
        ("From", sender),
        ("To", recipient.header()),
        ("Subject", encoded_value(clean_subject(rendered.subject), "Subject")),
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
