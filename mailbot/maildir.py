"""A Maildir read as if it were an IMAP folder: the demo's mailbox, needing no server.

UIDs are positions in filename order (Maildir names start with the delivery time), and
the delivery time stands in for INTERNALDATE. Files are only read, never moved or
renamed, exactly as mailbot treats an IMAP mailbox.
"""

from __future__ import annotations

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
        names = [p for sub in ("new", "cur") for p in (self.path / sub).glob("*") if p.is_file()]
        self.files = sorted((p for p in names if not p.name.startswith(".")), key=lambda p: p.name)
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
