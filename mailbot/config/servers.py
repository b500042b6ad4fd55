"""The servers mailbot talks to: IMAP and SMTP (TLS, certificates, passwords read at the
last moment; plaintext only to a loopback test server) and the database's URL."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailbot.config.base import Model, beside
from mailbot.errors import SecretError
from mailbot.redact import register_secret

Security = Literal["tls", "starttls", "none"]


def _password_hidden(url: str) -> str:
    """A URL that did not parse, as an error may quote it: whatever could be a password
    (between the user name and the last "@") masked, since the parser cannot say where it
    is. The error goes to the terminal, the journal and ``mailbot check``."""
    head, at, host = url.rpartition("@")
    scheme, colon, userinfo = head.partition(":")
    if not at or not colon:
        return f"***@{host}" if at else url
    slashes = len(userinfo) - len(userinfo.lstrip("/"))
    user, separator, _ = userinfo[slashes:].partition(":")
    shown = f"{user}:" if separator else ""  # no second ":": what follows may be a password
    return f"{scheme}:{userinfo[:slashes]}{shown}***@{host}"


DATABASE_BACKENDS = ("sqlite", "postgresql")


def database_beside(url: str, info: ValidationInfo) -> str:
    """A SQLite URL's relative file (``sqlite:///var/mailbot.db``) resolved like any path."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "expected a database URL such as 'sqlite:///var/mailbot.db'"
            f" (got {_password_hidden(url)!r})"
        ) from None
    if parsed.get_backend_name() not in DATABASE_BACKENDS:  # no other one has a schema here
        raise ValueError(
            "expected a 'sqlite' or 'postgresql' database URL such as"
            f" 'postgresql+psycopg://user@host/db' (got {_password_hidden(url)!r})"
        )
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return url
    if name.startswith("file:"):
        raise ValueError("SQLite 'file:' URIs are not supported here; give a file path")
    resolved = beside(Path(name), info)
    return parsed.set(database=str(resolved)).render_as_string(hide_password=False)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(Model):
    """Connection settings shared by IMAP and SMTP."""

    host: str
    port: int = Field(ge=1, le=65535)
    security: Security = "tls"
    verify_certificate: bool = True
    ca_file: Path | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("ca_file", "password_file")
    @classmethod
    def _files_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else beside(value, info)

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> ServerConfig:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                "security 'none' is only allowed for a loopback test server "
                f"(127.0.0.1, ::1, localhost), not {self.host!r}; use 'tls' or 'starttls'"
            )
        if not self.verify_certificate and not is_loopback(self.host):
            # Unverified TLS to a remote host is plaintext to whoever sits on the path:
            # the password and the citizens' mail to a man in the middle.
            raise ValueError(
                "verify_certificate: false is only allowed for a loopback test server "
                f"(127.0.0.1, ::1, localhost), not {self.host!r}; for a private CA give"
                " ca_file instead"
            )
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        """Read the secret at the last moment, so it never sits in the config object or logs.

        Every value read is registered for redaction (mailbot.redact): a server that echoes
        it back cannot put it in a log line or a stored error.
        """
        value = self._read_password()
        register_secret(value, username=self.username)
        return value

    def _read_password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise SecretError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretError(
                    f"cannot read password file {self.password_file}: {exc.strerror}"
                ) from None
        return None


class ImapConfig(ServerConfig):
    port: int = Field(default=993, ge=1, le=65535)
    folder: str = "INBOX"
    sent_folder: str | None = None


class SmtpConfig(ServerConfig):
    """``own_process``: ``mailbot run`` and ``poll`` send from a child process, on the
    machine's other core, instead of a thread of the worker's (mail/smtp_process).

    ``eight_bit``: the texts of our mails go 8-bit to a relay that offers 8BITMIME. False
    re-encodes them in base64 before DATA, for a relay that signs mail with DKIM and passes
    it on to hosts that may not take 8-bit mail: converted after signing, the signature
    would no longer hold (RFC 6376 §5.3)."""

    port: int = Field(default=587, ge=1, le=65535)
    security: Security = "starttls"
    own_process: bool = True
    eight_bit: bool = True
