"""kill -9 at random moments: no mail lost, no AR sent twice, the doubtful ones flagged.

`mailbot run` is a real process against the real Dovecot and aiosmtpd. It is killed with
SIGKILL several times while it works through a backlog (after it has started recording
mail, at a random moment: in a transaction, between one and the next, while sending),
then restarted, until everything is processed. The delivery guarantee (README) is that an
AR interrupted while sending is marked uncertain and never resent: so every mail has a
row, no citizen gets two ARs, and a mail without an AR is one flagged uncertain.
"""

from __future__ import annotations

import email
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

from poison import citizen
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
from test_poison import start_worker, stop_worker, wait_until

MAILS = 500
KILLS = 4
# Progress: mail recorded or ARs sent (not the start-up's own recovery events).
WORK = "SELECT count(*) FROM events WHERE kind IN ('received', 'ar_sent')"


def count(database: Path, sql: str) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=10) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_kill_9_at_random_moments_loses_nothing_and_never_answers_twice(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(
        tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, polling={"batch_size": 25}
    )
    database = tmp_path / "mailbot.db"
    imap_user.deliver([citizen(n, f"Demande numéro {n}") for n in range(MAILS)])
    smtp_server.data_delay = 0.03  # sending takes real time: kills land mid-send too
    rng = random.Random(20261126)
    kills = []
    for round_number in range(KILLS):
        before = count(database, WORK)
        worker = start_worker(config, tmp_path / f"worker-{round_number}.log")
        try:
            if round_number == 0:
                time.sleep(rng.uniform(0.5, 3.0))  # anywhere, start-up included
            else:  # once it is at work: mid-transaction, between mails, or mid-send
                wait_until(
                    lambda b=before: count(database, WORK) > b,
                    timeout=120,
                    what="progress",
                )
                time.sleep(rng.uniform(0.0, 1.5))
        finally:
            worker.kill()  # SIGKILL: no handler, no cleanup
            worker.wait(timeout=30)
        kills.append(
            (
                count(database, "SELECT count(*) FROM messages"),
                count(database, "SELECT count(*) FROM outbox WHERE status='sending'"),
            )
        )
    worker = start_worker(config, tmp_path / "worker-final.log")
    try:
        wait_until(
            lambda: (
                count(database, "SELECT count(*) FROM messages") == MAILS
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

    ars = Counter(
        str(email.message_from_bytes(r.raw)["In-Reply-To"])
        for r in smtp_server.messages
        if r.rcpt_tos[0].startswith("usager")
    )
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT uid, message_id, decision, ar_status FROM messages").fetchall()
    uids = {uid for uid, *_ in rows}
    uncertain = {mid for _uid, mid, _d, status in rows if status == "uncertain"}
    duplicates = sum(n - 1 for n in ars.values() if n > 1)
    lost = MAILS - len(uids)
    unflagged = [mid for _uid, mid, _d, status in rows if mid not in ars and status != "uncertain"]
    print(
        f"\nkill -9: {MAILS} mails, {len(kills)} kills (rows, sending at each: {kills}), "
        f"{sum(ars.values())} ARs received, "
        f"{duplicates} duplicates, {lost} lost, {len(uncertain)} uncertain "
        f"({len(uncertain & set(ars))} of them delivered anyway)"
    )
    assert duplicates == 0
    assert lost == 0 and len(rows) == MAILS and uids == set(range(1, MAILS + 1))
    assert all(decision == "acknowledge" for _uid, _mid, decision, _status in rows)
    assert unflagged == []  # a mail without its AR is always one flagged uncertain
