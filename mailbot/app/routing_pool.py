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

Started with the worker (``start_routing_helper``: ``poll`` and ``run``, ``cli._worker``),
before anything else: right after the configuration is read, from the main thread while it
is the process's only thread, the helper is *forked* (a fork while another thread holds a
lock, an import's say, could leave it held in the child: with more threads, ``spawn``). It
has the configuration already; it imports numpy, loads the model and compiles the rules on
the second core while the worker imports its store and templates. Such a helper decides
EVERY mail, a single one too: a mail whose decision is asked before the helper is ready
waits for it, at most ``START_SECONDS`` (then it and the mails until the helper is ready are
decided in-process, logged once). The worker's process then never loads the model nor
imports numpy for a first mail (issue 14, point 9: ~0.1 s of its start).

A pool built by ``Pipeline`` itself (the web console, tests, ``build_app``'s callers) takes
batches of at least ``routing.parallel.min_batch`` mails only: a single mail never waits on
a process start. Its helper is started on the first such batch, in the background
(``spawn``: safe with the worker's threads), and until it has loaded the model every
decision is made in-process; a batch begun meanwhile sends the rest of its mails to it at
its next part once it is ready (``Pipeline._route_late``).

Whatever goes wrong with a helper (killed, a failed start, a chunk lost, no answer within
``RESULT_SECONDS``) costs only time: the decision is made in-process (the pipeline then
compiles the routing and loads the model, once), a WARNING is logged once, and a new helper
is started for a later large batch. A helper outlives no worker: it ignores SIGINT and
SIGTERM (the worker's to handle) and exits when its parent's process is gone (a kill -9).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailbot.config import Config, RoutingConfig
from mailbot.core.routing import CompiledRouting, RoutingDecision, RoutingInput, decide
from mailbot.cpu import run_on, usable
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
# How long a mail waits for a helper started with the worker (it is ready in well under a
# second on an idle machine); then it, and those after it until the helper is ready, are
# decided in-process.
START_SECONDS = 5.0
# A helper's warm-up decision (``_start_helper``).
WARM_TEXT = "Bonjour, je souhaite savoir où en est ma demande de titre de séjour. Merci."


@dataclass(frozen=True)
class RoutingSpec:
    """What the helper compiles the routing from: the inputs of ``compile_routing``
    (``core/facts.compiled_routing``), all of which pickle."""

    routing: RoutingConfig
    own: Mapping[str, str]
    general_service: str
    # The CPUs the helper runs on: every one the worker may use (mailbot/cpu.py), even when
    # it is started after the worker kept its own process to one.
    cpus: frozenset[int] | None = None


def routing_spec(config: Config) -> RoutingSpec | None:
    """What a helper compiles, from the configuration: None without routing, or with
    ``routing.parallel.processes: 0`` (every decision in-process)."""
    if config.routing is None or config.routing.parallel.processes < 1:
        return None
    own = {name: box.service for name, box in config.mailboxes.items()}
    return RoutingSpec(config.routing, own, config.organisation.general_service, usable())


def start_routing_helper(config: Config) -> RoutingPool | None:
    """The worker's helper, started now (``cli._worker``, before its other threads): forked
    from the calling thread when it is the process's only one and the platform forks,
    spawned otherwise (the tests' in-process commands, whose runner has threads). It decides
    every mail of the pipeline given it (``Pipeline(routing_pool=…)``)."""
    spec = routing_spec(config)
    if spec is None:
        return None
    import multiprocessing

    fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    pool = RoutingPool(spec, None, spec.routing.parallel.min_batch, "fork" if fork else "spawn")
    pool.start()
    return pool


# ----------------------------------------------------------------------- in the helper

_compiled: CompiledRouting | None = None


def _start_helper(spec: RoutingSpec) -> None:
    """The helper's initializer: the routing compiled and the model loaded once. SIGINT
    and SIGTERM are the worker's to handle (a terminal's Ctrl-C and systemd's stop reach the
    whole process group): the worker finishes its batch with the helper, then stops it."""
    global _compiled
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_on(spec.cpus)
    _exit_with_parent()
    from mailbot.core.classifier import load as load_model
    from mailbot.core.routing import compile_routing

    model = load_model(spec.routing.model.file) if spec.routing.model else None
    _compiled = compile_routing(spec.routing, dict(spec.own), spec.general_service, model)
    # What the first decision builds (the keyword index, combine's import), built now: a
    # worker's first mail waits on it otherwise. ``decide`` is pure: the decisions after
    # are the same.
    for mailbox in list(spec.own)[:1]:
        decide(RoutingInput(mailbox, "Demande", WARM_TEXT, "", "fr", False), _compiled)
    # Forked from a start with the collector off (``cli.console``): on again for the months
    # the helper decides, what it loaded frozen out of its reach.
    gc.freeze()
    gc.enable()


def _exit_with_parent() -> None:
    """The helper ends when its parent's process does, however it ends (a kill -9 too). A
    forked helper holds its own copy of the executor's pipes, so their closing would not
    wake it: it watches multiprocessing's sentinel of the parent (a pipe whose only writer
    was the parent), readable once the parent is gone."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        wait([sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="routing-helper-parent", daemon=True).start()


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

    def decision(self, here: Callable[[], CompiledRouting]) -> RoutingDecision:
        """The helper's decision, or ``decide`` in this process with ``here()`` (the same
        rules, compiled by the pipeline on first need): the helper failed, or it was
        started with the worker and is not ready within ``START_SECONDS``."""
        if self.pool.wait_started(self.executor):
            try:
                if not self._chunk.done():  # the intake waits on the helper (bench/run.py)
                    started = time.perf_counter()
                    self._chunk.result(timeout=RESULT_SECONDS)
                    self.pool.waited += time.perf_counter() - started
                decided: list[RoutingDecision] = self._chunk.result()
                return decided[self._at]
            except Exception as exc:  # BrokenProcessPool, a timeout, a pickling error…
                self.pool.failed(exc, self.executor)
        return decide(self.facts, here())


class RoutingPool:
    """One helper process deciding the routing of large batches (``routing.parallel``), or
    of every mail when started with the worker (``start``).

    Thread-safe: the pollers of several mailboxes may send batches at once (the helper then
    takes their chunks in turn)."""

    def __init__(
        self,
        spec: RoutingSpec,
        made_for: CompiledRouting | None,
        min_batch: int,
        start_method: str = "spawn",
    ) -> None:
        self.spec = spec
        # The compiled routing the helper's decisions stand for: one that is not this (a
        # routing swapped in) is decided in-process. None: the routing of ``spec``, not
        # compiled in this process (a helper started with the worker; the pipeline sets it
        # if it compiles one).
        self.made_for = made_for
        self.min_batch = min_batch
        self.start_method = start_method
        self.retry_seconds = RETRY_SECONDS
        self.start_seconds = START_SECONDS
        # Started with the worker (``start``): every mail goes to it, a single one too,
        # until it fails; its replacements are started for large batches only.
        self.from_start = False
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._ready = False
        self._late = False  # started with the worker, and not ready within START_SECONDS
        self._started = threading.Event()  # the helper ready, failed or closed
        self._closed = False
        self._not_before = 0.0
        self.pid: int | None = None  # the helper's, once ready
        self.failures = 0
        self.waited = 0.0  # seconds the intake waited for a decision not yet made

    def start(self) -> None:
        """The helper started now, its process launched from the calling thread: a
        ``fork`` context's executor forks at its first submit, before it starts its manager
        thread (CPython 3.11's concurrent/futures/process.py), so ``_ready`` is submitted
        here and only its answer is awaited in the background. From now on it decides every
        mail (``usable``)."""
        with self._lock:
            executor = self._executor = self._new_executor()
            self.from_start = True
            answer = executor.submit(_ready)
        threading.Thread(
            target=self._warm, args=(executor, answer), name="routing-helper-start", daemon=True
        ).start()

    def usable(self, mails: int) -> bool:
        """Whether a batch of this many mails goes to the helper: any batch to one started
        with the worker (unless it was late); else large enough, and the helper ready (if
        there is none, one is started in the background for later)."""
        with self._lock:
            if self.from_start and self._executor is not None and not self._closed:
                return self._ready or not self._late
        return mails >= self.min_batch and self._usable()

    def wait_started(self, executor: ProcessPoolExecutor) -> bool:
        """Whether to wait for this helper's answer: it is ready, or it becomes ready within
        ``start_seconds`` (one started with the worker, still loading). False: it failed
        meanwhile, or it is late (logged once): decided in-process."""
        with self._lock:
            if executor is not self._executor or self._ready:
                return executor is self._executor
            if self._late:
                return False
            started = self._started
        started.wait(self.start_seconds)
        with self._lock:
            if executor is not self._executor or self._ready:
                return executor is self._executor
            late, self._late = self._late, True
        if not late:
            log.info(
                "routing helper not ready: deciding in-process until it is",
                extra={"seconds": self.start_seconds},
            )
        return False

    def ahead(self, inputs: Sequence[RoutingInput | None]) -> list[RoutingAhead | None]:
        """The mails' decisions sent to the helper (None for a mail without input; all
        None if the helper failed meanwhile). A helper started with the worker takes them
        before it is ready: they wait in its queue."""
        with self._lock:
            executor = self._executor if self._ready or self.from_start else None
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
            executor = self._executor = self._new_executor()
        threading.Thread(
            target=self._warm, args=(executor,), name="routing-helper-start", daemon=True
        ).start()
        return False

    def _new_executor(self) -> ProcessPoolExecutor:
        """A helper's executor, its process not launched yet (under the lock)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._started = threading.Event()
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context(self.start_method),
            initializer=_start_helper,
            initargs=(self.spec,),
        )

    def _warm(self, executor: ProcessPoolExecutor, answer: Future[Any] | None = None) -> None:
        """Start the helper (unless ``start`` did) and wait until it has loaded the routing
        (off the intake)."""
        started = time.perf_counter()
        try:
            if answer is None:
                answer = executor.submit(_ready)
            pid = answer.result(timeout=RESULT_SECONDS * 4)
        except Exception as exc:
            self.failed(exc, executor)
            return
        with self._lock:
            if self._executor is not executor:
                return  # closed or replaced meanwhile
            self._ready, self.pid = True, pid
            self._started.set()
            method = self.start_method  # that of this executor, the current one
            # One started with the worker is part of every start (DEBUG: a `poll --once`
            # from cron, or a start refused for a configuration error, says nothing of it).
            level = logging.DEBUG if self.from_start else logging.INFO
        log.log(
            level,
            "routing helper ready",
            extra={
                "pid": pid,
                "method": method,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )

    def failed(self, exc: BaseException, executor: ProcessPoolExecutor) -> None:
        """The helper died or hung: logged once, shut down; a new one for a later batch."""
        with self._lock:
            if executor is not self._executor:
                return  # already dealt with
            self._executor, self._ready, self.pid = None, False, None
            self._not_before = time.monotonic() + self.retry_seconds
            self.failures += 1
            # Its replacement is a large batch's (spawned: the worker has threads now).
            self.from_start, self.start_method = False, "spawn"
            self._started.set()
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
            self._started.set()
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
