"""SMTP AUTH against a real server (aiosmtpd with an authenticator, STARTTLS with a test
certificate): `mailbot check --connect` and the delivery claimed EHLO, STARTTLS and AUTH,
but the test server offered no AUTH, so the login was never exercised. A right password
passes; a wrong one fails naming the step and the user, never the secret, and the mail
stays queued (not lost) until the password is mended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import DovecotServer, MailUser, SmtpServer, issue_tls
from test_check_connect import lines, rewrite
from test_e2e import citizen_mail, db_rows, write_config
from test_poison import inproc

LOGIN = "mailbot-relay"
PASSWORD = "Relay-pa55word-0123456789"
WRONG = "Wr0ng-relay-pa55word-for-the-test"


@pytest.fixture
def etrangers_user(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpServer]:
    """A submission server: STARTTLS required, then AUTH required before MAIL."""
    tls = issue_tls(tmp_path / "tls", "127.0.0.1")
    with SmtpServer(tls=tls, users={LOGIN: PASSWORD}) as server:
        yield server


def wrong_password(monkeypatch: pytest.MonkeyPatch) -> Any:
    """rules.yaml's SMTP password read from a variable holding a wrong one."""
    monkeypatch.setenv("MAILBOT_TEST_SMTP_PASSWORD", WRONG)

    def change(data: dict[str, Any]) -> None:
        data["smtp"].pop("password_file")
        data["smtp"]["password_env"] = "MAILBOT_TEST_SMTP_PASSWORD"

    return change


def no_secret(*outputs: str) -> None:
    for secret in (PASSWORD, WRONG):
        for output in outputs:
            assert secret not in output


def test_check_connect_logs_in_with_the_right_password(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    relay: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers_user, relay)
    result = inproc(capsys, config, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout)["smtp"] == (
        f"ok      127.0.0.1:{relay.port} (starttls): greeting, EHLO, STARTTLS,"
        f" AUTH as {LOGIN!r} accepted, QUIT (nothing sent)"
    )
    assert relay.logins == [(LOGIN, True)]
    assert relay.messages == []
    no_secret(result.stdout, result.stderr)


def test_check_connect_fails_on_a_wrong_password_naming_the_user_not_the_secret(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    relay: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = rewrite(
        write_config(tmp_path, imap_user, etrangers_user, relay), wrong_password(monkeypatch)
    )
    result = inproc(capsys, config, "--verbose", "check", "--connect")
    assert result.returncode == 1, result.stdout + result.stderr
    found = lines(result.stdout)
    assert found["smtp"] == (
        f"FAILED  127.0.0.1:{relay.port} (starttls): authentication failed for user"
        f" {LOGIN!r}: SMTP 535 5.7.8 Authentication credentials invalid"
    ), found["smtp"]
    assert found["imap general"].startswith("ok ") and found["database"].startswith("ok ")
    assert relay.logins == [(LOGIN, False)]
    no_secret(result.stdout, result.stderr)


def test_the_ar_leaves_through_a_server_that_requires_auth(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    relay: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    imap_user.append(citizen_mail(1))
    config = write_config(tmp_path, imap_user, etrangers_user, relay)
    result = inproc(capsys, config, "poll", "--once", "--acknowledge-existing")
    assert result.returncode == 0, result.stdout + result.stderr
    (sent,) = relay.wait_for(1)
    assert sent.rcpt_tos == ("marie.dupont@example.fr",)
    assert relay.logins and all(login == (LOGIN, True) for login in relay.logins)
    assert db_rows(config, "SELECT kind, status FROM outbox") == [("ar", "sent")]
    no_secret(result.stdout, result.stderr)


def test_a_wrong_password_keeps_the_ar_queued_with_a_clear_error_until_mended(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    relay: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The relay refuses the login (535): no mail is at fault, so none fails for good (a
    5xx at AUTH is not the mail's refusal); the AR waits in the queue, its error saying
    which step and which user, and leaves once the password is right."""
    imap_user.append(citizen_mail(1))
    config = write_config(tmp_path, imap_user, etrangers_user, relay)
    # Due again in an hour: one attempt in this poll, however long it lasts (with a retry
    # due at once, the poll's final drain could retry it: 2 attempts under a slow CI).
    rules = rewrite(config, lambda d: d["outbox"].update(retry_base_seconds=3600)).read_text()
    rewrite(config, wrong_password(monkeypatch))
    result = inproc(capsys, config, "poll", "--once", "--acknowledge-existing")
    assert result.returncode == 0, result.stdout + result.stderr  # the poll itself worked
    assert relay.messages == []
    assert relay.logins and all(login == (LOGIN, False) for login in relay.logins)
    ((status, attempts, error),) = db_rows(
        config, "SELECT status, attempts, last_error FROM outbox"
    )
    assert (status, attempts) == ("pending", 1)
    assert error == (
        f"SMTP 127.0.0.1:{relay.port} (starttls): authentication failed for user {LOGIN!r}:"
        " SMTP 535 5.7.8 Authentication credentials invalid"
    ), error
    said = [line for line in result.stderr.splitlines() if "send deferred" in line]
    assert len(said) == 1 and "authentication failed for user" in said[0], result.stderr
    no_secret(result.stdout, result.stderr)

    config.write_text(rules, encoding="utf-8")  # the password mended
    db_rows(config, "UPDATE outbox SET next_attempt_at = created_at")  # and the hour passed
    result = inproc(capsys, config, "poll", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    (sent,) = relay.wait_for(1)
    assert sent.rcpt_tos == ("marie.dupont@example.fr",)
    assert db_rows(config, "SELECT status FROM outbox") == [("sent",)]
