"""One `mailbot run` on SQLite killed with SIGKILL at random moments while it works through
batches: the scenario of tests/test_kill.py (200 mails, 2 kills) and bench/kill.py (1,000
mails, 5 kills). Real processes, the real Dovecot and aiosmtpd.

Mail arrives in waves, one per worker started. Each killed worker is given a new wave,
then killed at a random moment after it committed its first batch: while it records the
next batches of the wave (a FETCH batch is one transaction: the kill lands inside one, or
between two), or while it sends (between a claim and its DATA, after the DATA before the
"sent"). A last worker finishes the work. The guarantees: every mail has a row, no citizen
gets two ARs, and a mail without its AR is one flagged uncertain. One mail in three asks
about a carte grise and is transferred (an AR and a forward to the service): a forward a
kill left 'sending' goes back to the queue and leaves again (at least once: a second copy
in the service's mailbox is harmless), so every transferred mail's forward is received
and none is uncertain.
"""

from __future__ import annotations

import email
import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from poison import citizen
from servers import MailUser, SmtpServer
from test_e2e import write_config
from test_poison import start_worker, stop_worker, wait_until

ROWS = "SELECT count(*) FROM messages"  # grows by a batch (or a part of one) at a time
# The paragraph of a mail routed to the cartes-grises service by the shipped rules.
CARTE_GRISE = (
    "J'ai acheté un véhicule d'occasion il y a trois semaines et ma demande de certificat "
    "d'immatriculation (carte grise) déposée sur le site de l'ANTS est toujours en cours "
    "d'instruction."
)
# The mails a kill left 'sending' that recovery marks uncertain: those to citizens.
CITIZENS_SENDING = (
    "SELECT count(*) FROM outbox WHERE status='sending' AND kind IN ('ar', 'notice', 'reply')"
)
FORWARDS = (
    "SELECT m.message_id, o.status FROM outbox o JOIN messages m ON m.id = o.message_pk"
    " WHERE o.kind = 'forward'"
)


def wave_mail(n: int) -> bytes:
    """Mail ``n`` of a wave: one in three transferred (a forward besides its AR)."""
    if n % 3:
        return citizen(n, f"Demande numéro {n}")
    mail = citizen(n, f"Carte grise numéro {n}")
    return mail.replace(b"Quels sont les horaires d'ouverture ?", CARTE_GRISE.encode())


@dataclass
class Kill:
    """The state a kill left: mails delivered so far, rows, items left 'sending', of them
    to citizens (each marked uncertain at the next start: the bound README states)."""

    delivered: int
    rows: int
    sending: int
    citizens: int = 0

    @property
    def in_intake(self) -> bool:
        """Killed before the wave was all recorded: during a batch, or between two."""
        return self.rows < self.delivered


@dataclass
class Figures:
    mails: int
    kills: list[Kill] = field(default_factory=list)
    ars: int = 0
    duplicates: int = 0
    lost: int = 0
    uncertain: int = 0
    delivered_anyway: int = 0  # uncertain, and the AR had in fact left
    unflagged: list[str] = field(default_factory=list)  # no AR received, not flagged
    not_acknowledged: int = 0
    transferred: int = 0  # mails with a forward queued
    forwards_missing: list[str] = field(default_factory=list)  # queued, never received
    forwards_twice: int = 0  # received more than once (a kill after it left: allowed)
    forwards_uncertain: int = 0
    elapsed: float = 0.0

    def line(self) -> str:
        during = sum(kill.in_intake for kill in self.kills)
        states = ", ".join(
            f"{k.rows}/{k.delivered} rows, {k.sending} sending ({k.citizens} to citizens)"
            for k in self.kills
        )
        return (
            f"{self.mails} mails, {len(self.kills)} kills -9 ({during} while recording "
            f"batches; at each: {states}), {self.ars} ARs received, {self.duplicates} "
            f"duplicates, {self.lost} lost, {self.uncertain} uncertain "
            f"({self.delivered_anyway} of them delivered anyway), {len(self.unflagged)} "
            f"without AR unflagged; {self.transferred} transferred: "
            f"{len(self.forwards_missing)} forwards missing, {self.forwards_twice} received "
            f"twice, {self.forwards_uncertain} uncertain; {self.elapsed:.0f} s"
        )


def count(database: Path, sql: str) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=10) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def run_scenario(
    tmp_path: Path,
    general: MailUser,
    etrangers: MailUser,
    smtp: SmtpServer,
    *,
    mails: int,
    kills: int,
    seed: int = 20261201,
    batch_size: int = 25,
) -> Figures:
    """Deliver ``mails`` in ``kills + 1`` waves, kill a worker after each of the first
    ``kills`` waves, let a last one finish; the figures of what was received and recorded."""
    started = time.monotonic()
    # A short lease: a restarted worker waits for its killed predecessor's to run out.
    config = write_config(
        tmp_path,
        general,
        etrangers,
        smtp,
        polling={"batch_size": batch_size},
        cluster={"lease_seconds": 2},
    )
    database = tmp_path / "mailbot.db"
    smtp.data_delay = 0.01  # sending takes real time: kills land mid-send too
    rng = random.Random(seed)
    waves = [range(n, mails, kills + 1) for n in range(kills + 1)]
    figures = Figures(mails)
    delivered = 0
    for round_number in range(kills):
        general.deliver([wave_mail(n) for n in waves[round_number]])
        delivered += len(waves[round_number])
        before = count(database, ROWS)
        worker = start_worker(config, tmp_path / f"worker-{round_number}.log")
        try:
            wait_until(lambda b=before: count(database, ROWS) > b, timeout=120, what="a batch")
            time.sleep(rng.uniform(0.0, 0.4))  # in the next batches, or in the sends
        finally:
            worker.kill()  # SIGKILL: no handler, no cleanup
            worker.wait(timeout=30)
        rows = count(database, ROWS)
        sending = count(database, "SELECT count(*) FROM outbox WHERE status='sending'")
        citizens = count(database, CITIZENS_SENDING)
        figures.kills.append(Kill(delivered, rows, sending, citizens))
    general.deliver([wave_mail(n) for n in waves[kills]])
    worker = start_worker(config, tmp_path / "worker-final.log")
    try:
        wait_until(
            lambda: (
                count(database, ROWS) == mails
                and count(
                    database, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
                )
                == 0
            ),
            timeout=300,
            what="the backlog",
        )
    finally:
        assert stop_worker(worker) == 0
    _tally(figures, database, smtp)
    figures.elapsed = time.monotonic() - started
    return figures


def _tally(figures: Figures, database: Path, smtp: SmtpServer) -> None:
    ars = Counter(
        str(email.message_from_bytes(r.raw)["In-Reply-To"])
        for r in smtp.messages
        if r.rcpt_tos[0].startswith("usager")
    )
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT uid, message_id, decision, ar_status FROM messages").fetchall()
    uids = {uid for uid, *_ in rows}
    uncertain = {mid for _uid, mid, _d, status in rows if status == "uncertain"}
    figures.ars = sum(ars.values())
    figures.duplicates = sum(n - 1 for n in ars.values() if n > 1)
    figures.lost = figures.mails - len(uids & set(range(1, figures.mails + 1)))
    figures.uncertain = len(uncertain)
    figures.delivered_anyway = len(uncertain & set(ars))
    figures.unflagged = [
        mid for _uid, mid, _d, status in rows if mid not in ars and status != "uncertain"
    ]
    figures.not_acknowledged = sum(decision != "acknowledge" for _u, _m, decision, _s in rows)
    if len(rows) != figures.mails:
        figures.lost = max(figures.lost, figures.mails - len(rows))
    _tally_forwards(figures, database, smtp)


def _tally_forwards(figures: Figures, database: Path, smtp: SmtpServer) -> None:
    """Each forward queued: received (the original's Message-ID in the mail to the
    service), how many times, and none uncertain."""
    with sqlite3.connect(database) as conn:
        forwards = conn.execute(FORWARDS).fetchall()
    to_services = [r.raw for r in smtp.messages if not r.rcpt_tos[0].startswith("usager")]
    figures.transferred = len(forwards)
    for message_id, _status in forwards:
        received = sum(message_id.encode() in raw for raw in to_services)
        if not received:
            figures.forwards_missing.append(message_id)
        figures.forwards_twice += received > 1
    figures.forwards_uncertain = sum(status == "uncertain" for _m, status in forwards)
