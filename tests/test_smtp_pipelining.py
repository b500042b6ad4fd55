"""PIPELINING (RFC 2920, issue 14 point 7) against the real aiosmtpd server, which reads
pipelined commands in order (the fixture offers PIPELINING in its EHLO, as Postfix does).

Each mail of a pipelined batch keeps its own result: a refused recipient fails that mail
only, a drop after a "." leaves that mail uncertain and the next one is sent again on a new
connection, and the bytes arrive as they were given (dot-stuffing, SMTPUTF8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from servers import SmtpServer

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError
from mailbot.mail import pipelining, smtp, smtp_commands, smtp_session
from mailbot.mail.smtp import Envelope, SmtpTransport

pytestmark = pytest.mark.servers


def mail(n: int, recipient: str = "usager@example.org", body: bytes = b"Bonjour\r\n") -> Envelope:
    head = f"Message-ID: <p-{n}@example.org>\r\nSubject: pipelined {n}\r\n\r\n".encode()
    return Envelope("mailbot@example.org", recipient, head + body, name=f"m{n}")


class Results:
    """What ``before`` and ``after`` were told, in order; each mail reported once."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.told: dict[str, DeliveryError | None] = {}

    def before(self, envelope: Envelope) -> bool:
        assert envelope.name not in self.asked  # a mail sent again is not asked twice
        self.asked.append(envelope.name)
        return True

    def after(self, envelope: Envelope, error: DeliveryError | None) -> None:
        assert envelope.name in self.asked
        assert envelope.name not in self.told
        self.told[envelope.name] = error


def send(server: SmtpServer, batch: Sequence[Envelope]) -> Results:
    results = Results()
    transport = SmtpTransport(server.smtp_config())
    try:
        transport.send_batch(batch, results.before, results.after)
    finally:
        transport.close()
    return results


@pytest.fixture(autouse=True)
def pipelined(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the mails sent on the pipelined path (``Pipelined``): the tests say which."""
    counted: list[int] = []
    original = pipelining.Pipelined._one

    async def one(self: pipelining.Pipelined, job: pipelining.Job, *args: object) -> bool:
        counted.append(1)
        return await original(self, job, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipelining.Pipelined, "_one", one)
    return counted


@pytest.fixture
def plain_server() -> Iterator[SmtpServer]:
    """An aiosmtpd server without SMTPUTF8."""
    server = SmtpServer(smtputf8=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_refused_recipient_mid_batch_fails_that_mail_only(
    smtp_server: SmtpServer, pipelined: list[int]
) -> None:
    smtp_server.refused.add("nobody@example.org")
    batch = [mail(n) for n in range(3)]
    batch += [mail(3, "nobody@example.org"), *(mail(n) for n in range(4, 7))]
    results = send(smtp_server, batch)
    assert results.asked == [f"m{n}" for n in range(7)]
    refused = results.told.pop("m3")
    assert refused is not None and refused.permanent and refused.code == 550
    assert "RCPT TO" in str(refused)
    assert results.told == {f"m{n}": None for n in (0, 1, 2, 4, 5, 6)}
    received = smtp_server.wait_for(6)
    assert [r.raw for r in received] == [e.raw for e in batch if e.name != "m3"]
    assert len({r.peer for r in received}) == 1  # RSET, and the same connection goes on
    assert len(pipelined) == 7


def test_a_drop_mid_batch_leaves_one_mail_uncertain_and_sends_the_rest_once(
    smtp_server: SmtpServer, pipelined: list[int]
) -> None:
    smtp_server.drop_after(2)  # the third mail is taken, then the connection cut
    batch = [mail(n) for n in range(6)]
    results = send(smtp_server, batch)
    uncertain = results.told.pop("m2")
    assert uncertain is not None and uncertain.uncertain
    # The fourth mail's commands were in flight, its "." never left: sent again at once.
    assert results.told == {f"m{n}": None for n in (0, 1, 3, 4, 5)}
    received = smtp_server.wait_for(6)
    assert sorted(r.raw for r in received) == sorted(e.raw for e in batch)  # each once
    assert len({r.peer for r in received}) == 2
    assert len(pipelined) == 7  # six mails, one of them twice


def test_dot_stuffing_and_line_ends_arrive_as_given(smtp_server: SmtpServer) -> None:
    tricky = b".leading dot\r\n..two dots\r\n.\r\nbetween\r\n. \r\nlast line without CRLF"
    bare = b"bare\nLF line ends\n.dot after LF\n"
    batch = [mail(0, body=tricky), mail(1, body=bare), mail(2)]
    results = send(smtp_server, batch)
    assert results.told == {"m0": None, "m1": None, "m2": None}
    received = smtp_server.wait_for(3)
    assert received[0].raw == batch[0].raw + b"\r\n"  # ended with CRLF, nothing else
    assert received[1].raw == batch[1].raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    assert received[2].raw == batch[2].raw


def test_smtputf8_per_mail_in_a_pipelined_batch(smtp_server: SmtpServer) -> None:
    utf8 = mail(1, "usagère@example.org", body="Réponse à Zoé\r\n".encode())
    batch = [mail(0), utf8, mail(2)]
    results = send(smtp_server, batch)
    assert results.told == {"m0": None, "m1": None, "m2": None}
    received = smtp_server.wait_for(3)
    assert received[1].rcpt_tos == ("usagère@example.org",)
    assert "SMTPUTF8" in received[1].mail_options
    assert "SMTPUTF8" not in received[0].mail_options
    assert [r.raw for r in received] == [e.raw for e in batch]


def test_a_utf8_mail_facing_a_server_without_smtputf8_fails_alone(
    plain_server: SmtpServer,
) -> None:
    batch = [mail(0), mail(1, "usagère@example.org"), mail(2)]
    results = send(plain_server, batch)
    refused = results.told.pop("m1")
    assert refused is not None and refused.permanent and "SMTPUTF8" in str(refused)
    assert results.told == {"m0": None, "m2": None}
    assert [r.raw for r in plain_server.wait_for(2)] == [batch[0].raw, batch[2].raw]


def test_without_pipelining_the_same_batch_goes_one_command_at_a_time(
    pipelined: list[int],
) -> None:
    with SmtpServer(pipelining=False) as server:
        server.refused.add("nobody@example.org")
        batch = [mail(0), mail(1, "nobody@example.org"), mail(2)]
        results = send(server, batch)
        refused = results.told.pop("m1")
        assert refused is not None and refused.permanent
        assert results.told == {"m0": None, "m2": None}
        assert [r.raw for r in server.wait_for(2)] == [batch[0].raw, batch[2].raw]
    assert pipelined == []


def test_an_address_aiosmtplib_refuses_to_write_fails_that_mail_only(
    smtp_server: SmtpServer,
) -> None:
    batch = [mail(0), mail(1, '"x\ny"@example.org'), mail(2)]
    results = send(smtp_server, batch)
    refused = results.told.pop("m1")
    assert refused is not None and "not permitted in an SMTP mailbox" in str(refused)
    assert results.told == {"m0": None, "m2": None}
    received = smtp_server.wait_for(2)
    assert [r.rcpt_tos for r in received] == [("usager@example.org",)] * 2


def test_a_large_batch_is_shared_by_two_connections_each_mail_once(
    smtp_server: SmtpServer, pipelined: list[int]
) -> None:
    """From ``SHARED_FROM`` mails on, a second connection takes mails from the same queue:
    the round trips overlap. Each mail is still asked for in order (its claim), sent once
    and told once."""
    count = smtp.SHARED_FROM * 2
    batch = [mail(n) for n in range(count)]
    results = send(smtp_server, batch)
    assert results.asked == [f"m{n}" for n in range(count)]
    assert results.told == {f"m{n}": None for n in range(count)}
    received = smtp_server.wait_for(count)
    assert sorted(r.raw for r in received) == sorted(e.raw for e in batch)  # each once
    assert len({r.peer for r in received}) == 2
    assert len(pipelined) == count
    assert len(smtp_server.commands("QUIT")) == 2  # both closed politely


def test_a_small_batch_keeps_to_one_connection(smtp_server: SmtpServer) -> None:
    batch = [mail(n) for n in range(smtp.SHARED_FROM - 1)]
    send(smtp_server, batch)
    received = smtp_server.wait_for(len(batch))
    assert len({r.peer for r in received}) == 1


def test_a_drop_in_a_shared_batch_leaves_one_mail_uncertain_and_sends_the_rest_once(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.drop_after(7)  # one of the two connections is cut after the eighth mail
    count = smtp.SHARED_FROM * 2
    batch = [mail(n) for n in range(count)]
    results = send(smtp_server, batch)
    uncertain = [name for name, error in results.told.items() if error is not None]
    assert len(uncertain) == 1 and results.told[uncertain[0]].uncertain  # type: ignore[union-attr]
    assert set(results.told) == {f"m{n}" for n in range(count)}
    received = smtp_server.wait_for(count)
    assert sorted(r.raw for r in received) == sorted(e.raw for e in batch)  # each once


def stop_mid_shared_batch(smtp_server: SmtpServer) -> Results:
    """A batch shared by two connections, stopped as its eleventh mail is asked for; each
    mail let go is told once (sent, interrupted or uncertain), none is sent after the stop,
    none twice, the rest were never asked for."""
    import threading

    stop = threading.Event()
    results = Results()

    def before(envelope: Envelope) -> bool:
        if len(results.asked) == 10:
            stop.set()
        return results.before(envelope)

    count = smtp.SHARED_FROM * 3
    batch = [mail(n) for n in range(count)]
    transport = SmtpTransport(smtp_server.smtp_config())
    try:
        transport.send_batch(batch, before, results.after, stop)
    finally:
        transport.close()
    assert set(results.told) == set(results.asked)
    assert 10 < len(results.asked) < count
    sent = {name for name, error in results.told.items() if error is None}
    cut = [e for e in results.told.values() if e is not None]
    assert all(e.interrupted or e.uncertain for e in cut)
    received = [r.raw for r in smtp_server.messages]
    by_name = {e.name: e.raw for e in batch}
    assert {by_name[name] for name in sent} <= set(received)
    assert len(received) == len(set(received))  # none twice
    return results


def test_a_shutdown_mid_shared_batch_tells_every_mail_once(smtp_server: SmtpServer) -> None:
    """The stop cuts both connections (``stop_mid_shared_batch`` says what holds)."""
    stop_mid_shared_batch(smtp_server)


def test_a_shutdown_finding_the_batch_waiting_for_its_helper_ends_the_batch_cleanly(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop is looked at every ``_STOP_POLL``: it can find the batch done with its own
    mails and waiting for its helper connection to end, outside any network step. That
    wait is not cut (a CancelledError escaped ``send_batch`` there, the CI failure of stop
    38): the batch ends, every mail let go told once, none sent twice."""
    import asyncio

    original = smtp_session._ended

    async def slow_end(helper: asyncio.Task[None] | None) -> None:
        await asyncio.sleep(smtp_session._STOP_POLL * 4)  # the stop's watcher runs meanwhile
        await original(helper)

    monkeypatch.setattr(smtp_session, "_ended", slow_end)
    stop_mid_shared_batch(smtp_server)


def test_a_stop_cuts_a_task_outside_the_network_at_its_next_step() -> None:
    """A task the stop finds elsewhere than in a network step is not cancelled there; its
    next step is cut (``Stopped``) without starting; a task in a step is cut at once."""
    import asyncio
    import threading

    stop = threading.Event()
    config = SmtpConfig(host="127.0.0.1", port=25, security="none", timeout_seconds=10)
    session = smtp_session.Session(config, stop)
    started: list[str] = []

    async def network(name: str) -> str:
        started.append(name)
        await asyncio.sleep(30)
        return name

    async def outside(pause: asyncio.Event) -> str:
        await pause.wait()  # not a step: the stop must not cancel this
        try:
            await session.step(network("after the pause"))
        except smtp_commands.Stopped:
            return "cut at its next step"
        return "not cut"

    async def inside() -> str:
        try:
            await session.step(network("in a step"))
        except smtp_commands.Stopped:
            return "cut in its step"
        return "not cut"

    async def main() -> list[str]:
        pause = asyncio.Event()
        tasks = [asyncio.ensure_future(outside(pause)), asyncio.ensure_future(inside())]
        session.tasks.extend(tasks)
        watcher = asyncio.ensure_future(session._watch_stop())
        await asyncio.sleep(0)
        stop.set()
        await watcher
        pause.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == ["cut at its next step", "cut in its step"]
    assert started == ["in a step"]  # the owed step never started


def test_a_stop_whose_cancel_is_swallowed_cuts_the_next_step() -> None:
    """Python 3.11's ``wait_for`` (aiosmtplib reads each reply through it) swallows a cancel
    that meets a reply just arrived: the step's result stands, and the stop still cuts the
    task, at its next step, with no cancel left pending on it."""
    import asyncio
    import threading

    stop = threading.Event()
    config = SmtpConfig(host="127.0.0.1", port=25, security="none", timeout_seconds=10)
    session = smtp_session.Session(config, stop)

    async def main() -> list[object]:
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def mailer() -> list[object]:
            told: list[object] = []
            try:
                told.append(await session.step(asyncio.wait_for(reply, 10)))
                told.append(await session.step(asyncio.sleep(30, "next reply")))
            except smtp_commands.Stopped:
                told.append("cut")
            told.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
            return told

        task = asyncio.ensure_future(mailer())
        session.tasks.append(task)
        await asyncio.sleep(0)
        reply.set_result("250 OK")  # the reply is in, the task not woken yet
        stop.set()
        await session._watch_stop()  # the stop seen in the same turn of the loop
        return await task

    told = asyncio.run(main())
    assert told[-2:] == ["cut", 0]
    assert told[:-2] in ([], ["250 OK"])  # 3.11 keeps the reply, 3.12 cuts the step


def test_a_short_body_leaves_with_its_final_dot_in_one_write(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AR or a forward of a short mail fits in one write with its ".": one system call
    (and one turn of the GIL) per mail fewer than the body, then the "." (issue 14). The
    bytes arrive as they were given."""
    written: list[bytes] = []
    original = pipelining.Pipelined._write

    def write(self: pipelining.Pipelined, transport: object, data: bytes, replies: int = 0) -> None:
        written.append(data)
        original(self, transport, data, replies)  # type: ignore[arg-type]

    monkeypatch.setattr(pipelining.Pipelined, "_write", write)
    batch = [mail(n, body=b"Bonjour,\r\n" * 300) for n in range(3)]
    results = send(smtp_server, batch)
    assert results.told == {"m0": None, "m1": None, "m2": None}
    assert [r.raw for r in smtp_server.wait_for(3)] == [e.raw for e in batch]
    bodies = [data for data in written if b"Bonjour" in data]
    assert bodies == [e.raw + b".\r\n" for e in batch]
    assert b".\r\n" not in written


def test_a_mail_s_replies_are_waited_for_once_not_one_by_one(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail's "." reply and the next mail's MAIL, RCPT and DATA replies come back in up
    to four segments; the client waits once for all four (one turn of the event loop, one
    timer), and takes them in order from what came (issue 14: the delivery's CPU a mail)."""
    waits: list[int] = []
    original = pipelining._Replies.reply

    async def reply(self: pipelining._Replies, timeout: float) -> object:
        if not self.replies:
            waits.append(self.owed)
        return await original(self, timeout)

    monkeypatch.setattr(pipelining._Replies, "reply", reply)
    batch = [mail(n) for n in range(10)]  # under SHARED_FROM: one connection
    results = send(smtp_server, batch)
    assert results.told == {f"m{n}": None for n in range(10)}
    assert [r.raw for r in smtp_server.wait_for(10)] == [e.raw for e in batch]
    # The first mail's three replies, each next mail's four, the last "." reply.
    assert waits == [3] + [4] * 9 + [1]


def test_a_reply_in_hand_is_taken_when_the_rest_of_the_group_never_comes() -> None:
    """Waiting for a group's replies must not lose one that came: at a timeout or a lost
    connection the replies in hand are still read in order (the mail whose "." was
    answered is sent, not uncertain); only then does the next read fail, at once: the
    server had its time for that reply too (a hang is found in one timeout, not two)."""
    import asyncio

    import aiosmtplib

    async def scenario(end: str) -> list[object]:
        replies = pipelining._Replies()
        replies.owe(4)  # a mail's "." and the next one's MAIL, RCPT and DATA
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, replies.data_received, b"250 2.0.0 queued\r\n250 sender ok\r\n")
        if end == "lost":
            loop.call_later(0.02, replies.connection_lost, None)
        seen: list[object] = []
        # The group's time: short when it is to run out; long when the connection is lost
        # first (at 20 ms), so that a loaded machine cannot make it run out before.
        first = 0.2 if end == "timeout" else 5.0
        for timeout in (first, 30.0, 30.0):  # the last read must not wait its 30 s
            try:
                seen.append((await asyncio.wait_for(replies.reply(timeout), 5.0)).code)
            except aiosmtplib.SMTPException as exc:
                seen.append(type(exc).__name__)
        return seen

    assert asyncio.run(scenario("timeout")) == [250, 250, "SMTPReadTimeoutError"]
    assert asyncio.run(scenario("lost")) == [250, 250, "SMTPServerDisconnected"]


def test_the_waiter_wakes_only_once_every_reply_owed_is_in() -> None:
    import asyncio

    async def scenario() -> list[bool]:
        replies = pipelining._Replies()
        replies.owe(4)
        task = asyncio.ensure_future(replies.reply(5.0))
        done = []
        for line in (b"250 queued\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go on\r\n"):
            await asyncio.sleep(0)
            done.append(task.done())
            replies.data_received(line)
        await asyncio.sleep(0)
        done.append(task.done())
        assert task.result().code == 250 and [r.code for r in replies.replies] == [250, 250, 354]
        return done

    assert asyncio.run(scenario()) == [False, False, False, False, True]


class _StalledTransport:
    """What ``Pipelined._body`` writes to: the kernel takes the first ``room`` bytes, the
    rest waits in the buffer (a server that stopped reading). A close would send what
    waits once the server reads again; an abort drops it."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent = b""
        self.waiting = b""
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        taken = data[: max(0, self.room - len(self.sent))] if not self.waiting else b""
        self.sent += taken
        self.waiting += data[len(taken) :]

    def get_write_buffer_size(self) -> int:
        return len(self.waiting)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = self.aborted = True
        self.waiting = b""


def test_a_stalled_body_never_lets_its_final_dot_leave() -> None:
    """The "." written with the body waits behind it when the server stops reading: when
    the wait times out, the mail is retried (the "." never left), so that "." must never
    leave afterwards — the transport is aborted, its buffer dropped, not closed (a close
    sends the buffer on once the server reads again: the mail accepted, then sent a second
    time)."""
    import asyncio

    import aiosmtplib

    from mailbot.config import SmtpConfig

    config = SmtpConfig(host="127.0.0.1", port=25, security="none", timeout_seconds=0.2)
    session = smtp_session.Session(config, None)
    client = aiosmtplib.SMTP()
    pipe = pipelining.Pipelined(session, client, True, lambda _e: True, lambda _e, _r: None)
    transport = _StalledTransport(room=4096)
    body = b"Bonjour,\r\n" * 1000  # 10 KB: one write, most of it waiting
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        asyncio.run(pipe._body(transport, body))  # type: ignore[arg-type]
    # Neither sent nor waiting to be: nothing can end the mail after it was given up.
    assert b"\r\n.\r\n" not in transport.sent + transport.waiting
