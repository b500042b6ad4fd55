"""Who writes: the prefecture, its services and mailboxes, the tracking mailbox, how
outgoing mail is signed off and what a signature must show."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mailbot.config.base import Email, Model
from mailbot.config.servers import ImapConfig
from mailbot.core.signature import ELEMENTS, SignatureElement


class PrefectureConfig(Model):
    name: str
    postal_address: str
    phone: str
    website: str


class ServiceConfig(Model):
    """A service that handles mail: its contact details appear in ARs and signatures."""

    name: str
    addresses: list[Email] = Field(default_factory=list)
    postal_address: str
    phone: str
    hours: str | None = None
    website: str
    email: Email | None = None
    signature: str | None = None
    # The article the name takes in a sentence (« relève du Cabinet du préfet », « transmis
    # au Cabinet du préfet »): le, la, l' or les. Needed only when the name's head noun
    # does not tell it (core/articles).
    article: Literal["le", "la", "l'", "les"] | None = None


class MailboxConfig(Model):
    address: Email
    aliases: list[Email] = Field(default_factory=list)
    service: str
    ar_template: str
    require_addressed: bool = True
    imap: ImapConfig

    @property
    def own_addresses(self) -> list[str]:
        return [self.address, *self.aliases]


class TrackingConfig(Model):
    """A mailbox that services put in Bcc of their replies, so that they are counted."""

    address: Email
    imap: ImapConfig


class SenderConfig(Model):
    """How outgoing mail is signed off: From, envelope sender, Message-ID domain."""

    from_name: str = "Préfecture de la Seine-Maritime"
    envelope_from: str = ""
    message_id_domain: str = "mailbot.seine-maritime.gouv.fr"
    loop_header_value: str = "mailbot@seine-maritime.gouv.fr"
    reference_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,6}$")] = "SM"
    # Services answering a transferred mail put this address in Bcc, so the answer is seen.
    tracking_address: Email | None = None


class InternalSenderConfig(Model):
    """The From of what mailbot writes to the prefecture's own staff: alerts and reports."""

    name: str = "mailbot — Préfecture de la Seine-Maritime"
    address: Email | None = None  # default: the first mailbox's address


class OrganisationConfig(Model):
    """Facts about the prefecture's organisation that the code must not guess."""

    # The service that handles what no routing rule and no mailbox default assigns, and
    # whose alerts list the mail of a mailbox without a service.
    general_service: str = "general"
    internal_sender: InternalSenderConfig = InternalSenderConfig()


class SignatureConfig(Model):
    """What a reply's signature must show (CRPA L111-2, and the audit's expectations)."""

    required: list[SignatureElement] = Field(default_factory=lambda: list(ELEMENTS))
