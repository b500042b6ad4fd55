"""The worker's SMTP client in a process of its own (mail/smtp_process), against the real
aiosmtpd server and, for a drop at one precise point, the scripted responder.

What the outbox relies on holds across the process boundary: ``before`` (the claim) runs
in the batch's order before a mail can leave, never more than ``ahead`` mails beyond the
results; every approved mail's ``after`` is told once, and the truth; a mail never started
is told so (as never tried, or retried later), one the child may have sent when it died is
uncertain, never "not sent".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from scripted import ScriptedSmtpServer
from servers import DovecotServer, MailUser, SmtpServer, free_port
from test_e2e import citizen_mail, write_config
from test_smtp_connection import envelopes, once_each, scripted_config
from test_worker import start_worker, stop_by_sigterm

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError
from mailbot.mail.envelope import Envelope
from mailbot.mail.smtp_process import ProcessTransport

pytestmark = pytest.mark.servers


class Recorder:
    """``before`` and ``after`` of one batch: the order asked, what each mail was told,
    and the most mails ever approved without a result."""

    def __init__(self, veto: Callable[[Envelope], bool] = lambda _e: False) -> None:
        self.veto = veto
        self.asked: list[str] = []
        self.results: dict[str, DeliveryError | None] = {}
        self.most_ahead = 0
        self._approved = 0

    def before(self, envelope: Envelope) -> bool:
        self.asked.append(envelope.name)
        if self.veto(envelope):
            return False
        self._approved += 1
        self.most_ahead = max(self.most_ahead, self._approved - len(self.results))
        return True

    def after(self, envelope: Envelope, error: DeliveryError | None) -> None:
        assert envelope.name not in self.results  # told once
        self.results[envelope.name] = error


@pytest.fixture
def transport(smtp_server: SmtpServer) -> Iterator[ProcessTransport]:
    sender = ProcessTransport(smtp_server.smtp_config(), ahead=8)
    sender.start()
    yield sender
    sender.close()


def child_pid(sender: ProcessTransport) -> int:
    assert sender._child is not None
    pid = sender._child.process.pid
    assert pid is not None
    return pid


def test_a_batch_leaves_once_each_claimed_in_order_never_far_ahead(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    batch = envelopes("proc", 60)
    seen = Recorder()
    transport.send_batch(batch, seen.before, seen.after)
    assert seen.asked == [e.name for e in batch]
    assert seen.results == {e.name: None for e in batch}
    assert once_each([m.raw for m in smtp_server.messages], [batch])
    assert 1 <= seen.most_ahead <= 8
    assert os.getpid() != child_pid(transport)


class WindowRecorder(Recorder):
    """Also the most mails to citizens ever approved without a result."""

    def __init__(self) -> None:
        super().__init__()
        self.most_citizens = 0
        self._citizens: set[str] = set()

    def before(self, envelope: Envelope) -> bool:
        if envelope.at_most_once:
            self._citizens.add(envelope.name)
        waiting = self._citizens - set(self.results)
        self.most_citizens = max(self.most_citizens, len(waiting))
        return super().before(envelope)


def test_the_window_counts_mails_to_citizens_and_twice_as_many_in_all(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    """A transfer's forward beside each AR does not halve the window (the child then
    waited on claims); the crash bound, in mails to citizens, stays ``ahead``; mail that is
    all internal is held to twice ``ahead``. Judged at once at the batch's start, so each
    bound is reached, not only kept."""
    mixed = [replace(e, at_most_once=n % 2 == 0) for n, e in enumerate(envelopes("mix", 60))]
    seen = WindowRecorder()
    transport.send_batch(mixed, seen.before, seen.after)
    assert seen.results == {e.name: None for e in mixed}
    assert seen.most_citizens == 8
    assert seen.most_ahead == 15  # 8 ARs and the 7 forwards between them (8 before)
    internal = [replace(e, at_most_once=False) for e in envelopes("int", 40)]
    inside = WindowRecorder()
    transport.send_batch(internal, inside.before, inside.after)
    assert inside.results == {e.name: None for e in internal}
    assert inside.most_citizens == 0
    assert inside.most_ahead == 16
    assert once_each([m.raw for m in smtp_server.messages], [mixed, internal])


def test_a_vetoed_mail_never_leaves_and_is_told_nothing(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    batch = envelopes("veto", 20)
    seen = Recorder(veto=lambda e: int(e.name.rsplit("-", 1)[1]) % 3 == 0)
    transport.send_batch(batch, seen.before, seen.after)
    left = [e for e in batch if not seen.veto(e)]
    assert set(seen.results) == {e.name for e in left}
    assert once_each([m.raw for m in smtp_server.messages], [left])


def test_refusals_keep_their_meaning(smtp_server: SmtpServer, transport: ProcessTransport) -> None:
    smtp_server.reject_next(1)
    batch = envelopes("refused", 3)
    seen = Recorder()
    transport.send_batch(batch, seen.before, seen.after)
    refused = seen.results["refused-0"]
    assert refused is not None and refused.permanent and refused.code == 550
    assert not refused.uncertain and not refused.interrupted
    smtp_server.fail_next(1)
    seen = Recorder()
    transport.send_batch(envelopes("deferred", 2), seen.before, seen.after)
    deferred = seen.results["deferred-0"]
    assert deferred is not None and not deferred.permanent and deferred.code == 451
    assert seen.results["deferred-1"] is None


def test_no_server_settles_the_mails_given_as_retried_later() -> None:
    """No connection: the batch raises (the outbox retries the mails it never judged) and
    each mail judged and approved is told a temporary error, neither uncertain nor as
    never tried — the same outcome as the in-process transport's."""
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout_seconds=5)
    sender = ProcessTransport(config, ahead=4)
    try:
        seen = Recorder()
        with pytest.raises(DeliveryError) as raised:
            sender.send_batch(envelopes("down", 10), seen.before, seen.after)
        assert not raised.value.permanent and not raised.value.uncertain
        assert len(seen.asked) == 4
        for error in seen.results.values():
            assert error is not None and not error.uncertain and not error.permanent
        assert set(seen.results) == set(seen.asked)
    finally:
        sender.close()


def test_a_stop_mid_batch_tells_every_mail_given_and_starts_no_other(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    stop = threading.Event()
    seen = Recorder()

    def after(envelope: Envelope, error: DeliveryError | None) -> None:
        seen.after(envelope, error)
        if len(seen.results) == 5:
            stop.set()

    batch = envelopes("stop", 200)
    started = time.monotonic()
    transport.send_batch(batch, seen.before, after, stop)
    assert time.monotonic() - started < 5
    received = {m.raw for m in smtp_server.messages}
    assert set(seen.results) == set(seen.asked)  # every mail given is told
    for envelope in batch:
        if envelope.name not in seen.results:
            assert envelope.raw not in received  # never judged, never left
            continue
        error = seen.results[envelope.name]
        if envelope.raw in received:
            assert error is None or error.uncertain
        else:
            assert error is not None and (error.interrupted or error.uncertain)
    assert len(seen.asked) < len(batch)
    # The next batch (a stop is per batch in the child) goes through.
    seen = Recorder()
    transport.send_batch(envelopes("after-stop", 3), seen.before, seen.after)
    assert list(seen.results.values()) == [None, None, None]


def test_a_child_killed_mid_batch_leaves_its_mails_uncertain_and_is_replaced(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    """The child cannot say which of the mails it held left: each is uncertain (never
    resent to a citizen), never 'not sent'; the mails never judged are the caller's to
    retry (the DeliveryError); the next batch has a new child."""
    first = child_pid(transport)
    seen = Recorder()

    def after(envelope: Envelope, error: DeliveryError | None) -> None:
        seen.after(envelope, error)
        if len(seen.results) == 8:
            os.kill(first, signal.SIGKILL)

    batch = envelopes("killed", 200)
    with pytest.raises(DeliveryError) as raised:
        transport.send_batch(batch, seen.before, after)
    assert not raised.value.uncertain and not raised.value.permanent
    assert set(seen.results) == set(seen.asked)
    lost = [name for name, error in seen.results.items() if error is not None]
    assert lost and all(seen.results[name].uncertain for name in lost)  # type: ignore[union-attr]
    assert len(seen.asked) < len(batch)
    seen = Recorder()
    transport.send_batch(envelopes("next", 3), seen.before, seen.after)
    assert list(seen.results.values()) == [None, None, None]
    assert child_pid(transport) != first


def test_a_drop_after_the_final_dot_stays_uncertain_across_the_pipe() -> None:
    with ScriptedSmtpServer() as server:
        sender = ProcessTransport(scripted_config(server))
        try:
            seen = Recorder()
            sender.send_batch(envelopes("first", 1), seen.before, seen.after)
            server.fail("end", "drop")
            sender.send_batch(envelopes("second", 2), seen.before, seen.after)
            error = seen.results["second-0"]
            assert error is not None and error.uncertain and not error.permanent
            assert seen.results["second-1"] is None
        finally:
            sender.close()


def test_the_child_ignores_sigterm_and_close_quits_and_ends_it(
    smtp_server: SmtpServer,
) -> None:
    """systemd and a terminal signal the whole group: the worker, not its SMTP process,
    decides when sending stops. ``close`` QUITs the kept connection and ends the child."""
    sender = ProcessTransport(smtp_server.smtp_config())
    seen = Recorder()
    sender.send_batch(envelopes("up", 1), seen.before, seen.after)  # the child is up
    pid = child_pid(sender)
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    seen = Recorder()
    sender.send_batch(envelopes("term", 2), seen.before, seen.after)
    assert list(seen.results.values()) == [None, None]
    assert child_pid(sender) == pid
    process = sender._child.process  # type: ignore[union-attr]
    sender.close()
    assert not process.is_alive()
    smtp_server.wait_for_command("QUIT", 1)


def test_the_child_exits_when_the_worker_is_killed(smtp_server: SmtpServer) -> None:
    """A kill -9 of the worker leaves no SMTP process behind (forked, as `run` does)."""
    config = smtp_server.smtp_config().model_dump_json()
    code = textwrap.dedent(
        f"""
        import sys, time
        from mailbot.config import SmtpConfig
        from mailbot.mail.smtp_process import ProcessTransport
        sender = ProcessTransport(SmtpConfig.model_validate_json({config!r}))
        sender.start()
        print(sender._child.process.pid, flush=True)
        time.sleep(60)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        pid = int(worker.stdout.readline())
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        worker.kill()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failing_claim_ends_the_batch_and_no_later_mail_leaves(
    smtp_server: SmtpServer, transport: ProcessTransport
) -> None:
    """``before`` raised (the database refused a claim): the error reaches the caller, no
    mail after it leaves (the child, which may wait for verdicts, is ended rather than
    left to read the next batch's as this one's), and the next batch has a new child."""
    first = child_pid(transport)
    batch = envelopes("claim", 40)

    def before(envelope: Envelope) -> bool:
        if envelope.name == "claim-12":
            raise RuntimeError("database is locked")
        return True

    with pytest.raises(RuntimeError):
        transport.send_batch(batch, before, lambda _e, _error: None)
    received = {m.raw for m in smtp_server.messages}
    assert not received & {e.raw for e in batch[12:]}
    seen = Recorder()
    transport.send_batch(envelopes("then", 3), seen.before, seen.after)
    assert list(seen.results.values()) == [None, None, None]
    assert child_pid(transport) != first


@pytest.mark.parametrize("own_process", [True, False], ids=["own-process", "in-worker"])
def test_the_worker_sends_from_its_smtp_process_unless_told_not_to(
    tmp_path: Path,
    dovecot: DovecotServer,
    imap_user: MailUser,
    smtp_server: SmtpServer,
    own_process: bool,
) -> None:
    """`mailbot run` sends its AR over a connection a child process of it holds (the
    connection is kept open after the batch: its owner is found by its socket), and
    ends it when it stops (SIGTERM)."""
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["smtp"]["own_process"] = own_process
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    imap_user.append(citizen_mail(1))
    worker = start_worker(config, "--acknowledge-existing")
    try:
        (ar,) = smtp_server.wait_for(1, timeout=120)
        assert ar.peer is not None
        owner = socket_owner(ar.peer[1], smtp_server.port)
        if own_process:
            assert owner != worker.pid and parent_of(owner) == worker.pid
        else:
            assert owner == worker.pid
    finally:
        err = stop_by_sigterm(worker)
    assert worker.returncode == 0, err
    assert not alive(owner)
    smtp_server.wait_for_command("QUIT", 1)


def socket_owner(port: int, server_port: int) -> int:
    """The process holding the loopback TCP socket from local ``port`` to ``server_port``.
    Both ends: a local port alone may be another connection's too (Linux reuses an
    ephemeral port towards another destination: a test running beside this one)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                if (local, remote) == (port, server_port):
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if {f"socket:[{inode}]" for inode in inodes} & links:
            return int(pid)
    raise AssertionError(f"no process holds a socket on port {port}")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
