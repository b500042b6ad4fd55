"""TLS handshakes that complete, with certificate and host name checks, against real servers.

A private CA (trustme) issues the servers' certificates: Dovecot with ``ssl = required``
(implicit TLS and STARTTLS), aiosmtpd with STARTTLS and with implicit TLS. mailbot trusts
the CA through ``ca_file``; another CA, or a certificate for another host name, is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from servers import DovecotServer, SmtpServer, TlsFiles, issue_tls

from mailbot.app.delivery import Outbox
from mailbot.config import ImapConfig, OutboxConfig, SmtpConfig
from mailbot.errors import MailboxError
from mailbot.mail.imap import ImapMailbox
from mailbot.mail.smtp import SmtpTransport
from mailbot.mail.tls import client_context
from mailbot.store import Store

pytestmark = pytest.mark.servers

CITIZEN = "marie.dupont@example.fr"
MAIL = b"From: a@example.test\r\nTo: marie.dupont@example.fr\r\nSubject: TLS\r\n\r\nBonjour\r\n"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for 127.0.0.1 (and only that name) from a private CA."""
    return issue_tls(tmp_path_factory.mktemp("ca"), "127.0.0.1")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def dovecot_tls(tls: TlsFiles) -> Iterator[DovecotServer]:
    server = DovecotServer(tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def imap(dovecot_tls: DovecotServer, **changes: object) -> tuple[ImapConfig, str]:
    user = dovecot_tls.new_user("tls")
    return user.imap_config().model_copy(update=changes), user.name


def test_the_tls_context_verifies_by_default(tls: TlsFiles) -> None:
    config = SmtpConfig(host="127.0.0.1", ca_file=tls.ca_file)
    context = client_context(config)
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
    relaxed = client_context(config.model_copy(update={"verify_certificate": False}))
    assert not relaxed.check_hostname and relaxed.verify_mode.name == "CERT_NONE"


def test_one_context_per_ca_file_and_verification_until_the_file_changes(
    tls: TlsFiles, other_ca: Path, tmp_path: Path
) -> None:
    """Loading a CA store costs ~30 ms: IMAP and SMTP share one context per (ca_file,
    verify_certificate); a CA file rewritten on disk (a renewed CA) is read again."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(tls.ca_file).read_bytes())
    smtp = SmtpConfig(host="127.0.0.1", ca_file=ca)
    imap = ImapConfig(host="127.0.0.1", username="u", ca_file=ca)
    first = client_context(smtp)
    assert client_context(imap) is first
    relaxed = client_context(smtp.model_copy(update={"verify_certificate": False}))
    assert relaxed is not first and relaxed.verify_mode.name == "CERT_NONE"
    assert first.verify_mode.name == "CERT_REQUIRED"  # the relaxed one changed nothing shared
    ca.write_bytes(other_ca.read_bytes() + b"\n")
    renewed = client_context(smtp)
    assert renewed is not first
    subjects = [cert["subject"] for cert in renewed.get_ca_certs()]
    assert subjects == [cert["subject"] for cert in _loaded(other_ca)]


def _loaded(ca_file: Path) -> list[dict[str, object]]:
    import ssl

    return ssl.create_default_context(cafile=str(ca_file)).get_ca_certs()  # type: ignore[return-value]


# -- IMAP: Dovecot with ssl = required -------------------------------------------------------


def test_imap_implicit_tls_with_the_private_ca(dovecot_tls: DovecotServer) -> None:
    config, user = imap(dovecot_tls)
    assert config.security == "tls" and config.ca_file is not None
    dovecot_tls.append(user, "INBOX", MAIL)
    with ImapMailbox(config, name="accueil") as box:
        box.select("INBOX")
        assert [mail.raw for mail in box.fetch(box.uids_after(0), 10)] == [MAIL]


def test_imap_starttls_with_the_private_ca(dovecot_tls: DovecotServer) -> None:
    config, _user = imap(dovecot_tls, port=dovecot_tls.port, security="starttls")
    with ImapMailbox(config, name="accueil") as box:
        assert box.select("INBOX") > 0


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_another_ca_is_refused(
    dovecot_tls: DovecotServer, other_ca: Path, security: str
) -> None:
    port = dovecot_tls.tls_port if security == "tls" else dovecot_tls.port
    config, _user = imap(dovecot_tls, port=port, security=security, ca_file=other_ca)
    with pytest.raises(MailboxError, match="certificate verification failed"):
        ImapMailbox(config, name="accueil").connect()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_another_host_name_is_refused(dovecot_tls: DovecotServer, security: str) -> None:
    """The certificate names 127.0.0.1; "localhost" is the same machine, not the same name."""
    port = dovecot_tls.tls_port if security == "tls" else dovecot_tls.port
    config, _user = imap(dovecot_tls, host="localhost", port=port, security=security)
    with pytest.raises(MailboxError, match=r"certificate verification failed.*mismatch"):
        ImapMailbox(config, name="accueil").connect()


def test_imap_without_verification_accepts_another_ca(
    dovecot_tls: DovecotServer, other_ca: Path
) -> None:
    """``verify_certificate: false`` is an explicit opt-out, and it does what it says."""
    config, _user = imap(dovecot_tls, ca_file=other_ca, verify_certificate=False)
    with ImapMailbox(config, name="accueil") as box:
        assert box.select("INBOX") > 0


# -- SMTP: aiosmtpd with STARTTLS, and with implicit TLS ------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    database = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    yield database
    database.close()


def send_one(store: Store, config: SmtpConfig) -> tuple[str, str | None]:
    with store.transaction() as tx:
        tx.enqueue(None, "ar", CITIZEN, "", "<tls@example.test>", MAIL)
    Outbox(store, SmtpTransport(config), OutboxConfig(), {CITIZEN}).deliver_due()
    row = store.outbox_items()[-1]
    return row.status, row.last_error


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_smtp_tls_with_the_private_ca(store: Store, tls: TlsFiles, implicit: bool) -> None:
    with SmtpServer(tls=tls, implicit_tls=implicit) as server:
        config = server.smtp_config()
        assert config.security == ("tls" if implicit else "starttls")
        assert send_one(store, config) == ("sent", None)
        assert [m.raw for m in server.messages] == [MAIL]


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_smtp_another_ca_is_refused(
    store: Store, tls: TlsFiles, other_ca: Path, implicit: bool
) -> None:
    with SmtpServer(tls=tls, implicit_tls=implicit) as server:
        config = server.smtp_config().model_copy(update={"ca_file": other_ca})
        status, error = send_one(store, config)
        assert status == "pending"  # retried later: nothing left
        assert error is not None and "CERTIFICATE_VERIFY_FAILED" in error
        assert server.messages == []


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_smtp_another_host_name_is_refused(store: Store, tmp_path: Path, implicit: bool) -> None:
    """A certificate for mail.example.test, reached as 127.0.0.1: a name mismatch."""
    elsewhere = issue_tls(tmp_path / "elsewhere", "mail.example.test")
    with SmtpServer(tls=elsewhere, implicit_tls=implicit) as server:
        status, error = send_one(store, server.smtp_config())
        assert status == "pending"
        assert error is not None and "IP address mismatch" in error
        assert server.messages == []
