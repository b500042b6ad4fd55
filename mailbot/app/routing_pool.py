"""The routing decisions of a large batch, made by one helper process (issue 14).

The intake is CPU-bound on one thread and the routing decision (rules and learned model,
``core/routing.decide``) is its largest part; a thread would not help (the GIL), a second
process does: once a batch's mails are parsed, the intake sends their ``RoutingInput``s
to the helper in small chunks and records mail *i* while the helper decides the mails
after it; acknowledging a mail takes its ready decision instead of deciding.

``decide`` is pure and the helper runs the same code on the same rules and model (it
compiles them itself from the same configuration: a compiled routing holds closures that
do not pickle), so its decisions are the in-process ones, to the bit
(tests/test_routing_pool.py compares them on the labelled mails).

Only for batches of at least ``routing.parallel.min_batch`` mails: a single mail (IDLE, a
first poll) never waits on a process start. The helper is started on the first such batch,
in the background (``spawn``: safe with the worker's threads, unlike ``fork``), and until it
has loaded the model every decision is made in-process; a batch begun meanwhile sends the
rest of its mails to it at its next part once it is ready (``Pipeline._route_late``).
Whatever goes wrong with it (killed, a chunk lost, no answer within ``RESULT_SECONDS``)
costs only time: the decision is made in-process, a WARNING is logged once, and a new
helper is started for a later batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailbot.config import RoutingConfig
from mailbot.core.routing import CompiledRouting, RoutingDecision, RoutingInput, decide
from mailbot.logs import safe_error

# multiprocessing and the process pool (~20 ms of imports) only once a helper is started:
# a first mail never needs them (issue 14, point 9).
if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger(__name__)

# Chunks grow from the batch's first mail (its decision is waited for at once) to CHUNK:
# fewer round trips once the helper is ahead, a short first wait.
FIRST_CHUNKS = (2, 4, 8)
CHUNK = 16
# A decision takes milliseconds: a helper silent this long is stuck, and is replaced.
RESULT_SECONDS = 30.0
# After a helper failed, the next one is started no sooner than this (a helper that cannot
# start at all would otherwise cost a process start per batch).
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class RoutingSpec:
    """What the helper compiles the routing from: the inputs of ``compile_routing``
    (``core/facts.compiled_routing``), all of which pickle."""

    routing: RoutingConfig
    own: Mapping[str, str]
    general_service: str


# ----------------------------------------------------------------------- in the helper

_compiled: CompiledRouting | None = None


def _start_helper(spec: RoutingSpec) -> None:
    """The helper's initializer: the routing compiled and the model loaded once. SIGINT
    and SIGTERM are the worker's to handle (a terminal's Ctrl-C and systemd's stop reach the
    whole process group): the worker finishes its batch with the helper, then stops it."""
    global _compiled
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from mailbot.core.classifier import load as load_model
    from mailbot.core.routing import compile_routing

    model = load_model(spec.routing.model.file) if spec.routing.model else None
    _compiled = compile_routing(spec.routing, dict(spec.own), spec.general_service, model)


def _ready() -> int:
    """Answered once the initializer is done: the helper's pid."""
    return os.getpid()


def _decide_chunk(inputs: Sequence[RoutingInput]) -> list[RoutingDecision]:
    assert _compiled is not None
    return [decide(facts, _compiled) for facts in inputs]


# ----------------------------------------------------------------------- in the worker


class RoutingAhead:
    """One mail's decision, being made by the helper; ``decision`` waits for it, or makes
    it in-process if the helper failed."""

    def __init__(
        self,
        pool: RoutingPool,
        executor: ProcessPoolExecutor,
        facts: RoutingInput,
        chunk: Future[Any],
        at: int,
    ) -> None:
        self.pool = pool
        self.executor = executor  # the helper it was sent to (a later one may replace it)
        self.facts = facts
        self._chunk = chunk
        self._at = at

    def decision(self, routing: CompiledRouting) -> RoutingDecision:
        """The helper's decision, or ``decide`` here with ``routing`` (the same rules)."""
        if self.pool.made_for is routing:
            try:
                if not self._chunk.done():  # the intake waits on the helper (bench/run.py)
                    started = time.perf_counter()
                    self._chunk.result(timeout=RESULT_SECONDS)
                    self.pool.waited += time.perf_counter() - started
                decided: list[RoutingDecision] = self._chunk.result()
                return decided[self._at]
            except Exception as exc:  # BrokenProcessPool, a timeout, a pickling error…
                self.pool.failed(exc, self.executor)
        return decide(self.facts, routing)


class RoutingPool:
    """One helper process deciding the routing of large batches (``routing.parallel``).

    Thread-safe: the pollers of several mailboxes may send batches at once (the helper then
    takes their chunks in turn)."""

    def __init__(
        self,
        spec: RoutingSpec,
        made_for: CompiledRouting,
        min_batch: int,
        start_method: str = "spawn",
    ) -> None:
        self.spec = spec
        # The compiled routing the helper's decisions stand for: one that is not this (a
        # routing swapped in) is decided in-process.
        self.made_for = made_for
        self.min_batch = min_batch
        self.start_method = start_method
        self.retry_seconds = RETRY_SECONDS
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._ready = False
        self._closed = False
        self._not_before = 0.0
        self.pid: int | None = None  # the helper's, once ready
        self.failures = 0
        self.waited = 0.0  # seconds the intake waited for a decision not yet made

    def usable(self, mails: int) -> bool:
        """Whether a batch of this many mails goes to the helper: large enough, and the
        helper ready (if there is none, one is started in the background for later)."""
        return mails >= self.min_batch and self._usable()

    def ahead(self, inputs: Sequence[RoutingInput | None]) -> list[RoutingAhead | None]:
        """The mails' decisions sent to the helper (None for a mail without input; all
        None if the helper failed meanwhile)."""
        with self._lock:
            executor = self._executor if self._ready else None
        if executor is None:
            return [None] * len(inputs)
        found: list[RoutingAhead | None] = [None] * len(inputs)
        given = [(n, facts) for n, facts in enumerate(inputs) if facts is not None]
        start, sizes = 0, iter(FIRST_CHUNKS)
        try:
            while start < len(given):
                size = next(sizes, CHUNK)
                chunk = given[start : start + size]
                future = executor.submit(_decide_chunk, [facts for _n, facts in chunk])
                for at, (n, facts) in enumerate(chunk):
                    found[n] = RoutingAhead(self, executor, facts, future, at)
                start += size
        except Exception as exc:  # broken or shut down while submitting: the rest here
            self.failed(exc, executor)
        return found

    def _usable(self) -> bool:
        """Ready; or, when there is none, a helper started in the background."""
        with self._lock:
            if self._closed:
                return False
            if self._executor is not None:
                return self._ready
            if time.monotonic() < self._not_before:
                return False
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context(self.start_method)
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_start_helper,
                initargs=(self.spec,),
            )
            self._executor = executor
        threading.Thread(
            target=self._warm, args=(executor,), name="routing-helper-start", daemon=True
        ).start()
        return False

    def _warm(self, executor: ProcessPoolExecutor) -> None:
        """Start the helper and wait until it has loaded the routing (off the intake)."""
        started = time.perf_counter()
        try:
            pid = executor.submit(_ready).result(timeout=RESULT_SECONDS * 4)
        except Exception as exc:
            self.failed(exc, executor)
            return
        with self._lock:
            if self._executor is not executor:
                return  # closed or replaced meanwhile
            self._ready, self.pid = True, pid
        log.info(
            "routing helper ready",
            extra={"pid": pid, "seconds": round(time.perf_counter() - started, 2)},
        )

    def failed(self, exc: BaseException, executor: ProcessPoolExecutor) -> None:
        """The helper died or hung: logged once, shut down; a new one for a later batch."""
        with self._lock:
            if executor is not self._executor:
                return  # already dealt with
            self._executor, self._ready, self.pid = None, False, None
            self._not_before = time.monotonic() + self.retry_seconds
            self.failures += 1
            closed = self._closed
        if not closed:
            log.warning(
                "routing helper failed: deciding in-process, a new helper later",
                extra={"error": safe_error(exc)},  # a foreign message may quote a mail
            )
        _stop(executor)

    def close(self) -> None:
        """The worker's stop: the helper shut down and waited for (no orphan process)."""
        with self._lock:
            self._closed = True
            executor, self._executor, self._ready = self._executor, None, False
        if executor is not None:
            _stop(executor)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Shut a helper down and wait for it; one that is stuck is killed first."""
    processes = list(getattr(executor, "_processes", {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
    executor.shutdown(wait=True)
