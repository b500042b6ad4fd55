"""`mailbot status` (issue 16): one test per Nagios/Centreon state, the thresholds of
rules.yaml validated, and the figures a real poll leaves behind."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_database, read_only
from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import ROOT, citizen_mail, poll, write_config
from test_poison import inproc

from mailbot.app import supervision
from mailbot.config import load_config
from mailbot.core.clock import utcnow
from mailbot.core.statuses import OutboxKind, WorkerRole
from mailbot.errors import ConfigError
from mailbot.store import Store
from mailbot.store.schema import outbox, workers


def offline_config(tmp_path: Path, **overrides: Any) -> Path:
    """rules.yaml with its database here: status reads the database, never a server."""
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'mailbot.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data.update(overrides)
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


def all_polled(config_path: Path, errors: dict[str, int] | None = None) -> Store:
    """Every watched folder polled just now, as a worker records it."""
    config = load_config(config_path)
    store = Store(config.database)
    for mailbox, folder in supervision.watched_folders(config):
        supervision.record_poll(store, mailbox, folder, "w1", utcnow(), 0.2, None)
        for _ in range((errors or {}).get(mailbox, 0)):
            supervision.record_poll(store, mailbox, folder, "w1", utcnow(), 0.0, "LOGIN refused")
    return store


def test_all_well_is_ok_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(tmp_path)
    all_polled(config).close()
    result = inproc(capsys, config, "status")
    assert result.returncode == 0, result.stdout
    headline = result.stdout.splitlines()[0]
    assert headline.startswith("MAILBOT OK - all checks OK | ")
    assert "'outbox depth'=0" in headline
    assert "general/INBOX: last successful poll" in result.stdout
    assert "outbox: 0 pending, 0 deferred (SMTP), 0 failed (24 h), 0 uncertain" in result.stdout


def test_an_outbox_over_its_warning_threshold_is_warning_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, status={"outbox_depth": {"warning": 2, "critical": 10}})
    store = all_polled(config)
    with store.transaction() as tx:
        for n in range(3):
            tx.enqueue(None, OutboxKind.DIGEST, "svc@example.fr", "", f"<{n}@x>", b"x")
    store.close()
    result = inproc(capsys, config, "status")
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("MAILBOT WARNING - outbox depth 3 (warning at 2) | ")
    assert "outbox: 3 pending (oldest" in result.stdout
    # Nagios perfdata, 'label'=value[unit];warn;crit: Centreon draws the thresholds from it
    tail = result.stdout.splitlines()[0].split(" | ", 1)[1]
    perfdata = dict(re.findall(r"'([^']*)'=(\S+)", tail))
    assert perfdata["outbox depth"] == "3;2;10"
    assert perfdata["general/INBOX imap errors"] == "0;1;5"
    assert re.fullmatch(r"\d+s;300;900", perfdata["general/INBOX lag"]), perfdata


@pytest.mark.parametrize(
    ("waited", "code", "headline"),
    [
        (timedelta(minutes=5), 0, "MAILBOT OK - all checks OK"),
        (timedelta(minutes=20), 1, "MAILBOT WARNING - oldest pending 1200 s (warning at 900 s)"),
        (timedelta(hours=2), 2, "MAILBOT CRITICAL - oldest pending 7200 s (critical at 3600 s)"),
    ],
)
def test_one_mail_waiting_too_long_is_graded_by_its_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], waited: timedelta, code: int, headline: str
) -> None:
    """A delivery thread that died leaves one AR pending on a quiet day: far below the
    depth's thresholds, so its age is what shows it."""
    config = offline_config(tmp_path)
    store = all_polled(config)
    with store.transaction() as tx:
        pk = tx.enqueue(None, OutboxKind.AR, "citoyen@example.fr", "", "<1@x>", b"x")
        tx.conn.execute(
            outbox.update().where(outbox.c.id == pk).values(created_at=utcnow() - waited)
        )
    store.close()
    result = inproc(capsys, config, "status")
    assert result.returncode == code, result.stdout
    assert result.stdout.startswith(headline + " | "), result.stdout
    assert "outbox: 1 pending (oldest" in result.stdout


def test_imap_failing_again_and_again_is_critical_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    all_polled(config, errors={"etrangers": 5}).close()
    result = inproc(capsys, config, "status")
    assert result.returncode == 2, result.stdout
    assert result.stdout.startswith("MAILBOT CRITICAL - etrangers/INBOX imap errors 5 (critical")
    assert "5 IMAP errors in a row (last: LOGIN refused)" in result.stdout


def test_a_poll_failed_by_the_database_shows_why_though_it_is_no_imap_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    store = all_polled(config)
    failure = "the database is busy (locked): retried at the next poll"
    supervision.record_poll(store, "general", "INBOX", "w1", utcnow(), 0.0, failure, database=True)
    store.close()
    lines = inproc(capsys, config, "status").stdout.splitlines()
    general = next(line for line in lines if line.startswith("general/INBOX:"))
    assert f"0 IMAP errors in a row (last: {failure})" in general
    store = Store(load_config(config).database)
    supervision.record_poll(store, "general", "INBOX", "w1", utcnow(), 0.2, None)
    store.close()
    lines = inproc(capsys, config, "status").stdout.splitlines()
    general = next(line for line in lines if line.startswith("general/INBOX:"))
    assert general.endswith("0 IMAP errors in a row"), general


def test_a_folder_never_polled_is_unknown_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    Store(load_config(config).database).close()  # migrated, but no worker ever polled
    result = inproc(capsys, config, "status")
    assert result.returncode == 3, result.stdout
    headline = result.stdout.splitlines()[0]
    assert headline.startswith("MAILBOT UNKNOWN - ")
    assert "general/INBOX never polled" in headline


def test_a_database_that_does_not_answer_is_unknown_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named, and what happened in a few words: the on-call read `cannot tell:
    OperationalError`, neither which database nor that it was not answering."""
    url = "postgresql+psycopg://mailbot@127.0.0.1:1/none"
    result = inproc(capsys, offline_config(tmp_path, database=url), "status")
    assert result.returncode == 3
    assert result.stdout == (
        f"MAILBOT UNKNOWN - cannot tell: cannot read the database {url}:"
        " the connection to the database was lost (OperationalError)\n"
    )


def test_a_read_only_database_is_critical_and_named(
    tmp_path: Path,
    postgres: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A standby or ``default_transaction_read_only`` answers every read: status read its
    figures as usual and said OK while no mail could be recorded (the folders' lag only
    said so after 300 s). It is CRITICAL now, and says why."""
    url = fresh_database(postgres, "s", request.node.nodeid)
    config = offline_config(tmp_path, database=url)
    all_polled(config).close()
    assert inproc(capsys, config, "status").returncode == 0
    read_only(url)
    try:
        result = inproc(capsys, config, "status")
    finally:
        read_only(url, on=False)
    assert result.returncode == 2, result.stdout
    text = "database read-only: default_transaction_read_only is on; no mail is recorded"
    assert result.stdout.startswith(f"MAILBOT CRITICAL - {text}")
    assert f"CRITICAL: {text} nor any AR sent" in result.stdout
    assert inproc(capsys, config, "status").returncode == 0


def test_critical_beats_warning_and_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path, status={"outbox_depth": {"warning": 1, "critical": 10}})
    store = Store(load_config(config).database)
    supervision.record_poll(store, "general", "INBOX", "w1", utcnow(), 0.0, "timeout")
    for _ in range(4):
        supervision.record_poll(store, "general", "INBOX", "w1", utcnow(), 0.0, "timeout")
    with store.transaction() as tx:
        tx.enqueue(None, OutboxKind.DIGEST, "svc@example.fr", "", "<1@x>", b"x")
    store.close()
    result = inproc(capsys, config, "status")
    assert result.returncode == 2
    assert "WARNING: outbox depth 1 (warning at 1)" in result.stdout
    assert "UNKNOWN: etrangers/INBOX never polled" in result.stdout


def test_thresholds_are_validated(tmp_path: Path) -> None:
    config = offline_config(tmp_path, status={"lag_seconds": {"warning": 600, "critical": 60}})
    with pytest.raises(
        ConfigError, match=r"status\.lag_seconds.*critical \(60\) must not be below"
    ):
        load_config(config)


def test_after_a_real_poll_the_inboxes_show_their_last_success(
    tmp_path: Path,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    imap_user.append(citizen_mail(1))
    assert poll(config, acknowledge_existing=True) == 0
    result = inproc(capsys, config, "status")
    beats = {line.split(":")[0]: line for line in result.stdout.splitlines()[1:5]}
    assert "0 IMAP errors in a row" in beats["general/INBOX"]
    assert "last successful poll never" not in beats["general/INBOX"]
    assert result.stdout.startswith("MAILBOT OK"), result.stdout


def test_a_probe_that_never_ran_while_the_worker_runs_for_hours_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that fails before it sends anything (its own IMAP unreachable, its password
    missing) records no round. That was "none yet", OK, for ever: a probe that never worked
    looked like one just installed. Once a worker has run for three of its periods (and
    the wait), no round at all is a WARNING, as a schedule that stopped is."""
    monkeypatch.setenv("MAILBOT_PROBE_SECRET", "probe-secret-for-tests-0123456789")
    probe = {
        "address": "sonde.mailbot@example.org",
        "imap": {"host": "imap.example.org", "username": "sonde", "password_env": "NONE"},
        "secret_env": "MAILBOT_PROBE_SECRET",
        "mailboxes": ["general"],
    }
    config = offline_config(tmp_path, probe=probe)
    store = all_polled(config)
    now = utcnow()

    def worker_started(ago: timedelta) -> None:
        with store.engine.begin() as conn:
            conn.execute(workers.delete())
            conn.execute(
                workers.insert().values(
                    id="w1",
                    role=WorkerRole.WORKER,
                    host="h",
                    pid=1,
                    version="0",
                    schema="0",
                    started_at=now - ago,
                    expires_at=now + timedelta(seconds=15),
                )
            )

    def probe_check() -> tuple[str, str]:
        found = supervision.status(load_config(config), store, now).checks
        check = next(c for c in found if c.what == "general probe")
        return check.state.value, check.text

    worker_started(timedelta(minutes=30))
    assert probe_check() == ("OK", "general probe: none yet")  # just installed
    worker_started(timedelta(hours=4))
    state, text = probe_check()
    assert state == "WARNING" and "never ran" in text, text
    store.close()
