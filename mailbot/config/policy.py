"""``policy:``: which mail gets an AR — the rate limit per sender, the system senders, the
website's contact-form relays (whose Reply-To is trusted only when proven), mail without a
Return-Path."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from mailbot.config.base import Email, Model, beside, read_secret


class RateLimitConfig(Model):
    max_per_sender: int = Field(default=3, ge=1)
    window_hours: float = Field(default=24, gt=0)


RelayCheck = Literal["envelope", "token", "received", "dkim"]


class ContactFormRelay(Model):
    """The website's contact form: it sends from ``address`` with the citizen in Reply-To.

    Anyone can write that From, so Reply-To is trusted only when the mail proves it came
    from the relay, by every check in ``require``:

    * ``envelope``: the envelope sender (Return-Path, written by the delivering server) is
      ``envelope_sender`` (default: ``address``). Enough only if the MX refuses, from
      outside, mail whose envelope sender is in the prefecture's domain (SPF enforced).
    * ``token``: header ``token_header`` carries the secret the website adds, read from
      ``token_env`` or ``token_file`` (never written in rules.yaml).
    * ``received``: one of the ``received_within`` topmost Received headers (those the
      prefecture's own servers write) records a connection from ``received_from``
      (IP addresses, networks, or host names as the server resolved them).
    * ``dkim``: a valid DKIM signature of ``dkim_domain`` (default: the domain of
      ``address``); keys from DNS, or from ``dkim_keys`` (selector → file holding the
      TXT record) for sites without DNS.
    """

    address: Email
    require: tuple[RelayCheck, ...] = ("envelope",)
    envelope_sender: Email | None = None
    token_header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]+$")] = "X-Form-Token"
    token_env: str | None = None
    token_file: Path | None = None
    received_from: tuple[str, ...] = ()
    received_within: int = Field(default=2, ge=1, le=20)
    dkim_domain: str | None = None
    dkim_keys: dict[str, Path] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plain_address(cls, data: Any) -> Any:
        """The former plain list of addresses: each is checked by its envelope sender."""
        return {"address": data} if isinstance(data, str) else data

    @field_validator("require", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("token_file")
    @classmethod
    def _token_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else beside(value, info)

    @field_validator("dkim_keys")
    @classmethod
    def _keys_beside_config(cls, value: dict[str, Path], info: ValidationInfo) -> dict[str, Path]:
        return {selector: beside(path, info) for selector, path in value.items()}

    @model_validator(mode="after")
    def _complete(self) -> ContactFormRelay:
        if not self.require:
            raise ValueError("require needs at least one of envelope, token, received, dkim")
        if "token" in self.require and bool(self.token_env) == bool(self.token_file):
            raise ValueError("require: token needs token_env or token_file (one of them)")
        if "received" in self.require and not self.received_from:
            raise ValueError("require: received needs received_from (addresses or hosts)")
        for entry in self.received_from:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"received_from: invalid network {entry!r}") from None
        return self

    @property
    def envelope(self) -> str:
        return self.envelope_sender or self.address

    @property
    def signing_domain(self) -> str:
        return (self.dkim_domain or self.address.rpartition("@")[2]).lower()

    def token(self) -> str:
        """The shared secret, read at the last moment like passwords (never logged). An
        empty one (a token file deployed before the secret was written in it) is no
        secret: SecretError, so the check fails closed — an empty header matched it."""
        value = read_secret(self.token_env, self.token_file, f"contact form {self.address}")
        assert value  # the validator requires a source; read_secret refuses an empty one
        return value


class PolicyConfig(Model):
    rate_limit: RateLimitConfig = RateLimitConfig()
    extra_system_senders: list[str] = Field(default_factory=list)
    contact_form_relays: tuple[ContactFormRelay, ...] = ()
    # Mail delivered with no Return-Path header: skipped (and listed for agents), or
    # answered at its From address, still subject to every robot rule.
    missing_return_path: Literal["skip", "use_from"] = "skip"

    @property
    def answers_from(self) -> bool:
        """Whether mail without a Return-Path header is answered at its From address."""
        return self.missing_return_path == "use_from"
