"""The worker's SMTP client in a process of its own (``smtp.own_process``, issue 14).

The intake and the delivery thread share one GIL: on a backlog the SMTP client's CPU
(the protocol, the event loop, TLS) is taken from the intake, whose wall time follows the
process's CPU. A child process runs the client (``SmtpTransport``, unchanged: its kept
connection, PIPELINING, the second connection of a large batch) on the machine's other
core, and the worker's delivery thread only hands it bytes and records what it reports.

The outbox's rule stays: a mail's claim commits before its DATA. The parent calls each
mail's ``before`` (the claim, ``app/delivery_run``) in the batch's order and sends the child
its verdict; the child's ``before`` waits for it. So that the child never waits for the
parent's thread to get the GIL, the parent judges up to ``ahead`` mails to citizens beyond
the last result (16 by default), and up to twice that many mails in all: a kill -9 of the
worker may leave that many more mails claimed and never sent, recovered as any crash's are
(uncertain for a citizen, queued again if internal; README "Claims in groups"). The window
counts the mails to citizens because the crash bound is theirs (an internal mail is sent at
least once); a transfer's forward beside each AR would otherwise halve it, and the child
then waited on the claims (bench/README, thirty-second session).

What the child reports settles each mail as the in-process transport would: its result;
a mail it never started as never tried (a shutdown) or retried later (no connection). A
child that dies mid-batch cannot say which of the mails it was given left: each becomes
uncertain (never
resent to a citizen), the rest of the batch is retried, and the next batch starts a new
child. The child ignores SIGINT and SIGTERM, which systemd and a terminal send to the whole
group (the worker interrupts its batch itself, then ``close``s it), and exits when the
pipe to the worker closes (the worker gone, a kill -9 too).

Only ``mailbot run`` and ``poll`` use it (``start_smtp_process``, from ``cli._worker``):
forked first, while the worker's process has one thread, it imports the SMTP client on the
other core while the worker loads the rest. A second batch at the same time (the
delivery thread's and a probe's) is sent in-process, on a connection of its own, as
``SmtpTransport`` does.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailbot.config import Config, SmtpConfig
from mailbot.cpu import run_on, usable
from mailbot.errors import DeliveryError
from mailbot.mail.envelope import AfterSend, BeforeSend, Envelope

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from mailbot.mail.smtp import SmtpTransport

log = logging.getLogger(__name__)

AHEAD = 16  # mails to citizens judged (claimed) beyond the last result; twice that in all
WAIT = 0.2  # seconds between looks at ``stop`` while waiting for the child
REPORT_EVERY = 8  # results the child sends in one message (fewer wakes of the worker)
STOP_GRACE = 10.0  # seconds a stopped child has to end its batch (it takes a fraction of one)
# A DeliveryError as it crosses the pipe: message, permanent, code, uncertain, interrupted.
Crossing = tuple[str, bool, int | None, bool, bool]


def crossing(error: DeliveryError) -> Crossing:
    return (str(error), error.permanent, error.code, error.uncertain, error.interrupted)


def crossed(error: Crossing) -> DeliveryError:
    message, permanent, code, uncertain, interrupted = error
    return DeliveryError(
        message, permanent=permanent, code=code, uncertain=uncertain, interrupted=interrupted
    )


class ChildGone(Exception):
    """The child process ended or stopped answering mid-batch."""


def start_smtp_process(config: Config) -> ProcessTransport | None:
    """The worker's SMTP process, started now (``cli._worker``, before its other threads):
    forked when the calling thread is the process's only one and the platform forks,
    spawned otherwise. None with ``smtp.own_process: false``."""
    if not config.smtp.own_process:
        return None
    transport = ProcessTransport(config.smtp)
    transport.start()
    return transport


class ProcessTransport:
    """A ``Transport`` whose batches an ``SmtpTransport`` in a child process sends (see the
    module's docstring)."""

    def __init__(self, config: SmtpConfig, *, ahead: int = AHEAD) -> None:
        self.config = config
        self.ahead = max(1, ahead)
        self._busy = threading.Lock()
        self._child: Child | None = None
        self._local: SmtpTransport | None = None  # a second batch at once

    def start(self) -> None:
        """Start the child now (it is started by the first batch otherwise)."""
        with self._busy:
            self._ensure_child()

    def _ensure_child(self) -> Child:
        if self._child is None or not self._child.alive():
            if self._child is not None:
                self._child.end()
            self._child = Child.start(self.config)
        return self._child

    def send_batch(
        self,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None = None,
    ) -> None:
        if not envelopes:
            return
        if not self._busy.acquire(blocking=False):
            self._in_process().send_batch(envelopes, before, after, stop)
            return
        try:
            child = self._ensure_child()
            batch = Batch(child, envelopes, before, after, stop, self.ahead, self._watchdog())
            try:
                batch.run()
            except ChildGone as gone:
                child.end()
                self._child = None
                raise batch.lost(gone) from gone
            except BaseException:
                # ``before`` or ``after`` raised (a database error): the child may be waiting
                # for verdicts of this batch, which must never be read as the next one's.
                # Its mails given stay claimed, settled by the outbox (``recover_own``).
                child.kill()
                self._child = None
                raise
        finally:
            self._busy.release()

    def _watchdog(self) -> float:
        """Seconds without a word from a child that owes one before it is taken for hung:
        a mail's exchange is a few network steps of ``timeout_seconds`` each."""
        return 5 * self.config.timeout_seconds + 10

    def _in_process(self) -> SmtpTransport:
        if self._local is None:
            from mailbot.mail.smtp import SmtpTransport

            self._local = SmtpTransport(self.config)
        return self._local

    def close(self) -> None:
        """End the child (it QUITs its kept connection first), at shutdown."""
        with self._busy:
            if self._child is not None:
                self._child.end()
                self._child = None
        if self._local is not None:
            self._local.close()


class Child:
    """The child process and the worker's end of the pipe to it."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, config: SmtpConfig) -> Child:
        import multiprocessing

        get = multiprocessing.get_context
        fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
        context = get("fork") if fork else get("spawn")
        ours, theirs = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        args = (theirs, config, level, ours if fork else None, usable())
        process = context.Process(target=serve, args=args, name="mailbot-smtp", daemon=True)
        process.start()
        theirs.close()
        child = cls(process, ours)
        # Before multiprocessing's own exit hook, which would wait for ever on a child that
        # ignores SIGTERM: a worker that exits without ``close`` (an error) ends it too.
        atexit.register(child.end)
        return child

    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError) as error:
            raise ChildGone(f"the SMTP process cannot be reached: {error}") from error

    def send_bytes(self, data: bytes) -> None:
        try:
            self.conn.send_bytes(data)
        except (OSError, ValueError) as error:
            raise ChildGone(f"the SMTP process cannot be reached: {error}") from error

    def receive(self, timeout: float) -> tuple[Any, ...] | None:
        """The child's next message, or None if none came within ``timeout`` seconds."""
        try:
            if not self.conn.poll(timeout):
                return None
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError, ValueError) as error:
            raise ChildGone(f"the SMTP process ended (exit code {self._code()})") from error
        return message

    def _code(self) -> int | None:
        self.process.join(0.5)
        return self.process.exitcode

    def kill(self) -> None:
        atexit.unregister(self.end)
        self.conn.close()
        self.process.kill()
        self.process.join(5)

    def end(self) -> None:
        """Ask the child to QUIT and exit; killed if it does not within a few seconds."""
        atexit.unregister(self.end)  # a replaced child is not kept for the exit
        if not self.conn.closed:
            with contextlib.suppress(OSError, ValueError):  # it is gone already
                self.conn.send(("close",))
            self.conn.close()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class Batch:
    """One batch sent by the child: the parent judges mails ahead and records results."""

    def __init__(
        self,
        child: Child,
        envelopes: Sequence[Envelope],
        before: BeforeSend,
        after: AfterSend,
        stop: threading.Event | None,
        ahead: int,
        watchdog: float,
    ) -> None:
        self.child = child
        self.envelopes = envelopes
        self.before = before
        self.after = after
        self.stop = stop
        self.ahead = ahead
        self.watchdog = watchdog
        self.judged = 0  # mails passed to ``before`` so far, in the batch's order
        self.given: dict[int, Envelope] = {}  # approved, no result yet
        self.citizens = 0  # of them, mails to citizens (``Envelope.at_most_once``)

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def run(self) -> None:
        self._hand_over()
        stop_sent: float | None = None
        quiet_since = time.monotonic()
        while True:
            if stop_sent is None and self.stopping():
                self.child.send(("stop",))
                stop_sent = time.monotonic()
            elif stop_sent is None:
                self._judge(self.ahead // 2)
            message = self.child.receive(WAIT)
            now = time.monotonic()
            if message is None:
                if stop_sent is not None and now - stop_sent > STOP_GRACE:
                    raise ChildGone("the SMTP process did not stop")
                if self.given and now - quiet_since > self.watchdog:
                    raise ChildGone(f"the SMTP process said nothing for {self.watchdog:.0f} s")
                continue
            quiet_since = now
            if message[0] == "done":
                for index, error in message[1]:
                    envelope = self.given.pop(index)
                    self.citizens -= envelope.at_most_once
                    self.after(envelope, None if error is None else crossed(error))
            elif message[0] == "want" and stop_sent is None:
                self._judge(self.ahead)  # the child waits: judge whatever the window allows
            elif message[0] == "end":
                self._end(set(message[1]), message[2])
                return

    def _hand_over(self) -> None:
        """The batch: its addresses, then each mail's bytes as they are (``send_bytes``):
        pickled, a batch (200 ARs, 2.6 MB) went through buffers as large, which raised the
        worker's peak memory on a long backlog (bench/run.py (c))."""
        self.child.send(("batch", [(e.envelope_from, e.recipient) for e in self.envelopes]))
        for envelope in self.envelopes:
            self.child.send_bytes(envelope.raw)

    def _judge(self, unless_over: int) -> None:
        """Pass the next mails to ``before`` until the window is full (``_full``), and send
        the child the verdicts; nothing while more than ``unless_over`` are approved without
        a result (in chunks: fewer messages, while the child still has mails to send)."""
        if self._over(unless_over):
            return
        verdicts: list[bool] = []
        while self.judged < len(self.envelopes) and not self._full():
            if self.stopping():
                break
            envelope = self.envelopes[self.judged]
            approved = self.before(envelope)
            if approved:
                self.given[self.judged] = envelope
                self.citizens += envelope.at_most_once
            verdicts.append(approved)
            self.judged += 1
        if verdicts:
            self.child.send(("go", verdicts))

    def _full(self) -> bool:
        """``ahead`` mails to citizens approved without a result, or twice as many in all."""
        return self.citizens >= self.ahead or len(self.given) >= 2 * self.ahead

    def _over(self, bound: int) -> bool:
        """Whether more than ``bound`` mails to citizens are approved without a result, or
        more than twice as many mails in all (internal mail between them)."""
        return self.citizens > bound or len(self.given) > 2 * bound

    def _end(self, started: set[int], failure: Crossing | None) -> None:
        """The child's batch is over: an approved mail it never started never left (no
        connection: retried later; a shutdown: as if never tried)."""
        never = DeliveryError(
            "not sent: the batch was interrupted before it", permanent=False, interrupted=True
        )
        unsent = crossed(failure) if failure is not None else never
        for index, envelope in sorted(self.given.items()):
            if index in started:  # started and no result: the child's promise broken
                self.after(envelope, self._unknown("the SMTP process gave no result"))
            else:
                self.after(envelope, unsent)
        self.given.clear()
        if failure is not None:
            raise crossed(failure)

    @staticmethod
    def _unknown(why: str) -> DeliveryError:
        return DeliveryError(f"{why}: the mail may have left", permanent=False, uncertain=True)

    def lost(self, gone: ChildGone) -> DeliveryError:
        """The child gone mid-batch: each mail it was given may have left (uncertain); the
        mails not given are the caller's to retry (the DeliveryError returned)."""
        for _index, envelope in sorted(self.given.items()):
            self.after(envelope, self._unknown(str(gone)))
        self.given.clear()
        log.warning("SMTP process lost mid-batch; a new one is started", extra={"error": gone})
        return DeliveryError(f"{gone}; the mails not given to it are retried", permanent=False)


# ------------------------------------------------------------------------ in the child


class Inbox:
    """The child's reader of the worker's messages (a thread of its own, so that a stop
    reaches a batch in flight): batches in a queue, verdicts in order, ``stop``."""

    def __init__(self, conn: Connection) -> None:
        import queue

        self.conn = conn
        self.batches: queue.SimpleQueue[list[tuple[str, str, bytes]] | None] = queue.SimpleQueue()
        self.stop = threading.Event()
        self._verdicts: list[bool] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="smtp-inbox", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: nobody to report to
            kind = message[0]
            if kind == "batch":  # the worker sends one once the one before has ended
                with self._changed:
                    self._verdicts = []
                    self.stop.clear()
                self.batches.put(self._rows(message[1]))
            elif kind == "go":
                with self._changed:
                    self._verdicts.extend(message[1])
                    self._changed.notify_all()
            elif kind == "stop":
                with self._changed:
                    self.stop.set()
                    self._changed.notify_all()
            elif kind == "close":
                self.batches.put(None)
                return

    def _rows(self, addresses: list[tuple[str, str]]) -> list[tuple[str, str, bytes]]:
        """A batch's mails: each one's bytes follow its addresses, in order."""
        try:
            return [(sender, to, self.conn.recv_bytes()) for sender, to in addresses]
        except (EOFError, OSError):
            os._exit(0)

    def has_verdict(self, index: int) -> bool:
        with self._changed:
            return index < len(self._verdicts)

    def verdict(self, index: int) -> bool:
        """Whether mail ``index`` may leave, once the worker has said (False on a stop)."""
        with self._changed:
            while index >= len(self._verdicts) and not self.stop.is_set():
                self._changed.wait()
            return not self.stop.is_set() and self._verdicts[index]


def serve(
    conn: Connection,
    config: SmtpConfig,
    level: int,
    parent_end: Connection | None,
    cpus: frozenset[int] | None = None,
) -> None:
    """The child's life: batches until the worker closes the pipe. On every CPU the worker
    may use (``cpus``), even when it is started after the worker kept to one (mailbot/cpu)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_on(cpus)
    if parent_end is not None:  # forked: the worker's end, so that its closing is seen
        parent_end.close()
    else:
        from mailbot.logs import setup_logging

        setup_logging(level)
    from mailbot.mail.smtp import SmtpTransport

    # Forked from a start with the collector off (``cli.console``): on for the months ahead.
    gc.freeze()
    gc.enable()
    inbox = Inbox(conn)
    transport = SmtpTransport(config)
    while (rows := inbox.batches.get()) is not None:
        send_one_batch(conn, transport, inbox, rows)
    transport.close()


def send_one_batch(
    conn: Connection, transport: SmtpTransport, inbox: Inbox, rows: list[tuple[str, str, bytes]]
) -> None:
    """One batch, its results sent to the worker a few at a time (each message wakes the
    worker's delivery thread, which then needs the GIL): at ``REPORT_EVERY``, before waiting
    for a verdict (the worker may be waiting for them to judge more), and at the end. A
    verdict waited for is asked for: the worker judges in chunks, and the mails still in
    flight (whose results wait on this thread) must not hold back the next ones."""
    envelopes = [Envelope(f, to, raw, name=str(n)) for n, (f, to, raw) in enumerate(rows)]
    started: list[int] = []
    results: list[tuple[int, Crossing | None]] = []

    def report() -> None:
        if results:
            conn.send(("done", list(results)))
            results.clear()

    def before(envelope: Envelope) -> bool:
        index = int(envelope.name)
        if not inbox.has_verdict(index):
            report()
            conn.send(("want",))  # the worker judges more even with mails of ours in flight
        approved = inbox.verdict(index)
        if approved:
            started.append(index)
        return approved

    def after(envelope: Envelope, error: DeliveryError | None) -> None:
        results.append((int(envelope.name), None if error is None else crossing(error)))
        if len(results) >= REPORT_EVERY:
            report()

    failure: Crossing | None = None
    try:
        transport.send_batch(envelopes, before, after, inbox.stop)
    except DeliveryError as error:
        failure = crossing(error)
    report()
    conn.send(("end", started, failure))
