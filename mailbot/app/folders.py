"""A followed folder as the intake reads it: where a mail was read (``Where``: the folder,
its UIDVALIDITY, the bounds of a folder read again after a UIDVALIDITY change or a
restore), the folder's start (its UID mark, a new UIDVALIDITY, a first poll refused) and
the moment it was last read whole. A transient database error in a folder's work is the
poll's, done again at the next (``transient_failure``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailbot.app.intake_setup import IntakeSetup
from mailbot.core.incoming import IncomingMail
from mailbot.core.statuses import ArStatus, EventKind
from mailbot.errors import FirstPollError, TransientStoreError
from mailbot.store import Store, Transaction
from mailbot.store.errors import transient_reason

log = logging.getLogger(__name__)
# A poll's moment (mailbot's clock) is compared with INTERNALDATEs (the IMAP server's, to
# the second): a folder counts as read up to this long before its poll began, so that a
# server clock a little behind never makes mail that arrived after the poll look older.
# Earlier than needed costs nothing: what arrived just before the poll was read, and is
# found in the database.
READ_MARGIN = timedelta(minutes=1)


def _none() -> int:
    return 0


def first_poll_refusal(store: Store, mailbox: str, folder: str, count: int) -> str:
    """What happened and what to do, for an operator reading a cron mail or the journal."""
    return (
        f"mailbox {mailbox}, folder {folder}: the database {store.where} holds no state for "
        f"this folder, which already holds {count} mail(s); nothing was acknowledged. "
        "If this is a first start, record the history without sending anything with "
        "`mailbot backfill --since YYYY-MM-DD`, or acknowledge what is there with "
        "`--acknowledge-existing` (poll/run). If mailbot ran before, this is the wrong "
        "database: check `database:` in rules.yaml (`mailbot check` prints it)."
    )


@dataclass(frozen=True)
class Where:
    """Where a mail was read: mailbox, folder and the folder's UIDVALIDITY."""

    mailbox: str
    folder: str
    uidvalidity: int
    # While the folder is read again after a UIDVALIDITY change: mail that arrived before
    # this moment was there under the old one (``Pipeline.start_folder``).
    resync_before: datetime | None = None
    # The UID whose recording met a transient database error at the last poll(s), and how
    # many times in a row, as the folder's row keeps them (``Pipeline._transient``).
    transient: tuple[int, int] = (0, 0)
    # After a restore, until the folder is read whole: mail that arrived before this moment
    # was acknowledged by the lost database (``mailbot restored``, app/restore).
    restored_before: datetime | None = None

    @property
    def folder_key(self) -> tuple[str, str, int]:
        return self.mailbox, self.folder, self.uidvalidity

    def bounded(self, tx: Transaction) -> Where:
        """This folder with the bounds its row holds now (``Transaction.resync_bounds``)."""
        bounds = tx.resync_bounds(*self.folder_key)
        return replace(
            self, resync_before=bounds.resync_before, restored_before=bounds.restored_before
        )

    def arrived_before_resync(self, mail: IncomingMail) -> bool:
        """Whether this mail was in the folder before its UIDVALIDITY changed: not in the
        database, it is older than a backfill's ``--since`` or purged by retention, and
        never acknowledged now (see ``Pipeline.start_folder``)."""
        return self.resync_before is not None and mail.internaldate < self.resync_before

    def arrived_before_restore(self, mail: IncomingMail) -> bool:
        """Whether this mail arrived before the failure of the database this one was
        restored from a backup of (and after the backup, or the database would hold it):
        that database presumably acknowledged it, so no AR is sent again."""
        return self.restored_before is not None and mail.internaldate < self.restored_before

    def withheld(self, mail: IncomingMail) -> ArStatus | None:
        """Why an AR owed to this mail is not sent (None: it is): it arrived before a
        UIDVALIDITY change (recorded as a backfill records it) or before a restore's bound
        (presumed sent). The UIDVALIDITY's bound is the older: the mail before it was read
        under the old one, by this database or, after a restore, by none."""
        if self.arrived_before_resync(mail):
            return ArStatus.BACKFILL
        if self.arrived_before_restore(mail):
            return ArStatus.RESTORED
        return None


@contextmanager
def transient_failure(mailbox: str, folder: str, what: str) -> Iterator[None]:
    """A transient database error in the block (``mailbot.store.errors``) becomes
    TransientStoreError, saying where and what happened: the block's transaction was rolled
    back, and the next poll does the same work again (reads the same mail)."""
    try:
        yield
    except TransientStoreError:
        raise  # a mail's own (``Pipeline._transient``), which says more
    except Exception as exc:
        reason = transient_reason(exc)
        if reason is None:
            raise
        raise TransientStoreError(
            f"mailbox {mailbox}, folder {folder}: the database could not {what} now"
            f" ({reason}); nothing of it was committed, the next poll does it again"
        ) from exc


class FolderStart(IntakeSetup):
    """A folder's start and end, as its poll reads it."""

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] = _none
    ) -> int:
        """Return the UID to read after; a new UIDVALIDITY means re-reading from the start.

        ``existing`` counts the mail already in the folder. A folder this database holds no
        state for, with mail in it, is refused (FirstPollError) unless acknowledge_existing:
        it is either a first start that would answer every old mail, or the wrong (empty)
        database. Backfill (send=False) is how history is recorded instead.

        A new UIDVALIDITY (a folder restored or recreated) is read again from UID 1: the
        mail already recorded is found as such, but not the mail a backfill passed over
        (older than ``--since``) nor the mail purged by retention. So the moment up to which
        the folder was read under the old UIDVALIDITY (``read_until``) is kept: until the
        folder is read whole, mail that arrived before it is recorded without an AR, as a
        backfill records it; mail that arrived after it (during an outage, before the
        restoration) was never read and gets its AR.
        """
        with (
            transient_failure(mailbox, folder, "read the folder's state"),
            self.store.transaction() as tx,
        ):
            state = tx.folder_state(mailbox, folder)
            if self.send and tx.backfill_pending(mailbox, folder):
                raise FirstPollError(
                    f"mailbox {mailbox}, folder {folder}: a backfill of this folder started and"
                    " did not finish; nothing was acknowledged. Run `mailbot backfill` again"
                    " to finish it."
                )
            if state is not None and state.uidvalidity == uidvalidity:
                return state.last_uid
            if state is not None:
                # A change during a re-read not yet whole keeps the first change's moment.
                before = state.read_until or state.resync_before
                log.warning(
                    "uidvalidity changed: re-reading the folder; known mail is deduplicated,"
                    " mail that arrived before the last full read is recorded without AR",
                    extra={
                        "mailbox": mailbox,
                        "old": state.uidvalidity,
                        "new": uidvalidity,
                        "read_until": before.isoformat() if before else "-",
                    },
                )
                tx.add_event(
                    None, EventKind.UIDVALIDITY_CHANGED, f"{mailbox}/{folder}: {uidvalidity}"
                )
                tx.save_folder_state(mailbox, folder, uidvalidity, 0)
                tx.start_resync(mailbox, folder, before)
                return 0
            if self.send and not self.acknowledge_existing:
                count = existing()
                if count:
                    raise FirstPollError(first_poll_refusal(self.store, mailbox, folder, count))
            tx.save_folder_state(mailbox, folder, uidvalidity, 0)
            return 0

    def folder_read(
        self, mailbox: str, folder: str, uidvalidity: int, searched_at: datetime
    ) -> None:
        """A poll read every mail its search found (``searched_at``: before it selected the
        folder): all mail that arrived before then is in the database. The bound a later
        UIDVALIDITY change keeps (``start_folder``), less READ_MARGIN; and the end of a
        re-read after one."""
        at = searched_at.replace(microsecond=0) - READ_MARGIN
        with (
            transient_failure(mailbox, folder, "note the folder as read"),
            self.store.transaction() as tx,
        ):
            tx.folder_read(mailbox, folder, uidvalidity, at)
