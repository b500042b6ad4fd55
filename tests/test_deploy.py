"""Packaging and operations (issue 16): the systemd unit checked by systemd-analyze, the
Containerfile, `mailbot backup` (SQLite's online backup API) and `mailbot migrate`
refused while a worker of an older version holds a lease."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg import fresh_database
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import ROOT, citizen_mail, write_config
from test_poison import inproc, start_worker, stop_worker
from test_status import offline_config

from mailbot import __version__
from mailbot.app import supervision
from mailbot.config import load_config
from mailbot.core.clock import utcnow
from mailbot.core.leases import SCHEDULER_LEASE, folder_lease
from mailbot.core.statuses import OutboxKind
from mailbot.store import Store, schema_upgrade
from mailbot.store.schema import leases, workers

UNIT = ROOT / "deploy" / "mailbot.service"
TEMPLATE = ROOT / "deploy" / "mailbot@.service"


def verify(
    tmp_path: Path, text: str, name: str = "mailbot.service"
) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the unit, its ExecStart pointing to an executable here
    (verify checks that the command exists; /opt/mailbot is where it is installed)."""
    binary = tmp_path / "mailbot"
    binary.write_text('#!/bin/sh\nexec python -m mailbot.cli "$@"\n', encoding="utf-8")
    binary.chmod(0o755)
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/mailbot/venv/bin/mailbot", str(binary)), encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup-tests installs Debian's systemd"
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_systemd_unit_verifies_clean_and_is_hardened(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    result = verify(tmp_path, text)
    print(f"\nsystemd-analyze verify: exit {result.returncode}, output {result.stderr!r}")
    assert result.returncode == 0
    assert result.stdout == result.stderr == ""
    for line in (
        "User=mailbot",
        "ProtectSystem=strict",
        "StateDirectory=mailbot",
        "CacheDirectory=mailbot",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "LoadCredential=smtp:/etc/mailbot/secrets/smtp",
        "RestartPreventExitStatus=3 78",  # a first poll refused; a configuration error
        "MemoryMax=1G",
        "TasksMax=64",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


def run_until_it_exits(config: Path) -> subprocess.CompletedProcess[str]:
    """``mailbot run`` in a process of its own, for a test where it must refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_template_for_several_workers_on_one_host_verifies_and_is_the_same_unit(
    tmp_path: Path,
) -> None:
    """mailbot@a.service, mailbot@b.service: two workers on one host (PostgreSQL), each
    with its own rules.yaml, state and cache directories, log identifier; every other
    line is the single unit's, so that hardening or limits added there are not missed."""
    text = TEMPLATE.read_text(encoding="utf-8")
    result = verify(tmp_path, text, "mailbot@a.service")
    print(f"\nsystemd-analyze verify: exit {result.returncode}, output {result.stderr!r}")
    assert result.returncode == 0
    assert result.stdout == result.stderr == ""
    per_instance = {
        "ExecStart=/opt/mailbot/venv/bin/mailbot --config /etc/mailbot/%i/rules.yaml run",
        "StateDirectory=mailbot/%i",
        "WorkingDirectory=/var/lib/mailbot/%i",
        "CacheDirectory=mailbot/%i",
        "SyslogIdentifier=mailbot-%i",
    }
    own = [line for line in directives(text) if line not in directives(UNIT.read_text())]
    assert set(own) - {next(x for x in own if x.startswith("Description="))} == per_instance
    assert "%i" in next(x for x in own if x.startswith("Description="))
    assert len(directives(text)) == len(directives(UNIT.read_text(encoding="utf-8")))


def test_run_with_a_typo_in_rules_yaml_exits_78_which_systemd_does_not_restart(
    tmp_path: Path,
) -> None:
    """A typo in rules.yaml made `run` exit 2, which Restart=on-failure restarted every
    5 s for ever (exit 2 is also a database not up yet at boot, which must be
    restarted). The configuration's errors exit 78 (EX_CONFIG), in the unit's
    RestartPreventExitStatus=: the unit stays failed, the journal naming the key."""
    config = offline_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("polling:", "polling:\n  interval_secondz: 60", 1), "utf-8")
    worker = run_until_it_exits(config)
    assert worker.returncode == 78, worker.stderr
    assert worker.stderr.startswith(f"error: {config}: polling") and "interval_secondz" in (
        worker.stderr
    )
    prevented = re.search(r"^RestartPreventExitStatus=(.+)$", UNIT.read_text(), re.MULTILINE)
    assert prevented is not None and "78" in prevented.group(1).split()


def test_run_with_a_syntax_error_in_a_template_exits_78_too(tmp_path: Path) -> None:
    """The templates are the prefecture's configuration as much as rules.yaml: a typo in
    one exited 2, restarted every 5 s for ever; now 78, the journal naming the file and
    the line."""
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    body = templates / "ar-general" / "body.txt.j2"
    body.write_text(body.read_text(encoding="utf-8") + "\n{% if %}\n", encoding="utf-8")
    worker = run_until_it_exits(offline_config(tmp_path, templates=str(templates)))
    assert worker.returncode == 78, worker.stderr
    assert worker.stderr.startswith("error: ") and "body.txt.j2" in worker.stderr


def test_every_credential_the_deploy_guide_names_is_one_the_unit_loads() -> None:
    """docs/deploy.md's rules.yaml examples name files in the service's credentials
    directory: each must be a LoadCredential= of the unit, or a prefecture following the
    guide gets a secret file that is not there (the probe's IMAP password was missing)."""
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    named = set(re.findall(r"/run/credentials/mailbot\.service/([\w.-]+)", guide))
    loaded = set(re.findall(r"^LoadCredential=([\w.-]+):", UNIT.read_text(encoding="utf-8"), re.M))
    assert named and named <= loaded, sorted(named - loaded)


def test_systemd_analyze_does_catch_a_mistake_in_the_unit(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=strct")
    result = verify(tmp_path, text)
    assert "Failed to parse protect system value" in result.stderr


def test_the_containerfile_runs_as_non_root_with_what_the_repository_has() -> None:
    text = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert text.rindex("USER 10001") > text.rindex("RUN ")  # nothing runs as root after it
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), name
    assert "PASSWORD" not in text.upper().replace("PASSWORD_FILE", "")  # secrets are mounted


def test_backup_copies_a_database_being_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    store = Store(load_config(config).database)
    stop, writing = threading.Event(), threading.Event()

    def write() -> None:  # a worker queueing mail all along
        n = 0
        while not stop.is_set():
            with store.transaction() as tx:
                tx.enqueue(None, OutboxKind.DIGEST, "svc@example.fr", "", f"<{n}@x>", b"x" * 500)
            n += 1
            writing.set()

    writer = threading.Thread(target=write)
    writer.start()
    # The backup starts once rows are being written (a quick start could otherwise copy an
    # empty outbox before the writer's first commit).
    try:
        assert writing.wait(timeout=30)
        result = inproc(capsys, config, "backup", str(tmp_path / "copy.db"))
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert "copied to" in result.stdout
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        copied = copy.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert 0 < copied <= len(store.outbox_items())
    assert Store(f"sqlite:///{tmp_path / 'copy.db'}", migrate=False).schema_version() == HEAD
    store.close()
    again = inproc(capsys, config, "backup", str(tmp_path / "copy.db"))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert not (tmp_path / "copy.db.partial").exists()


def test_backup_copy_is_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy holds citizens' mail: with an operator's usual umask (022) SQLite would
    make it world-readable. A partial copy left by an interrupted backup is not reused."""
    config = offline_config(tmp_path)
    Store(f"sqlite:///{tmp_path / 'mailbot.db'}").close()
    old_umask = os.umask(0o022)
    try:
        result = inproc(capsys, config, "backup", str(tmp_path / "copy.db"))
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "copy.db").stat().st_mode) == 0o600
    (tmp_path / "other.db.partial").write_bytes(b"left by a killed backup")
    refused = inproc(capsys, config, "backup", str(tmp_path / "other.db"))
    assert refused.returncode == 2 and "other.db.partial already exists" in refused.stderr
    assert (tmp_path / "other.db.partial").read_bytes() == b"left by a killed backup"
    assert not (tmp_path / "other.db").exists()


def test_backup_of_postgresql_points_to_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, database="postgresql+psycopg://mailbot@127.0.0.1:1/none")
    result = inproc(capsys, config, "backup", str(tmp_path / "copy.db"))
    assert result.returncode == 2
    assert "(umask 077; pg_dump --format=custom" in result.stderr  # a dump readable by its owner


HEAD = Store.head_version()
AFTER = f"{int(HEAD) + 1:04d}"
NEXT = f'''"""A revision after this mailbot's (a test's stand-in for the next release).

Revision ID: {AFTER}
Revises: {HEAD}
"""

import sqlalchemy as sa
from alembic import op

revision = "{AFTER}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("note", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("note")
'''


def worker_row(
    id: str, host: str, pid: int, version: str, schema: str, expires_at: datetime
) -> sa.Insert:
    """A running worker's row in ``workers`` (started now), as its keeper writes it."""
    return workers.insert().values(
        id=id,
        role="worker",
        host=host,
        pid=pid,
        version=version,
        schema=schema,
        started_at=utcnow(),
        expires_at=expires_at,
    )


def test_migrate_waits_until_no_worker_of_an_older_version_holds_a_lease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = offline_config(tmp_path)
    store = Store(load_config(config).database)  # schema HEAD, as the running workers'
    now = utcnow()
    with store.transaction() as tx:
        tx.conn.execute(
            worker_row("old", "mailbot-1", 4242, "0.1.0", HEAD, now + timedelta(seconds=30))
        )
        tx.conn.execute(
            leases.insert().values(
                name="folder:general:INBOX",
                holder="old",
                version="0.1.0",
                schema=HEAD,
                fence=1,
                acquired_at=now,
                expires_at=now + timedelta(seconds=30),
            )
        )
    # The next release: the same migrations and one more.
    migrations = tmp_path / "migrations"
    shutil.copytree(schema_upgrade.MIGRATIONS, migrations)
    (migrations / "versions" / f"{AFTER}_next.py").write_text(NEXT, encoding="utf-8")
    monkeypatch.setattr(schema_upgrade, "MIGRATIONS", migrations)

    refused = inproc(capsys, config, "migrate")
    assert refused.returncode == 2
    assert (
        f"a worker of an older version, mailbot-1 pid 4242 (mailbot 0.1.0, schema {HEAD})"
        in refused.stderr
    )
    assert "holds the lease folder:general:INBOX" in refused.stderr
    assert store.schema_version() == HEAD  # untouched

    with store.transaction() as tx:  # the old worker stopped: its lease and row are given back
        tx.conn.execute(leases.delete())
        tx.conn.execute(workers.delete())
    done = inproc(capsys, config, "migrate")
    assert done.returncode == 0, done.stderr
    assert f"schema {HEAD} -> {AFTER}" in done.stdout
    assert store.schema_version() == AFTER
    store.close()


def test_an_older_mailbot_on_a_database_a_newer_one_migrated_says_so_and_exits_2(
    tmp_path: Path,
    database: str,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rolling upgrade: the new version migrated the database, and the worker of a host
    not yet upgraded is restarted (systemd's Restart=, a reboot). It met Alembic's "Can't
    locate revision" as an unexpected error (exit 1, a bug's CRITICAL traceback), and
    `status` told the operator to run `mailbot migrate`, which failed the same way."""
    config = write_config(
        tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, database=database
    )
    store = Store(database)
    with store.transaction() as tx:  # what the next release's migration leaves
        tx.conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": AFTER})
    store.close()
    worker = run_until_it_exits(config)
    assert worker.returncode == 2, worker.stderr
    told = f"is at schema {AFTER}, which this mailbot ({__version__}, schema {HEAD}) does not know"
    assert told in worker.stderr
    assert "Install that version on this host too" in worker.stderr
    assert "unexpected error" not in worker.stderr
    migrate = inproc(capsys, config, "migrate")
    assert migrate.returncode == 2 and told in migrate.stderr, migrate.stderr
    status = inproc(capsys, config, "status")
    assert status.returncode == 3 and told in status.stdout, status.stdout
    assert "run `mailbot migrate`" not in status.stdout
    left = Store(database, migrate=False)
    assert left.schema_version() == AFTER  # left as it was
    left.close()


def test_migrate_waits_for_an_older_worker_that_holds_no_lease(
    tmp_path: Path,
    postgres: str,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers, fewer folders than their shares: the second waits without a lease.
    The refusal looked at the leases only, so the new version migrated under a running
    worker of the old one, which then took the folders the new one left it and wrote
    with the old schema's idea of the tables. A real `mailbot run` is that worker here;
    the folders' leases are held by the new version's worker (rows, schema AFTER)."""
    url = fresh_database(postgres, "m", "older-without-lease")
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, database=url)
    store = Store(url)  # schema HEAD: the running workers' version
    now, later = utcnow(), utcnow() + timedelta(hours=1)
    names = [folder_lease(*f) for f in supervision.watched_folders(load_config(config))]
    with store.transaction() as tx:
        tx.conn.execute(worker_row("new", "mailbot-2", 7, "next", AFTER, later))
        for name in [*names, SCHEDULER_LEASE]:
            tx.conn.execute(
                leases.insert().values(
                    name=name,
                    holder="new",
                    version="next",
                    schema=AFTER,
                    fence=1,
                    acquired_at=now,
                    expires_at=later,
                )
            )
    older = start_worker(config, tmp_path / "older.log")
    try:
        deadline = time.monotonic() + 120
        while not _registered(store, older.pid):
            assert older.poll() is None, (tmp_path / "older.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "older.log").read_text()
            time.sleep(0.1)
        with store.engine.connect() as conn:  # the premise: it waits without a lease
            holders = conn.execute(sa.select(leases.c.holder).distinct()).scalars().all()
        assert holders == ["new"]
        migrations = tmp_path / "migrations"
        shutil.copytree(schema_upgrade.MIGRATIONS, migrations)
        (migrations / "versions" / f"{AFTER}_next.py").write_text(NEXT, encoding="utf-8")
        monkeypatch.setattr(schema_upgrade, "MIGRATIONS", migrations)

        refused = inproc(capsys, config, "migrate")
        assert refused.returncode == 2, refused.stdout
        assert f"pid {older.pid} ({'mailbot ' + __version__}, schema {HEAD}), is running" in (
            refused.stderr
        )
        assert store.schema_version() == HEAD
    finally:
        assert stop_worker(older) == 0  # a clean stop: its row goes with it
    done = inproc(capsys, config, "migrate")
    assert done.returncode == 0, done.stderr
    assert store.schema_version() == AFTER
    store.close()


def _registered(store: Store, pid: int) -> bool:
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(workers.c.id).where(workers.c.pid == pid)).first()
    return found is not None


def test_under_systemd_each_log_line_carries_its_priority_for_the_journal(
    tmp_path: Path, imap_user: MailUser, dovecot: DovecotServer
) -> None:
    """journald stores what a service writes on stderr at one priority unless a line
    starts with sd-daemon's `<N>`: every mailbot line, ERRORs included, was an INFO entry,
    invisible to `journalctl -p warning` and to a forwarder's severity. systemd says the
    stream is the journal by $JOURNAL_STREAM (device:inode of stderr); a real `poll
    --once` here, its stderr a file named so, an SMTP server that does not answer."""
    with socket.socket() as closed:  # a port nobody listens on once closed: SMTP down
        closed.bind(("127.0.0.1", 0))
        smtp = SmtpServer(port=int(closed.getsockname()[1]))
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp)
    imap_user.append(citizen_mail(1))

    def poll(name: str, journal: bool) -> list[str]:
        path = tmp_path / name
        with path.open("wb") as err:
            info = os.fstat(err.fileno())
            env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
            if journal:
                env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
            command = [sys.executable, "-m", "mailbot.cli", "--config", str(config)]
            subprocess.run(
                [*command, "poll", "--once", "--acknowledge-existing"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                timeout=120,
                check=False,
            )
        return path.read_text(encoding="utf-8").splitlines()

    lines = poll("journal.log", journal=True)
    assert lines and all(re.match(r"<[2-7]>ts=", line) for line in lines), lines
    assert any(line.startswith("<6>") and " msg=batch " in line for line in lines), lines
    assert any(line.startswith("<4>") and 'msg="send deferred"' in line for line in lines)
    plain = poll("terminal.log", journal=False)  # a terminal, a file, a container: as before
    assert plain and all(line.startswith("ts=") for line in plain), plain
