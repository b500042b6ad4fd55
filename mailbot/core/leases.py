"""Who may work on what when several workers share one database (issue 16).

Each mailbox folder (an inbox, a Sent folder, the tracking mailbox) is worked on by one
worker at a time: the one holding its **lease**, a row of the ``leases`` table with the
holder's id and an expiry the holder keeps pushing forward while it works. A holder that
dies stops renewing, and another worker takes the folder over once the lease expired.

A holder paused longer than its lease (a frozen VM, SIGSTOP, a long GC pause) must not
write when it wakes up: every transaction that moves a folder's high-water UID first
renews the lease *in that transaction*, on the condition that this worker still holds it
(the **fence**). If another worker took over meanwhile, the condition fails, the
transaction rolls back, and nothing the paused worker did is recorded.

Pure: names, identities and timings; the SQL is in ``mailbot.store.cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.core.statuses import WorkerRole

FOLDER_PREFIX = "folder:"
SCHEDULER_LEASE = "jobs:scheduler"  # the worker holding it runs the alerts and reports


def folder_lease(mailbox: str, folder: str) -> str:
    """The lease of one mailbox folder, e.g. ``folder:general:INBOX``."""
    return f"{FOLDER_PREFIX}{mailbox}:{folder}"


@dataclass(frozen=True)
class Holder:
    """One process that works on the database: its id (host, pid and a random part, so a
    restarted process is a new holder), and the code it runs (package version and the
    schema revision it was written for, which ``mailbot migrate`` checks)."""

    id: str
    role: WorkerRole
    host: str
    pid: int
    version: str
    schema: str

    @property
    def label(self) -> str:
        """How an operator reads it: ``host pid 1234 (mailbot 0.1.0, schema 0008)``."""
        return f"{self.host} pid {self.pid} (mailbot {self.version}, schema {self.schema})"


@dataclass(frozen=True)
class Fence:
    """What a transaction checks before it moves a folder's high-water UID: ``holder``
    still holds the folder's lease; the check renews it for ``seconds``."""

    holder: str
    seconds: float


@dataclass(frozen=True)
class Timing:
    """How long a lease lasts and how often the keeper works.

    The keeper renews every lease it holds and tries to take free ones every ``tick``
    seconds, a quarter of the lease, 5 s at most (a lease given back at a clean stop is
    taken within that): at least three renewals can fail (a database hiccup) before a
    lease is lost. A dead holder's folder is taken over within ``lease + tick`` seconds.
    """

    lease: float

    @property
    def tick(self) -> float:
        return min(max(self.lease / 4, 0.5), 5.0)


def fair_share(leases: int, live_workers: int) -> int:
    """How many leases one worker takes while others are alive: an even split, rounded
    up, so that two workers starting together each get a mailbox rather than one getting
    all. A worker alone takes them all."""
    if leases <= 0:
        return 0
    return -(-leases // max(live_workers, 1))
