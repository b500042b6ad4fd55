"""Local password accounts (small sites, the demo): argon2id hashes in their own YAML file.

The file maps agent ids of agents.yaml to a hash and nothing else; it is never rules.yaml,
it is written only by ``mailbot web passwd`` (mode 0600, atomic replace), and a password
never leaves this module. An unknown login is checked against a dummy hash, so the time
taken does not tell which agent ids exist.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mailbot import yamlfile
from mailbot.errors import ConfigError

MIN_PASSWORD_LENGTH = 12
HEADER = (
    "# Comptes locaux de la console web de mailbot : hachages argon2id des mots de passe.\n"
    "# Ne pas modifier à la main : « mailbot web passwd AGENT » écrit ce fichier.\n"
)

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("mailbot-no-such-account")


class WeakPasswordError(ValueError):
    """A new password is refused before it is hashed."""


class AccountsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}

    def hashes(self) -> dict[str, str]:
        """agent id -> hash; an absent file means no local account yet."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._hashes = _parse(self.path)
                self._stamp = stamp
            return self._hashes

    def verify(self, agent_id: str | None, password: str) -> bool:
        stored = self.hashes().get(agent_id) if agent_id is not None else None
        try:
            return _hasher.verify(stored or _DUMMY, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def set_password(self, agent_id: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise WeakPasswordError(
                f"password too short: at least {MIN_PASSWORD_LENGTH} characters"
            )
        hashes = dict(self.hashes())
        hashes[agent_id] = _hasher.hash(password)
        body = yaml.safe_dump({"accounts": dict(sorted(hashes.items()))}, allow_unicode=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".accounts-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(HEADER + body)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _parse(path: Path) -> dict[str, str]:
    try:
        data: Any = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(str(path), "", "invalid YAML") from None
    accounts = (data or {}).get("accounts") if isinstance(data, dict) else None
    if accounts is None:
        accounts = {}
    if not isinstance(accounts, dict):
        raise ConfigError(str(path), "accounts", "expected a mapping of agent id to hash")
    for key, value in accounts.items():
        if not isinstance(value, str) or not value.startswith("$argon2"):
            raise ConfigError(str(path), f"accounts.{key}", "expected an argon2 hash")
    return {str(k): v for k, v in accounts.items()}
