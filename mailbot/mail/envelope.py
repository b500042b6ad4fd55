"""What a transport sends (``Envelope``: one mail, its envelope sender and recipient) and the
callbacks a batch tells each mail's fate through (``BeforeSend``, ``AfterSend``); the
transports themselves are in ``mailbot.mail.smtp``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailbot.errors import DeliveryError


@dataclass(frozen=True)
class Envelope:
    envelope_from: str
    recipient: str
    raw: bytes
    name: str = "mail"
    # Sent at most once (a mail to a citizen: never resent when in doubt), or at least once
    # (internal mail): the SMTP process's window counts the first kind (smtp_process).
    at_most_once: bool = True


BeforeSend = Callable[[Envelope], bool]
AfterSend = Callable[[Envelope, DeliveryError | None], None]
