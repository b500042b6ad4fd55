"""One SMTP connection kept from batch to batch (issue 14, point 7), against the real
aiosmtpd server (connections counted on its side, by the client's port) and, for drops at
one precise point of the exchange, the scripted responder.

Whatever happens to the kept connection, every mail is received exactly once and each
mail's ``after`` is told the truth.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scripted import ScriptedSmtpServer
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config
from test_run_delivery import wait_until
from test_worker import start_worker, stop_by_sigterm

from mailbot.config import SmtpConfig
from mailbot.errors import DeliveryError
from mailbot.mail.smtp import Envelope, SmtpTransport

pytestmark = pytest.mark.servers


def envelopes(tag: str, count: int) -> list[Envelope]:
    return [
        Envelope(
            "mailbot@example.org",
            "usager@example.org",
            f"Message-ID: <{tag}-{n}@example.org>\r\nSubject: {tag} {n}\r\n\r\nBonjour\r\n".encode(),
            name=f"{tag}-{n}",
        )
        for n in range(count)
    ]


class Batch:
    """Sends batches through one transport, recording what ``after`` was told."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self.results: dict[str, DeliveryError | None] = {}

    def send(self, batch: Sequence[Envelope]) -> None:
        self.transport.send_batch(batch, lambda _e: True, self._after)

    def _after(self, envelope: Envelope, error: DeliveryError | None) -> None:
        assert envelope.name not in self.results  # each mail is reported once
        self.results[envelope.name] = error


def once_each(raws: Sequence[bytes], batches: Sequence[Sequence[Envelope]]) -> bool:
    """Every mail of ``batches`` received, each exactly once."""
    sent = sorted(e.raw for batch in batches for e in batch)
    return sorted(raws) == sent


def test_batches_share_one_connection_until_close(smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(smtp_server.smtp_config())
    sender = Batch(transport)
    batches = [envelopes(f"b{n}", 2) for n in range(3)]
    for batch in batches:
        sender.send(batch)
    received = smtp_server.wait_for(6)
    assert once_each([r.raw for r in received], batches)
    assert len({r.peer for r in received}) == 1  # one connection on the server's side
    assert smtp_server.commands("QUIT") == []  # still open between batches
    assert smtp_server.commands("NOOP") == []  # not idle long enough to be checked

    transport.close()
    smtp_server.wait_for_command("QUIT", 1)
    assert smtp_server.commands("QUIT") == [received[0].peer]

    sender.send(envelopes("after-close", 1))  # a later batch opens a new connection
    assert smtp_server.wait_for(7)[-1].peer != received[0].peer
    transport.close()
    assert all(error is None for error in sender.results.values())


def test_an_idle_connection_is_checked_then_reused(smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(smtp_server.smtp_config(), check_after=0.0)
    sender = Batch(transport)
    sender.send(envelopes("first", 1))
    sender.send(envelopes("second", 1))
    received = smtp_server.wait_for(2)
    assert received[0].peer == received[1].peer
    assert smtp_server.commands("NOOP") == [received[0].peer]  # asked before the reuse
    transport.close()


def test_an_idle_connection_is_closed(smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(smtp_server.smtp_config(), idle_close=0.2)
    sender = Batch(transport)
    sender.send(envelopes("early", 1))
    smtp_server.wait_for_command("QUIT", 1)  # the idle timer closed it, no batch needed
    sender.send(envelopes("late", 1))
    first, second = smtp_server.wait_for(2)
    assert first.peer != second.peer
    assert smtp_server.commands("QUIT")[0] == first.peer
    transport.close()


@pytest.mark.parametrize("check_after", [0.0, 3600.0], ids=["noop", "no-noop"])
def test_server_restart_between_batches(smtp_server: SmtpServer, check_after: float) -> None:
    """The server went away with the kept connection: found by the NOOP, or at the latest
    when the next mail starts, and the batch goes out on a new connection."""
    transport = SmtpTransport(smtp_server.smtp_config(), check_after=check_after)
    sender = Batch(transport)
    before = envelopes("before", 2)
    sender.send(before)
    smtp_server.stop()
    smtp_server.start()  # same port, every connection gone
    after = envelopes("after", 2)
    sender.send(after)
    received = smtp_server.wait_for(4)
    assert once_each([r.raw for r in received], [before, after])
    assert len({r.peer for r in received}) == 2
    assert all(error is None for error in sender.results.values())
    transport.close()


def scripted_config(server: ScriptedSmtpServer) -> SmtpConfig:
    return SmtpConfig(host=server.host, port=server.port, security="none", timeout_seconds=10)


def test_a_kept_connection_dropped_at_mail_from_is_replaced() -> None:
    """The server cut the kept connection when the next mail began (RST at MAIL FROM):
    nothing of that mail had been sent, so it goes out at once on a new connection."""
    with ScriptedSmtpServer() as server:
        sender = Batch(SmtpTransport(scripted_config(server)))
        first = envelopes("first", 1)
        sender.send(first)
        server.fail("mail", "drop")
        second = envelopes("second", 2)
        sender.send(second)
        assert once_each([d.data for d in server.deliveries], [first, second])
        assert server.connections == 2
        assert all(error is None for error in sender.results.values())
        sender.transport.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
def test_a_5xx_greeting_when_replacing_a_dropped_connection_is_not_permanent(
    pipelining: bool,
) -> None:
    """The kept connection cut at MAIL FROM, the new one refused at its greeting (554): the
    mail is told a temporary error (the outbox retries it), as the rest of the batch."""
    with ScriptedSmtpServer(pipelining=pipelining) as server:
        sender = Batch(SmtpTransport(scripted_config(server)))
        sender.send(envelopes("first", 1))
        server.fail("mail", "drop")
        server.fail("greeting", "perm")
        try:
            sender.send(envelopes("second", 1))
        except DeliveryError as error:  # no connection for the batch: retried, all of it
            assert not error.permanent
        error = sender.results["second-0"]
        assert error is not None and not error.permanent and not error.uncertain
        assert error.code == 554
        assert len(server.deliveries) == 1
        sender.transport.close()


def test_a_shutdown_while_replacing_a_dropped_connection_tells_the_mail() -> None:
    """One command at a time: the kept connection cut at MAIL FROM, the new one hangs at its
    greeting and a shutdown comes: the mail let go is told it was not sent (the outbox
    sends it again), never left untold ('sending' until the next start marks a mail to a
    citizen uncertain, and it is never sent); no mail is taken after the stop."""
    with ScriptedSmtpServer(pipelining=False) as server:
        transport = SmtpTransport(scripted_config(server))
        sender = Batch(transport)
        sender.send(envelopes("first", 1))
        server.fail("mail", "drop")
        server.fail("greeting", "hang")
        stop = threading.Event()
        threading.Thread(target=lambda: server.hanging.wait(10) and stop.set()).start()
        asked: list[str] = []

        def before(envelope: Envelope) -> bool:
            asked.append(envelope.name)
            return True

        transport.send_batch(envelopes("second", 2), before, sender._after, stop)
        assert asked == ["second-0"]
        error = sender.results["second-0"]
        assert error is not None and error.interrupted and not error.uncertain
        assert "second-1" not in sender.results
        assert len(server.deliveries) == 1
        transport.close()


def test_a_fresh_connection_dropped_is_not_retried_at_once() -> None:
    """On a connection opened for it, a drop is the server's trouble, not a stale
    connection: the mail is reported (retried later by the outbox), the batch goes on."""
    with ScriptedSmtpServer() as server:
        sender = Batch(SmtpTransport(scripted_config(server)))
        server.fail("mail", "drop")
        batch = envelopes("fresh", 2)
        sender.send(batch)
        error = sender.results["fresh-0"]
        assert error is not None and not error.uncertain and not error.permanent
        assert sender.results["fresh-1"] is None
        assert [d.data for d in server.deliveries] == [batch[1].raw]
        sender.transport.close()


def test_a_drop_after_the_final_dot_is_never_resent() -> None:
    """On a kept connection too: once the "." left, the mail may have been accepted."""
    with ScriptedSmtpServer() as server:
        sender = Batch(SmtpTransport(scripted_config(server)))
        sender.send(envelopes("first", 1))
        server.fail("end", "drop")
        sender.send(envelopes("second", 2))
        error = sender.results["second-0"]
        assert error is not None and error.uncertain
        assert sender.results["second-1"] is None
        delivered = [d.data for d in server.deliveries]
        assert delivered.count(envelopes("second", 2)[0].raw) <= 1
        sender.transport.close()


def test_two_batches_at_once(smtp_server: SmtpServer) -> None:
    """A batch started while another holds the kept connection gets its own connection
    (no waiting behind it); the kept one serves the batches after."""
    transport = SmtpTransport(smtp_server.smtp_config())
    holding = threading.Event()
    release = threading.Event()

    def before(envelope: Envelope) -> bool:
        if envelope.name == "slow-0":
            holding.set()
            assert release.wait(10)
        return True

    results: list[DeliveryError | None] = []
    slow = threading.Thread(
        target=transport.send_batch,
        args=(envelopes("slow", 2), before, lambda _e, error: results.append(error)),
    )
    slow.start()
    assert holding.wait(10)
    transport.send_batch(envelopes("quick", 1), lambda _e: True, lambda _e, e: results.append(e))
    quick = smtp_server.wait_for(1)[0]
    release.set()
    slow.join(10)
    transport.send_batch(envelopes("later", 1), lambda _e: True, lambda _e, e: results.append(e))
    received = smtp_server.wait_for(4)
    by_subject = {r.raw.split(b"Subject: ")[1].split(b" ")[0]: r.peer for r in received}
    assert by_subject[b"quick"] != by_subject[b"slow"]
    assert by_subject[b"later"] == by_subject[b"slow"]
    assert quick.peer == by_subject[b"quick"]
    assert results == [None] * 4
    transport.close()


def outbox_statuses(database: Path) -> list[str]:
    with sqlite3.connect(database, timeout=5) as db:
        return [status for (status,) in db.execute("SELECT status FROM outbox ORDER BY id")]


def test_the_worker_closes_the_connection_at_shutdown(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    imap_user.append(citizen_mail(1))
    worker = start_worker(config, "--acknowledge-existing")
    try:
        (ar,) = smtp_server.wait_for(1, timeout=120)  # a start: 30 s of wall at a load of 8
        # The server holds the mail before its 250 reaches the worker: a SIGTERM now would
        # cut the exchange (then the socket is closed, no QUIT). Stop once the worker has
        # recorded the AR as sent, its batch over and the connection kept.
        wait_until(lambda: outbox_statuses(tmp_path / "mailbot.db") == ["sent"], timeout=30)
        assert smtp_server.commands("QUIT") == []  # kept open for the next mails
    finally:
        err = stop_by_sigterm(worker)
    assert worker.returncode == 0, err
    assert smtp_server.commands("QUIT") == [ar.peer]


def test_envelope_addresses_and_body_as_aiosmtplib_writes_them() -> None:
    """The shortcuts (a bare address quoted without parsing it, a body already fit for DATA
    left alone) give what aiosmtplib's ``quote_address`` and its line-end normalisation and
    dot-stuffing give, or refuse the same."""
    import random

    from aiosmtplib.email import quote_address
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    from mailbot.mail import smtp_commands

    def outcome(function: Any, *args: object) -> object:
        try:
            return function(*args)
        except Exception as exc:
            return type(exc), str(exc)

    rng = random.Random(5321)
    alphabets = ["ab.@-_+!#{}~'=?", "ab.@-_+'\"é ()<>,;:[]\\\t", "a.@-"]
    bare = 0
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        address = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        if rng.random() < 0.4:  # mostly well formed: local@domain, with atext and dots
            address = address.replace("@", "") + "@" + rng.choice(["x.fr", "a-b.example.org"])
        expected = outcome(lambda a=address: quote_address(a).encode("utf-8"))
        assert outcome(smtp_commands.quoted, address, "utf-8") == expected, address
        bare += bool(smtp_commands._BARE_ADDRESS.fullmatch(address))
    assert bare > 100  # the shortcut was taken often
    pieces = [b"a", b".", b"\r\n", b"\n", b"\r", b"..", b" ", b"\r\n."]
    for _ in range(3000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw))
        assert smtp_commands.wire_body(raw) == expected, raw
