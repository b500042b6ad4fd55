"""Shared fixtures: a real Dovecot for the whole session, a fresh IMAP user and SMTP server
per test.

Tests that need these servers are never skipped: a machine without Dovecot fails them with
a message saying how to install it (scripts/setup-tests). A skipped test would hide that
mailbot was never checked against a real IMAP server.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg import PostgresServer, fresh_database
from servers import DovecotServer, MailUser, ServerUnavailableError, SmtpServer

from mailbot.config import Config, load_config
from mailbot.core import language
from mailbot.redact import RedactingHandler
from mailbot.render.templates import Renderer

SERVER_FIXTURES = {"dovecot", "imap_user", "smtp_server", "postgres", "database"}
_CACHE_DIR = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """The render cache (compiled templates, passed checks) in a directory of this run, not
    in the user's ~/.cache: set before collection, since modules build renderers on import;
    the mailbot processes tests start inherit it."""
    temporary_files_in_memory()
    directory = tempfile.mkdtemp(prefix="mailbot-test-cache-")
    config.stash[_CACHE_DIR] = directory
    os.environ["MAILBOT_CACHE_DIR"] = directory
    keep_bytecode()
    numpy_on_one_thread()


RAM_FOLDER = "/dev/shm"
RAM_NEEDED = 4 * 2**30  # a run writes ~0.5 GB; pytest keeps only failed tests' folders


def temporary_files_in_memory() -> None:
    """Every temporary file of the run (the tests' folders, databases, Dovecot's mail, the
    processes they start) in RAM when the machine has a RAM file system with room: each
    SQLite commit waits for the disk (synchronous=FULL), 2.2 ms on the development
    machine's disk against 0.1 ms in RAM. The tests kill processes, never the machine, so
    what they check does not depend on the disk. A TMPDIR set by the user is kept."""
    if "TMPDIR" in os.environ or not os.path.isdir(RAM_FOLDER):
        return
    folder = os.statvfs(RAM_FOLDER)
    writable = os.access(RAM_FOLDER, os.W_OK | os.X_OK) and not folder.f_flag & os.ST_NOEXEC
    if writable and folder.f_bavail * folder.f_frsize >= RAM_NEEDED:
        os.environ["TMPDIR"] = RAM_FOLDER  # read by xdist's workers and every child
        tempfile.tempdir = None  # this process reads it again (pytest's folders too)


def keep_bytecode() -> None:
    """Let the processes the tests start (xdist's workers, hundreds of `mailbot` commands
    and workers) write their bytecode: under ``PYTHONDONTWRITEBYTECODE`` (set on the CI
    machine) each of them compiled mailbot's ~150 modules again, ~0.3 s of CPU per start.
    The .pyc files go to the usual ``__pycache__`` folders (ignored by git), and Python
    checks each against its source's mtime and size: an edited module is compiled anew."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def numpy_on_one_thread() -> None:
    """Run numpy's OpenBLAS on one thread in the test processes too, as ``mailbot``
    (``cli.console``) runs it in every command it starts. Read once, at numpy's import,
    which pytest and this file do not do: set here, it holds for this process, xdist's
    workers and every child they start. Left to itself OpenBLAS starts a thread per core
    that spins while waiting for work; on CI's 2 cores shared by 3 workers those threads
    only take turns with the workers: a file that fits routing models in-process
    (tests/test_routing_model.py) took 65 s of CPU against 18 s on one thread. One thread
    gives the same logits to the bit (bench/README.md, seventh session). A value set by
    the user is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "numpy" in sys.modules:  # a plugin imported it first: its pool is already made
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The run is over: pytest's check for unraisable exceptions then collects garbage five
    times over all the process holds (corpora, models, caches), about a second each, at the end of
    every worker. One collection here finds the same garbage (and the exceptions its
    finalisers raise, which pytest still reports); what survives it is frozen, so the five
    that follow have nothing left to walk."""
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_CACHE_DIR, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def pytest_make_parametrize_id(config: pytest.Config, val: Any, argname: str) -> str | None:
    """Long parameters (whole mails, megabytes of padding) get a short, stable id, so that
    test names stay readable in reports."""
    if isinstance(val, str | bytes) and len(val) > 60:
        data = val.encode("utf-8", "surrogatepass") if isinstance(val, str) else val
        return f"{argname}-{len(data)}B-{hashlib.sha256(data).hexdigest()[:8]}"
    return None


# The longest tests, longest first (wall time in a full run of 2026-12-02, 16:00 UTC; a name
# that no longer matches only loses its place at the front). Parametrised tests match by
# prefix.
LONG_TESTS = (
    "tests/test_migration_kill.py::test_kill_during_first_start_always_leaves_an_openable",
    "tests/web/test_web_screenshots.py::test_console_screenshots",
    "tests/test_routing_speed.py::test_same_vectors_and_logits_to_the_bit_and_same_decisions",
    "tests/test_fuzz.py::test_fuzzed_mail_is_all_recorded_and_memory_stays_bounded",
    "tests/test_routing_matcher.py::test_decisions_identical_to_the_regex_rules",
    "tests/test_cluster.py::test_two_workers_killed_again_and_again_answer_each_mail_once",
    "tests/test_cli_output.py::test_piped_into_head_never_shows_a_traceback",
    "tests/test_kill.py::test_kill_9_at_random_moments_loses_nothing_and_never_answers_twice",
)

# The files whose module-scoped fixtures cost seconds in each worker that runs one of their
# tests (Playwright's driver and Chromium, the desk's world read by the pipeline, the
# indicators' scenario), heaviest first (a full run of 2026-12-04: test_rgaa_browser 130 s
# of worker time). Each is dealt whole to the front of a worker's share: stolen in halves
# from the end of a queue, test_rgaa_browser ran in 5 pieces over 3 workers, its fixtures
# set up (and torn down) again for each piece. Their long tests stay with them.
WHOLE_FILES = (
    "tests/web/test_rgaa_browser.py",
    "tests/web/test_pages_accessibility.py",
    "tests/web/test_desk_browser.py",
    "tests/web/test_desk_actions.py",
    "tests/web/test_console_browser.py",
    "tests/web/test_indicators_page.py",
    "tests/web/test_desk_reply.py",
    "tests/web/test_desk_http.py",
    "tests/web/test_rgaa_http.py",
    "tests/test_bidi_chromium.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server with ``servers`` (``-m "not servers"``), and
    under xdist start each worker with its share of the longest tests and whole files."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if workers > 1:
        items[:] = long_tests_first(items, workers)


def long_tests_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The collection with the longest tests, then the WHOLE_FILES, dealt in turn to the
    front of each worker's share. xdist's worksteal gives each worker a contiguous share of
    the collection (the first n/3, the next...) and idle workers steal from the END of a
    busy one's queue: a long test late in a share starts late and runs alone at the end
    (test_migration_kill started at 79 % of a full run), and a file cut by a steal sets its
    module fixtures up in each worker. At the front of the shares, they all start at once,
    and a whole file's tests run one after the other in one worker."""

    def rank(item: pytest.Item) -> int:
        return next((n for n, name in enumerate(LONG_TESTS) if item.nodeid.startswith(name)), -1)

    def whole(item: pytest.Item) -> int:
        return next(
            (n for n, name in enumerate(WHOLE_FILES) if item.nodeid.startswith(name + "::")), -1
        )

    files: list[list[pytest.Item]] = [[] for _ in WHOLE_FILES]
    for item in items:
        if whole(item) >= 0:
            files[whole(item)].append(item)
    long = sorted((item for item in items if whole(item) < 0 and rank(item) >= 0), key=rank)
    rest = [item for item in items if whole(item) < 0 and rank(item) < 0]
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker in range(workers):  # the shares as worksteal cuts them
        share = left // (workers - worker)
        own = long[worker::workers] + [t for file in files[worker::workers] for t in file]
        ordered += own
        fill = max(share - len(own), 0)
        ordered += rest[:fill]
        del rest[:fill]
        left -= share
    return ordered + rest


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One private Dovecot for the session (starts in well under a second)."""
    server: DovecotServer | None = None
    try:
        server = DovecotServer()
        server.start()
    except ServerUnavailableError as exc:
        if server is not None:
            server.cleanup()
        pytest.fail(f"cannot start the test Dovecot: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> Iterator[MailUser]:
    """A new user with an empty mailbox: tests never see each other's mail."""
    if not dovecot.running:  # a previous test stopped it (restart tests)
        dovecot.start()
    user = dovecot.new_user()
    yield user
    if dovecot.running:
        dovecot.drop_connections(user.name)  # sessions a test left open


@pytest.fixture(autouse=True)
def no_language_memory_left() -> Iterator[None]:
    """A command run in-process (``main([..., "explain", ...])``) gives lingua the disk's
    memory for the rest of the process, as a command's process would: forgotten after each
    test, so that no later test of the same worker gets a recalled answer for lingua's."""
    yield
    language.remember_with(None)


@pytest.fixture(autouse=True)
def no_log_handler_left() -> Iterator[None]:
    """A command run in-process (``main([...])``) points the root logger at the stderr
    pytest captures for that test, and closes after it: the handler goes with the test, so
    that a later test's logs never go to a closed file ("Logging error"). A later test that
    runs no command of its own (its world copied, not read by ``mailbot poll``) met it."""
    yield
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, RedactingHandler)]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server recording what it accepts; script failures with fail_next()."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One private PostgreSQL cluster per test process; each test takes a database of its own
    in it (``pg.fresh_database``), so tests never see each other's rows."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A new database's URL for one test, on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailbot.db'}"
    return fresh_database(request.getfixturevalue("postgres"), "d", request.node.nodeid)


@pytest.fixture(scope="module")
def config() -> Config:
    """The shipped configuration (rules.yaml), one per test module: a module may change
    its copy without another seeing it. A module's own ``config`` fixture overrides it."""
    return load_config(Path(__file__).resolve().parent.parent / "rules.yaml")


@pytest.fixture(scope="module")
def renderer(config: Config) -> Renderer:
    """The shipped templates, rendered without the bytecode cache."""
    return Renderer(config.templates, cache=False)
