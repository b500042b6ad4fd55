"""No password in logs or stored errors, even when a server echoes it back.

Servers here really echo: a scripted SMTP server answers a failed AUTH with a 535 quoting the
AUTH exchange (base64 of the password, of the AUTH PLAIN blob) and the password it decoded;
a scripted IMAP responder quotes the LOGIN command (an IMAP quoted string, escaped).
"""

from __future__ import annotations

import base64
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from rulesfile import dump_rules, load_rules
from scripted import EchoingImapServer, ScriptedSmtpServer
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config

from mailbot.cli import main
from mailbot.config import ImapConfig
from mailbot.errors import DeliveryError, MailboxError
from mailbot.mail.imap import ImapMailbox
from mailbot.redact import forget_secrets, redact, register_secret

# Quotes and a backslash: the IMAP quoted-string and repr() forms differ from the plain one.
PASSWORD = 'Smtp-S3cr3t"pw\\x'


def leaked_forms(password: str, user: str = "mailbot") -> list[str]:
    raw = password.encode()
    return [
        password,
        password.replace("\\", "\\\\").replace('"', '\\"'),  # IMAP quoted string
        repr(password)[1:-1],
        repr(password.replace("\\", "\\\\").replace('"', '\\"'))[1:-1],
        base64.b64encode(raw).decode(),  # AUTH LOGIN
        base64.b64encode(b"\0" + user.encode() + b"\0" + raw).decode(),  # AUTH PLAIN
        base64.b64encode(b"\0someone-else\0" + raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
    ]


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def assert_clean(text: str, password: str = PASSWORD) -> None:
    for form in leaked_forms(password):
        assert form not in text, f"{form!r} leaked in {text!r}"
    # The tell-tale core of the base64 of the password, at any alignment.
    for prefix in (b"", b"\0", b"\0\0"):
        encoded = base64.b64encode(prefix + password.encode()).decode()
        assert encoded[4:12] not in text


# -- the registry ----------------------------------------------------------------------------


def test_every_form_of_a_registered_password_is_masked() -> None:
    register_secret(PASSWORD, username="mailbot")
    for form in leaked_forms(PASSWORD):
        assert redact(f"before {form} after") == "before *** after", form
    assert redact("nothing secret here, AUTH LOGIN bWFpbGJvdA==") == (
        "nothing secret here, AUTH LOGIN bWFpbGJvdA=="  # the user name is not a secret
    )


def test_a_base64_blob_holding_the_password_is_masked_whole() -> None:
    register_secret(PASSWORD, username="mailbot")
    for prefix in (b"a", b"ab", b"abc", b"\0another-user\0"):
        blob = base64.b64encode(prefix + PASSWORD.encode() + b"tail").decode()
        assert redact(f"x {blob} y") == "x *** y", prefix


def test_errors_are_redacted_when_created() -> None:
    register_secret(PASSWORD)
    assert PASSWORD not in str(DeliveryError(f"SMTP 535 pw={PASSWORD}", permanent=True))
    assert PASSWORD not in str(MailboxError(f"NO LOGIN {PASSWORD}"))


def test_reading_a_password_registers_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    config = ImapConfig(host="127.0.0.1", security="none", password_file=secret)
    assert redact(PASSWORD) == PASSWORD  # not read yet
    assert config.password() == PASSWORD
    assert redact(PASSWORD) == "***"


def test_every_other_secret_read_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's session secret, ProConnect's client secret, the contact form's token,
    the probe's secret: read as passwords are, masked as they are from the moment read."""
    from mailbot.config import ContactFormRelay, OidcConfig, read_secret

    (tmp_path / "session").write_text("session-" + PASSWORD + "\n")
    monkeypatch.setenv("MAILBOT_TEST_OIDC", "oidc-" + PASSWORD)
    (tmp_path / "token").write_text("token-" + PASSWORD)
    oidc = OidcConfig(
        issuer="https://idp.example", client_id="x", client_secret_env="MAILBOT_TEST_OIDC"
    )
    relay = ContactFormRelay(
        address="form@example.fr", require=("token",), token_file=tmp_path / "token"
    )
    read = [
        read_secret(None, tmp_path / "session", "web.session"),
        oidc.client_secret(),
        relay.token(),
    ]
    for value in read:
        assert value and redact(f"quoted: {value}") == "quoted: ***", value


def test_short_or_empty_secrets_are_not_registered() -> None:
    register_secret("")
    register_secret("abc")
    assert redact("abc abc") == "abc abc"


# -- servers that echo -----------------------------------------------------------------------


def test_imap_login_echo_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_TEST_IMAP_PW", PASSWORD)
    with EchoingImapServer() as server:
        config = ImapConfig(
            host=server.host,
            port=server.port,
            security="none",
            username="mailbot",
            password_env="MAILBOT_TEST_IMAP_PW",
            timeout_seconds=5,
        )
        with pytest.raises(MailboxError) as refused:
            ImapMailbox(config, name="general").connect()
    text = str(refused.value)
    assert 'LOGIN mailbot "***" refused' in text  # the server did echo the command
    assert_clean(text)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_smtp_535_echo_is_masked_in_logs_and_database(
    tmp_path: Path,
    dovecot: DovecotServer,
    imap_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    mechanism: str,
) -> None:
    monkeypatch.setenv("MAILBOT_TEST_SMTP_PW", PASSWORD)
    with ScriptedSmtpServer(
        username="mailbot", password=PASSWORD, echo_auth=True, auth_mechanisms=mechanism
    ) as echoing:
        config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
        data = load_rules(config)
        data["smtp"] = {
            "host": echoing.host,
            "port": echoing.port,
            "security": "none",
            "username": "mailbot",
            "password_env": "MAILBOT_TEST_SMTP_PW",
            "timeout_seconds": 5,
        }
        config.write_text(dump_rules(data), encoding="utf-8")
        imap_user.append(citizen_mail(1))
        assert main(["--config", str(config), "poll", "--once", "--acknowledge-existing"]) == 0
        exchange = " ".join(echoing.commands)
    blob = PASSWORD.encode() if mechanism == "LOGIN" else b"\0mailbot\0" + PASSWORD.encode()
    assert base64.b64encode(blob).decode() in exchange  # what the server then echoed
    err = capfd.readouterr().err
    assert "send deferred" in err and "535" in err  # the echo reached the log line, masked
    assert_clean(err)
    with sqlite3.connect(tmp_path / "mailbot.db") as db:
        stored = [row[0] for row in db.execute("SELECT last_error FROM outbox")]
        stored += [row[0] for row in db.execute("SELECT detail FROM events")]
    assert any("535 5.7.8 Authentication failed: AUTH" in text for text in stored)
    for text in stored:
        assert_clean(text or "")


def test_imap_echo_is_masked_in_the_worker_log(
    tmp_path: Path,
    dovecot: DovecotServer,
    imap_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILBOT_TEST_IMAP_PW", PASSWORD)
    with EchoingImapServer() as echoing:
        config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
        data = load_rules(config)
        data["mailboxes"]["general"]["imap"] = {
            "host": echoing.host,
            "port": echoing.port,
            "security": "none",
            "username": "mailbot",
            "password_env": "MAILBOT_TEST_IMAP_PW",
            "timeout_seconds": 5,
        }
        config.write_text(dump_rules(data), encoding="utf-8")
        assert (
            main(["--config", str(config), "poll", "--once", "--acknowledge-existing"]) == 1
        )  # that mailbox failed
    err = capfd.readouterr().err
    assert "mailbox failed" in err and "AUTHENTICATIONFAILED" in err
    assert_clean(err)


def test_a_traceback_in_the_log_is_masked(capfd: pytest.CaptureFixture[str]) -> None:
    from mailbot.logs import setup_logging

    register_secret(PASSWORD)
    setup_logging()
    try:
        raise RuntimeError(f"library error quoting {PASSWORD!r}")
    except RuntimeError:
        logging.getLogger("mailbot.test").exception("boom", extra={"detail": PASSWORD})
    err = capfd.readouterr().err
    assert "boom" in err
    assert_clean(err)
