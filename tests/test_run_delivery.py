"""`mailbot run` with an SMTP server that never answers after the final dot.

Delivery has a thread of its own: a hung send must neither delay the recording of new mail
nor a shutdown. The deadlines are behaviour (the process has to react within them), checked
with frequent polling; the figures measured are printed for the record.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from rulesfile import dump_rules, load_rules
from scripted import ScriptedSmtpServer
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config
from test_worker import start_worker


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def rows(database: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database, timeout=5) as db:
        return db.execute(query).fetchall()


def test_a_hung_smtp_server_delays_neither_intake_nor_shutdown(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    with ScriptedSmtpServer() as hung:
        hung.fail("end", "hang", times=10)  # takes the mail, never says so
        config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
        data = load_rules(config)
        data["smtp"] = {
            "host": hung.host,
            "port": hung.port,
            "security": "none",
            "timeout_seconds": 300,  # the send would hang for 5 minutes
        }
        config.write_text(dump_rules(data), encoding="utf-8")
        database = tmp_path / "mailbot.db"
        imap_user.append(citizen_mail(1))
        worker = start_worker(config, "--acknowledge-existing")
        try:
            # Now hung after ".". The start includes lingua's models: 4 s of CPU, 30 s of
            # wall at a load of 20 on two cores (seen on a shared machine).
            wait_until(lambda: len(hung.deliveries) == 1, timeout=120)

            # The bounds below are far from what a wait behind the send would take (the
            # 300 s of its timeout) and, for the new mail, under the 60 s poll (seen through
            # IDLE), yet long enough for a machine at a load of 8 (2 s and 5 s were not).
            imap_user.append(citizen_mail(2, sender="second@example.fr"))
            latency = wait_until(
                lambda: rows(database, "SELECT count(*) FROM messages") == [(2,)], timeout=30
            )
            assert rows(database, "SELECT status FROM outbox ORDER BY id") == [
                ("sending",),
                ("pending",),
            ]

            worker.send_signal(signal.SIGTERM)
            stop = wait_until(lambda: worker.poll() is not None, timeout=30)
            _out, err = worker.communicate(timeout=5)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    print(f"new mail recorded {latency:.2f} s after APPEND; stopped {stop:.2f} s after SIGTERM")
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err
    # The send cut after the "." may have been taken: uncertain, never resent. The mail
    # that never left stays queued, as if never tried.
    assert rows(database, "SELECT status, attempts FROM outbox ORDER BY id") == [
        ("uncertain", 1),
        ("pending", 0),
    ]
    assert len(hung.deliveries) == 1
