"""mailbot/cpu.py: a worker's threads share one CPU, its helper processes keep every CPU
(issue 14). A real `mailbot run` against Dovecot and aiosmtpd, read from /proc."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, poll, write_config
from test_worker import start_worker, stop_by_sigterm

from mailbot.config import PollingConfig
from mailbot.cpu import chosen, keep_worker_on_one_cpu

ROOT = Path(__file__).resolve().parent.parent
USABLE = frozenset(os.sched_getaffinity(0))
SEVERAL = pytest.mark.skipif(len(USABLE) < 2, reason="one CPU: nothing to keep to")


def affinity(pid: int, thread: int | None = None) -> frozenset[int]:
    return frozenset(os.sched_getaffinity(thread if thread is not None else pid))


def threads_of(pid: int) -> dict[int, frozenset[int]]:
    """Each thread's CPUs; a thread that ends while they are read is left out."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            found[int(tid)] = affinity(pid, int(tid))
    return found


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as children,
        ):
            found += [int(child) for child in children.read().split()]
    return found


def test_auto_keeps_the_only_worker_of_a_sqlite_database_on_its_last_cpu() -> None:
    assert chosen("auto", {0, 1}, sole_worker=True) == 1
    assert chosen("auto", {2, 5, 7}, sole_worker=True) == 7


def test_auto_leaves_free_a_worker_that_may_share_its_host() -> None:
    # PostgreSQL: several workers on one host would all take the same CPU.
    assert chosen("auto", {0, 1}, sole_worker=False) is None


def test_a_cpu_number_is_kept_to_only_where_the_worker_may_run() -> None:
    assert chosen(0, {0, 1}, sole_worker=False) == 0
    assert chosen(1, {0, 1}, sole_worker=True) == 1
    assert chosen(3, {0, 1}, sole_worker=True) is None  # a container given other CPUs


def test_a_cpu_the_worker_may_not_use_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = threads_of(os.getpid())
    missing = max(USABLE) + 1
    with caplog.at_level(logging.WARNING, logger="mailbot.cpu"):
        assert keep_worker_on_one_cpu(missing, "sqlite:///x.db") is None
    assert threads_of(os.getpid()) == before
    said = [r for r in caplog.records if "not a CPU this worker may use" in r.getMessage()]
    assert len(said) == 1 and said[0].cpu == missing  # type: ignore[attr-defined]


def test_off_one_cpu_or_no_affinity_leaves_the_worker_free() -> None:
    assert chosen("off", {0, 1}, sole_worker=True) is None
    assert chosen("auto", {0}, sole_worker=True) is None
    assert chosen(0, {0}, sole_worker=True) is None
    assert chosen("auto", None, sole_worker=True) is None


def test_worker_cpu_takes_auto_off_or_a_number_and_names_what_it_expects() -> None:
    assert PollingConfig().worker_cpu == "auto"
    said = yaml.safe_load("worker_cpu: off")  # YAML reads off as false
    assert PollingConfig(**said).worker_cpu == "off"
    assert PollingConfig(worker_cpu=2).worker_cpu == 2
    for wrong in (True, -1, "1", "x", 1.5):
        with pytest.raises(ValueError, match=r'expected "auto", "off" or a CPU number'):
            PollingConfig.model_validate({"worker_cpu": wrong})


def running_worker(
    config: Path, smtp_server: SmtpServer
) -> tuple[dict[int, frozenset[int]], dict[int, frozenset[int]]]:
    """Start `mailbot run` on one waiting mail; once its AR is sent (its helpers forked,
    its threads running), the CPUs of each of its threads and of each of its helpers; then
    a clean stop."""
    worker = start_worker(config, "--acknowledge-existing")
    try:
        smtp_server.wait_for(1, timeout=120)  # a start: 30 s of wall at a load of 8
        threads = threads_of(worker.pid)
        helpers = {child: affinity(child) for child in children_of(worker.pid)}
        err = stop_by_sigterm(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    return threads, helpers


def test_a_worker_keeps_its_threads_on_one_cpu_and_its_helpers_on_every_cpu(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    imap_user.append(citizen_mail(1))
    threads, helpers = running_worker(config, smtp_server)
    # The delivery thread, the IMAP connections', the scheduler's: all with the intake's.
    assert len(threads) >= 4
    kept = frozenset({max(USABLE)}) if len(USABLE) >= 2 else USABLE
    assert set(threads.values()) == {kept}
    # The routing helper and the SMTP process: every CPU the worker could use.
    assert len(helpers) >= 2
    assert set(helpers.values()) == {USABLE}


def test_worker_cpu_off_leaves_every_thread_free(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    polling = {"worker_cpu": "off"}
    config = write_config(
        tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, polling=polling
    )
    imap_user.append(citizen_mail(1))
    threads, helpers = running_worker(config, smtp_server)
    assert set(threads.values()) == {USABLE}
    assert set(helpers.values()) == {USABLE}


# A worker that kept to one CPU, then starts its helpers (as after a crash of the first
# ones): each goes back to every CPU. Prints the children's CPUs once they have, or after
# 30 s as they are.
LATE_HELPERS = """
import json, os, sys, time
from mailbot.app.routing_pool import start_routing_helper
from mailbot.config import load_config
from mailbot.cpu import keep_worker_on_one_cpu
from mailbot.mail.smtp_process import start_smtp_process

usable = os.sched_getaffinity(0)
config = load_config(sys.argv[1])
kept = keep_worker_on_one_cpu(config.polling.worker_cpu, config.database)
smtp, helper = start_smtp_process(config), start_routing_helper(config)
def children():
    found = []
    for tid in os.listdir("/proc/self/task"):
        found += open(f"/proc/self/task/{tid}/children").read().split()
    return {int(pid): sorted(os.sched_getaffinity(int(pid))) for pid in found}
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    seen = children()
    if len(seen) >= 2 and all(set(cpus) == usable for cpus in seen.values()):
        break
    time.sleep(0.05)
print(json.dumps({"kept": kept, "self": sorted(os.sched_getaffinity(0)), "children": seen}))
helper.close()
smtp.close()
"""


@SEVERAL
def test_a_helper_started_after_the_worker_kept_to_one_cpu_runs_on_every_cpu(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", LATE_HELPERS, str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["kept"] == max(USABLE)
    assert seen["self"] == [max(USABLE)]
    assert len(seen["children"]) >= 2
    assert all(cpus == sorted(USABLE) for cpus in seen["children"].values())


@SEVERAL
def test_a_poll_run_in_a_process_that_goes_on_gives_its_cpus_back(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    imap_user.append(citizen_mail(1))
    before = threads_of(os.getpid())
    kept: list[frozenset[int]] = []
    # What the poll's own thread had while it ran: one CPU.
    started = threading.Thread.start

    def noted(self: threading.Thread) -> None:
        kept.append(affinity(os.getpid(), threading.get_native_id()))
        started(self)

    threading.Thread.start = noted  # type: ignore[method-assign]
    try:
        assert poll(config, acknowledge_existing=True) == 0
    finally:
        threading.Thread.start = started  # type: ignore[method-assign]
    assert smtp_server.wait_for(1, timeout=30)
    assert {max(USABLE)} in [set(cpus) for cpus in kept]
    after = threads_of(os.getpid())
    assert {after[tid] for tid in before if tid in after} == {USABLE}
