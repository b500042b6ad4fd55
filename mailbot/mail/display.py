"""A citizen's mail as the console shows it: its headers, its text, its HTML (still
unsafe: ``mailbot.render.safe_html`` cleans it), its attachments, and the images its HTML
shows inline (``cid:``), read from the bytes fetched again from the mailbox.

Nothing here is stored: the console reads the mail from IMAP each time the page opens.
Parsing stays within the bounds of ``mailbot.core.message`` (MIME depth, number of parts).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailbot.core.message import (
    decode_header_value,
    mime_leaves,
    part_text,
    single_line,
)
from mailbot.errors import MessageError

TEXT_LIMIT = 200_000  # characters shown of a text or HTML part
INLINE_IMAGE_LIMIT = 2_000_000  # bytes: a bigger cid: image is left out
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_INLINE_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True)
class Attachment:
    """An attachment of the mail: ``index`` names it in the download link."""

    index: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class ShownMail:
    sender: str
    to: str
    cc: str
    date: str
    subject: str
    text: str
    html: str  # as the citizen sent it: never shown before safe_html.clean
    attachments: tuple[Attachment, ...] = ()
    images: Mapping[str, str] = field(default_factory=dict)  # Content-ID -> data: URI
    truncated: bool = False  # the server gave only the start of a huge mail


def safe_filename(name: str, fallback: str) -> str:
    """A file name a browser may save: no path, no control or reserved characters."""
    name = unicodedata.normalize("NFC", single_line(name))
    name = _UNSAFE_NAME.sub("_", name).strip(" ._")
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 150 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else name[:150]
    return name or fallback


def mime_type(declared: str) -> str:
    """The attachment's declared type when it is a well-formed one, else a neutral type."""
    return declared if _MIME_TYPE.match(declared) else "application/octet-stream"


def _filename(part: Message, index: int) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:  # an RFC 2231 name in an unknown charset
        name = ""
    return safe_filename(decode_header_value(str(name)), f"piece-jointe-{index}")


def _payload(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding
        return b""
    return payload if isinstance(payload, bytes) else b""


def _header(part: Message, name: str) -> str:
    values = part.get_all(name) or []
    return single_line(decode_header_value(" ".join(str(v) for v in values)))[:2000]


def show(raw: bytes, truncated: bool = False) -> ShownMail:
    """The mail as the console shows it: first text part, first HTML part, attachments."""
    text: str | None = None
    markup: str | None = None
    attachments: list[Attachment] = []
    images: dict[str, str] = {}
    top: Message | None = None
    for index, (part, ctype, attached, _section) in enumerate(mime_leaves(raw)):
        top = top or part
        cid = str(part.get("Content-ID") or "").strip().strip("<>")
        if cid and ctype in _INLINE_IMAGES and not attached:
            data = _payload(part)
            if len(data) <= INLINE_IMAGE_LIMIT:
                images[cid] = f"data:{ctype};base64,{base64.b64encode(data).decode()}"
            continue
        if attached or not ctype.startswith("text/"):
            size = len(_payload(part))
            attachments.append(Attachment(index, _filename(part, index), mime_type(ctype), size))
        elif ctype == "text/plain" and text is None:
            text = part_text(part)[:TEXT_LIMIT]
        elif ctype == "text/html" and markup is None:
            markup = part_text(part)[:TEXT_LIMIT]
    head = _headers(raw)
    return ShownMail(
        sender=head.get("from", ""),
        to=head.get("to", ""),
        cc=head.get("cc", ""),
        date=head.get("date", ""),
        subject=head.get("subject", ""),
        text=text or "",
        html=markup or "",
        attachments=tuple(attachments),
        images=images,
        truncated=truncated,
    )


def _headers(raw: bytes) -> dict[str, str]:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    block = raw[: min(end if end >= 0 else len(raw), 256 * 1024)]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(block)
    return {name: _header(parsed, name) for name in ("from", "to", "cc", "date", "subject")}


def attachment(raw: bytes, index: int) -> tuple[Attachment, bytes]:
    """The attachment ``index`` (as ``show`` listed it) and its decoded bytes, from a mail
    read whole."""
    part, _ctype, _section, meta = _leaf(raw, index)
    data = _payload(part)
    return Attachment(index, meta.filename, meta.content_type, len(data)), data


@dataclass(frozen=True)
class PartRef:
    """Where an attachment of a mail read only in part is on the server: the content
    type its header declares (as the parser reads it, before ``mime_type``), and its
    IMAP section, to be fetched alone (None: the part cannot be named to the server)."""

    attachment: Attachment  # its size unknown here (0): only the server knows it
    declared_type: str
    section: str | None


def locate(raw: bytes, index: int) -> PartRef:
    """The attachment ``index`` (as ``show`` listed it) of a mail read only in part: its
    name and where it is on the server. Its bytes here may be cut, so they are not read:
    the same position names the same part in the start of a mail as in the whole mail."""
    _part, ctype, section, meta = _leaf(raw, index)
    return PartRef(meta, ctype, section)


def decoded(body: bytes, transfer_encoding: str) -> bytes:
    """A part's body as the server stores it, decoded as ``attachment`` decodes a part of a
    whole mail (the email package's base64 and quoted-printable, lenient as it is)."""
    part = Message()
    part["Content-Transfer-Encoding"] = transfer_encoding
    part.set_payload(body.decode("ascii", "surrogateescape"))  # what the parser keeps
    return _payload(part)


def _leaf(raw: bytes, index: int) -> tuple[Message, str, str | None, Attachment]:
    """The leaf ``index`` when ``show`` lists it as an attachment: the part, its content
    type, its IMAP section and its name (MessageError otherwise)."""
    for position, (part, ctype, attached, section) in enumerate(mime_leaves(raw)):
        if position != index:
            continue
        if not (attached or not ctype.startswith("text/")):
            break
        meta = Attachment(index, _filename(part, index), mime_type(ctype), 0)
        return part, ctype, section, meta
    raise MessageError(f"the mail has no attachment number {index}")
