"""`mailbot check --connect` (IT's finding: `check` never tried the connections, so a wrong
IMAP password or a firewall was found only when the worker ran): against the real test
servers, every connection tried, one line each, exit 1 when one fails, no password shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.config import Config as AlembicConfig
from pg import fresh_database
from rulesfile import dump_rules
from servers import DovecotServer, MailUser, SmtpServer, free_port, issue_tls
from test_e2e import citizen_mail, write_config
from test_poison import inproc

from mailbot.config import load_config
from mailbot.store import Store
from mailbot.store.schema_upgrade import MIGRATIONS

WRONG = "Wr0ng-pa55word-for-the-test"


@pytest.fixture
def etrangers_user(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def rewrite(path: Path, change: Any) -> Path:
    """rules.yaml changed in place by ``change(data)``."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


def lines(stdout: str) -> dict[str, str]:
    """The connection lines by what was tried ("database", "imap general", "smtp")."""
    found = {}
    for line in stdout.splitlines():
        what, sep, rest = line.partition("  ")
        if sep and what.strip() in {"database", "smtp"} | {
            f"imap {name}" for name in ("general", "etrangers", "tracking", "probe")
        }:
            found[what.strip()] = rest.strip()
    return found


def test_every_connection_ok_nothing_written_or_sent(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    imap_user.create_folder("Sent")
    imap_user.append(citizen_mail(1))
    flags_before = imap_user.flags()
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    rewrite(config, lambda d: d["mailboxes"]["general"]["imap"].update(sent_folder="Sent"))
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result.stdout)
    database = tmp_path / "mailbot.db"
    assert found["database"] == (
        f"ok      sqlite:///{database}: not created yet: the worker's first start creates"
        f" it at schema {Store.head_version()}"
    )
    assert not database.exists()  # a check creates no database
    imap = f"127.0.0.1:{imap_user.server.port} (none)"
    assert found["imap general"] == (
        f"ok      {imap}: login as {imap_user.name!r} accepted, 'INBOX', 'Sent' examined"
        " (read-only)"
    )
    assert found["imap etrangers"].startswith(f"ok      {imap}: login as {etrangers_user.name!r}")
    assert found["smtp"] == (
        f"ok      127.0.0.1:{smtp_server.port} (none): greeting, EHLO accepted, QUIT (nothing sent)"
    )
    assert imap_user.flags() == flags_before  # EXAMINE: the unread mail still unread
    assert smtp_server.messages == []
    assert len(smtp_server.commands("QUIT")) == 1


def test_the_tracking_and_probe_mailboxes_are_tried_too(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The worker logs in to them as well (the Bcc'd replies, the probe's ARs)."""
    monkeypatch.setenv("MAILBOT_PROBE_SECRET", "probe-secret-for-tests-0123456789")
    tracking, probe = dovecot.new_user("suivi"), dovecot.new_user("sonde")
    tracking.create_folder("Suivi")
    config = write_config(
        tmp_path,
        imap_user,
        etrangers_user,
        smtp_server,
        tracking={
            "address": "suivi@seine-maritime.gouv.fr",
            "imap": tracking.imap_config("Suivi").model_dump(mode="json", exclude_none=True),
        },
        probe={
            "address": "sonde@seine-maritime.gouv.fr",
            "imap": probe.imap_config().model_dump(mode="json", exclude_none=True),
            "secret_env": "MAILBOT_PROBE_SECRET",
        },
    )
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result.stdout)
    assert f"login as {tracking.name!r} accepted, 'Suivi' examined" in found["imap tracking"]
    assert f"login as {probe.name!r} accepted, 'INBOX' examined" in found["imap probe"]


def test_a_wrong_imap_password_fails_exit_1_and_is_never_shown(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILBOT_TEST_WRONG_PASSWORD", WRONG)

    def wrong(data: dict[str, Any]) -> None:
        imap = data["mailboxes"]["general"]["imap"]
        imap.pop("password_file")
        imap["password_env"] = "MAILBOT_TEST_WRONG_PASSWORD"

    config = rewrite(write_config(tmp_path, imap_user, etrangers_user, smtp_server), wrong)
    result = inproc(capsys, config, "--verbose", "check", "--connect")
    assert result.returncode == 1, result.stdout + result.stderr
    found = lines(result.stdout)
    assert found["imap general"].startswith(
        f"FAILED  127.0.0.1:{imap_user.server.port} (none): authentication failed for user"
        f" {imap_user.name!r}: "
    ), found
    assert "AUTHENTICATIONFAILED" in found["imap general"]
    assert found["imap etrangers"].startswith("ok ")
    assert found["database"].startswith("ok ") and found["smtp"].startswith("ok ")
    for secret in (WRONG, imap_user.password, etrangers_user.password):
        assert secret not in result.stdout and secret not in result.stderr


def test_a_password_not_set_names_its_source_not_a_value(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MAILBOT_TEST_UNSET", raising=False)

    def unset(data: dict[str, Any]) -> None:
        imap = data["mailboxes"]["etrangers"]["imap"]
        imap.pop("password_file")
        imap["password_env"] = "MAILBOT_TEST_UNSET"

    config = rewrite(write_config(tmp_path, imap_user, etrangers_user, smtp_server), unset)
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 1
    assert lines(result.stdout)["imap etrangers"].endswith(
        ": no IMAP password: environment variable MAILBOT_TEST_UNSET is not set"
    )


def test_a_closed_port_and_a_certificate_of_another_ca_are_named(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening on the IMAP port (a firewall's REJECT, a wrong port), an SMTP
    server whose certificate the configured CA did not sign: each says so in a few words."""
    closed = free_port()
    tls = issue_tls(tmp_path / "tls", "127.0.0.1")
    other_ca = issue_tls(tmp_path / "other", "127.0.0.1").ca_file
    with SmtpServer(tls=tls) as server:  # STARTTLS required

        def change(data: dict[str, Any]) -> None:
            data["mailboxes"]["etrangers"]["imap"]["port"] = closed
            data["smtp"].update(ca_file=str(other_ca))

        config = rewrite(write_config(tmp_path, imap_user, etrangers_user, server), change)
        result = inproc(capsys, config, "check", "--connect", "--timeout", "5")
    assert result.returncode == 1, result.stdout
    found = lines(result.stdout)
    assert found["imap etrangers"] == (
        f"FAILED  127.0.0.1:{closed} (none): connection refused 127.0.0.1:{closed}"
    )
    assert found["smtp"].startswith(f"FAILED  127.0.0.1:{server.port} (starttls): ")
    assert found["smtp"].endswith(
        f": certificate verify failed (unable to get local issuer certificate)"
        f" with 127.0.0.1:{server.port}"
    ), found["smtp"]
    assert found["imap general"].startswith("ok ")
    assert server.messages == []


def one_schema_back(url: str) -> str:
    """A database created at this mailbot's schema, then downgraded by one migration (a
    database an older mailbot left); its version."""
    Store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    engine.dispose()
    version = schema_of(url)
    assert version is not None and version != Store.head_version()
    return version


def schema_of(url: str) -> str | None:
    store = Store(url, migrate=False)
    try:
        return store.schema_version()
    finally:
        store.close()


def test_a_database_at_an_older_schema_is_the_worker_start_to_upgrade(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ok, and said; and left as it was: neither `check` nor `check --connect` migrates
    (plain `check` upgraded it, opening it to look for mail without Return-Path)."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    url = load_config(config).database
    older = one_schema_back(url)
    assert inproc(capsys, config, "check").returncode == 0
    assert schema_of(url) == older
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout)["database"] == (
        f"ok      {url}: schema {older}, this mailbot's is {Store.head_version()}: the"
        " worker's start upgrades it (or `mailbot migrate` beforehand)"
    )
    assert schema_of(url) == older


def test_a_database_a_newer_mailbot_migrated_fails(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    url = load_config(config).database
    Store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 1, result.stdout + result.stderr
    line = lines(result.stdout)["database"]
    assert line.startswith(f"FAILED  {url}: the database {url} is at schema 9999, which"), line
    assert "a newer mailbot migrated it" in line
    assert schema_of(url) == "9999"


def test_postgresql_at_head_and_one_that_does_not_answer(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    postgres: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = fresh_database(postgres, "c", request.node.nodeid)
    Store(url).close()
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server, database=url)
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    head = Store.head_version()
    assert lines(result.stdout)["database"].endswith(f": schema {head}, this mailbot's")

    port = free_port()
    closed = f"postgresql+psycopg://mailbot@127.0.0.1:{port}/none"
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server, database=closed)
    result = inproc(capsys, config, "check", "--connect", "--timeout", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    line = lines(result.stdout)["database"]
    assert line.startswith(f"FAILED  {closed}: cannot read the database {closed}: "), line
    assert "Connection refused" in line
    assert lines(result.stdout)["smtp"].startswith("ok ")
