"""The transfer of a citizen's mail to the competent service.

The original is attached byte for byte (line ends made CRLF, as SMTP carries them): the
service sees exactly what the citizen sent (attachments, headers, signatures), which
re-serialising a parsed message would not guarantee. The cover note says how to answer so
that the reply is tracked.

Every line of the forward stays within RFC 5322's 998 octets. Headers are folded. The
original goes as ``message/rfc822`` (7bit or 8bit, which RFC 2046 §5.2.1 requires of it)
when its lines allow; a mail with longer lines cannot legally travel so, and goes as
``message/global`` in base64 instead (RFC 6532 §3.7 allows any transfer encoding there,
and clients that do not know the type still offer it as an attachment, REF.eml): once
decoded it is still the original, byte for byte.
"""

from __future__ import annotations

import base64
import quopri
import uuid
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid

from mailbot.core.addresses import check_mailbox
from mailbot.core.message import single_line
from mailbot.core.plaintext import WIDTH, wrap
from mailbot.errors import MessageError

_UTF8 = Charset("utf-8")
_UTF8.header_encoding = QP


_MAX_LINE = 998  # octets, CRLF excluded (RFC 5322 §2.1.1)
_MAX_WORD = 900  # an ASCII word longer than this cannot be folded onto a legal line


def _header(name: str, value: str) -> str:
    """One header value, folded into lines of at most 78 characters where it can be."""
    value = single_line(value)
    if value.isascii() and all(len(word) <= _MAX_WORD for word in value.split()):
        return Header(value, "us-ascii", header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return Header(value, _UTF8, header_name=name, maxlinelen=76).encode(linesep="\r\n")


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


def cover_note(
    *,
    reference: str,
    received_at: str,
    service_name: str,
    citizen: str,
    mailbox_address: str,
    category: str,
    tracking_address: str | None,
    deadline: str | None = None,
) -> str:
    """The note to the service, in lines of at most 78 characters (addresses kept whole)."""
    by = f", au plus tard le {deadline}" if deadline else ""
    dates = (received_at, deadline or "")
    steps = [
        f"- répondez directement à l'usager ({citizen}) ;",
        f"- gardez la référence [{reference}] dans l'objet ;",
        *(
            [
                f"- mettez {tracking_address} en copie cachée (Cci) : la réponse est alors "
                "comptée dans les délais de réponse de la préfecture ;"
            ]
            if tracking_address
            else []
        ),
        "- signez avec votre prénom, nom, fonction, service et coordonnées.",
    ]
    blocks = [
        ["Bonjour,"],
        _paragraph(
            f"Le message ci-joint, reçu le {received_at} sur {mailbox_address}, relève de "
            f"{service_name}. Il vous est transmis par mailbot.",
            keep=dates,
        ),
        [f"Référence : {reference}", f"Catégorie : {category}", f"Usager : {citizen}"],
        _paragraph(
            "L'usager a été informé de cette transmission et attend votre réponse dans un "
            f"délai de 5 jours ouvrés à compter de la réception{by}.",
            keep=dates,
        ),
        ["Pour répondre :", *(line for step in steps for line in _paragraph(step, "  "))],
        _paragraph(
            f"Si ce message ne relève pas de votre service, renvoyez-le à {mailbox_address} "
            "en gardant la référence dans l'objet."
        ),
    ]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _paragraph(text: str, hanging: str = "", keep: tuple[str, ...] = ()) -> list[str]:
    return wrap(text, WIDTH, subsequent_indent=hanging, keep=keep)


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
    message_id = make_msgid(domain=message_id_domain)
    subject = f"[{reference}] Transmis : {subject or 'message sans objet'}"
    headers = [
        ("From", formataddr((single_line(from_name)[:100], from_address), charset="utf-8")),
        ("To", to),
        ("Reply-To", reply_to),  # the citizen; raw UTF-8 for a UTF-8 address (RFC 6532)
        ("Subject", _header("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
        ("Auto-Submitted", "auto-generated"),
        ("X-Mailbot-Loop", loop_header_value),
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
