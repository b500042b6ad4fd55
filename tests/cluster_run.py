"""Two `mailbot run` workers on one PostgreSQL, one killed (-9) and restarted again and again
while mail arrives: the scenario of tests/test_cluster.py (small) and bench/cluster.py
(1,000 mails). Real processes, the real Dovecot, aiosmtpd and PostgreSQL.

Each round waits for progress, kills the worker holding the general inbox's lease with
SIGKILL, measures how long until the other worker holds that lease (the takeover), then
starts the killed one again. At the end every mail must have a row, no citizen two ARs,
and a mail without an AR must be flagged uncertain.

The bench waits for the killed worker's leases to run out, which is the takeover time it
measures. The test ages them instead (``expire_killed``): once the process is gone, its
leases and worker row are put a second in the past, as a lease after its last renewal;
the survivor takes over at its next tick. Its workers can then run with the default lease
(15 s), which a live worker on a loaded machine does not lose by being slow to renew.
"""

from __future__ import annotations

import email
import random
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from poison import citizen
from servers import MailUser, SmtpServer
from test_e2e import write_config
from test_poison import start_worker, stop_worker

from mailbot.core.clock import utcnow
from mailbot.store import schema

INBOX_LEASE = "folder:general:INBOX"


@dataclass
class Figures:
    mails: int
    kills: int = 0
    takeovers: list[float] = field(default_factory=list)  # seconds, kill to new holder
    ars: int = 0
    duplicates: int = 0
    lost: int = 0
    uncertain: int = 0
    unflagged: list[str] = field(default_factory=list)  # no AR received, not flagged
    not_acknowledged: int = 0
    elapsed: float = 0.0

    def line(self) -> str:
        times = ", ".join(f"{t:.1f}" for t in self.takeovers)
        return (
            f"{self.mails} mails, {self.kills} kills -9, takeovers [{times}] s "
            f"(max {max(self.takeovers, default=0):.1f} s), {self.ars} ARs received, "
            f"{self.duplicates} duplicates, {self.lost} lost, {self.uncertain} uncertain, "
            f"{len(self.unflagged)} without AR unflagged, {self.elapsed:.0f} s"
        )


class Database:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def value(self, sql: str, **params: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(sql), params).scalar()
        except sa.exc.ProgrammingError:  # the schema is not there yet
            return None

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))

    def holder_pid(self, lease: str) -> int | None:
        """The pid of the live worker holding ``lease``, if any."""
        found = self.value(
            "SELECT w.pid FROM leases l JOIN workers w ON w.id = l.holder "
            "WHERE l.name = :name AND l.expires_at > now()",
            name=lease,
        )
        return None if found is None else int(found)

    def registered(self, pids: set[int]) -> bool:
        """Whether each of ``pids`` has a live row in ``workers`` (its keeper runs)."""
        rows = schema.workers
        query = sa.select(sa.func.count(sa.distinct(rows.c.pid))).where(
            rows.c.pid.in_(pids), rows.c.expires_at > utcnow()
        )
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).scalar_one() == len(pids)
        except sa.exc.ProgrammingError:  # the schema is not there yet
            return False

    def expire(self, pid: int) -> None:
        """The dead worker ``pid`` as the others see it a lease after its last renewal: its
        leases and worker row expired a second ago (by the workers' clock)."""
        past = utcnow() - timedelta(seconds=1)
        leases, rows = schema.leases, schema.workers
        ids = sa.select(rows.c.id).where(rows.c.pid == pid)
        with self.engine.begin() as conn:
            conn.execute(leases.update().where(leases.c.holder.in_(ids)).values(expires_at=past))
            conn.execute(rows.update().where(rows.c.pid == pid).values(expires_at=past))


def wait_for(condition: Any, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in logs
            )
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def run_scenario(
    tmp: Path,
    url: str,
    general: MailUser,
    etrangers: MailUser,
    smtp: SmtpServer,
    mails: int,
    kills: int,
    lease_seconds: float = 5,
    seed: int = 20261201,
    expire_killed: bool = False,
) -> Figures:
    config = write_config(
        tmp,
        general,
        etrangers,
        smtp,
        database=url,
        polling={"batch_size": 25},
        cluster={"lease_seconds": lease_seconds},
    )
    db = Database(url)
    figures = Figures(mails)
    smtp.data_delay = 0.02  # sends take real time: kills land mid-send too
    rng = random.Random(seed)
    started = time.monotonic()
    logs: list[Path] = []

    def launch(tag: str) -> subprocess.Popen[bytes]:
        logs.append(tmp / f"worker-{tag}.log")
        return start_worker(config, logs[-1])

    # Mail keeps arriving in batches while workers are killed and restarted.
    size = max(mails // 10, 1)
    batches = [list(range(s, min(s + size, mails))) for s in range(0, mails, size)]

    def deliver() -> None:
        for batch in batches:
            general.deliver([citizen(n, f"Demande numéro {n}") for n in batch])
            time.sleep(0.7)

    feeder = threading.Thread(target=deliver, daemon=True)
    workers = {"a": launch("a0"), "b": launch("b0")}
    try:
        feeder.start()
        for round_number in range(kills):
            _kill_round(db, workers, figures, rng, logs, round_number, launch, expire_killed)
        feeder.join()
        wait_for(
            lambda: (
                db.value("SELECT count(*) FROM messages") == mails
                and db.value("SELECT count(*) FROM outbox WHERE status IN ('pending','sending')")
                == 0
            ),
            timeout=120 + mails * 0.3,
            what="every mail recorded and its AR delivered",
            logs=logs,
        )
    finally:
        codes = [_stop(w) for w in workers.values()]  # every one, even after a hung one
    assert codes == [0, 0], (codes, *(p.read_text(errors="replace")[-3000:] for p in logs))
    figures.elapsed = time.monotonic() - started
    _count(db, smtp, figures)
    db.engine.dispose()
    return figures


def _stop(worker: subprocess.Popen[bytes]) -> int | str:
    """stop_worker's exit code, or "hung" for a worker that did not stop on SIGTERM (killed)."""
    try:
        return stop_worker(worker)
    except subprocess.TimeoutExpired:
        return "hung"


def _kill_round(
    db: Database,
    workers: dict[str, subprocess.Popen[bytes]],
    figures: Figures,
    rng: random.Random,
    logs: list[Path],
    round_number: int,
    launch: Any,
    expire_killed: bool,
) -> None:
    before = db.value("SELECT count(*) FROM events WHERE kind IN ('received','ar_sent')") or 0
    wait_for(
        lambda: (
            (db.value("SELECT count(*) FROM events WHERE kind IN ('received','ar_sent')") or 0)
            > before
            and db.holder_pid(INBOX_LEASE) in {w.pid for w in workers.values()}
            # Both registered: a takeover measures the survivor's keeper, not a restarted
            # survivor's interpreter start (20 s and more on a loaded machine).
            and db.registered({w.pid for w in workers.values()})
        ),
        timeout=120,
        what="progress under a live holder, both workers registered",
        logs=logs,
    )
    time.sleep(rng.uniform(0.0, 1.5))
    holder = db.holder_pid(INBOX_LEASE)
    victim = next((k for k, w in workers.items() if w.pid == holder), None)
    if victim is None:
        return  # the lease moved meanwhile: next round
    survivor = next(w for k, w in workers.items() if k != victim)
    workers[victim].kill()  # SIGKILL: no handler, no cleanup, the lease left behind
    killed_at = time.monotonic()
    workers[victim].wait(timeout=30)
    figures.kills += 1
    if expire_killed:  # gone for good: what it held is aged rather than waited out
        db.expire(workers[victim].pid)
    wait_for(
        lambda: db.holder_pid(INBOX_LEASE) == survivor.pid,
        timeout=60,
        what="the takeover",
        logs=logs,
    )
    figures.takeovers.append(time.monotonic() - killed_at)
    workers[victim] = launch(f"{victim}{round_number + 1}")


def _count(db: Database, smtp: SmtpServer, figures: Figures) -> None:
    ars = Counter(
        str(email.message_from_bytes(r.raw)["In-Reply-To"])
        for r in smtp.messages
        if r.rcpt_tos[0].startswith("usager")
    )
    rows = db.rows("SELECT uid, message_id, decision, ar_status FROM messages")
    figures.ars = sum(ars.values())
    figures.duplicates = sum(n - 1 for n in ars.values() if n > 1)
    figures.lost = figures.mails - len({r.uid for r in rows})
    figures.uncertain = sum(r.ar_status == "uncertain" for r in rows)
    figures.unflagged = [
        r.message_id for r in rows if r.message_id not in ars and r.ar_status != "uncertain"
    ]
    figures.not_acknowledged = sum(r.decision != "acknowledge" for r in rows)
