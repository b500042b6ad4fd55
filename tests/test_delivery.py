"""SMTP delivery against a scripted server failing at each point of the exchange.

The rule under test: a send that fails before the terminating "." of DATA has left is
retried (the server cannot have accepted it); one that fails after it, with no reply, is
'uncertain' and never retried (it may have been accepted: a second AR is worse than none).
A reply is an answer either way: 4xx retried, 5xx failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from pg import fresh_database
from refusals import query
from scripted import Action, Point, ScriptedSmtpServer
from servers import TlsFiles, issue_tls

from mailbot.app.cluster import Keeper, this_worker
from mailbot.app.delivery import Outbox
from mailbot.app.delivery_recovery import CLAIM_STALE, recover_interrupted
from mailbot.config import OutboxConfig, SmtpConfig
from mailbot.core.statuses import OutboxKind, OutboxStatus
from mailbot.mail import smtp
from mailbot.mail.smtp import Envelope, SmtpTransport
from mailbot.store import Store, Transaction, utcnow
from mailbot.store.cluster import UNREGISTERED_GRACE, Cluster
from mailbot.store.errors import is_transient
from mailbot.store.schema import outbox as outbox_table
from mailbot.store.schema import outbox_bodies, workers
from mailbot.worker import Worker

CITIZEN = "marie.dupont@example.fr"
AR = (
    b"From: pref-contact@seine-maritime.gouv.fr\r\nTo: marie.dupont@example.fr\r\n"
    b"Subject: =?utf-8?q?Accus=C3=A9_de_r=C3=A9ception?=\r\nMessage-ID: <ar-1@example.test>\r\n"
    b"\r\nBonjour,\r\n.une ligne qui commence par un point\r\nCordialement\r\n"
)
# Larger than what the socket buffers hold: a server that stops reading or hangs up
# mid-body is noticed while the body is still being written, before the ".".
BIG = AR + (b"x" * 76 + b"\r\n") * 220_000  # 17 MB


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    database = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    yield database
    database.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return issue_tls(tmp_path_factory.mktemp("tls"), "127.0.0.1")


def outbox_for(store: Store, server: ScriptedSmtpServer, **settings: object) -> Outbox:
    config = SmtpConfig(
        **{"host": server.host, "port": server.port, "security": "none", "timeout_seconds": 1.0}
        | settings  # type: ignore[arg-type]
    )
    return Outbox(store, SmtpTransport(config), OutboxConfig(), {CITIZEN})


def queue(store: Store, raw: bytes = AR, n: int = 1) -> list[int]:
    with store.transaction() as tx:
        return [
            tx.enqueue(None, "ar", CITIZEN, "", f"<ar-{i}@example.test>", raw) for i in range(n)
        ]


def rows(store: Store) -> list[tuple[str, int]]:
    return [(row.status, row.attempts) for row in store.outbox_items()]


def later() -> object:
    return utcnow() + timedelta(days=1)


def server_for(point: Point, tls: TlsFiles, tmp_path: Path) -> tuple[ScriptedSmtpServer, dict]:
    """A scripted server, and the client settings, that reach ``point``."""
    if point == "starttls":
        server = ScriptedSmtpServer(tls=tls.server_context())
        return server, {"security": "starttls", "ca_file": tls.ca_file}
    if point == "auth":
        secret = tmp_path / "smtp-password"
        secret.write_text("Smtp-S3cr3t-pw")
        server = ScriptedSmtpServer(username="mailbot", password="Smtp-S3cr3t-pw")
        return server, {"username": "mailbot", "password_file": secret}
    return ScriptedSmtpServer(), {}


BEFORE_THE_DOT: list[tuple[Point, Action]] = [
    (point, action)
    for point in ("greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "body")
    for action in ("hang", "drop", "temp")
]


@pytest.mark.parametrize(("point", "action"), BEFORE_THE_DOT)
def test_failure_before_the_final_dot_is_retried(
    store: Store, tls: TlsFiles, tmp_path: Path, point: Point, action: Action
) -> None:
    server, settings = server_for(point, tls, tmp_path)
    with server:
        outbox = outbox_for(store, server, **settings)
        raw = BIG if point == "body" else AR
        queue(store, raw)
        server.fail(point, action)
        report = outbox.deliver_due()
        assert report.retried == 1 and report.sent == 0
        assert rows(store) == [("pending", 1)]
        assert server.deliveries == []
        assert "uncertain" not in (store.outbox_items()[0].last_error or "")

        report = outbox.deliver_due(now=later())  # the retry, once due: exactly one mail
        assert report.sent == 1
        assert rows(store) == [("sent", 2)]
        assert len(server.deliveries) == 1
        assert server.deliveries[0].data == raw


@pytest.mark.parametrize("action", ["hang", "drop"])
def test_no_reply_after_the_final_dot_is_uncertain_and_never_resent(
    store: Store, action: Action
) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store)
        server.fail("end", action)
        report = outbox.deliver_due()
        assert report.sent == 0 and report.failed == 1
        assert rows(store) == [("uncertain", 1)]
        assert len(server.deliveries) == 1  # the server did take it
        outbox.deliver_due(now=later())
        assert rows(store) == [("uncertain", 1)]
        assert len(server.deliveries) == 1
        kinds = [event.kind for event in store.events()]
        assert kinds == ["send_uncertain"]


def test_a_reply_after_the_final_dot_is_an_answer(store: Store) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store, n=2)
        server.fail("end", "temp")
        server.fail("end", "perm")
        outbox.deliver_due()
        assert rows(store) == [("pending", 1), ("failed", 1)]
        assert server.deliveries == []
        outbox.deliver_due(now=later())
        assert rows(store) == [("sent", 2), ("failed", 1)]
        assert len(server.deliveries) == 1


@pytest.mark.parametrize("point", ["mail", "rcpt", "data"])
def test_a_5xx_before_data_ends_is_a_permanent_failure(store: Store, point: Point) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store, n=2)
        server.fail(point, "perm")
        outbox.deliver_due()
        # The refusal is for that mail; the connection (RSET) serves the next one.
        assert rows(store) == [("failed", 1), ("sent", 1)]
        assert server.connections == 1


@pytest.mark.parametrize("action", ["temp", "perm"])
def test_a_refusal_quoting_the_citizen_s_address_leaves_it_out_of_the_log(
    store: Store, caplog: pytest.LogCaptureFixture, action: Action
) -> None:
    """Postfix quotes the recipient in a RCPT refusal, and the refusal was logged as it
    came ("send deferred", "send failed"): a citizen's address in a WARNING or ERROR line.
    The outbox row keeps the whole text (it is purged with the message); the log masks it."""
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store)
        server.fail("rcpt", action)
        with caplog.at_level(logging.WARNING, logger="mailbot.app.settling"):
            outbox.deliver_due()
    logged = [r for r in caplog.records if r.getMessage() in ("send deferred", "send failed")]
    assert len(logged) == 1
    assert CITIZEN not in str(logged[0].__dict__) and "…@…" in logged[0].error
    assert CITIZEN in (store.outbox_items()[0].last_error or "")


def test_a_server_dropping_every_connection_mid_data_leaves_nothing_uncertain(
    store: Store,
) -> None:
    with ScriptedSmtpServer() as server:
        # A drop is seen at once; the 1 s default would turn a slow reply of the second
        # round's server on a loaded machine into "uncertain" (a timeout after the dot).
        outbox = outbox_for(store, server, timeout_seconds=10)
        queue(store, BIG, n=3)
        server.fail("body", "drop", times=3)
        outbox.deliver_due()
        assert rows(store) == [("pending", 1)] * 3
        outbox.deliver_due(now=later())
        assert rows(store) == [("sent", 2)] * 3
        assert len(server.deliveries) == 3


def test_after_an_uncertain_send_the_batch_goes_on_with_a_new_connection(store: Store) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store, n=3)
        server.fail("end", "drop")
        outbox.deliver_due()
        assert rows(store) == [("uncertain", 1), ("sent", 1), ("sent", 1)]
        assert server.connections == 2
        assert len(server.deliveries) == 3


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
@pytest.mark.parametrize("point", ["greeting", "auth"])
def test_a_5xx_when_reconnecting_after_a_drop_is_retried(
    store: Store, tmp_path: Path, tls: TlsFiles, point: Point, pipelining: bool
) -> None:
    """The connection kept from the last batch is found cut at the next MAIL FROM, and the
    new one meets a 5xx (a 554 greeting; a 535 AUTH, the password rotated meanwhile): as on
    a fresh connection, the server's trouble, not the mail's. Retried, never failed."""
    server, settings = server_for(point, tls, tmp_path)
    server.pipelining = pipelining
    with server:
        outbox = outbox_for(store, server, **settings)
        queue(store)
        assert outbox.deliver_due().sent == 1  # its connection is kept
        server.fail("mail", "drop")
        server.fail(point, "perm")
        queue(store, n=2)
        report = outbox.deliver_due()
        assert report.failed == 0 and report.retried + report.sent == 2
        # The mail whose connection dropped: retried later (one at a time, the next mail
        # goes on a connection of its own, which the server, refusing once, accepts).
        assert rows(store)[:2] == [("sent", 1), ("pending", 1)]
        outbox.deliver_due(now=later())
        assert [status for status, _ in rows(store)] == ["sent"] * 3
        assert rows(store)[1] == ("sent", 2)
        assert len(server.deliveries) == 3
        outbox.transport.close()


def test_dot_stuffing_and_line_endings_survive_the_low_level_data(store: Store) -> None:
    raw = b"Subject: x\nTo: a@b\n\n.\n..two\nbare\rcr\r\n.end"
    with ScriptedSmtpServer() as server:
        queue(store, raw)
        outbox_for(store, server).deliver_due()
        assert (
            server.deliveries[0].data
            == b"Subject: x\r\nTo: a@b\r\n\r\n.\r\n..two\r\nbare\r\ncr\r\n.end\r\n"
        )


# -- shutdown ---------------------------------------------------------------------------------


def deliver_then_stop(outbox: Outbox, server: ScriptedSmtpServer) -> float:
    """deliver_due with a SIGTERM-like stop once the server hangs at its scripted point;
    returns the seconds from the stop to deliver_due's return. The stop lands where the
    test means it to, however slowly a loaded machine got there (a fixed delay could land
    it before: while a 17 MB body is still being prepared)."""
    stopped_at: list[float] = []

    def stop() -> None:
        if server.hanging.wait(60):
            stopped_at.append(time.monotonic())
        outbox.stop.set()

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    outbox.deliver_due()
    finished = time.monotonic()
    stopper.join()
    assert stopped_at, "the server never reached the point where it hangs"
    return finished - stopped_at[0]


@pytest.mark.parametrize(
    ("point", "raw"), [("mail", AR), ("data", AR), ("body", BIG)], ids=["mail", "data", "body"]
)
def test_stop_before_the_final_dot_leaves_the_mail_queued(
    store: Store, point: Point, raw: bytes
) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server, timeout_seconds=60)
        queue(store, raw, n=2)
        server.fail(point, "hang")
        took = deliver_then_stop(outbox, server)
        # The issue's bound for a stop (5 s), less the half second the stop used to be
        # counted from; a tenth of a second on an idle machine, 1.5 s for the 17 MB body
        # under heavy load.
        assert took < 4.5, took
        # As if never tried: pending, attempt not counted, due at once.
        assert rows(store) == [("pending", 0), ("pending", 0)]
        assert store.due_outbox(utcnow()) != []


def test_stop_after_the_final_dot_is_uncertain(store: Store) -> None:
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server, timeout_seconds=60)
        queue(store, n=2)
        server.fail("end", "hang")
        took = deliver_then_stop(outbox, server)
        assert took < 2.5, took
        assert rows(store) == [("uncertain", 1), ("pending", 0)]


class Observing:
    """A transport that sends nothing and looks at the outbox's statuses as each mail
    would leave; ``stop_after`` sets the outbox's stop after that many mails."""

    def __init__(self, store: Store, stop: threading.Event, stop_after: int | None = None) -> None:
        self.store = store
        self.stop = stop
        self.stop_after = stop_after
        self.seen: list[list[str]] = []

    def send_batch(self, envelopes, before, after, stop=None) -> None:  # type: ignore[no-untyped-def]
        for n, envelope in enumerate(envelopes):
            if stop is not None and stop.is_set():
                return
            if before(envelope):
                self.seen.append([row.status for row in self.store.outbox_items()])
                after(envelope, None)
            if self.stop_after is not None and n + 1 >= self.stop_after:
                self.stop.set()

    def close(self) -> None:
        return None


def observed_outbox(store: Store, group: int, stop_after: int | None = None) -> Outbox:
    outbox = Outbox(store, SmtpTransport(SmtpConfig(host="unused")), OutboxConfig(), {CITIZEN})
    outbox.claim_group = group
    outbox.transport = Observing(store, outbox.stop, stop_after)
    return outbox


def test_mails_are_claimed_a_group_at_a_time(store: Store) -> None:
    queue(store, n=7)
    outbox = observed_outbox(store, group=3)
    report = outbox.deliver_due()
    seen = outbox.transport.seen  # type: ignore[attr-defined]
    # The first mail leaves with its group claimed, the rest still pending; the group's
    # 'sent' commit with the next group's claim: never more than a group 'sending' here, as
    # each mail's outcome is told before the next claim (pipelined: see the test below).
    assert seen[0] == ["sending"] * 3 + ["pending"] * 4
    assert seen[3] == ["sent"] * 3 + ["sending"] * 3 + ["pending"]
    assert seen[6] == ["sent"] * 6 + ["sending"]
    assert report.sent == 7
    assert rows(store) == [("sent", 1)] * 7


def sending_after_each_claim(store: Store, outbox: Outbox) -> list[int]:
    """Runs ``outbox``'s delivery; the mails to citizens 'sending' just after each mail's
    ``before`` (its group's claim committed): what a kill -9 at that moment leaves to
    recovery, marked uncertain."""
    send, seen = outbox.transport.send_batch, []

    def observed(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
        def looked_at(envelope: Envelope) -> bool:
            go = before(envelope)
            seen.append(len(store.outbox_items(OutboxStatus.SENDING)))
            return go

        send(envelopes, looked_at, after, stop)

    outbox.transport.send_batch = observed  # type: ignore[method-assign]
    outbox.deliver_due()
    return seen


@pytest.mark.parametrize(
    ("pipelining", "mails", "group", "bound"),
    [(False, 12, 4, 4), (True, 12, 4, 5), (True, 3 * smtp.SHARED_FROM, 8, 11)],
    ids=["one-at-a-time", "pipelined", "two-connections"],
)
def test_a_crash_leaves_at_most_a_claim_group_and_the_mails_in_flight_before_it(
    store: Store, pipelining: bool, mails: int, group: int, bound: int
) -> None:
    """What README and docs/deploy.md state: a crash leaves at most ``claim_group`` mails to
    citizens 'sending' (uncertain at the next start), plus the earlier group's mails still
    in flight when the next group's claim commits — their 'sent' waits for the commit
    after. One command at a time: none (each mail's reply is read before the next mail's
    claim). Pipelined on one connection: the mail whose "." reply is unread when the next
    mail's MAIL leaves, always (+1). A batch of ``SHARED_FROM`` mails or more shares a
    second connection: up to two more, its mail awaiting its "." reply and the one whose
    commands it sent (+3, reached or not as the two connections' timing falls)."""
    with ScriptedSmtpServer(pipelining=pipelining) as server:
        queue(store, n=mails)
        outbox = outbox_for(store, server)
        outbox.claim_group = group
        seen = sending_after_each_claim(store, outbox)
        assert len(server.deliveries) == mails
    assert max(seen) <= bound
    if mails < smtp.SHARED_FROM:  # one connection: the bound is reached at each new group
        assert seen[:group] == [group] * group
        assert seen[group] == bound
    assert rows(store) == [("sent", 1)] * mails


def test_a_shutdown_mid_group_gives_back_the_claimed_mails_not_sent(store: Store) -> None:
    queue(store, n=5)
    outbox = observed_outbox(store, group=4, stop_after=2)
    report = outbox.deliver_due()
    assert report.sent == 2
    # Claimed with the group but never handed over: pending again, as if never tried.
    assert rows(store) == [("sent", 1)] * 2 + [("pending", 0)] * 3
    outbox.stop.clear()
    outbox.transport.stop_after = None  # type: ignore[attr-defined]
    assert outbox.deliver_due().sent == 3
    assert rows(store) == [("sent", 1)] * 5


def test_a_delivery_takes_about_max_bytes_of_mail(store: Store) -> None:
    """A delivery holds the bytes of the mail it took until it ends: a forward carries the
    citizen's original (scans up to ``polling.max_message_bytes``), so it takes mail by
    bytes as well as by count — 200 forwards of 20 MB are not 4 GB in memory at once."""
    big = AR + (b"x" * 76 + b"\r\n") * 13_000  # 1 MB
    queue(store, raw=big, n=3)
    outbox = Outbox(
        store,
        SmtpTransport(SmtpConfig(host="unused")),
        OutboxConfig(),
        {CITIZEN},
        max_bytes=2_500_000,
    )
    outbox.transport = Observing(store, outbox.stop, None)
    assert [outbox.deliver_due().taken for _ in range(3)] == [2, 1, 0]
    assert rows(store) == [("sent", 1)] * 3


# -- two deliveries at once -------------------------------------------------------------------


def deliver_meanwhile(first: Outbox, second: Outbox, server: ScriptedSmtpServer) -> list[int]:
    """``first`` delivers on a thread; its connection hangs at the greeting (the server
    refuses a second connection at once, in effect) after it took the due mail; ``second``
    delivers meanwhile. Returns what each one's report counted as sent."""
    server.fail("greeting", "hang")
    reports = []
    hung = threading.Thread(target=lambda: reports.append(first.deliver_due()))
    hung.start()
    assert server.hanging.wait(10)  # ``first`` took the mail and is connecting
    meanwhile = second.deliver_due()
    hung.join(30)
    assert not hung.is_alive()
    return [reports[0].sent, meanwhile.sent]


def test_two_deliveries_at_once_on_one_outbox_send_a_mail_once(store: Store) -> None:
    """The worker's delivery thread, its alerts job, its probe and the console's tasks all
    call ``deliver_due`` on the one Outbox: the second waits for the first. Before, it took
    the same mail and sent it, and the first, failing to connect, put it back in the queue
    (its bytes purged): it went out a second time, empty."""
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        queue(store)
        sent_meanwhile = deliver_meanwhile(outbox, outbox, server)
        outbox.deliver_due(now=later())
        outbox.deliver_due(now=later() + timedelta(days=1))
        assert [d.data for d in server.deliveries] == [AR]  # once, whole
        assert rows(store) == [("sent", 2)]
        # The second waited for the first, which could not connect: retried later.
        assert sent_meanwhile == [0, 0]
        outbox.transport.close()


def test_a_delivery_failing_to_connect_never_requeues_a_mail_another_sent(store: Store) -> None:
    """Two Outboxes (a console and ``poll --once``: two processes, neither a registered
    worker) take the same mail. The one that connects claims and sends it; the other, its
    connection failed, leaves it as it is: 'sent', never sent again."""
    with ScriptedSmtpServer() as server:
        first = outbox_for(store, server, timeout_seconds=5)
        second = outbox_for(store, server, timeout_seconds=5)
        assert first.holder != second.holder
        queue(store)
        assert deliver_meanwhile(first, second, server) == [0, 1]
        assert rows(store) == [("sent", 1)]
        for outbox in (first, second):
            assert outbox.deliver_due(now=later()).taken == 0
            outbox.transport.close()
        assert rows(store) == [("sent", 1)]
        assert [d.data for d in server.deliveries] == [AR]
        assert [e.kind for e in store.events()] == ["ar_sent"]


def test_a_mail_without_bytes_is_never_sent(store: Store) -> None:
    """An outbox row keeps its bytes until it is sent: one without (empty, or purged as if
    sent) is a fault, and an empty mail to a citizen is worse than none. It fails, with an
    event, and the rest of the batch leaves."""
    queue(store, b"")
    purged, fine = queue(store), queue(store)
    with store.engine.begin() as conn:
        conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id == purged[0]))
    with ScriptedSmtpServer() as server:
        outbox = outbox_for(store, server)
        report = outbox.deliver_due()
        assert (report.sent, report.failed, report.sent_ids) == (1, 2, fine)
        assert rows(store) == [("failed", 0), ("failed", 0), ("sent", 1)]
        assert [d.data for d in server.deliveries] == [AR]
        assert outbox.deliver_due(now=later()).taken == 0
        assert len(server.deliveries) == 1
        kinds = [e.kind for e in store.events()]
        assert kinds.count("send_failed") == 2
        assert "bytes are missing" in (store.outbox_items()[0].last_error or "")
        outbox.transport.close()


# -- a claim the database refuses for now -------------------------------------------------


def refuse_claim_once(url: str, item_id: int) -> None:
    """PostgreSQL refuses the first claim of outbox row ``item_id`` with a serialization
    failure (SQLSTATE 40001), as a conflict with another worker would; later claims pass
    (a sequence counts, and is not rolled back with the transaction)."""
    query(url, "CREATE SEQUENCE refused")
    query(
        url,
        "CREATE FUNCTION refuse_claim() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.id = {item_id} AND NEW.status = 'sending' THEN "
        "IF nextval('refused') = 1 THEN RAISE EXCEPTION 'could not serialize access'"
        " USING ERRCODE = '40001'; END IF; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    query(
        url,
        "CREATE TRIGGER refuse_claim BEFORE UPDATE ON outbox FOR EACH ROW"
        " EXECUTE FUNCTION refuse_claim()",
    )


def test_mails_that_left_stay_sent_when_the_next_claim_is_refused(postgres: str) -> None:
    """The 'sent' of a group commits with the next group's claim. When the database refuses
    that transaction for now (a serialization failure), the mails of the group before had
    left all the same: the end of the delivery records them 'sent'. Before, they were
    forgotten as if recorded, and stayed 'sending' under a live worker, flagged uncertain
    at its restart: an agent asked to check ARs mailbot knew had left."""
    url = fresh_database(postgres, "d", "claim-refused")
    store = Store(url)
    try:
        ids = queue(store, n=6)
        refuse_claim_once(url, ids[3])
        outbox = observed_outbox(store, group=3)
        with pytest.raises(sa.exc.DBAPIError) as raised:
            outbox.deliver_due()
        assert is_transient(raised.value)
        assert rows(store) == [("sent", 1)] * 3 + [("pending", 0)] * 3
        assert [e.kind for e in store.events()] == ["ar_sent"] * 3
        assert outbox.deliver_due().sent == 3
        assert rows(store) == [("sent", 1)] * 6
        assert all(item.raw is None for item in store.outbox_items())
    finally:
        store.close()


# -- internal mail taken by two deliveries ----------------------------------------------------

SERVICE = "cartes-grises@seine-maritime.gouv.fr"
FORWARD = AR.replace(CITIZEN.encode(), SERVICE.encode()).replace(b"<ar-1", b"<fwd-1")


def forward_outbox(store: Store, server: ScriptedSmtpServer) -> Outbox:
    config = SmtpConfig(host=server.host, port=server.port, security="none", timeout_seconds=5)
    return Outbox(store, SmtpTransport(config), OutboxConfig(), {CITIZEN, SERVICE})


@pytest.mark.parametrize("first_is", ["unregistered", "a worker slow for CLAIM_STALE"])
def test_a_forward_taken_by_two_live_deliveries_leaves_once(database: str, first_is: str) -> None:
    """A delivery's *take* (``take_due``: ``claimed_by``, ``claimed_at``) does not keep
    another live delivery from taking the same mail: a process that is no registered worker
    (the console's tasks, `mailbot digest`, `quarantine retry`) is dead to the others' takes
    at once, and a live worker's take is free to them once ``CLAIM_STALE`` has passed (a
    slow relay: 500 mails, a 30 s timeout a step). Only the committed claim ('pending' to
    'sending', conditional) makes the two send a mail once — a forward to a service as well
    as an AR: the first delivery, reaching its DATA after the other sent it, must not send
    it again. (Issue 14, twenty-sixth session: forwards without a claim, leaving under the
    take alone, would go out twice here while both deliveries live.)"""
    store = Store(database)
    with store.transaction() as tx:
        tx.enqueue(None, "forward", SERVICE, "", "<fwd-1@example.test>", FORWARD)
    with ScriptedSmtpServer() as server:
        first, second = forward_outbox(store, server), forward_outbox(store, server)
        if first_is != "unregistered":
            Cluster(store, this_worker(first.holder, store), lease_seconds=600).register()
        send = first.transport.send_batch
        meanwhile: list[int] = []

        def other_delivery_first(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
            def before_each(envelope: Envelope) -> bool:
                if not meanwhile:  # ``first`` took the mail; the other delivers now
                    if first_is != "unregistered":  # ``first`` took it CLAIM_STALE ago
                        aged = utcnow() - CLAIM_STALE - timedelta(seconds=1)
                        with store.engine.begin() as conn:
                            conn.execute(sa.update(outbox_table).values(claimed_at=aged))
                    other = threading.Thread(
                        target=lambda: meanwhile.append(second.deliver_due().sent)
                    )
                    other.start()
                    other.join(60)
                return before(envelope)

            send(envelopes, before_each, after, stop)

        first.transport.send_batch = other_delivery_first  # type: ignore[method-assign]
        report = first.deliver_due()
        assert [d.data for d in server.deliveries] == [FORWARD]  # once
        assert (meanwhile, report.taken, report.sent) == ([1], 1, 0)  # the other sent it
        assert rows(store) == [("sent", 1)]
        assert [e.kind for e in store.events()] == ["forward_sent"]
        for outbox in (first, second):
            outbox.transport.close()
    store.close()


# -- internal mail: claimed riding on the citizens' groups, queued again after a crash --------

DIGEST = FORWARD.replace(b"<fwd-1", b"<digest-1")


def enqueue_mixed(store: Store, kinds: str) -> list[int]:
    """Outbox mails in this order: ``a`` an AR to the citizen, ``f`` a forward and ``d`` a
    digest to the service."""
    made = {"a": ("ar", CITIZEN, AR), "f": ("forward", SERVICE, FORWARD)}
    made["d"] = ("digest", SERVICE, DIGEST)
    with store.transaction() as tx:
        return [
            tx.enqueue(None, made[k][0], made[k][1], "", f"<{k}-{n}@example.test>", made[k][2])
            for n, k in enumerate(kinds)
        ]


def claim_groups(outbox: Outbox) -> list[int]:
    """How many mails each commit of ``outbox``'s deliveries claimed ('pending' to
    'sending'), read from the statuses the observing transport saw before each mail."""
    groups, before = [], 0
    for statuses in outbox.transport.seen:  # type: ignore[attr-defined]
        sending = statuses.count("sending") + statuses.count("sent")
        if sending > before:
            groups.append(sending - before)
        before = sending
    return groups


def test_a_claim_group_counts_mails_to_citizens_and_the_internal_ones_ride_along(
    store: Store,
) -> None:
    """A transferred mail queues an AR and a forward: each claim group (one durable commit,
    ~4 ms of the poll process's CPU, issue 14) counts ``claim_group`` mails to citizens, and
    the forwards between them ride in the same commit — half the commits, and a crash still
    leaves at most a group of ARs uncertain. A run of internal mail alone is claimed in
    groups of its own cap (4 × ``claim_group``). Before: every mail counted, 8 a group."""
    enqueue_mixed(store, "af" * 16 + "d" * 40)
    outbox = observed_outbox(store, group=8)
    outbox.allowed.add(SERVICE)
    outbox.internal_group = 32
    assert outbox.deliver_due().sent == 72
    # 8 ARs and their 8 forwards; 8 and 8, then 24 digests (32 internal mails); 16 digests
    assert claim_groups(outbox) == [16, 40, 16]
    assert rows(store) == [("sent", 1)] * 72


class Crash(BaseException):
    """The process died: nothing after this runs (no 'sent' committed, nothing released)."""


def crash_after_sending(outbox: Outbox) -> None:
    """``outbox``'s next delivery claims and sends its mails, then its process dies before
    any 'sent' is committed (as a kill -9 just after the server accepted the last one)."""
    send = outbox.transport.send_batch

    def sent_then_dead(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
        send(envelopes, before, lambda envelope, error: None, stop)
        raise Crash

    outbox.transport.send_batch = sent_then_dead  # type: ignore[method-assign]
    with pytest.raises(Crash):
        outbox.deliver_due()
    outbox.transport.send_batch = send  # type: ignore[method-assign]


def kinds_and_statuses(store: Store) -> list[tuple[str, str]]:
    return [(row.kind, row.status) for row in store.outbox_items()]


def test_a_forward_a_crash_left_sending_is_sent_again_at_the_next_start(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (SQLite: the sole one) died after its group's AR and forward left, before
    their 'sent' committed. At the next start the AR is uncertain, flagged, never sent
    again, as always; the forward goes back to the queue and leaves again — a duplicate in
    the service's mailbox is harmless, a forward lost is the citizen's mail that the
    service never sees. Its requeue is a WARNING naming it. Before: uncertain, never sent."""
    enqueue_mixed(store, "af")
    with ScriptedSmtpServer() as server:
        dead = forward_outbox(store, server)
        Cluster(store, this_worker(dead.holder, store), lease_seconds=600).register()
        crash_after_sending(dead)
        assert kinds_and_statuses(store) == [("ar", "sending"), ("forward", "sending")]
        with caplog.at_level(logging.WARNING, logger="mailbot.app.delivery_recovery"):
            assert recover_interrupted(store) == [1]  # the AR only: uncertain
        assert kinds_and_statuses(store) == [("ar", "uncertain"), ("forward", "pending")]
        (requeued,) = [r for r in caplog.records if "queued again" in r.getMessage()]
        assert (requeued.outbox, requeued.kind) == (2, "forward")  # type: ignore[attr-defined]
        after = forward_outbox(store, server)
        assert after.deliver_due().sent == 1
        assert [d.data for d in server.deliveries] == [AR, FORWARD, FORWARD]
        assert kinds_and_statuses(store) == [("ar", "uncertain"), ("forward", "sent")]
        assert after.deliver_due(now=later()).taken == 0  # the AR never leaves again
        kinds = [e.kind for e in store.events()]
        assert (kinds.count("send_uncertain"), kinds.count("forward_sent")) == (1, 1)
        for outbox in (dead, after):
            outbox.transport.close()


@pytest.mark.parametrize("claimer", ["a dead worker", "an unregistered process"])
def test_a_forward_left_sending_is_queued_again_once_nobody_can_be_sending_it(
    database: str, claimer: str
) -> None:
    """Beside running workers (PostgreSQL; SQLite's keeper too), a forward a process left
    'sending' is queued again by a live worker's keeper — but only once its claim is older
    than ``CLAIM_STALE`` and its claimer is no live worker: a dead worker's row expired, or
    a process that never registers (the console, `mailbot digest`), which may still be
    sending for all the others know. Its AR is uncertain as before (a dead worker's at once).
    Before: the forward uncertain like the AR, never sent again."""
    store = Store(database)
    enqueue_mixed(store, "af")
    with ScriptedSmtpServer() as server:
        dead = forward_outbox(store, server)
        if claimer == "a dead worker":
            Cluster(store, this_worker(dead.holder, store), lease_seconds=600).register()
        crash_after_sending(dead)
        if claimer == "a dead worker":
            expire_worker(store, dead.holder)
        live = Keeper(store, this_worker("live", store), [], 60.0, threading.Event())
        live.tick()  # the claim is young: its sender may be sending still
        assert kinds_and_statuses(store)[1] == ("forward", "sending")
        age_claims(store, CLAIM_STALE + timedelta(seconds=1))
        live.tick()
        # A dead worker's AR is uncertain at once; an unregistered process's after
        # UNREGISTERED_GRACE (10 min), as before.
        ar = "uncertain" if claimer == "a dead worker" else "sending"
        assert kinds_and_statuses(store) == [("ar", ar), ("forward", "pending")]
        assert forward_outbox(store, server).deliver_due().sent == 1
        assert [d.data for d in server.deliveries] == [AR, FORWARD, FORWARD]
        assert kinds_and_statuses(store) == [("ar", ar), ("forward", "sent")]
        live.cluster.unregister()
    store.close()


def test_a_live_delivery_never_sends_a_forward_queued_again_under_it(database: str) -> None:
    """A delivery stalled for longer than ``UNREGISTERED_GRACE`` (an unregistered console's,
    its relay hung between two mails) holds its group 'sending': an AR that left, 'sent'
    not committed yet, and a forward not sent. A keeper takes them for abandoned: the AR
    uncertain (as before), the forward queued again, and another delivery sends it. The
    first, reaching the forward, checks its claims in the database before its DATA (claims
    older than half ``CLAIM_STALE`` are renewed, or found gone): gone, it leaves the forward
    to the other — sent once, never uncertain. Before: the forward made uncertain by the
    keeper, and sent by the first all the same."""
    store = Store(database)
    enqueue_mixed(store, "af")
    with ScriptedSmtpServer() as server:
        first, second = forward_outbox(store, server), forward_outbox(store, server)
        live = Keeper(store, this_worker("live", store), [], 60.0, threading.Event())
        before_each, meanwhile = stalled_before(store, first, live, second)
        send = first.transport.send_batch

        def stalled(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
            send(envelopes, before_each(before), after, stop)

        first.transport.send_batch = stalled  # type: ignore[method-assign]
        first.deliver_due()
        assert meanwhile == [1]  # the other delivery sent the forward
        assert [d.data for d in server.deliveries] == [AR, FORWARD]  # each once
        assert kinds_and_statuses(store) == [("ar", "uncertain"), ("forward", "sent")]
        kinds = [e.kind for e in store.events()]
        assert (kinds.count("forward_sent"), kinds.count("send_uncertain")) == (1, 1)
        live.cluster.unregister()
        for outbox in (first, second):
            outbox.transport.close()
    store.close()


def stalled_before(store: Store, first: Outbox, live: Keeper, second: Outbox):  # type: ignore[no-untyped-def]
    """``first``'s ``before`` stalled at its second mail: UNREGISTERED_GRACE passes (its
    clock, its claims' age), the ``live`` keeper looks, ``second`` delivers meanwhile."""
    meanwhile: list[int] = []
    seen: list[str] = []

    def wrap(before):  # type: ignore[no-untyped-def]
        def before_each(envelope: Envelope) -> bool:
            seen.append(envelope.name)
            if len(seen) == 2:
                late = UNREGISTERED_GRACE + timedelta(seconds=1)
                age_claims(store, late)
                first.clock = lambda: utcnow() + late
                live.tick()
                other = threading.Thread(  # a loop of its own: ``first``'s is running
                    target=lambda: meanwhile.append(second.deliver_due().sent)
                )
                other.start()
                other.join(60)
            return bool(before(envelope))

        return before_each

    return wrap, meanwhile


@pytest.mark.parametrize("fault", ["forbidden recipient", "bytes missing"])
def test_a_forward_that_cannot_be_sent_fails_before_any_data(store: Store, fault: str) -> None:
    """The checks a claim makes hold for a forward riding in a citizens' group: one to an
    address that is no configured recipient, or without its bytes, fails there, before
    any DATA; the AR beside it leaves."""
    _, fwd = enqueue_mixed(store, "af")
    if fault == "bytes missing":
        with store.engine.begin() as conn:
            conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id == fwd))
    with ScriptedSmtpServer() as server:
        allowed = {CITIZEN} if fault == "forbidden recipient" else {CITIZEN, SERVICE}
        config = SmtpConfig(host=server.host, port=server.port, security="none")
        outbox = Outbox(store, SmtpTransport(config), OutboxConfig(), allowed)
        report = outbox.deliver_due()
        assert (report.sent, report.failed + report.refused) == (1, 1)
        assert [d.data for d in server.deliveries] == [AR]
        assert kinds_and_statuses(store) == [("ar", "sent"), ("forward", "failed")]
        outbox.transport.close()


def expire_worker(store: Store, holder: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(workers).where(workers.c.id == holder).values(expires_at=utcnow()))


def age_claims(store: Store, by: timedelta) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.status == "sending")
            .values(claimed_at=utcnow() - by)
        )


# -- internal mail: a send cut after its ".", this process's own claims at a start ------------


def bodies(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(sa.select(outbox_bodies.c.outbox_id)).scalars())


@pytest.mark.parametrize("cut", ["connection dropped", "shutdown awaiting the reply"])
def test_a_forward_cut_after_its_final_dot_is_sent_again(
    database: str, cut: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A send cut after its "." may have left. An AR is uncertain, never sent again, as
    always; a forward goes back to the queue with its bytes, retried as after a temporary
    failure, with a WARNING that it may arrive twice: a restart (SIGTERM while the server's
    reply is awaited) must not lose a forward that a kill -9 would have sent again. Before:
    the forward uncertain, its bytes deleted, never sent."""
    store = Store(database)
    with ScriptedSmtpServer() as server:
        outbox = forward_outbox(store, server)
        if cut == "connection dropped":
            enqueue_mixed(store, "af")
            server.fail("end", "drop", times=2)
            with caplog.at_level(logging.WARNING, logger="mailbot.app.settling"):
                report = outbox.deliver_due()
            assert (report.sent, report.failed, report.retried) == (0, 1, 1)
        else:
            enqueue_mixed(store, "f")
            server.fail("end", "hang")
            with caplog.at_level(logging.WARNING, logger="mailbot.app.settling"):
                deliver_then_stop(outbox, server)
            outbox.stop.clear()
        statuses = kinds_and_statuses(store)
        assert statuses[-1] == ("forward", "pending")
        assert statuses[:-1] in ([], [("ar", "uncertain")])
        assert bodies(store) == [len(statuses)]  # the forward's bytes kept
        (said,) = [r for r in caplog.records if "may arrive twice" in r.getMessage()]
        assert (said.outbox, said.kind) == (len(statuses), "forward")  # type: ignore[attr-defined]
        assert outbox.deliver_due(now=later()).sent == 1
        assert [d.data for d in server.deliveries][-2:] == [FORWARD, FORWARD]
        assert kinds_and_statuses(store)[-1] == ("forward", "sent")
        assert outbox.deliver_due(now=later()).taken == 0  # the AR never leaves again
        outbox.transport.close()
    store.close()


def test_a_start_leaves_this_process_s_own_deliveries_alone(database: str) -> None:
    """The console in the worker (``web.enabled``) starts before the worker's recovery and
    shares its Outbox, so its holder, which the worker registers: the recovery at start
    must not take the console's delivery in progress for a crash's. Before: its AR, left
    but 'sent' not committed yet, flagged uncertain; its forwards queued again under it and
    sent a second time by the next delivery (5 deliveries for 3 mails)."""
    store = Store(database)
    enqueue_mixed(store, "aff")
    with ScriptedSmtpServer() as server:
        outbox = forward_outbox(store, server)
        Cluster(store, this_worker(outbox.holder, store), lease_seconds=600).register()
        worker = SimpleNamespace(keeper=None, pipeline=SimpleNamespace(store=store), outbox=outbox)
        send = outbox.transport.send_batch
        seen: list[str] = []

        def start_meanwhile(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
            def before_each(envelope: Envelope) -> bool:
                seen.append(envelope.name)
                if len(seen) == 2:  # the AR left, the forwards claimed: the worker starts
                    Worker.recover(worker)  # type: ignore[arg-type]
                return bool(before(envelope))

            send(envelopes, before_each, after, stop)

        outbox.transport.send_batch = start_meanwhile  # type: ignore[method-assign]
        assert outbox.deliver_due().sent == 3
        outbox.transport.send_batch = send  # type: ignore[method-assign]
        assert outbox.deliver_due(now=later()).taken == 0
        assert [d.data for d in server.deliveries] == [AR, FORWARD, FORWARD]
        assert kinds_and_statuses(store) == [
            ("ar", "sent"),
            ("forward", "sent"),
            ("forward", "sent"),
        ]
        assert "send_uncertain" not in [e.kind for e in store.events()]
        outbox.transport.close()
    store.close()


def test_a_forward_queued_again_while_it_left_is_said_and_not_counted(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A forward queued again under a live delivery (its claim taken for a dead sender's: a
    process paused, a stalled database, clocks apart) that leaves all the same: its 'sent'
    matches no row. Said in a WARNING (it may arrive twice), not counted sent by this
    delivery, its bookkeeping left to the one that sends it again. Before: silent, counted."""
    store = Store(database)
    enqueue_mixed(store, "aff")
    with ScriptedSmtpServer() as server:
        outbox = forward_outbox(store, server)
        send = outbox.transport.send_batch
        seen: list[str] = []

        def requeued_meanwhile(envelopes, before, after, stop=None):  # type: ignore[no-untyped-def]
            def before_each(envelope: Envelope) -> bool:
                seen.append(envelope.name)
                if len(seen) == 2:  # as a keeper's ``requeue_stalled`` would
                    with store.engine.begin() as conn:
                        conn.execute(
                            sa.update(outbox_table)
                            .where(outbox_table.c.kind == "forward")
                            .values(status="pending", claimed_by=None, claimed_at=None)
                        )
                return bool(before(envelope))

            send(envelopes, before_each, after, stop)

        outbox.transport.send_batch = requeued_meanwhile  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="mailbot.app.delivery_run"):
            report = outbox.deliver_due()
        assert (report.sent, report.sent_ids) == (1, [1])  # the AR only
        said = [r for r in caplog.records if "queued again meanwhile" in r.getMessage()]
        assert [r.outbox for r in said] == [2, 3]  # type: ignore[attr-defined]
        assert kinds_and_statuses(store) == [
            ("ar", "sent"),
            ("forward", "pending"),
            ("forward", "pending"),
        ]
        assert [e.kind for e in store.events()] == ["ar_sent"]
        outbox.transport.send_batch = send  # type: ignore[method-assign]
        assert outbox.deliver_due().sent == 2  # the second copies, as queued
        kinds = [e.kind for e in store.events()]
        assert kinds.count("forward_sent") == 2
        outbox.transport.close()
    store.close()


def test_every_outbox_kind_is_classified_as_intended() -> None:
    """Mail to citizens at most once, to services and operators at least once; a kind added
    later is at most once unless declared internal (a second copy cannot be taken back).
    Before: the citizens' kinds listed, so that a new kind was at least once by default."""
    assert {kind.value: kind.at_most_once for kind in OutboxKind} == {
        "ar": True,
        "notice": True,
        "reply": True,
        "forward": False,
        "digest": False,
        "report": False,
        "probe_alert": False,
    }
    unknown = "a_kind_added_later"
    assert OutboxKind.at_most_once.fget(unknown) is True  # type: ignore[attr-defined]


def test_claims_a_delivery_left_when_the_database_failed_mid_run_are_settled_next(
    database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery whose database fails mid-run (its 'sent' refused) raises with its AR and
    forwards left 'sending' under a live worker: no keeper takes them (their claimer lives),
    no delivery either (not pending). The same process's next delivery settles them: the
    server accepted all three, which this process saw, so all three are recorded sent —
    nothing uncertain, no forward sent twice. (Once: 'sending' for as long as the worker
    lived; then: the AR uncertain and the forwards sent a second time.)"""
    store = Store(database)
    enqueue_mixed(store, "aff")
    with ScriptedSmtpServer() as server:
        outbox = forward_outbox(store, server)
        Cluster(store, this_worker(outbox.holder, store), lease_seconds=600).register()
        mark_sent = Transaction.mark_sent

        def database_down(self, sent, holder):  # type: ignore[no-untyped-def]
            if sent:
                raise sa.exc.OperationalError("UPDATE outbox", {}, Exception("server closed"))
            return mark_sent(self, sent, holder)

        monkeypatch.setattr(Transaction, "mark_sent", database_down)
        with pytest.raises(sa.exc.OperationalError):
            outbox.deliver_due()
        monkeypatch.undo()
        assert [s for _, s in kinds_and_statuses(store)] == ["sending"] * 3
        assert len(server.deliveries) == 3
        with caplog.at_level(logging.INFO, logger="mailbot.app"):
            assert outbox.deliver_due().taken == 0
        assert kinds_and_statuses(store) == [
            ("ar", "sent"),
            ("forward", "sent"),
            ("forward", "sent"),
        ]
        assert [d.data for d in server.deliveries] == [AR, FORWARD, FORWARD]
        said = [r.getMessage() for r in caplog.records]
        assert not [m for m in said if "queued again" in m or "uncertain" in m], said
        assert outbox.deliver_due(now=later()).taken == 0
        outbox.transport.close()
    store.close()


def test_claims_a_failed_delivery_never_handed_to_the_server_are_sent_next_not_uncertain(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery claims a group, hands its first mail to the server, then the database is
    lost (the batch's end, which gives back what it never handed over, fails too): it
    raises with the whole group 'sending'. Its next run records the first sent (the server
    took it) and queues the two others again as they were — none of their bytes left —
    so they are sent, not flagged 'uncertain' for an agent to check (ARs never sent)."""
    with ScriptedSmtpServer() as server:
        queue(store, n=3)
        outbox = outbox_for(store, server)
        outbox.claim_group = 3  # one claim for the three
        send, mark_sent = outbox.transport.send_batch, Transaction.mark_sent
        gone = sa.exc.OperationalError("UPDATE outbox", {}, Exception("server gone"))

        def database_gone(tx: Transaction, *args: object) -> object:
            raise gone

        def first_then_gone(envelopes: Any, before: Any, after: Any, stop: Any = None) -> None:
            send(envelopes[:1], before, after, stop)  # the first leaves, then the database goes
            monkeypatch.setattr(Transaction, "mark_sent", database_gone)
            raise gone

        outbox.transport.send_batch = first_then_gone  # type: ignore[method-assign]
        with pytest.raises(sa.exc.OperationalError):
            outbox.deliver_due()
        assert len(server.deliveries) == 1
        assert rows(store) == [("sending", 1)] * 3
        monkeypatch.setattr(Transaction, "mark_sent", mark_sent)
        outbox.transport.send_batch = send  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="mailbot.app"):
            assert outbox.deliver_due().sent == 2
        assert len(server.deliveries) == 3
        outbox.transport.close()
    assert rows(store) == [("sent", 1)] * 3  # the two given back kept their count of attempts
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "uncertain" in m or "queued again" in m], said


def test_a_mail_the_server_accepted_before_the_database_failed_is_recorded_sent_not_uncertain(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database fails after the server accepted a mail, before its 'sent' committed
    (it rides on the next claim's commit; a failover): the delivery raises. Its next run
    records that mail sent — the process saw the server take it — and marks uncertain only
    what it cannot know; here nothing, the next mail having never been claimed."""
    with ScriptedSmtpServer() as server:
        queue(store, n=2)
        outbox = outbox_for(store, server)
        outbox.claim_group = 1
        claim, mark_sent = Transaction.claim_outbox, Transaction.mark_sent
        claims: list[int] = []
        gone = sa.exc.OperationalError("UPDATE outbox", {}, Exception("server gone"))

        def second_claim_fails(tx: Transaction, item_id: int, *args: object) -> bool:
            claims.append(item_id)
            if len(claims) == 2:
                raise gone  # the database gone from here on: the batch's flush fails too
            return claim(tx, item_id, *args)  # type: ignore[arg-type]

        def fails_once_gone(tx: Transaction, *args: object) -> object:
            if len(claims) >= 2:
                raise gone
            return mark_sent(tx, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(Transaction, "claim_outbox", second_claim_fails)
        monkeypatch.setattr(Transaction, "mark_sent", fails_once_gone)
        with pytest.raises(sa.exc.OperationalError):
            outbox.deliver_due()
        assert len(server.deliveries) == 1
        assert rows(store) == [("sending", 1), ("pending", 0)]
        monkeypatch.setattr(Transaction, "claim_outbox", claim)
        monkeypatch.setattr(Transaction, "mark_sent", mark_sent)
        with caplog.at_level(logging.INFO, logger="mailbot.app.delivery"):
            assert outbox.deliver_due().sent == 1
        assert len(server.deliveries) == 2
    assert rows(store) == [("sent", 1), ("sent", 1)]
    assert not [r for r in caplog.records if "uncertain" in r.getMessage()]
