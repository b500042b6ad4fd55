"""SQLite's one writer, shared in one process by the intake and the outbox (issue 14, point 7).

SQLite lets one connection write at a time. When the outbox sends while the intake records
the next FETCH batch, each of the outbox's short write transactions (a claim before each
DATA) would wait in SQLite's busy handler (sleeps of 1 to 100 ms) for the intake's
transaction, up to a second long, to commit. Instead, the writers of a process take turns
on ``WriteDesk.writer``, and a write the outbox submits while an intake part is open rides
on that part: the intake ends the part at its next mail boundary and runs the work, under a
savepoint, in the part's own transaction, whose commit makes it durable (one commit and one
fsync for both). The submitter waits for that commit before it goes on (before its DATA).
With no part open, the submitter writes alone, on its own connection, holding the turn.

On PostgreSQL writers lock rows, not the database: there is no desk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mailbot.store.transaction import Transaction

T = TypeVar("T")
Work = Callable[[Transaction], T]

_WAITING, _SERVED, _DONE, _FAILED, _ALONE = range(5)


@dataclass(eq=False)
class _Request(Generic[T]):
    work: Work[T]
    state: int = _WAITING
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)


class Part:
    """An intake part holding the writer: it serves the writes submitted meanwhile."""

    def __init__(self, desk: WriteDesk) -> None:
        self.desk = desk
        self.served: list[_Request[Any]] = []
        self.thread = threading.current_thread()

    def wanted(self) -> bool:
        """Whether a write waits for this part's commit (the part should end soon)."""
        return bool(self.desk._queue)

    def serve(self, tx: Transaction) -> None:
        """Run the waiting writes in the part's transaction, each under its savepoint (one
        that raises fails alone, its error handed back to its submitter)."""
        with self.desk._mutex:
            waiting, self.desk._queue = self.desk._queue, []
        for request in waiting:
            try:
                with tx.savepoint():
                    request.result = request.work(tx)
                request.state = _SERVED
            except Exception as exc:
                request.state, request.error = _FAILED, exc
            self.served.append(request)


class WriteDesk:
    """Turns on the writer for one process's writers, and writes carried by intake parts."""

    def __init__(self) -> None:
        self.writer = threading.Lock()  # an intake part, or a write alone
        self._mutex = threading.Lock()
        self._settled = threading.Condition(self._mutex)
        self._open: Part | None = None
        self._queue: list[_Request[Any]] = []

    @contextmanager
    def part(self) -> Iterator[Part]:
        """Hold the writer for an intake part. Leaving it (after its transaction ended, or
        raised) settles the writes it ran: done if it committed, failed otherwise; writes
        submitted too late for it are sent back to be written alone."""
        part = Part(self)
        with self.writer:
            with self._mutex:
                self._open = part
            committed = False
            try:
                yield part
                committed = True
            finally:
                self._settle(part, committed)

    def _settle(self, part: Part, committed: bool) -> None:
        with self._mutex:
            self._open = None
            for request in part.served:
                if request.state == _SERVED:
                    request.state = _DONE if committed else _FAILED
                    if not committed:
                        request.error = RuntimeError("the transaction carrying it failed")
            for request in self._queue:
                request.state = _ALONE
            self._queue = []
            self._settled.notify_all()

    def submit(self, work: Work[T], alone: Callable[[Work[T]], T]) -> T:
        """``work`` committed: by the open intake part, or by ``alone`` (which runs it in a
        transaction of the caller's) with the writer held. Raises what the work raised, or
        an error if the transaction that carried it did not commit."""
        request: _Request[T] = _Request(work)
        with self._mutex:
            if self._open is not None and self._open.thread is threading.current_thread():
                # It would wait for its own part: a use case must not deliver mid-batch.
                raise RuntimeError("a write submitted from inside an intake part")
            if self._open is not None:
                self._queue.append(request)
                while request.state in (_WAITING, _SERVED):
                    self._settled.wait()
        if request.state == _DONE:
            return request.result  # type: ignore[no-any-return]
        if request.state == _FAILED:
            assert request.error is not None
            raise request.error
        with self.writer:
            return alone(work)
