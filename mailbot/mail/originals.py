"""Finding a recorded mail again on its server: mailbot keeps no bodies, so a quarantined
mail processed again, or a mail an agent transfers to a service, is fetched once more
from its mailbox — by UID while the folder keeps its UIDVALIDITY, else by Message-ID (the
copy with the same content hash when there are several)."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from mailbot.config import Config
from mailbot.errors import MailboxError, MessageError
from mailbot.mail.imap import FetchedMail, ImapMailbox


class Originals(Protocol):
    """Where recorded mail is fetched again (IMAP; a test may give its own)."""

    def fetch(self, row: Any) -> FetchedMail: ...


def refetch(source: ImapMailbox, row: Any) -> FetchedMail:
    """The mail of a recorded row (mailbox, folder, uidvalidity, uid, message_id,
    content_hash), from a connected source."""
    validity = source.select(row.folder)
    found = list(source.fetch([row.uid], 1)) if validity == row.uidvalidity else []
    if not found and row.message_id and not row.message_id.startswith("sha256:"):
        copies = list(source.fetch(source.uids_with_message_id(row.message_id), 20))
        same = [c for c in copies if hashlib.sha256(c.raw).hexdigest() == row.content_hash]
        found = same or copies[:1]
    if not found:
        raise MailboxError(
            f"mailbox {row.mailbox}: mail #{row.id} is no longer in {row.folder!r}"
            " (deleted or moved)"
        )
    return found[0]


class ImapOriginals:
    """Recorded mail fetched again from its configured mailbox, on a connection of its own."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def fetch(self, row: Any) -> FetchedMail:
        box = self.config.mailboxes.get(row.mailbox)
        if box is None:
            raise MessageError(f"mail #{row.id}: mailbox {row.mailbox!r} is not configured")
        source = ImapMailbox(
            box.imap, name=row.mailbox, max_message_bytes=self.config.polling.max_message_bytes
        )
        source.connect()
        try:
            return refetch(source, row)
        finally:
            source.close()
