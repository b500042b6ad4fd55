"""A database restored from a backup acknowledges nothing a second time.

A restored database (a SQLite file copied back, a ``pg_restore``) remembers each folder's
UID mark as it was at the backup: every mail that arrived since is read again, and the
lost database had acknowledged it up to its failure. mailbot opens mailboxes read-only
(EXAMINE), so nothing on the server says which mail was answered; the operator says when
the lost database last worked (``mailbot restored --acknowledged-until``), and ``restored``
writes that moment on every folder the database follows (``folders.restored_before``). Until
a folder is read whole, the intake records a mail that arrived before it and that this
database does not hold without an AR (``ar_status`` ``restored``, an ``ar_presumed_sent``
event), as a UIDVALIDITY change's bound does (``Where.withheld``); later mail gets its AR.
The mail whose AR never left before the failure gets none: each folder's count is printed
(by a later run too), and they stay in the console's queue, to be answered as any other,
counted in the indicators as any citizen's mail (not among the ARs sent: none is known).

The mail the restored database still had queued (pending, or leaving) may have left from
the lost one after the backup. To a citizen (AR, notice, reply), it is settled
``uncertain`` (never sent again, flagged for a person), as a send a crash interrupted is;
internal mail (forward, digest, report, probe alert) stays queued, or goes back to the queue
with its bytes, and leaves — a second copy in a service's mailbox is harmless, a forward
lost is not (app/delivery) —, each said in a WARNING ("it may arrive twice"). Refused while
a worker runs (it would read the folders meanwhile); running it again with the same moment
changes nothing.

The restored reference counters are back at the backup too: the lost database gave the
numbers after it in ARs citizens hold, and giving them again would put two citizens under
one reference (a reply quoting it threaded onto the other's message, counted as its
relance). ``restored`` moves every reference counter forward by ``skip_references``
(``SKIP_REFERENCES`` by default), once per moment (an event marks it, as for the folders);
a gap in the numbering is harmless, a duplicate is not. A reference this database never
gave, quoted by a citizen, threads nothing: that mail is new mail and gets an AR (unless
it is a relance found otherwise: the same sender's similar request, still unanswered).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from mailbot.app.outbox_bookkeeping import set_status
from mailbot.core.clock import Clock, utcnow
from mailbot.core.statuses import EventKind, OutboxStatus
from mailbot.errors import ClusterError, RequestError
from mailbot.store import OutboxItem, Store, Transaction, reference_counter
from mailbot.store.cluster import running_worker, sole_worker_lock
from mailbot.store.schema import REFERENCE_COUNTERS

log = logging.getLogger(__name__)

# How far the reference counters move: more than the lost database can have numbered
# since the backup. Backups are daily (docs/deploy.md); 10,000 is weeks of the
# prefecture's mail, an old backup included, and uses 1 % of a year's six digits.
SKIP_REFERENCES = 10_000


@dataclass(frozen=True)
class ReferenceCounter:
    """One reference counter after ``restored``: the next reference it gives."""

    series: str  # its prefix and year: SM-2026
    next_reference: str


@dataclass(frozen=True)
class FolderBound:
    """One folder after ``restored``: its mark as the backup left it, whether the bound
    applies to it, and the mail recorded without AR because of it so far."""

    mailbox: str
    folder: str
    last_uid: int
    read_until: datetime | None  # every mail before it is in this database
    applies: bool  # False: the folder was read past the bound already (nothing to withhold)
    changed: bool  # False: the bound was already this one (a second run)
    withheld: int  # messages recorded without AR (``ar_status`` restored), so far


@dataclass(frozen=True)
class Restored:
    """What ``restored`` did: each folder's bound, the queued mail to citizens settled
    uncertain, the internal mail left to leave (again), the reference counters (moved
    forward now, or by a run with the same moment before)."""

    until: datetime
    folders: list[FolderBound]
    uncertain: list[OutboxItem]
    requeued: list[OutboxItem]
    counters: list[ReferenceCounter]
    counters_moved: bool  # False: a run with this moment moved them already

    @property
    def withheld(self) -> int:
        return sum(f.withheld for f in self.folders)


def restored(
    store: Store,
    until: datetime,
    *,
    prefix: str,
    timezone: str,
    skip_references: int = SKIP_REFERENCES,
    who: str = "",
    clock: Clock = utcnow,
) -> Restored:
    """Mark the database as restored: every followed folder's mail that arrived before
    ``until`` (aware: the moment the lost database last worked) and that this database
    does not hold is recorded without an AR; the mail still queued before ``until`` is
    settled uncertain; the reference counters skip ``skip_references`` numbers (``prefix``
    the configured one, years in ``timezone``, as the intake's). One transaction; refused
    (ClusterError) while a worker runs, and for a moment in the future (RequestError: mail
    arriving until then would get no AR). ``who``: the operator, named in the events."""
    now = clock()
    if until.tzinfo is None:
        raise ValueError("until must be an aware datetime")
    if skip_references < 1:
        raise RequestError(
            "--skip-references",
            str(skip_references),
            "must be 1 or more: the lost database's references would be given again",
        )
    if until > now:
        raise RequestError(
            "--acknowledged-until",
            f"{until.isoformat()}",
            "is in the future: the mail that arrives until then would get no AR. Give the"
            " moment the lost database last worked (its failure)",
        )
    lock = sole_worker_lock(store)
    if lock is not None:
        try:
            lock.acquire()
        except ClusterError:
            raise ClusterError(_refusal(store, "a worker is running on it")) from None
    try:
        skip = _Skip(prefix, ZoneInfo(timezone), skip_references)
        return _restore(store, until, who, now, skip)
    finally:
        if lock is not None:
            lock.release()


def _refusal(store: Store, why: str) -> str:
    return (
        f"cannot mark the database {store.where} as restored: {why}. Stop every worker"
        " first (`systemctl stop mailbot` on each host), run `mailbot restored` again, then"
        " start them."
    )


@dataclass(frozen=True)
class _Skip:
    """How ``restored`` moves the reference counters: the configured prefix, the zone
    that dates a reference's year, how many numbers."""

    prefix: str
    zone: ZoneInfo
    count: int


def _restore(store: Store, until: datetime, who: str, now: datetime, skip: _Skip) -> Restored:
    by = f" by {who}" if who else ""
    with store.transaction() as tx:
        if store.engine.dialect.name != "sqlite":  # SQLite: the sole-worker lock, surer, is held
            running = running_worker(tx.conn, now)
            if running is not None:
                raise ClusterError(_refusal(store, running))
        counts = tx.restored_counts()
        bounds = []
        for row in tx.followed_folders():
            # The event that marks it names the bound exactly: a second run finds it, even
            # once the folder was read and its bound cleared (``Transaction.folder_read``).
            mark = f"{row.mailbox}/{row.folder}: restored, acknowledged until {until.isoformat()}"
            done = row.restored_before == until or tx.has_event(EventKind.RESTORED, mark)
            applies = done or row.read_until is None or row.read_until < until
            changed = applies and not done
            if changed:
                tx.restore_folder(row.id, until)
                tx.add_event(
                    None,
                    EventKind.RESTORED,
                    f"{mark}{by}: mail that arrived before it, after UID {row.last_uid},"
                    " recorded without AR (AR presumed sent by the lost database)",
                )
            withheld = counts.get((row.mailbox, row.folder), 0)
            bound = FolderBound(
                row.mailbox,
                row.folder,
                int(row.last_uid),
                row.read_until,
                applies,
                changed,
                withheld,
            )
            bounds.append(bound)
        moved = _skip_references(tx, until, now, skip, by)
        uncertain, requeued = _settle_queued(tx, until, now, by)
        counters = [
            ReferenceCounter("-".join(map(str, _counted(name))), _next_reference(name, value))
            for name, value in sorted(tx.reference_counters().items())
        ]
    for item in requeued:
        log.warning(
            "internal mail queued before the restore: it leaves, it may arrive twice",
            extra={"outbox": item.id, "kind": item.kind},
        )
    return Restored(until, bounds, uncertain, requeued, counters, moved)


def _settle_queued(
    tx: Transaction, until: datetime, now: datetime, by: str
) -> tuple[list[OutboxItem], list[OutboxItem]]:
    """The mail queued before ``until``, which may have left from the lost database: to a
    citizen, uncertain (at most once); internal, left to leave (at least once), one left
    'sending' put back to 'pending', due now, its bytes kept, with an event (once: a run
    again finds it pending). The two lists."""
    uncertain, requeued = [], []
    for item in tx.queued_before(until):
        if not item.kind.at_most_once:
            if tx.requeue_sending(item.id, now, _REQUEUED):
                tx.add_event(
                    item.message_pk,
                    EventKind.SEND_DEFERRED,
                    f"outbox {item.id} ({item.kind}): leaving when the database was restored"
                    f"{by}, it may have left from the lost one: sent again (it may arrive twice)",
                )
            requeued.append(item)
            continue
        error = "queued before a restore: may have left from the lost database"
        set_status(tx, item, OutboxStatus.UNCERTAIN, last_error=error)
        tx.add_event(
            item.message_pk,
            EventKind.SEND_UNCERTAIN,
            f"outbox {item.id}: queued before the database was restored{by}, it may have"
            " left from the lost one: never sent again",
        )
        uncertain.append(item)
    return uncertain, requeued


_REQUEUED = "queued before a restore: may have left from the lost database (may arrive twice)"


def _skip_references(tx: Transaction, until: datetime, now: datetime, skip: _Skip, by: str) -> bool:
    """Move every reference counter forward by ``skip.count``, unless a run with this
    moment did (its event names the moment in UTC: the same instant given in another
    offset is found). False: it did.

    Every prefix's counters move (a prefix configured before numbered too), and the
    configured prefix's years that have no counter yet, from the year after its last one
    (the year of ``until`` if it has none) to this year, are made at the skip: a December
    backup restored in January has no counter for the new year, whose first numbers the
    lost database gave in January."""
    mark = f"reference counters: restored, acknowledged until {until.astimezone(UTC).isoformat()}"
    if tx.has_event(EventKind.RESTORED, mark):
        return False
    existing = tx.reference_counters()
    years = [year for prefix, year in map(_counted, existing) if prefix == skip.prefix]
    first = max(years) + 1 if years else until.astimezone(skip.zone).year
    last = now.astimezone(skip.zone).year
    names = set(existing)
    names.update(reference_counter(skip.prefix, year) for year in range(first, last + 1))
    moved = [(name, tx.skip_numbers(name, skip.count)) for name in sorted(names)]
    listed = ", ".join(_next_reference(name, value) for name, value in moved)
    tx.add_event(
        None,
        EventKind.RESTORED,
        f"{mark}{by}: {skip.count} numbers skipped by every reference counter, given by"
        f" the lost database after the backup; next: {listed or 'none'}",
    )
    return True


def _counted(name: str) -> tuple[str, int]:
    """A reference counter's prefix and year (``reference_counter``'s inverse)."""
    prefix, _, year = name.removeprefix(REFERENCE_COUNTERS).rpartition("-")
    return prefix, int(year)


def _next_reference(name: str, value: int) -> str:
    """``reference-SM-2026`` at 10123: ``SM-2026-010124``, as ``next_reference`` gives it."""
    prefix, year = _counted(name)
    return f"{prefix}-{year}-{value + 1:06d}"
