"""A Maildir read as if it were an IMAP folder: the demo's mailbox, needing no server.

UIDs are positions in filename order (Maildir names start with the delivery time), and
the delivery time stands in for INTERNALDATE. Files are only read, never moved or
renamed, exactly as mailbot treats an IMAP mailbox.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailbot.errors import MailboxError


@dataclass(frozen=True)
class MaildirMail:
    uid: int
    internaldate: datetime
    raw: bytes


class MaildirSource:
    UIDVALIDITY = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: list[Path] = []

    def connect(self) -> None:
        if not (self.path / "cur").is_dir() and not (self.path / "new").is_dir():
            raise MailboxError(f"{self.path} is not a Maildir (no cur/ or new/)")

    def close(self) -> None:
        self.files = []

    def select(self, folder: str) -> int:
        self.files = maildir_files(self.path)
        return self.UIDVALIDITY

    def uids_after(self, last_uid: int) -> list[int]:
        return list(range(last_uid + 1, len(self.files) + 1))

    def fetch(self, uids: Sequence[int], batch_size: int) -> Iterator[MaildirMail]:
        for uid in uids:
            path = self.files[uid - 1]
            yield MaildirMail(uid, _delivery_time(path), path.read_bytes())

    def supports_idle(self) -> bool:
        return False

    def wait_for_changes(self, timeout: float, stop: threading.Event | None = None) -> bool:
        return False


def _delivery_time(path: Path) -> datetime:
    stamp = path.name.split(".", 1)[0]
    seconds = int(stamp) if stamp.isdigit() else int(path.stat().st_mtime)
    return datetime.fromtimestamp(seconds, UTC)


# Maildir file names start with the delivery time: "1795160832.M1P1001.host:2,S".
_MAILDIR_NAME = re.compile(r"^\d{9,}\.")


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def maildir_files(path: Path) -> list[Path]:
    """The mail of a Maildir (new/ and cur/; tmp/ holds deliveries in progress), in
    delivery order."""
    found = [p for sub in ("new", "cur") for p in (path / sub).glob("*") if p.is_file()]
    return sorted((p for p in found if not p.name.startswith(".")), key=lambda p: p.name)


def mail_files(target: Path) -> list[Path]:
    """Mail files to read at ``target``: the file itself; a Maildir's mail; or, in a plain
    folder, its ``.eml`` files and its Maildir-named or suffix-less files (a Maildir's
    ``cur/`` itself, an export). Other files (notes, JSON) are left alone."""
    if not target.is_dir():
        return [target]
    if is_maildir(target):
        return maildir_files(target)
    return sorted(
        p
        for p in target.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() == ".eml" or not p.suffix or _MAILDIR_NAME.match(p.name))
    )
