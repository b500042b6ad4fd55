"""Several workers on one database (issue 16): leases, fencing, the shared outbox, the
scheduled jobs run once, SQLite refusing a second worker, and two real workers on the
real PostgreSQL killed with -9 again and again (tests/cluster_run.py).

A lease that must run out is **aged** (``expire``: its row's expiry, and its holder's
worker row, put a second in the past), never waited for: the takeover then runs the same
code as after a real expiry, without a sleep a loaded machine could outrun. Leases that
must *not* run out meanwhile are long (``LEASE``, a minute), so that a test stalled for
seconds on a busy machine still finds them held.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cluster_run import run_scenario
from pg import fresh_database
from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer
from test_alerts import ROOT, TODAY, fill
from test_e2e import write_config
from test_overlap import Folder
from test_poison import cli, start_worker, stop_worker, wait_until

from mailbot.app import alerts
from mailbot.app.cluster import Keeper, this_worker
from mailbot.app.context import app_from_config, build_app
from mailbot.config import load_config
from mailbot.core.clock import utcnow
from mailbot.core.leases import SCHEDULER_LEASE, folder_lease
from mailbot.core.statuses import OutboxKind, OutboxStatus
from mailbot.errors import LeaseLostError
from mailbot.mail.smtp import Envelope, FileTransport
from mailbot.render.templates import Renderer
from mailbot.store import FolderState, Store
from mailbot.store.cluster import Cluster
from mailbot.store.schema import leases, workers
from mailbot.worker import Worker, make_worker

INBOX = folder_lease("general", "INBOX")
# Far longer than any stall of a loaded test machine: no lease here runs out by itself.
LEASE = 60.0


@pytest.fixture
def pg_url(postgres: str, request: pytest.FixtureRequest) -> str:
    return fresh_database(postgres, "c", request.node.nodeid)


def keeper(store: Store, name: str, stop: threading.Event, lease: float = LEASE) -> Keeper:
    holder = this_worker(f"test:{name}", store)
    return Keeper(store, holder, [INBOX, SCHEDULER_LEASE], lease, stop)


def expire(store: Store, holder: str) -> None:
    """``holder`` as the others see it a lease after its last renewal: its leases and its
    worker row expired (a second ago, by the workers' clock, which expiries compare)."""
    past = utcnow() - timedelta(seconds=1)
    with store.transaction() as tx:
        tx.conn.execute(leases.update().where(leases.c.holder == holder).values(expires_at=past))
        tx.conn.execute(workers.update().where(workers.c.id == holder).values(expires_at=past))


def alive(store: Store, holder: str) -> bool:
    """Whether ``holder``'s worker row is live (renewed since it was aged)."""
    with store.engine.connect() as conn:
        expires = conn.execute(
            sa.select(workers.c.expires_at).where(workers.c.id == holder)
        ).scalar_one_or_none()
    return expires is not None and expires > utcnow()


def waiting_for_a_lock(store: Store) -> bool:
    """Whether a backend of this test's own database waits for a lock (PostgreSQL)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.text(query)).scalar_one())


def test_one_worker_holds_a_folder_and_another_takes_it_over_once_it_stops_renewing(
    pg_url: str,
) -> None:
    first_store, second_store = Store(pg_url), Store(pg_url)
    stop = threading.Event()
    first, second = keeper(first_store, "a", stop), keeper(second_store, "b", stop)
    first.start(background=False)
    second.start(background=False)
    assert first.held == {INBOX, SCHEDULER_LEASE} and second.held == set()
    second.tick()  # the holder renews nothing here, but its lease has not run out
    assert second.held == set()
    expire(first_store, first.cluster.holder.id)  # the first holder is "dead": it stopped renewing
    second.tick()
    assert second.held == {INBOX, SCHEDULER_LEASE}
    first.tick()  # it wakes up: its renewals fail, it knows it lost them
    assert first.held == set()
    for store in (first_store, second_store):
        store.close()


def test_a_paused_holder_records_nothing_once_its_folder_was_taken_over(pg_url: str) -> None:
    paused_store, other_store = Store(pg_url), Store(pg_url)
    stop = threading.Event()
    paused, other = keeper(paused_store, "a", stop), keeper(other_store, "b", stop)
    paused.start(background=False)
    with paused_store.transaction() as tx:  # while it holds the lease, it records
        tx.save_folder_state("general", "INBOX", 7, 1)
    expire(other_store, paused.cluster.holder.id)  # paused past its lease
    other.start(background=False)
    assert other.holds(INBOX)
    with pytest.raises(LeaseLostError), paused_store.transaction() as tx:
        tx.save_folder_state("general", "INBOX", 7, 2)
    with other_store.transaction() as tx:
        assert tx.folder_state("general", "INBOX") == FolderState(7, 1)  # rolled back
        tx.save_folder_state("general", "INBOX", 7, 2)
    for store in (paused_store, other_store):
        store.close()


def test_two_workers_taking_due_mail_at_once_get_different_items(pg_url: str) -> None:
    store = Store(pg_url)
    with store.transaction() as tx:
        ids = [
            tx.enqueue(None, OutboxKind.DIGEST, "svc@example.fr", "", f"<{n}@x>", b"x")
            for n in range(5)
        ]
    stale = 60
    for name in ("worker-a", "worker-b"):  # two live workers
        Cluster(store, this_worker(name, store), lease_seconds=60).register()
    with store.transaction() as first:
        taken = first.take_due(utcnow(), 2, "worker-a", timedelta(seconds=stale))
        # The first transaction still holds its rows: the second skips them, never waits.
        with store.transaction() as second:
            others = second.take_due(utcnow(), 10, "worker-b", timedelta(seconds=stale))
    assert [i.id for i in taken] == ids[:2]
    assert [i.id for i in others] == ids[2:]
    with store.transaction() as tx:  # a live claimer's items stay its own
        assert tx.take_due(utcnow(), 10, "worker-c", timedelta(seconds=stale)) == []
        assert tx.claim_outbox(ids[0], 1, "worker-a")
        assert not tx.claim_outbox(ids[0], 1, "worker-b")  # 'sending' already: never twice
    assert store.outbox_status(ids[0]) == OutboxStatus.SENDING
    with store.transaction() as tx:  # an unregistered (or dead) claimer's items are free
        assert [i.id for i in tx.take_due(utcnow(), 10, "worker-c", timedelta(0))] == ids[1:]
    store.close()


def test_scheduled_jobs_run_on_the_one_worker_holding_the_scheduler_lease(
    tmp_path: Path,
    pg_url: str,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
) -> None:
    config = write_config(
        tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, database=pg_url
    )
    runs: list[str] = []
    workers = [make_worker(build_app(config)) for _ in range(2)]
    jobs = []
    for n, worker in enumerate(workers):
        assert worker.keeper is not None
        worker.alerts = lambda n=n: runs.append(f"alerts {n}")
        worker.weekly_report = lambda n=n: runs.append(f"report {n}")
        worker.keeper.start(background=False)
        scheduler = worker.build_scheduler()
        jobs += [scheduler.get_job(i) for i in ("alerts", "weekly-report")]
    for job in jobs:
        job.func()
    holders = [w for w in workers if w.keeper is not None and w.keeper.holds(SCHEDULER_LEASE)]
    assert len(holders) == 1
    assert runs == ["alerts 0", "report 0"]  # the first worker took the lease; once each
    # The first worker stops: the second takes the jobs over and catches up the report.
    first, second = (w.keeper for w in workers)
    assert first is not None and second is not None
    first.close()
    scheduler = workers[1].build_scheduler()
    second.on_taken = functools.partial(workers[1]._taken, scheduler)
    second.tick()
    assert second.holds(SCHEDULER_LEASE)
    scheduler.get_job("weekly-report-takeover").func()
    assert runs[2:] == ["report 1"]
    second.close()


def test_a_second_worker_on_sqlite_is_refused_with_a_clear_message(
    tmp_path: Path, imap_user: MailUser, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    lock = tmp_path / "mailbot.db.worker-lock"
    first = start_worker(config, tmp_path / "first.log")
    try:
        wait_until(lambda: lock.exists() and "pid" in lock.read_text(), 60, "the first worker")
        second = cli(config, "run")
        assert second.returncode == 2
        assert f"another mailbot worker (pid {first.pid})" in second.stderr
        assert "SQLite serves one worker only" in second.stderr
        assert "use PostgreSQL" in second.stderr
    finally:
        assert stop_worker(first) == 0
    # The lock went with the first worker: the next one starts.
    assert cli(config, "-q", "poll", "--once").returncode == 0


def test_two_workers_killed_again_and_again_answer_each_mail_once(
    tmp_path: Path,
    pg_url: str,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
) -> None:
    """Each killed worker's leases and row are aged once it is gone (not waited out): the
    survivor takes over at its next tick (3.75 s at most). The live workers keep the
    default lease (15 s), renewed every 3.75 s: a loaded machine would have to starve one
    for 15 s to lose a lease. The takeover time with a lease that really runs out is
    bench/cluster.py's figure."""
    figures = run_scenario(
        tmp_path,
        pg_url,
        imap_user,
        dovecot.new_user("etr"),
        smtp_server,
        mails=150,
        kills=2,  # each restart costs a worker's start (~3 s of CPU): bench/cluster.py kills more
        lease_seconds=15,
        expire_killed=True,
    )
    print(f"\ntwo workers, kill -9: {figures.line()}")
    assert figures.kills == 2
    assert figures.duplicates == 0
    assert figures.lost == 0 and figures.not_acknowledged == 0
    assert figures.unflagged == []  # a mail without its AR is always flagged uncertain
    assert figures.ars + figures.uncertain >= figures.mails
    assert max(figures.takeovers) < 30


def test_the_scheduled_alerts_are_queued_once_a_day_whoever_sends_them(tmp_path: Path) -> None:
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'a.db'}"
    data["templates"] = str(ROOT / "templates")
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    config = load_config(path)
    store = Store(config.database)
    fill(store)
    renderer = Renderer(config.templates, timezone=config.timezone)
    first = alerts.send_alerts(config, store, renderer, TODAY, once=True).sent
    again = alerts.send_alerts(config, store, renderer, TODAY, once=True).sent  # a takeover
    assert sum(first.values()) > 0 and again == {}
    assert len(store.outbox_items()) == 2  # the two services' digests, once
    assert alerts.send_alerts(config, store, renderer, TODAY).sent != {}  # by hand: on demand
    store.close()


def test_poll_once_stays_registered_while_it_sends_beside_a_running_worker(
    tmp_path: Path, pg_url: str
) -> None:
    """`poll --once` (cron, or by hand) beside a `run` worker on PostgreSQL: it registers
    as a worker, and its sends are its own while it lives. Before, it registered once at
    its start and never again: a lease later the other worker took it for dead and marked
    the ARs it was sending 'uncertain' — mail that left, flagged for agents to check by
    hand, and `mailbot status` CRITICAL at the fifth.

    Its row is aged while it sends (as if a lease had passed since its last renewal), then
    its keeper must renew it on its own thread before the other worker looks: a real
    timing, with margins a loaded machine does not reach — the renewal is waited for up to
    a minute (it comes within a tick, 3 s), and once renewed the row stays alive 12 s,
    renewed again every 3 s, while the other worker looks at once."""
    lease = 12.0
    app = app_from_config(
        load_config(ROOT / "rules.yaml"), FileTransport(tmp_path / "out"), pg_url, True
    )
    other_store = Store(pg_url)
    other = Keeper(other_store, this_worker("test:run", other_store), [], LEASE, threading.Event())
    send = FileTransport.send_batch

    def slow_send(transport: FileTransport, envelopes: Any, before: Any, *rest: Any) -> None:
        def claim_then_wait(envelope: Envelope) -> bool:
            claimed = before(envelope)  # 'sending', committed: the SMTP exchange is slow
            assert worker.keeper is not None
            holder = worker.keeper.cluster.holder.id
            expire(other_store, holder)  # a lease since its last renewal
            deadline = time.monotonic() + 60
            while not alive(other_store, holder) and time.monotonic() < deadline:
                time.sleep(0.1)  # its keeper renews it meanwhile (before: never again)
            other.tick()  # the running worker looks for dead workers' sends meanwhile
            return bool(claimed)

        send(transport, envelopes, claim_then_wait, *rest)

    app.outbox.transport.send_batch = slow_send.__get__(app.outbox.transport)  # type: ignore[method-assign]
    worker = Worker(
        app.config, app.pipeline, app.outbox, {"general": Folder(1)}, lease_seconds=lease
    )
    try:
        outcomes = worker.poll_once()
        assert [o.decision for o in outcomes] == ["acknowledge"]
        assert [row.status for row in app.store.outbox_items()] == ["sent"]
        assert [e.kind for e in app.store.events()].count("send_uncertain") == 0
    finally:
        other.close()
        other_store.close()
        app.store.close()


@pytest.mark.parametrize("kind", [OutboxKind.AR, OutboxKind.DIGEST])
def test_a_dead_workers_send_claimed_meanwhile_by_a_live_worker_is_not_made_uncertain(
    pg_url: str, kind: OutboxKind
) -> None:
    """The keeper found a dead worker's send still 'sending'; in that instant it was given
    back and claimed by a live worker (its transaction still open, the row locked). The
    recovery waits for that lock, then sees 'sending' again — but not the dead worker's:
    it leaves the mail to the live worker, never marks it 'uncertain' (an AR) nor queues it
    again (a digest, whose dead claimer's claim was ``CLAIM_STALE`` old) while it leaves.
    That the recovery waits is read in PostgreSQL (a backend of this test's database
    waiting for a lock), not guessed from a sleep."""
    from mailbot.app.delivery_recovery import CLAIM_STALE, recover_orphans, requeue_stalled

    store = Store(pg_url)
    with store.transaction() as tx:
        item_id = tx.enqueue(None, kind, "svc@example.fr", "", "<o@x>", b"x")
    dead = Cluster(store, this_worker("dead", store), lease_seconds=LEASE)
    live = Cluster(store, this_worker("live", store), lease_seconds=LEASE)
    dead.register()
    live.register()
    with store.transaction() as tx:
        assert tx.claim_outbox(item_id, 1, dead.holder.id)
    expire(store, dead.holder.id)  # the dead worker's row expired
    if kind == OutboxKind.AR:
        found = live.orphaned_sends()
        assert [(i.id, claimer) for i, claimer in found] == [(item_id, dead.holder.id)]
        recover = functools.partial(recover_orphans, store, found)
    else:
        stale = utcnow() - CLAIM_STALE - timedelta(seconds=1)
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE outbox SET claimed_at = :t"), {"t": stale})
        recover = functools.partial(requeue_stalled, store)
    with store.engine.connect() as other:  # the live worker, on a connection of its own
        other.execute(
            sa.text("UPDATE outbox SET status = 'pending', claimed_by = NULL WHERE id = :i"),
            {"i": item_id},
        )
        other.execute(
            sa.text(
                "UPDATE outbox SET status = 'sending', claimed_by = :w, claimed_at = now()"
                " WHERE id = :i"
            ),
            {"i": item_id, "w": live.holder.id},
        )
        recovered: list[list[int]] = []
        recovery = threading.Thread(target=lambda: recovered.append(recover()))
        recovery.start()
        wait_until(
            lambda: waiting_for_a_lock(store) or not recovery.is_alive(),
            60,
            "the recovery waiting for the live worker's lock",
        )
        assert recovery.is_alive()  # waiting for the live worker's lock
        other.commit()
    recovery.join(10)
    assert recovered == [[]]
    assert store.outbox_status(item_id) == OutboxStatus.SENDING
    assert [e.kind for e in store.events()].count("send_uncertain") == 0
    store.close()


def test_a_keeper_whose_tick_hangs_at_close_leaves_its_leases_to_expire(tmp_path: Path) -> None:
    """A tick still under way when ``close`` gives up waiting could take a lease again
    after they were given back: close then gives nothing back, and the leases run out."""
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    stop, gate, entered = threading.Event(), threading.Event(), threading.Event()
    held = keeper(store, "hung", stop, lease=2.0)
    held.start(background=False)
    assert held.holds(INBOX)

    def hung_tick() -> None:  # a database call that does not return
        entered.set()
        gate.wait(30)

    held.tick = hung_tick  # type: ignore[method-assign]
    held.join_seconds = 0.2
    held._thread.start()
    try:
        assert entered.wait(10), "the keeper's thread never ticked"
        held.close()
        with store.engine.connect() as conn:
            owners = conn.execute(sa.select(leases.c.holder).where(leases.c.name == INBOX))
            assert owners.scalars().all() == ["test:hung"]
            assert conn.execute(sa.select(workers.c.id)).scalars().all() == ["test:hung"]
        assert store.fence is None and not held.holds(INBOX)
    finally:
        gate.set()
        held._thread.join(10)
        store.close()


def test_a_keeper_that_stops_in_time_gives_its_leases_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    held = keeper(store, "clean", threading.Event(), lease=2.0)
    held.start()
    assert held.holds(INBOX)
    held.close()
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(leases.c.holder)).scalars().all() == []
        assert conn.execute(sa.select(workers.c.id)).scalars().all() == []
    store.close()
