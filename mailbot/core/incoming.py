"""What a mail source hands over, and what became of each mail: the types that the
sources, the intake, the Sent-folder reader and the faces share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Fetched(Protocol):
    """One mail as a source fetched it (``FetchedMail`` from IMAP, a Maildir file)."""

    @property
    def uid(self) -> int: ...
    @property
    def internaldate(self) -> datetime: ...
    @property
    def raw(self) -> bytes: ...


@dataclass(frozen=True)
class IncomingMail:
    """A mail as any source (IMAP, Maildir) hands it over."""

    uid: int
    internaldate: datetime
    raw: bytes
    size: int = 0  # size on the server, when only the start of a huge mail was read
    # The server refused to read it (its answer): no bytes; the intake quarantines it.
    refused: str = ""

    @classmethod
    def of(cls, fetched: Fetched) -> IncomingMail:
        """What a source fetched; ``size`` when the source knows the mail was cut short,
        ``refused`` when it could not read it (``ImapMailbox.fetch``)."""
        size = getattr(fetched, "size", 0)
        refused = getattr(fetched, "refused", "")
        return cls(fetched.uid, fetched.internaldate, fetched.raw, size, refused)

    @property
    def defects(self) -> tuple[str, ...]:
        return (f"TruncatedHugeMessage:{self.size}",) if self.size > len(self.raw) else ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one mail: the line the demo and the logs print."""

    mailbox: str
    uid: int
    decision: str
    reasons: tuple[str, ...]
    reference: str | None
    subject: str
    message_pk: int | None
    route: str = ""  # "→ service" when transferred, "↪ target" when re-oriented
