"""What every section of the configuration shares: the strict model (an unknown key is
refused), an e-mail address, a path beside rules.yaml, a secret read when it is needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationInfo

from mailbot.errors import SecretError
from mailbot.redact import register_secret

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$"
    ),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def beside(value: Path, info: ValidationInfo) -> Path:
    """A relative path from rules.yaml, made absolute against the folder of rules.yaml.

    The one place where paths are resolved: load_config passes that folder as the
    validation context, so the working directory (cron, systemd) never matters.
    """
    base = (info.context or {}).get("base")
    return value if base is None or value.is_absolute() else Path(base) / value


def read_secret(env: str | None, file: Path | None, what: str) -> str | None:
    """A secret named by an environment variable or a file, read when needed, never logged:
    registered for redaction as a server password is (``ServerConfig.password``), so that an
    error or a server's answer quoting it is masked too. Blank is no secret (SecretError)."""
    if env:
        value = os.environ.get(env)
        if not value or not value.strip():
            raise SecretError(f"{what}: environment variable {env} is not set")
    elif file:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{what}: cannot read {file}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"{what}: {file} is empty")
    else:
        return None
    register_secret(value)
    return value
