"""The one validated configuration model, loaded from rules.yaml in one place.

Every model forbids unknown keys: a typo in rules.yaml must be refused, not silently
ignored, because an ignored key in an autoresponder's config means mail going where
nobody expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mailbot.errors import ConfigError, SecretError
from mailbot.redact import register_secret

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$"
    ),
]
Security = Literal["tls", "starttls", "none"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> ServerConfig:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                "security 'none' is only allowed for a loopback test server "
                f"(127.0.0.1, ::1, localhost), not {self.host!r}; use 'tls' or 'starttls'"
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
    port: int = Field(default=587, ge=1, le=65535)
    security: Security = "starttls"


class ServiceConfig(Model):
    """A service that handles mail: its contact details appear in ARs and signatures."""

    name: str
    addresses: list[Email] = Field(default_factory=list)
    postal_address: str
    phone: str
    hours: str | None = None
    website: str
    email: Email | None = None
    signature: str | None = None


class FormField(Model):
    """A field of the website contact form ("Objet : ..."), matched by keywords."""

    name: str
    keywords: list[str] = Field(min_length=1)


class Condition(Model):
    """One test on a message; exactly one kind per condition, combined with all/any/not."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keywords: list[str] | None = None
    regex: str | None = None
    in_: Literal["subject", "body", "both"] = Field(default="both", alias="in")
    sender: list[str] | None = None
    mailbox: list[str] | None = None
    language: list[str] | None = None
    has_attachment: bool | None = None
    form_field: FormField | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Condition:
        kinds = [
            name
            for name in CONDITION_KINDS
            if getattr(self, "not_" if name == "not" else name) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                f"a condition needs exactly one of {', '.join(CONDITION_KINDS)}"
                f" (got {', '.join(kinds) or 'none'})"
            )
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self


CONDITION_KINDS = (
    "keywords",
    "regex",
    "sender",
    "mailbox",
    "language",
    "has_attachment",
    "form_field",
    "all",
    "any",
    "not",
)


class RoutingRule(Model):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    description: str | None = None
    when: Condition
    service: str | None = None
    category: str | None = None
    score: int = Field(default=10, ge=1, le=1000)
    priority: Literal["normal", "urgent"] | None = None
    reorient: str | None = None
    no_transfer: bool = False
    stop: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> RoutingRule:
        if not (self.service or self.category or self.priority or self.reorient):
            raise ValueError("a rule needs at least one of service, category, priority, reorient")
        return self


class ReorientTarget(Model):
    """Another administration: where to turn instead (not a service that receives mail)."""

    name: str
    website: str
    details: str


class MailboxDefault(Model):
    service: str
    category: str


class RoutingConfig(Model):
    categories: list[str] = Field(min_length=1)
    complaint_category: str = "reclamation"
    defaults: dict[str, MailboxDefault]
    reorientation: dict[str, ReorientTarget] = Field(default_factory=dict)
    rules: list[RoutingRule] = Field(default_factory=list)


class MailboxConfig(Model):
    address: Email
    aliases: list[Email] = Field(default_factory=list)
    service: str
    ar_template: str
    require_addressed: bool = True
    imap: ImapConfig

    @property
    def own_addresses(self) -> list[str]:
        return [self.address, *self.aliases]


class RateLimitConfig(Model):
    max_per_sender: int = Field(default=3, ge=1)
    window_hours: float = Field(default=24, gt=0)


class PolicyConfig(Model):
    rate_limit: RateLimitConfig = RateLimitConfig()
    extra_system_senders: list[str] = Field(default_factory=list)
    contact_form_relays: list[Email] = Field(default_factory=list)


class SenderConfig(Model):
    """How outgoing mail is signed off: From, envelope sender, Message-ID domain."""

    from_name: str = "Préfecture de la Seine-Maritime"
    envelope_from: str = ""
    message_id_domain: str = "mailbot.seine-maritime.gouv.fr"
    loop_header_value: str = "mailbot@seine-maritime.gouv.fr"
    reference_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,6}$")] = "SM"
    # Services answering a transferred mail put this address in Bcc, so the answer is seen.
    tracking_address: Email | None = None


class PollingConfig(Model):
    interval_seconds: float = Field(default=60, gt=0)
    batch_size: int = Field(default=200, ge=1, le=5000)
    use_idle: bool = True
    idle_timeout_seconds: float = Field(default=1500, gt=0, le=1740)
    max_backoff_seconds: float = Field(default=300, gt=0)
    # Larger mails are read as header + first 256 KiB (bounded memory); never skipped.
    max_message_bytes: int = Field(default=25_000_000, ge=100_000)


class OutboxConfig(Model):
    max_attempts: int = Field(default=10, ge=1)
    retry_base_seconds: float = Field(default=30, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)


class RetentionConfig(Model):
    days: int = Field(default=730, ge=1)


SignatureElement = Literal["name", "function", "service", "prefecture", "postal_address", "contact"]
SIGNATURE_ELEMENTS: tuple[SignatureElement, ...] = (
    "name",
    "function",
    "service",
    "prefecture",
    "postal_address",
    "contact",
)


class SignatureConfig(Model):
    """What a reply's signature must show (CRPA L111-2, and the audit's expectations)."""

    required: list[SignatureElement] = Field(default_factory=lambda: list(SIGNATURE_ELEMENTS))


class AlertsConfig(Model):
    """The daily deadline digest to services (working days only)."""

    enabled: bool = True
    time: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "08:30"


class WeeklyReportConfig(Model):
    to: list[Email] = Field(default_factory=list)
    cron: str = "mon 08:00"


class ReportsConfig(Model):
    weekly: WeeklyReportConfig = WeeklyReportConfig()


class TrackingConfig(Model):
    """A mailbox that services put in Bcc of their replies, so that they are counted."""

    address: Email
    imap: ImapConfig


class PrefectureConfig(Model):
    name: str
    postal_address: str
    phone: str
    website: str


class Config(Model):
    prefecture: PrefectureConfig
    timezone: str = "Europe/Paris"
    services: dict[str, ServiceConfig]
    mailboxes: dict[str, MailboxConfig]
    smtp: SmtpConfig
    database: str = "sqlite:///var/mailbot.db"
    templates: str = "templates"
    agents: str = "agents.yaml"
    sender: SenderConfig = SenderConfig()
    policy: PolicyConfig = PolicyConfig()
    polling: PollingConfig = PollingConfig()
    outbox: OutboxConfig = OutboxConfig()
    retention: RetentionConfig = RetentionConfig()
    routing: RoutingConfig | None = None
    signature: SignatureConfig = SignatureConfig()
    alerts: AlertsConfig = AlertsConfig()
    reports: ReportsConfig = ReportsConfig()
    tracking: TrackingConfig | None = None

    @field_validator("mailboxes")
    @classmethod
    def _at_least_one_mailbox(cls, value: dict[str, MailboxConfig]) -> dict[str, MailboxConfig]:
        if not value:
            raise ValueError("at least one mailbox is required")
        return value

    @model_validator(mode="after")
    def _mailbox_services_exist(self) -> Config:
        for name, mailbox in self.mailboxes.items():
            if mailbox.service not in self.services:
                known = ", ".join(sorted(self.services))
                raise ValueError(
                    f"mailboxes.{name}.service: unknown service {mailbox.service!r}"
                    f" (known: {known})"
                )
        if self.routing is not None:
            self._check_routing(self.routing)
        return self

    def _check_routing(self, routing: RoutingConfig) -> None:
        services = set(self.services) | {REORIENT_SERVICE}
        categories = set(routing.categories)

        def known(value: str | None, allowed: set[str], key: str, what: str) -> None:
            if value is not None and value not in allowed:
                raise ValueError(
                    f"{key}: unknown {what} {value!r} (known: {', '.join(sorted(allowed))})"
                )

        for name, default in routing.defaults.items():
            known(name, set(self.mailboxes), f"routing.defaults.{name}", "mailbox")
            known(default.service, services, f"routing.defaults.{name}.service", "service")
            known(default.category, categories, f"routing.defaults.{name}.category", "category")
        for index, rule in enumerate(routing.rules):
            where = f"routing.rules[{index}]"
            known(rule.service, services, f"{where}.service", "service")
            known(rule.category, categories, f"{where}.category", "category")
            known(rule.reorient, set(routing.reorientation), f"{where}.reorient", "re-orientation")
            for mailbox in _mailboxes_in(rule.when):
                known(mailbox, set(self.mailboxes), f"{where}.when", "mailbox")

    @property
    def own_addresses(self) -> set[str]:
        """Every address that is us: mail from these is never acknowledged."""
        found: set[str] = set()
        for mailbox in self.mailboxes.values():
            found.update(mailbox.own_addresses)
        return found

    @property
    def service_addresses(self) -> set[str]:
        found: set[str] = set()
        for service in self.services.values():
            found.update(service.addresses)
        return found


REORIENT_SERVICE = "autres-administrations"


def _mailboxes_in(condition: Condition) -> list[str]:
    found = list(condition.mailbox or [])
    for child in [*(condition.all or []), *(condition.any or [])]:
        found += _mailboxes_in(child)
    if condition.not_ is not None:
        found += _mailboxes_in(condition.not_)
    return found


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (not allowed here; check its spelling)"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] not in {"value_error", "assertion_error"} and not isinstance(got, dict):
        message += f" (got {got!r})"
    return message


def config_from_mapping(data: Any, source: str) -> Config:
    """Validate already-parsed YAML; ``source`` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _format_location(tuple(first["loc"]))
        message = _describe(dict(first))
        if message.startswith(("mailboxes.", "services.", "routing.")) and ": " in message:
            key, message = message.split(": ", 1)
        raise ConfigError(source, key, message) from None


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None


def load_config(path: str | Path) -> Config:
    """Load and validate rules.yaml. The one entry point to configuration."""
    path = Path(path)
    return config_from_mapping(_read_yaml(path), str(path))


class Agent(Model):
    """An agent's profile. Elements may be missing here: rendering a reply then refuses,
    naming what is missing, so an incomplete signature is never sent."""

    first_name: str | None = None
    last_name: str | None = None
    function: str | None = None
    service: str
    email: Email | None = None


class AgentsFile(Model):
    agents: dict[str, Agent]


def load_agents(path: str | Path, config: Config) -> dict[str, Agent]:
    """Load agents.yaml; each agent's service must be a configured service."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        agents = AgentsFile.model_validate(data if data is not None else {}).agents
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            str(path), _format_location(tuple(first["loc"])), _describe(dict(first))
        ) from None
    for agent_id, agent in agents.items():
        if agent.service not in config.services:
            known = ", ".join(sorted(config.services))
            raise ConfigError(
                str(path),
                f"agents.{agent_id}.service",
                f"unknown service {agent.service!r} (known: {known})",
            )
    return agents
