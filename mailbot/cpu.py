"""The worker's own process kept on one CPU, its helper processes on every CPU (issue 14).

The worker's process runs Python on one thread at a time (the GIL). On a backlog its
intake thread is busy while its delivery thread wakes after each SQL statement and each
report of the SMTP process, and takes the GIL each time. When the two threads run on
different CPUs, every such handoff wakes a thread on the other CPU. Measured on a 2-CPU
machine (``bench/run.py``, 2,000 mails of 3 KB): the intake's thread used 2.49-2.76 s of
CPU with the threads free, 2.20-2.44 s with them on one CPU; the throughput, in one run, was
0.79-0.86x the raw pipe's, then 0.89-0.91x. With the intake's thread alone on one CPU and
the delivery thread free, nothing was gained: what counts is that the threads share one
CPU (bench/README.md, "Issue 14, thirty-sixth session"). A process that holds the GIL runs
on one CPU at a time anyway, so one CPU costs it no capacity.

The parallel work is in the helper processes (the routing helper, the SMTP process): they
keep every CPU the worker had. Those started with the worker are forked before it keeps to
one (``cli._worker``); one started later (after a crash) inherits the worker's CPU and goes
back to the others first (``run_on``, given ``usable()`` by the worker).

``polling.worker_cpu``: ``auto`` keeps the worker on the last CPU it may use, when it may use
two or more and is its database's only worker (SQLite, whose lock refuses a second). Several
workers on one host (PostgreSQL) would all choose the same CPU: each is given its own number
in its rules.yaml (docs/deploy.md), or ``off``. A number the worker may not use (a container
given other CPUs) is logged and ignored. Linux only (``sched_setaffinity``); elsewhere
nothing happens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Literal

from mailbot.logs import safe_error

log = logging.getLogger(__name__)

Setting = int | Literal["auto", "off"]

# The CPUs this process could use before it kept to one (None: it has not).
_before: frozenset[int] | None = None


def usable() -> frozenset[int] | None:
    """The CPUs this process may use, or could before it kept to one: what its helper
    processes are given. None where the platform has no CPU affinity."""
    if _before is not None:
        return _before
    get = getattr(os, "sched_getaffinity", None)
    return frozenset(get(0)) if get is not None else None


def chosen(setting: Setting, cpus: Iterable[int] | None, sole_worker: bool) -> int | None:
    """The CPU the worker keeps to, or None. One CPU in all leaves nothing to choose."""
    allowed = frozenset(cpus or ())
    if setting == "off" or len(allowed) < 2:
        return None
    if setting == "auto":
        return max(allowed) if sole_worker else None
    return setting if setting in allowed else None


def keep_worker_on_one_cpu(setting: Setting, database_url: str) -> int | None:
    """Every thread of this process, and the threads they start, on the CPU ``setting``
    gives (``chosen``): the CPU, or None when it stays free."""
    cpus = usable()
    # Imported by the configuration already (its URL checked on load); not by `--help`.
    from sqlalchemy.engine import make_url

    # SQLite's lock refuses a second worker (store/cluster).
    sole_worker = make_url(database_url).get_backend_name() == "sqlite"
    cpu = chosen(setting, cpus, sole_worker)
    if cpu is None:
        if isinstance(setting, int) and cpus is not None and setting not in cpus:
            log.warning(
                "polling.worker_cpu is not a CPU this worker may use: left free",
                extra={"cpu": setting, "usable": ",".join(map(str, sorted(cpus)))},
            )
        return None
    if not _keep_on(cpu, cpus or frozenset()):
        return None
    log.debug("worker kept on one CPU", extra={"cpu": cpu})
    return cpu


def _keep_on(cpu: int, before: frozenset[int]) -> bool:
    global _before
    try:
        _set_threads({cpu})
    except OSError as exc:  # refused (a cpuset changed meanwhile): all free again
        _set_threads(before)
        log.warning(
            "could not keep the worker on one CPU", extra={"cpu": cpu, "error": safe_error(exc)}
        )
        return False
    _before = before
    return True


def _set_threads(cpus: Iterable[int]) -> None:
    """Every thread of this process on ``cpus`` (a thread started from one of them now
    inherits them: Linux keeps an affinity per thread)."""
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), set(cpus))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def run_on(cpus: Iterable[int] | None) -> None:
    """In a helper process: back on ``cpus``, the worker's ``usable()`` (None: left as
    it is)."""
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        _set_threads(cpus)


def release() -> None:
    """Every thread back on the CPUs the process had before it kept to one: the end of a
    `poll` run in a process that goes on (the tests')."""
    global _before
    if _before is not None:
        _set_threads(_before)
        _before = None
