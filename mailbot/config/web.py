"""``web:``: the agents' console — where it listens and is reached, its sessions, the
identity provider (ProConnect, OpenID Connect), local accounts and the login rate limit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mailbot.config.base import Model, beside, read_secret
from mailbot.config.servers import is_loopback


def _https_or_loopback(url: str) -> bool:
    """An https URL, or plain http to a loopback host (a test's identity provider)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    host = host[1:].partition("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    return scheme.lower() == "https" or (scheme.lower() == "http" and is_loopback(host))


class OidcConfig(Model):
    """The agents' identity provider: ProConnect (OpenID Connect, authorization code flow)."""

    enabled: bool = True
    # The button's brand; "ProConnect" shows the State's ProConnect button.
    name: str = "ProConnect"
    issuer: str
    # Default: <issuer>/.well-known/openid-configuration
    discovery_url: str | None = None
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "given_name", "usual_name"]
    )
    # e.g. "eidas1", or "https://proconnect.gouv.fr/assurance/self-asserted-2fa"
    acr_values: str | None = None
    token_endpoint_auth_method: Literal["client_secret_post", "client_secret_basic"] = (
        "client_secret_post"
    )
    pkce: bool = True

    @field_validator("client_secret_file")
    @classmethod
    def _secret_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else beside(value, info)

    @model_validator(mode="after")
    def _secret_and_openid(self) -> OidcConfig:
        if bool(self.client_secret_env) == bool(self.client_secret_file):
            raise ValueError("give exactly one of client_secret_env or client_secret_file")
        if "openid" not in self.scopes:
            raise ValueError("scopes must include 'openid'")
        for key, url in (("issuer", self.issuer), ("discovery_url", self.discovery_url)):
            if url is not None and not _https_or_loopback(url):
                # The client secret, the code and the provider's keys (which vouch for
                # every ID token) would cross the network readable and changeable.
                raise ValueError(
                    f"{key} {url!r} must be an https URL (plain http only for a loopback"
                    " test provider)"
                )
        return self

    @property
    def metadata_url(self) -> str:
        return self.discovery_url or (self.issuer.rstrip("/") + "/.well-known/openid-configuration")

    def client_secret(self) -> str:
        secret = read_secret(self.client_secret_env, self.client_secret_file, "web.oidc")
        assert secret is not None  # the validator requires one source
        return secret


class LocalAccountsConfig(Model):
    """Password accounts for small sites and the demo; hashes live in their own file."""

    enabled: bool = False
    # argon2 hashes, written by `mailbot web passwd AGENT`; relative to rules.yaml.
    file: Path = Field(default=Path("accounts.yaml"), validate_default=True)

    @field_validator("file")
    @classmethod
    def _file_beside_config(cls, value: Path, info: ValidationInfo) -> Path:
        return beside(value, info)


class LoginRateLimitConfig(Model):
    """Failed logins allowed per window, per account and per client address."""

    per_account: int = Field(default=5, ge=1)
    # Agents often share one address behind the prefecture's proxy: a higher ceiling.
    per_ip: int = Field(default=20, ge=1)
    window_minutes: float = Field(default=15, gt=0)


class WebConfig(Model):
    """The agents' web console (`mailbot web`, or inside `mailbot run` when enabled)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # The address agents type, e.g. https://mailbot.seine-maritime.gouv.fr
    # (default: http://host:port, accepted only on loopback).
    public_url: str | None = None
    session_secret_env: str | None = None
    session_secret_file: Path | None = None
    session_max_age_minutes: int = Field(default=480, ge=5)
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (their addresses).
    trusted_proxies: list[str] = Field(default_factory=list)
    oidc: OidcConfig | None = None
    local_accounts: LocalAccountsConfig = LocalAccountsConfig()
    login_rate_limit: LoginRateLimitConfig = LoginRateLimitConfig()
    # An attachment of a mail above polling.max_message_bytes is fetched alone from IMAP
    # and held whole in memory to be served: larger than this (octets as stored in the
    # mail, base64 about 4/3 of the file), the agent is told where the mail is instead.
    max_attachment_bytes: int = Field(default=50_000_000, ge=1_000_000, le=1_000_000_000)

    @field_validator("session_secret_file")
    @classmethod
    def _secret_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else beside(value, info)

    @model_validator(mode="after")
    def _safe_public_url(self) -> WebConfig:
        """Plain http only where nobody else can listen: cookies are then not Secure, so
        both the address agents type (``public_url``) and the one the server listens on
        (``host``, which ``mailbot web --host`` may change) must be loopback."""
        url = self.base_url
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"public_url must be an http(s) URL, not {url!r}")
        if scheme == "http" and not is_loopback(host):
            raise ValueError(
                f"public_url {url!r} is plain http on a non-loopback host: use https"
                " (session cookies must be Secure)"
            )
        if scheme == "http" and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not loopback while public_url {url!r} is plain http:"
                " listen on 127.0.0.1 or use https (session cookies must be Secure)"
            )
        if self.session_secret_env and self.session_secret_file:
            raise ValueError("give session_secret_env or session_secret_file, not both")
        return self

    def warnings(self) -> list[str]:
        """What ``mailbot check`` says of these settings: an https address served from a
        loopback port is a reverse proxy's; not trusted, it is every request's client."""
        url = self.base_url
        behind_proxy = url.startswith("https://") and is_loopback(self.host)
        if not behind_proxy or self.trusted_proxies:
            return []
        return [
            f"web: public_url {url} is served from {self.host} (a reverse proxy) while"
            " web.trusted_proxies is empty: every request seems to come from the proxy, so"
            f" login_rate_limit.per_ip ({self.login_rate_limit.per_ip} failures) counts all"
            " agents together and can lock every local login out, and the audit log shows"
            " the proxy's address; list the proxy's address in web.trusted_proxies"
        ]

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies everywhere except plain http on loopback (development, demo)."""
        return self.base_url.startswith("https://")

    def session_secret(self) -> str | None:
        return read_secret(self.session_secret_env, self.session_secret_file, "web.session")
