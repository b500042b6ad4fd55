"""A large batch's routing decisions made by one helper process (issue 14; app/routing_pool).

The helper runs the same code on the same rules and model: its decisions must be the
in-process ones to the bit, on every labelled mail but the frozen test half. A small batch
never starts it; a helper killed -9 in mid-batch costs time only (the rest decided here, one
WARNING, no mail lost, no AR twice, a new helper later); the worker's stop leaves no process.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from refusals import query
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config
from test_worker import start_worker, stop_by_sigterm

from mailbot.app import intake, intake_setup, routing_pool
from mailbot.app.context import App, app_from_config, build_app
from mailbot.app.routing_pool import RoutingPool, start_routing_helper
from mailbot.config import RoutingParallelConfig, load_config
from mailbot.core.facts import compiled_routing, routing_input
from mailbot.core.incoming import IncomingMail
from mailbot.core.message import parse_message
from mailbot.core.routing import RoutingInput, decide
from mailbot.mail.smtp import FileTransport

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WHERE = ("general", "INBOX", 1)
# What the routing decides, as recorded: the columns compared with and without the helper.
ROUTED = "uid, decision, service, category, priority, reorient, routing, to_check, transferred"


def labelled() -> Iterator[tuple[str, Path]]:
    """Every labelled mail (mailbox, file), the frozen test half left out."""
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir() and p.name != "test"):
        with (folder / "labels.csv").open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield row["mailbox"], folder / row["file"]


def ready(pool: RoutingPool, timeout: float = 60) -> int:
    """The helper started (as a large batch would) and its pid once it has loaded."""
    assert not pool.usable(10_000) or pool.pid is not None
    deadline = time.monotonic() + timeout
    while pool.pid is None and time.monotonic() < deadline:
        pool.usable(10_000)
        time.sleep(0.05)
    assert pool.pid is not None, "the routing helper did not start"
    return pool.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_the_helper_decides_every_third_labelled_mail_as_in_process_to_the_bit() -> None:
    """Every third of the 3,935 labelled mails (the frozen test half left out): 1,300 mails
    of every folder, service and language; all of them took 45 s of CPU, 3 % of the suite."""
    config = load_config(ROOT / "rules.yaml")
    routing = compiled_routing(config)
    assert routing is not None
    pool = intake_setup._routing_pool(config, routing)
    assert pool is not None
    inputs: list[RoutingInput | None] = [
        routing_input(config, mailbox, parse_message(path.read_bytes()))
        for mailbox, path in list(labelled())[::3]
    ]
    assert len(inputs) > 1000
    ready(pool)
    try:
        ahead = pool.ahead(inputs)
        for facts, decided in zip(inputs, ahead, strict=True):
            assert facts is not None and decided is not None
            here = decide(facts, routing)
            there = decided.decision(lambda: routing)
            # repr writes each float's shortest exact form: equal reprs, equal bits.
            assert there == here and repr(there) == repr(here), facts.subject
        assert pool.failures == 0  # every decision above came from the helper
    finally:
        pool.close()


def test_the_setting_is_validated_and_zero_means_in_process() -> None:
    assert RoutingParallelConfig() == RoutingParallelConfig(processes=1, min_batch=32)
    for wrong in ({"processes": -1}, {"processes": 2}, {"min_batch": 0}, {"chunk": 8}):
        with pytest.raises(ValueError):
            RoutingParallelConfig.model_validate(wrong)
    config = load_config(ROOT / "rules.yaml")
    assert config.routing is not None
    off = config.routing.model_copy(update={"parallel": RoutingParallelConfig(processes=0)})
    assert intake_setup._routing_pool(config.model_copy(update={"routing": off}), None) is None
    assert intake_setup._routing_pool(config, compiled_routing(config)) is not None


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    built = build_app(
        ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=f"sqlite:///{tmp_path}/a.db"
    )
    yield built
    built.close()


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[App]:
    """The same pipeline deciding every mail in-process."""
    built = build_app(
        ROOT / "rules.yaml", FileTransport(tmp_path / "ref"), database=f"sqlite:///{tmp_path}/r.db"
    )
    built.pipeline.routing_pool = None
    yield built
    built.close()


def dev_mails(first_uid: int = 1) -> list[IncomingMail]:
    return [
        IncomingMail(first_uid + n, RECEIVED, path.read_bytes())
        for n, path in enumerate(sorted((CORPUS / "dev").glob("*.eml")))
    ]


def routed(app: App) -> list[Any]:
    return [
        tuple(row) for row in query(app.store.url, f"SELECT {ROUTED} FROM messages ORDER BY uid")
    ]


def outbox(app: App) -> list[Any]:
    sql = (
        "SELECT m.uid, o.recipient, o.kind FROM outbox o JOIN messages m ON m.id = o.message_pk"
        " ORDER BY m.uid, o.id"
    )
    return [tuple(row) for row in query(app.store.url, sql)]


def test_a_small_batch_never_starts_the_helper(app: App) -> None:
    pool = app.pipeline.routing_pool
    assert pool is not None
    app.pipeline.process_batch(*WHERE, dev_mails()[:1])
    app.pipeline.process_batch(*WHERE, dev_mails(2)[: pool.min_batch - 1])
    assert pool._executor is None and pool.pid is None


def counting(pool: RoutingPool) -> list[int]:
    """How many mails each later call of ``pool.ahead`` sent to the helper."""
    sent: list[int] = []
    ahead = pool.ahead

    def counted(inputs: Any) -> Any:
        found = ahead(inputs)
        sent.append(sum(a is not None for a in found))
        return found

    pool.ahead = counted  # type: ignore[method-assign]
    return sent


def test_a_large_batch_is_recorded_as_in_process(app: App, reference: App) -> None:
    pool = app.pipeline.routing_pool
    assert pool is not None
    mails = dev_mails()
    app.pipeline.process_batch(*WHERE, mails[:40])  # starts the helper, decided here meanwhile
    ready(pool)
    sent = counting(pool)
    app.pipeline.process_batch(*WHERE, mails[40:])
    reference.pipeline.process_batch(*WHERE, mails[:40])
    reference.pipeline.process_batch(*WHERE, mails[40:])
    assert sent == [len(mails) - 40]  # the second batch went to the helper, whole
    assert pool.failures == 0
    assert routed(app) == routed(reference)
    assert outbox(app) == outbox(reference)
    assert len(routed(app)) == len(mails)


def test_a_batch_begun_while_the_helper_starts_sends_its_rest_once_it_is_ready(
    app: App, reference: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper takes a second or more to start: a backlog's first batches begin before
    it is ready. Once it is, the rest of a batch in hand goes to it at the next part, not
    decided here to its end (issue 14: the bench's second batch, cut in parts by the
    claims, was decided in-process whole when the helper came a few mails late)."""
    pool = app.pipeline.routing_pool
    assert pool is not None
    monkeypatch.setattr(intake, "MAX_TRANSACTION_SECONDS", 0.0)  # a part a mail
    mails = dev_mails()[: pool.min_batch + 8]
    sent = counting(pool)
    record_part = app.pipeline._record_part
    parts = 0

    def recording(*args: Any) -> Any:
        nonlocal parts
        parts += 1
        done = record_part(*args)
        if parts == 1:  # the batch began before the helper was ready; now it is
            ready(pool)
        return done

    app.pipeline._record_part = recording  # type: ignore[method-assign]
    outcomes = app.pipeline.process_batch(*WHERE, mails)
    reference.pipeline.process_batch(*WHERE, mails)
    assert len(outcomes) == len(mails) == parts
    # All but the first part's mail, at the second part (those with routing facts: a mail
    # that cannot be parsed has none, and is quarantined).
    with_facts = [app.pipeline._facts("general", app.pipeline._prepare(m).parsed) for m in mails]
    assert sent == [sum(facts is not None for facts in with_facts[1:])]
    assert sent[0] >= len(mails) - 2
    assert pool.failures == 0
    assert routed(app) == routed(reference)
    assert outbox(app) == outbox(reference)


def test_a_helper_killed_in_mid_batch_loses_nothing_and_answers_once(
    app: App, reference: App, caplog: pytest.LogCaptureFixture
) -> None:
    pool = app.pipeline.routing_pool
    assert pool is not None
    pool.retry_seconds = 0
    first = ready(pool)
    record_one = app.pipeline._record_one
    seen = 0

    def killing(*args: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == 20:
            os.kill(first, signal.SIGKILL)
        return record_one(*args)

    app.pipeline._record_one = killing  # type: ignore[method-assign]
    mails = dev_mails()
    with caplog.at_level(logging.WARNING, logger="mailbot.app.routing_pool"):
        outcomes = app.pipeline.process_batch(*WHERE, mails)
    assert seen == len(mails) == len(outcomes)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "routing helper failed" in warnings[0].getMessage()
    assert pool.failures == 1 and pool.pid is None and not alive(first)
    reference.pipeline.process_batch(*WHERE, mails)
    assert routed(app) == routed(reference)  # every mail recorded, decided as in-process
    assert outbox(app) == outbox(reference)  # each AR (and forward) queued once
    app.pipeline._record_one = record_one  # type: ignore[method-assign]
    # A later large batch starts a new helper.
    app.pipeline.process_batch(*WHERE, dev_mails(1000)[:40])
    second = ready(pool)
    assert second != first and alive(second)
    app.close()
    assert not alive(second)  # the command's end stops it


def test_a_helper_failure_is_logged_without_the_exception_text(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper decides on citizens' text: a foreign exception's message may quote it,
    so only its type reaches the log (the intake's quarantine keeps the details)."""
    pool = app.pipeline.routing_pool
    assert pool is not None
    ready(pool)
    executor = pool._executor
    assert executor is not None
    leak = ValueError("mot inconnu dans « Titre de séjour de jeanne.martin@example.fr »")
    with caplog.at_level(logging.WARNING, logger="mailbot.app.routing_pool"):
        pool.failed(leak, executor)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.error == "ValueError"  # type: ignore[attr-defined]
    assert "jeanne" not in caplog.text and "Titre" not in caplog.text
    assert pool.failures == 1 and pool.pid is None


def test_the_worker_stops_its_helper_on_sigterm(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    backlog = 40  # one FETCH batch over routing.parallel.min_batch: the helper starts
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    for n in range(backlog):
        imap_user.append(citizen_mail(n, sender=f"usager{n}@example.fr"))
    worker = start_worker(config, "--acknowledge-existing")
    try:
        smtp_server.wait_for(backlog, timeout=90)
        deadline, helpers = time.monotonic() + 60, []
        while not helpers and time.monotonic() < deadline:
            helpers = [pid for pid in children(worker.pid) if is_helper(pid, worker.pid)]
            time.sleep(0.1)
        assert helpers, "no routing helper under the worker"
        err = stop_by_sigterm(worker, timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err
    assert "routing helper failed" not in err  # SIGTERM to the group is the worker's
    time.sleep(0.5)
    assert [pid for pid in helpers if alive(pid)] == []


def is_helper(pid: int, worker: int) -> bool:
    """A routing helper of this worker, forked (its command line) or spawned, told from the
    worker's SMTP process (mail/smtp_process, forked too) by numpy in its memory: the
    helper loads the model, the SMTP process never imports numpy."""
    found = cmdline(pid)
    forked_or_spawned = "spawn_main" in found or found == cmdline(worker)
    return forked_or_spawned and "numpy" in maps(pid)


def maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ------------------------------------------------------------ a helper started with the worker

FORKED_POLL = """
import json, sys
from mailbot.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_poll_once_forks_a_helper_that_decides_every_mail_as_in_process(
    tmp_path: Path,
    dovecot: DovecotServer,
    imap_user: MailUser,
    smtp_server: SmtpServer,
    reference: App,
) -> None:
    """`mailbot poll --once` in a fresh interpreter (its only thread at start-up) forks
    the routing helper before anything else, with the shipped rules and model: the helper
    decides every mail, a batch smaller than ``min_batch`` too, to the bit as in-process
    (the ``routing`` column holds the rules' hits, scores and the model's confidences), and
    the command's own process, on a database at the schema's head (every start but the
    very first, whose new database's time zone offsets import numpy), never imports numpy
    nor the learned half of the routing."""
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    mails = dev_mails()[:12]
    assert len(mails) < load_config(config).routing.parallel.min_batch  # type: ignore[union-attr]
    for mail in mails:
        imap_user.append(mail.raw, internaldate=RECEIVED)
    migrate = [sys.executable, "-m", "mailbot.cli", "--config", str(config), "-q", "migrate"]
    subprocess.run(migrate, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    args = ["--config", str(config), "-v", "poll", "--once", "--acknowledge-existing"]
    run = subprocess.run(
        [sys.executable, "-c", FORKED_POLL, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    found = json.loads(run.stdout.splitlines()[-1])
    assert found["code"] == 0, run.stderr
    ready_line = [line for line in run.stderr.splitlines() if "routing helper ready" in line]
    assert len(ready_line) == 1 and "method=fork" in ready_line[0], run.stderr
    assert "routing helper failed" not in run.stderr
    assert "routing helper not ready" not in run.stderr
    parent = set(found["modules"])
    assert parent & {"numpy", "mailbot.core.classifier", "mailbot.core.combine"} == set()
    polled = load_config(config).database
    reference.pipeline.process_batch(*WHERE, mails)
    got = [tuple(row) for row in query(polled, f"SELECT {ROUTED} FROM messages ORDER BY uid")]
    assert got == routed(reference)
    assert len(got) == len(mails) and any(row[2] != "general" for row in got)


def test_a_worker_killed_9_leaves_no_helper(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    """The helper ignores SIGINT and SIGTERM (the worker's to handle): a worker killed -9
    cannot stop it, and a forked helper holds its own ends of the executor's pipes. It
    watches its parent and exits within seconds."""
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    worker = start_worker(config)
    try:
        deadline, helpers = time.monotonic() + 60, []
        while not helpers and time.monotonic() < deadline:
            helpers = [pid for pid in children(worker.pid) if is_helper(pid, worker.pid)]
            time.sleep(0.1)
        assert len(helpers) == 1, "no routing helper under the worker"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    deadline = time.monotonic() + 5
    while alive(helpers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(helpers[0]), "the routing helper outlived its worker"


def test_a_helper_started_with_the_worker_that_is_late_or_fails_costs_time_only(
    tmp_path: Path,
    reference: App,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spawned (a process with other threads: the web console's): a mail waits
    ``start_seconds`` at most for it, then it and the next are decided in-process (logged
    once), and the pipeline compiles the routing then, not before. Once ready it takes every
    mail again; killed, the rest is decided in-process and its replacement is for large
    batches only."""
    config = load_config(ROOT / "rules.yaml")
    monkeypatch.setattr(routing_pool.threading, "active_count", lambda: 2)
    pool = start_routing_helper(config)
    monkeypatch.undo()
    assert pool is not None and pool.start_method == "spawn" and pool.from_start
    pool.start_seconds = 0.0  # late at once: a spawned helper takes a second or more
    built = app_from_config(
        config, FileTransport(tmp_path / "out"), f"sqlite:///{tmp_path}/e.db", routing_pool=pool
    )
    try:
        assert built.pipeline._routing is None and pool.made_for is None  # nothing compiled
        mails = dev_mails()
        with caplog.at_level(logging.INFO, logger="mailbot.app.routing_pool"):
            built.pipeline.process_batch(*WHERE, mails[:1])
            built.pipeline.process_batch(*WHERE, mails[1:2])
        late = [r for r in caplog.records if "not ready" in r.getMessage()]
        assert len(late) == 1
        assert pool.made_for is not None and pool.made_for is built.pipeline.routing
        ready(pool)
        sent = counting(pool)
        built.pipeline.process_batch(*WHERE, mails[2:3])  # one mail: to the helper
        assert sent == [1]
        os.kill(pool.pid or 0, signal.SIGKILL)
        built.pipeline.process_batch(*WHERE, mails[3:])
        assert pool.failures == 1 and not pool.from_start
        reference.pipeline.process_batch(*WHERE, mails)
        assert routed(built) == routed(reference)
        assert outbox(built) == outbox(reference)
    finally:
        built.close()
