"""FROZEN COPY of mailbot/mail/compose.py as it was at 458db69 (the standard library's MIME
classes and generator), used only by tests/test_compose_bytes.py and bench/compose.py as the
reference the mails written directly must equal byte for byte. Do not change it. (Changed
on purpose once, audit2b: the internal mails' Auto-Submitted is ``auto-generated``.)

Every outgoing mail is built here: ARs, replies, transfer notices, forwards, reports and
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
"""

from __future__ import annotations

import base64
import quopri
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import message_from_bytes
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
from typing import NamedTuple

from mailbot.config import Config, SenderConfig
from mailbot.core.addresses import check_mailbox
from mailbot.core.message import MSGID, message_ids, single_line
from mailbot.core.plaintext import one_line
from mailbot.core.policy import LOOP_HEADER
from mailbot.core.probe import PROBE_HEADER, mark
from mailbot.errors import MessageError
from mailbot.render.catalogue import TemplateAttachment
from mailbot.render.templates import RenderedMail, clean_subject

_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_MAX_DISPLAY_NAME = 100  # characters: an encoded name stays well within a header line
_MAX_MESSAGE_ID = 900  # "In-Reply-To: <id>" within 998 octets
_MAX_WORD = 900  # the longest run without a space an ASCII header value may hold
_MAX_REFERENCES = 20
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

    def header(self) -> str:
        """The header value; a UTF-8 address goes out as raw UTF-8 (RFC 6532), never encoded.

        compat32 writes a str holding surrogate escapes back as the original bytes.
        """
        if self.addr_spec.isascii():
            return formataddr((self.display_name, self.addr_spec), charset="utf-8")
        name = formataddr((self.display_name, "x@x"), charset="utf-8")[: -len("<x@x>")]
        raw = f"{name}<{self.addr_spec}>" if self.display_name else self.addr_spec
        return raw.encode("utf-8").decode("ascii", "surrogateescape")


# The parser flags a UTF-8 local part; SMTPUTF8 (RFC 6531) makes it legal, the transport
# checks that the server offers it.
_TOLERATED_DEFECTS = (NonASCIILocalPartDefect,)


def _one_address(value: str, what: str) -> _Mailbox:
    """Parse one mailbox ("a@b" or "Name <a@b>"), refusing anything that is not exactly that."""
    if not isinstance(value, str) or not value.strip() or _has_break(value):
        raise MessageError(f"{what}: {value!r} is not a single address on one line")
    header = SMTP.header_factory("to", value.strip())
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
    threads a little less, which beats a line no server has to accept.
    """
    found = dict.fromkeys(mid for mid in message_ids(values) if len(mid) <= _MAX_MESSAGE_ID)
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


class OutgoingMail:
    """A built mail: its headers, and its bytes with CRLF line ends, ready for SMTP."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def __getitem__(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=_WIRE)

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
    return Header(value, _UTF8_QP, header_name=name, maxlinelen=76).encode(linesep="\r\n")


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, charset=_UTF8_B64)
    return part


def _thread(msg: Message, in_reply_to: str | None, references: Sequence[str]) -> None:
    """In-Reply-To and References: the mail threads with the one it answers."""
    if in_reply_to and not MSGID.search(in_reply_to):
        raise MessageError(f"in_reply_to: {in_reply_to!r} is not a Message-ID")
    parent = _thread_ids([in_reply_to]) if in_reply_to else []
    thread = _thread_ids([*references, *parent])
    if parent:
        msg["In-Reply-To"] = parent[0]
    if thread:
        msg["References"] = Header(" ".join(thread), header_name="References")  # type: ignore[assignment]


def _more_headers(
    msg: Message, loop_header_value: str | None, extra_headers: Mapping[str, str]
) -> None:
    """Our loop header, and headers a caller adds: one line each, none that would set a
    recipient or one of the headers built here."""
    if loop_header_value is not None:
        if not _foldable(loop_header_value) or not loop_header_value.strip():
            raise MessageError(f"loop_header_value: {loop_header_value!r} is not one line")
        msg[LOOP_HEADER] = loop_header_value.strip()
    for name, value in extra_headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise MessageError(f"extra_headers: {name!r} may not be set here")
        if not isinstance(value, str) or not _foldable(value):
            raise MessageError(f"extra_headers: the value of {name} must be one line of text")
        msg[name] = _encoded(value, name)


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
    can add a header or a recipient. ``date`` defaults to now.
    """
    sender = _one_address(from_address, "from_address")
    if sender.display_name:
        raise MessageError("from_address: give the bare address; the name goes in from_name")
    recipient = _one_address(to, "to")
    if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", message_id_domain or ""):
        raise MessageError(f"message_id_domain: {message_id_domain!r} is not a domain name")
    if date is None:
        date = datetime.now(UTC)
    elif date.tzinfo is None or date.utcoffset() is None:
        raise MessageError("date must be timezone-aware")

    # Built with the compat32 MIME classes: the modern EmailMessage API parses and refolds
    # every header on the way out, which made it the slowest step of the whole pipeline.
    msg = MIMEMultipart("alternative")
    name = one_line(from_name)[:_MAX_DISPLAY_NAME]
    msg["From"] = formataddr((name, sender.addr_spec), charset="utf-8")
    msg["To"] = recipient.header()
    msg["Subject"] = _encoded(clean_subject(rendered.subject), "Subject")
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = new_message_id(message_id_domain)

    _thread(msg, in_reply_to, references)
    if auto_submitted:
        msg["Auto-Submitted"] = "auto-replied" if auto_submitted is True else auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    _more_headers(msg, loop_header_value, extra_headers or {})
    msg["Content-Language"] = ", ".join(rendered.languages)  # a bilingual AR: "fr, en"
    msg.attach(_text_part(rendered.text, "plain"))
    msg.attach(_text_part(rendered.html, "html"))
    return OutgoingMail(msg)


# --------------------------------------------------------------------------- forwards


def _header(name: str, value: str) -> str:
    """One header value, folded into lines of at most 78 characters where it can be."""
    value = single_line(value)
    if value.isascii() and all(len(word) <= _MAX_WORD for word in value.split()):
        return Header(value, "us-ascii", header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return Header(value, _UTF8_QP, header_name=name, maxlinelen=76).encode(linesep="\r\n")


def _lines_fit(raw: bytes) -> bool:
    """Whether every CRLF-delimited line of ``raw`` has at most 998 octets."""
    return all(len(line) <= _MAX_LINE for line in raw.split(b"\r\n"))


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


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


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
) -> tuple[str, bytes]:
    """Return (Message-ID, bytes) of the forward; the original is attached unaltered."""
    for value in (to, reply_to, from_address):
        if "\r" in value or "\n" in value or "@" not in value:
            raise MessageError(f"not a single address: {value!r}")
        check_mailbox(value)
    boundary = f"=_mailbot_{uuid.uuid4().hex}"
    original = _crlf(original)
    if boundary.encode() in original:  # astronomically unlikely, but never ambiguous
        raise MessageError("boundary collision")
    message_id = new_message_id(message_id_domain)
    subject = f"[{reference}] Transmis : {subject or 'message sans objet'}"
    headers = [
        ("From", formataddr((single_line(from_name)[:100], from_address), charset="utf-8")),
        ("To", to),
        ("Reply-To", reply_to),  # the citizen; raw UTF-8 for a UTF-8 address (RFC 6532)
        ("Subject", _header("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
        ("Auto-Submitted", "auto-generated"),
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
        *_attachment(original, reference),
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
        """A mail to the prefecture's staff (alerts, reports), from the internal sender."""
        return build_email(
            rendered,
            from_address=self.internal_address,
            from_name=self.internal_name,
            to=to,
            message_id_domain=self.sender.message_id_domain,
            auto_submitted="auto-generated",
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
