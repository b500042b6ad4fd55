"""What a mail source hands over, and what became of each mail: the types that the
sources, the intake, the Sent-folder reader and the faces share."""

from __future__ import annotations

import re
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


# The first line of a ``passed_over`` event (``Pipeline._unrecordable`` writes it): where the
# mail is, then why. The folder is matched lazily: the reason may name a location too.
_PASSED_OVER = re.compile(
    r"^(?P<mailbox>[^/]+)/(?P<folder>.+?) UIDVALIDITY (?P<uidvalidity>\d+) UID (?P<uid>\d+): "
    r"(?P<why>.*)$"
)


@dataclass(frozen=True)
class PassedOver:
    """A mail passed over: the database refused even its quarantine row, attempt after
    attempt, so no row records it; its event (``EventKind.PASSED_OVER``, without a
    message) says where it is on the server. A person lists it, and retries it by that
    location, as a quarantined row (``app/quarantine``). ``mailbox`` is "" when the
    event's text does not say where the mail is (then it cannot be retried)."""

    event_id: int
    at: datetime  # when it was passed over
    mailbox: str
    folder: str
    uidvalidity: int
    uid: int
    why: str  # the event's first line after the location (the whole line if none)

    # What finding it again on the server reads besides its location (``mail/originals``):
    # no Message-ID nor hash is known of a mail no row records.
    message_id = None
    content_hash = None

    @property
    def id(self) -> str:
        """How the lists and the errors name it: ``P7`` (its event), a row being ``#42``."""
        return f"P{self.event_id}"

    @classmethod
    def of_event(cls, event_id: int, at: datetime, detail: str) -> PassedOver:
        line = detail.split("\n", 1)[0]
        found = _PASSED_OVER.match(line)
        if found is None:
            return cls(event_id, at, "", "", 0, 0, line)
        return cls(
            event_id,
            at,
            found["mailbox"],
            found["folder"],
            int(found["uidvalidity"]),
            int(found["uid"]),
            found["why"],
        )

    def short_why(self, limit: int = 80) -> str:
        """Why, in ``limit`` characters at most (the alert's and the report's lists; the
        whole reason and the traceback are on its page and in `quarantine show`)."""
        why = " ".join(self.why.split())
        return why if len(why) <= limit else why[: limit - 1].rstrip() + "…"

    @property
    def location(self) -> str:
        """Where the mail is, as its event says it (and `mailbot status` prints it)."""
        if not self.mailbox:
            return "?"
        return f"{self.mailbox}/{self.folder} UIDVALIDITY {self.uidvalidity} UID {self.uid}"
