"""Every outgoing mail is built through here (``Composer``): ARs, replies, transfer notices,
forwards, reports and alerts. Only this module and its parts (named below) make the
Message-IDs, write the loop header and encode the headers.

Nothing a citizen sent can add a header or a recipient: addresses are parsed strictly,
header values are one line (RFC 2047-encoded words when needed), and every line of a mail
stays within RFC 5322's 998 octets. Bytes leave with CRLF line ends, ready for SMTP.

The parts are in ``mailbot.mail``: ``header_encoding`` (addresses, RFC 2047 words, folding),
``outgoing_mail`` (``OutgoingMail``, ``build_email``: a mail in reply or to staff),
``forward_mail`` (``build_forward``: a citizen's mail sent on to a service, the original
attached). This module is their face, with ``Composer``, which signs every mail off as the
configuration says, and the attachments of a template's files and of a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.encoders import encode_base64
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart

from mailbot.config import Config, SenderConfig
from mailbot.core.probe import PROBE_HEADER, mark
from mailbot.mail.forward_mail import build_forward, without_fields
from mailbot.mail.outgoing_mail import (
    AUTO_GENERATED,
    AUTO_REPLIED,
    OutgoingMail,
    build_email,
    new_message_id,
)
from mailbot.render.catalogue import TemplateAttachment
from mailbot.render.rendering import RenderedMail

__all__ = [
    "AUTO_GENERATED",
    "AUTO_REPLIED",
    "Composer",
    "OutgoingMail",
    "build_email",
    "build_forward",
    "new_message_id",
    "without_fields",
]


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
