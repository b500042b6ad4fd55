"""Finding a recorded mail again on its server: mailbot keeps no bodies, so a quarantined
mail processed again, a mail an agent transfers to a service, or a mail the console shows,
is fetched once more from its mailbox — by UID while the folder keeps its UIDVALIDITY,
else by Message-ID (the copy with the same content hash when there are several), in its
folder and then in the mailbox's other folders (an agent may have filed it away).

Reading is read-only (EXAMINE, ``BODY.PEEK[]``): \\Seen never changes. The demo, which has
no server, finds its mail in the bundled Maildir the same way (``MaildirOriginals``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from mailbot.config import Config
from mailbot.errors import (
    AttachmentUnavailable,
    MailboxError,
    MailGoneError,
    MessageError,
    UnreadableMailError,
)
from mailbot.mail import display
from mailbot.mail.imap import FetchedMail, ImapMailbox
from mailbot.mail.maildir import MaildirSource, maildir_files

MAX_FOLDERS = 200  # folders searched by Message-ID, beyond the recorded one


class Originals(Protocol):
    """Where recorded mail is fetched again (IMAP; a test may give its own)."""

    def fetch(self, row: Any) -> FetchedMail: ...

    def attachment(self, row: Any, index: int) -> tuple[display.Attachment, bytes]:
        """The attachment ``index`` (as ``display.show`` lists it) whole, never cut."""
        ...


def _searchable(row: Any) -> bool:
    return bool(row.message_id) and not str(row.message_id).startswith("sha256:")


def _by_message_id(source: ImapMailbox, row: Any) -> list[FetchedMail]:
    found = source.fetch(source.uids_with_message_id(row.message_id), 20)
    copies = [copy for copy in found if not copy.refused]
    same = [c for c in copies if hashlib.sha256(c.raw).hexdigest() == row.content_hash]
    return same or copies[:1]


def _gone(row: Any) -> MailGoneError:
    return MailGoneError(
        f"mailbox {row.mailbox}: mail #{row.id} is no longer in {row.folder!r}"
        " nor, by its Message-ID, in the mailbox's other folders (deleted or moved)",
        shown=f"le courriel de l'usager n'est plus dans la boîte « {row.mailbox} » (supprimé,"
        " ou déplacé hors de ses dossiers) : mailbot n'en garde pas de copie et ne peut donc"
        " plus le transmettre.",
    )


def _unconfigured(mailbox: str) -> str:
    return (
        f"la boîte « {mailbox} » de ce courriel n'est plus dans la configuration de mailbot :"
        " le courriel ne peut pas y être relu ; signalez-le à l'administrateur de mailbot."
    )


def refetch(source: ImapMailbox, row: Any) -> FetchedMail:
    """The mail of a recorded row (mailbox, folder, uidvalidity, uid, message_id,
    content_hash), from a connected source."""
    validity = source.select(row.folder)
    found = list(source.fetch([row.uid], 1)) if validity == row.uidvalidity else []
    if found and found[0].refused:  # still unreadable (quarantined as "fetch-error")
        raise UnreadableMailError(
            f"mailbox {row.mailbox}: the server still refuses to read mail #{row.id}"
            f" ({row.folder!r}, UID {row.uid}): {found[0].refused}",
            shown="le serveur de messagerie refuse de lire ce courriel : il ne peut pas être"
            " transmis ; signalez-le à l'administrateur de mailbot.",
        )
    if not found and _searchable(row):
        found = _by_message_id(source, row)
    if not found and _searchable(row):
        for folder in source.list_folders()[:MAX_FOLDERS]:
            if folder == row.folder:
                continue
            try:
                source.select(folder)
            except MailboxError:  # a \\Noselect folder, or one we may not read
                if not source.connected:
                    source.connect()
                continue
            found = _by_message_id(source, row)
            if found:
                break
    if not found:
        raise _gone(row)

    return found[0]


class ImapOriginals:
    """Recorded mail fetched again from its configured mailbox, on a connection of its own."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def _source(self, row: Any) -> ImapMailbox:
        box = self.config.mailboxes.get(row.mailbox)
        if box is None:
            raise MessageError(
                f"mail #{row.id}: mailbox {row.mailbox!r} is not configured",
                shown=_unconfigured(row.mailbox),
            )
        return ImapMailbox(
            box.imap, name=row.mailbox, max_message_bytes=self.config.polling.max_message_bytes
        )

    def fetch(self, row: Any) -> FetchedMail:
        source = self._source(row)
        source.connect()
        try:
            return refetch(source, row)
        finally:
            source.close()

    def attachment(self, row: Any, index: int) -> tuple[display.Attachment, bytes]:
        """The attachment ``index`` of the mail: from the mail read whole, or — a mail above
        ``polling.max_message_bytes`` is read as its start, where the attachment is cut or
        not even begun — fetched alone by its IMAP section, checked against the server's
        structure and served only whole (AttachmentUnavailable otherwise)."""
        source = self._source(row)
        source.connect()
        try:
            fetched = refetch(source, row)  # its folder stays selected: the UID is valid
            if not fetched.truncated:
                return display.attachment(fetched.raw, index)
            return self._part(source, row, fetched, display.locate(fetched.raw, index))
        finally:
            source.close()

    def _part(
        self, source: ImapMailbox, row: Any, fetched: FetchedMail, ref: display.PartRef
    ) -> tuple[display.Attachment, bytes]:
        where = f"mail #{row.id}: attachment {ref.attachment.index}"
        section = ref.section
        info = source.part_info(fetched.uid, section) if section else None
        if section is None or info is None or info.content_type != ref.declared_type.lower():
            raise AttachmentUnavailable(
                f"{where}: part {section} is not on the server as the mail's start names it",
                reason="incomplete",
            )
        limit = self.config.web.max_attachment_bytes
        if info.size > limit:
            raise AttachmentUnavailable(
                f"{where}: {info.size} octets, above web.max_attachment_bytes ({limit})",
                reason="too_large",
                size=info.size,
            )
        body = source.fetch_part(fetched.uid, section)
        if body is None or len(body) != info.size:
            got = "none" if body is None else f"{len(body)} octets"
            raise AttachmentUnavailable(
                f"{where}: the server gave {got} of part {section}, not {info.size}",
                reason="incomplete",
                size=info.size,
            )
        data = display.decoded(body, info.transfer_encoding)
        meta = ref.attachment
        return display.Attachment(meta.index, meta.filename, meta.content_type, len(data)), data


class MaildirOriginals:
    """The demo's mail, found again in its Maildirs (one per mailbox, as ``mailbot demo``
    read them): by UID (the position in delivery order), else by Message-ID."""

    def __init__(self, maildirs: Mapping[str, Path]) -> None:
        self.maildirs = dict(maildirs)

    def fetch(self, row: Any) -> FetchedMail:
        path = self.maildirs.get(row.mailbox)
        if path is None:
            raise MessageError(
                f"mail #{row.id}: mailbox {row.mailbox!r} has no Maildir",
                shown=_unconfigured(row.mailbox),
            )
        source = MaildirSource(path)
        source.connect()
        if source.select(row.folder) == row.uidvalidity and 0 < row.uid <= len(source.files):
            (mail,) = source.fetch([row.uid], 1)
            if hashlib.sha256(mail.raw).hexdigest() == row.content_hash:
                return FetchedMail(mail.uid, mail.internaldate, mail.raw, len(mail.raw))
        wanted = str(row.message_id or "").encode()
        for uid, file in enumerate(maildir_files(path), start=1):
            raw = file.read_bytes()
            if hashlib.sha256(raw).hexdigest() == row.content_hash or (
                _searchable(row) and wanted in raw
            ):
                (mail,) = source.fetch([uid], 1)
                return FetchedMail(mail.uid, mail.internaldate, mail.raw, len(mail.raw))
        raise _gone(row)

    def attachment(self, row: Any, index: int) -> tuple[display.Attachment, bytes]:
        """The demo's mail is read whole: its attachment is decoded from it."""
        return display.attachment(self.fetch(row).raw, index)
