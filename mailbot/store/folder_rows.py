"""A followed folder's row: its UID mark (under the folder's lease when workers share the
database), a UIDVALIDITY change or a restore read again up to a bound, the count of a
mail's transient errors; the messages a restore recorded without an AR."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mailbot.core.clock import utcnow
from mailbot.core.leases import Fence, folder_lease
from mailbot.core.statuses import ArStatus
from mailbot.errors import LeaseLostError
from mailbot.store.drivers import bind_param, driver_folder_state
from mailbot.store.records import FolderState, ResyncBounds
from mailbot.store.rows import Rows
from mailbot.store.schema import folders, leases, messages

# A part's two folder statements (a part is ~6-10 mails when claims cut it, issue 14): built
# and compiled at each call they cost ~175 and ~195 µs of CPU, ~40 and ~11 µs like this.
_RESYNC_BOUND = sa.select(folders.c.resync_before, folders.c.restored_before).where(
    folders.c.mailbox == bind_param("mailbox"),
    folders.c.folder == bind_param("folder"),
    folders.c.uidvalidity == bind_param("uidvalidity"),
)
# The count of a mail's transient errors, read at each part too (built at each call, the
# statement cost ~0.3 ms of CPU a part: ~0.1 ms a transferred mail in bench/run.py).
_TRANSIENT_ATTEMPTS = sa.select(folders.c.transient_uid, folders.c.transient_count).where(
    folders.c.mailbox == bind_param("mailbox"),
    folders.c.folder == bind_param("folder"),
    folders.c.uidvalidity == bind_param("uidvalidity"),
)


def _this_folder(mailbox: str, folder: str, uidvalidity: int) -> tuple[Any, ...]:
    """A folder's row under one UIDVALIDITY: another UIDVALIDITY's state is left alone."""
    return (
        folders.c.mailbox == mailbox,
        folders.c.folder == folder,
        folders.c.uidvalidity == uidvalidity,
    )


class FolderRows(Rows):
    """The ``Transaction``'s writes and reads of the ``folders`` rows."""

    fence: Fence | None

    # -- folder sync state --------------------------------------------------------------
    def folder_state(self, mailbox: str, folder: str) -> FolderState | None:
        columns = (folders.c.uidvalidity, folders.c.last_uid, folders.c.read_until)
        row = self.conn.execute(
            sa.select(*columns, folders.c.resync_before).where(
                folders.c.mailbox == mailbox, folders.c.folder == folder
            )
        ).first()
        if row is None:
            return None
        return FolderState(
            int(row.uidvalidity), int(row.last_uid), row.read_until, row.resync_before
        )

    def start_resync(self, mailbox: str, folder: str, before: datetime | None) -> None:
        """A new UIDVALIDITY, read again from UID 1: nothing of it is read yet
        (``read_until``), and mail that arrived before ``before`` gets no AR until the
        folder was read whole (``resync_bound``)."""
        self.conn.execute(
            folders.update()
            .where(folders.c.mailbox == mailbox, folders.c.folder == folder)
            .values(read_until=None, resync_before=before, transient_uid=None, transient_count=0)
        )

    def folder_read(self, mailbox: str, folder: str, uidvalidity: int, at: datetime) -> None:
        """Every mail that arrived before ``at`` was read under this UIDVALIDITY: the bound a
        later UIDVALIDITY change keeps, and the end of a re-read after one or after a
        restore. Only forward (a late write from a slower reader never moves it back; one
        of the same second still ends a restore's bound: two polls within a second, the
        command between them); another UIDVALIDITY's row is left alone."""
        self.conn.execute(
            folders.update()
            .where(
                *_this_folder(mailbox, folder, uidvalidity),
                sa.or_(folders.c.read_until.is_(None), folders.c.read_until <= at),
            )
            .values(read_until=at, resync_before=None, restored_before=None)
        )

    def resync_bounds(self, mailbox: str, folder: str, uidvalidity: int) -> ResyncBounds:
        """Until a folder is read whole: after a UIDVALIDITY change, the moment before which
        its mail arrived under the old one; after a restore, the moment until which the
        lost database acknowledged it (``restore_folder``). None when there is none."""
        found = {"mailbox": mailbox, "folder": folder, "uidvalidity": uidvalidity}
        row = self.conn.execute(_RESYNC_BOUND, found).first()
        if row is None:
            return ResyncBounds(None, None)
        return ResyncBounds(row.resync_before, row.restored_before)

    def followed_folders(self) -> list[sa.Row[Any]]:
        """Every folder this database follows (mailbox, folder, its mark and bounds)."""
        return list(
            self.conn.execute(sa.select(folders).order_by(folders.c.mailbox, folders.c.folder))
        )

    def restore_folder(self, folder_id: int, before: datetime) -> None:
        """A database restored from a backup: the folder's mail that arrived before
        ``before`` (the lost database's last working moment) and that this one does not
        hold is recorded without an AR until the folder is read whole (``folder_read``)."""
        self.conn.execute(
            folders.update().where(folders.c.id == folder_id).values(restored_before=before)
        )

    def restored_counts(self) -> dict[tuple[str, str], int]:
        """Per mailbox and folder, the messages recorded without the AR the database lost
        before a restore presumably sent (``ar_status`` ``restored``)."""
        query = (
            sa.select(messages.c.mailbox, messages.c.folder, sa.func.count())
            .where(messages.c.ar_status == ArStatus.RESTORED)
            .group_by(messages.c.mailbox, messages.c.folder)
        )
        return {(m, f): int(n) for m, f, n in self.conn.execute(query)}

    def transient_attempts(self, mailbox: str, folder: str, uidvalidity: int) -> tuple[int, int]:
        """The UID of this folder (under this UIDVALIDITY) whose recording last met a
        transient database error, and how many times in a row; (0, 0) when none did."""
        found = {"mailbox": mailbox, "folder": folder, "uidvalidity": uidvalidity}
        row = self.conn.execute(_TRANSIENT_ATTEMPTS, found).first()
        if row is None or row.transient_uid is None:
            return 0, 0
        return int(row.transient_uid), int(row.transient_count)

    def note_transient_attempts(
        self, mailbox: str, folder: str, uidvalidity: int, uid: int | None, count: int = 0
    ) -> None:
        """Keep (``uid`` None: forget) the count of a mail's transient errors in its folder's
        row, where the next poll finds it, whichever process runs it."""
        self.conn.execute(
            folders.update()
            .where(*_this_folder(mailbox, folder, uidvalidity))
            .values(transient_uid=uid, transient_count=count if uid is not None else 0)
        )

    def save_folder_state(self, mailbox: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Move a folder's high-water UID. A worker sharing the database first renews its
        lease on the folder in this very transaction: if another worker took the folder
        over (this one was paused past its lease), LeaseLostError rolls everything back."""
        if self.fence is not None:
            self._check_fence(folder_lease(mailbox, folder), self.fence)
        values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": utcnow()}
        where = {"w_mailbox": mailbox, "w_folder": folder}
        if driver_folder_state(self.conn.dialect).run(self.conn, where | values) == 0:
            self.conn.execute(folders.insert().values(mailbox=mailbox, folder=folder, **values))

    def _check_fence(self, name: str, fence: Fence) -> None:
        renewed = self.conn.execute(
            leases.update()
            .where(leases.c.name == name, leases.c.holder == fence.holder)
            .values(expires_at=utcnow() + timedelta(seconds=fence.seconds))
        )
        if renewed.rowcount != 1:
            raise LeaseLostError(f"the lease of {name} is no longer this worker's")
