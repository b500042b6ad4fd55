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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailbot import yamlcache, yamlfile
from mailbot.core.keywords import normalize
from mailbot.core.schedule import parse_time, parse_weekly
from mailbot.core.signature import ELEMENTS, SignatureElement
from mailbot.errors import ConfigError, SecretError
from mailbot.redact import register_secret

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$"
    ),
]
Security = Literal["tls", "starttls", "none"]


_MAILBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _beside(value: Path, info: ValidationInfo) -> Path:
    """A relative path from rules.yaml, made absolute against the folder of rules.yaml.

    The one place where paths are resolved: load_config passes that folder as the
    validation context, so the working directory (cron, systemd) never matters.
    """
    base = (info.context or {}).get("base")
    return value if base is None or value.is_absolute() else Path(base) / value


SHIPPED_MODELS = Path(__file__).parent / "models"


def _model_file(value: Path, info: ValidationInfo) -> Path:
    """A routing model named in rules.yaml: beside rules.yaml when it is there, else the
    one shipped in the package (mailbot/models/), so a copied rules.yaml still finds it."""
    beside = _beside(value, info)
    if beside.is_file() or value.is_absolute() or not (SHIPPED_MODELS / value.name).is_file():
        return beside
    return SHIPPED_MODELS / value.name


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


def _database_beside(url: str, info: ValidationInfo) -> str:
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
    resolved = _beside(Path(name), info)
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
        return None if value is None else _beside(value, info)

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
    # The article the name takes in a sentence (« relève du Cabinet du préfet », « transmis
    # au Cabinet du préfet »): le, la, l' or les. Needed only when the name's head noun
    # does not tell it (core/articles).
    article: Literal["le", "la", "l'", "les"] | None = None


class FormField(Model):
    """A field of the website contact form ("Objet : ..."), matched by keywords."""

    name: str
    keywords: list[str] = Field(min_length=1)


class Condition(Model):
    """One test on a message; exactly one kind per condition, combined with all/any/not."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keywords: list[str] | None = None
    regex: str | None = None
    in_: Literal["subject", "body", "both", "quoted"] = Field(default="both", alias="in")
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
        silent = [k for k in self.keywords or () if not normalize(k)]
        if silent:  # normalised to nothing: a rule that could never fire, said nowhere
            raise ValueError(f"keyword {silent[0]!r} has no letter or digit: it can never match")
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
    score: int = Field(default=10, ge=-1000, le=1000)  # negative: evidence against
    priority: Literal["normal", "urgent"] | None = None
    reorient: str | None = None
    no_transfer: bool = False
    stop: bool = False
    strong: bool = False  # decides its service/category alone (the first strong match)

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


class RoutingModelConfig(Model):
    """The learned classifier beside the rules, and how its probabilities combine with them
    (README, "Routing"; mailbot/combine.py)."""

    file: Path
    rule_weight: float = Field(default=0.5, ge=0, le=1)
    rule_damping: float = Field(default=10, ge=0)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    complaint_min_confidence: float = Field(default=0.5, ge=0, le=1)
    # The model's binary complaint head must say "complaint" with at least this probability
    # for the complaint category to be given (a model without that head: no such gate).
    complaint_model_min: float = Field(default=0.5, ge=0, le=1)
    # At this probability or above, the complaint head gives the complaint category even
    # against the rules' points (no strong rule, a service that may have it); None: never.
    complaint_model_sure: float | None = Field(default=None, ge=0, le=1)
    default_share: float = Field(default=1.0, ge=0, le=1)  # no rule: the mailbox's service's share
    min_confidence_by_service: dict[str, float] = Field(default_factory=dict)  # combine.hold_bar

    @field_validator("file")
    @classmethod
    def _file_beside_config(cls, value: Path, info: ValidationInfo) -> Path:
        return _model_file(value, info)


ImplicitOutcome = Literal["acceptation", "rejet"]
MAX_IMPLICIT_MONTHS = 24  # beyond two years, a slip of the keyboard more likely than a delay
_MONTHS = re.compile(r"^\s*(\d+)\s*mois\s*$", re.IGNORECASE)


def _months(value: Any) -> Any:
    """A delay in months: ``2`` or ``"2 mois"``; anything else is refused with its value
    (a week, a day or "deux mois" would be a guess)."""
    found = _MONTHS.match(value) if isinstance(value, str) else None
    months = int(found.group(1)) if found else value
    if isinstance(months, bool) or not isinstance(months, int):
        raise ValueError(f"expected a number of months, such as 2 or '2 mois' (got {value!r})")
    if not 1 <= months <= MAX_IMPLICIT_MONTHS:
        raise ValueError(f"expected 1 to {MAX_IMPLICIT_MONTHS} months (got {value!r})")
    return months


class ImplicitDecision(Model):
    """What the silence of the administration means for a request (CRPA L112-11,
    R112-11-1): accepted or rejected once ``delay`` months have passed since its receipt.
    Declared by the prefecture per service and category (``routing.implicit_decisions``);
    the AR then says so (templates/_partials/implicit_decision.*)."""

    decision: ImplicitOutcome
    delay: Annotated[int, BeforeValidator(_months)]  # months


class RoutingParallelConfig(Model):
    """Where a large batch's routing decisions are made (issue 14; app/routing_pool): by
    one helper process while the intake records the batch, on the machine's second core.
    ``processes: 0`` decides every mail in-process. Batches below ``min_batch`` mails (a
    single mail under IDLE, a first mail) never wait on the helper's start."""

    processes: int = Field(default=1, ge=0, le=1)  # one helper outpaces the intake
    min_batch: int = Field(default=32, ge=1)


class RoutingConfig(Model):
    categories: list[str] = Field(min_length=1)
    # category → how agents read it in the console (« État d'avancement »); else the key.
    category_names: dict[str, str] = Field(default_factory=dict)
    complaint_category: str = "reclamation"
    defaults: dict[str, MailboxDefault]
    reorientation: dict[str, ReorientTarget] = Field(default_factory=dict)
    rules: list[RoutingRule] = Field(default_factory=list)
    model: RoutingModelConfig | None = None
    # service → the categories it may have (guide § 3); a service not listed allows all.
    combinations: dict[str, list[str]] = Field(default_factory=dict)
    parallel: RoutingParallelConfig = Field(default_factory=RoutingParallelConfig)
    # service → category → the implicit decision a request of that kind gives rise to
    # (CRPA L112-11: the AR says it); none declared: the ARs say nothing about silence.
    implicit_decisions: dict[str, dict[str, ImplicitDecision]] = Field(default_factory=dict)

    def implicit_decision(self, service: str, category: str) -> ImplicitDecision | None:
        """The declaration for a mail recorded under this service and category."""
        return self.implicit_decisions.get(service, {}).get(category)

    @model_validator(mode="after")
    def _rule_ids_are_unique(self) -> RoutingConfig:
        """An id names its rule in `explain`, the rule hits stored and the corrections: two
        rules with one id would be told apart nowhere."""
        first: dict[str, int] = {}
        for n, rule in enumerate(self.rules):
            if rule.id in first:
                raise ValueError(
                    f"routing.rules[{n}].id: duplicate id {rule.id!r}"
                    f" (first at routing.rules[{first[rule.id]}])"
                )
            first[rule.id] = n
        return self


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
        return None if value is None else _beside(value, info)

    @field_validator("dkim_keys")
    @classmethod
    def _keys_beside_config(cls, value: dict[str, Path], info: ValidationInfo) -> dict[str, Path]:
        return {selector: _beside(path, info) for selector, path in value.items()}

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


class SenderConfig(Model):
    """How outgoing mail is signed off: From, envelope sender, Message-ID domain."""

    from_name: str = "Préfecture de la Seine-Maritime"
    envelope_from: str = ""
    message_id_domain: str = "mailbot.seine-maritime.gouv.fr"
    loop_header_value: str = "mailbot@seine-maritime.gouv.fr"
    reference_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,6}$")] = "SM"
    # Services answering a transferred mail put this address in Bcc, so the answer is seen.
    tracking_address: Email | None = None


class InternalSenderConfig(Model):
    """The From of what mailbot writes to the prefecture's own staff: alerts and reports."""

    name: str = "mailbot — Préfecture de la Seine-Maritime"
    address: Email | None = None  # default: the first mailbox's address


class OrganisationConfig(Model):
    """Facts about the prefecture's organisation that the code must not guess."""

    # The service that handles what no routing rule and no mailbox default assigns, and
    # whose alerts list the mail of a mailbox without a service.
    general_service: str = "general"
    internal_sender: InternalSenderConfig = InternalSenderConfig()


class PollingConfig(Model):
    interval_seconds: float = Field(default=60, gt=0)
    batch_size: int = Field(default=200, ge=1, le=5000)
    use_idle: bool = True
    idle_timeout_seconds: float = Field(default=1500, gt=0, le=1740)
    max_backoff_seconds: float = Field(default=300, gt=0)
    # Larger mails are read as header + first 256 KiB (bounded memory); never skipped.
    max_message_bytes: int = Field(default=25_000_000, ge=100_000)
    # `run` loads the language-detection models before its first poll (~4 s of CPU and
    # ~250 MB, once); false: they load on the first mail whose language is not plainly
    # French, which then waits for them.
    warm_language_models: bool = True


class OutboxConfig(Model):
    """How the outbox retries, and how many mails one durable claim covers. A claim commits
    before a group's first DATA: a crash mid-group leaves up to ``claim_group`` mails to
    citizens 'uncertain' (never resent, flagged for an agent), plus up to 3 of the group
    before still in flight at the claim (pipelined sends: app/delivery). The internal mails
    between them (forwards, digests, reports: up to 4 × ``claim_group``) ride in the same
    claim, and a crash queues them again (app/delivery). 1 is the strictest; on SQLite each
    claim also cuts the intake's transaction, so 1 is slower on a backlog.

    A mail the SMTP server defers (4xx) is tried again after ``retry_base_seconds``, then
    twice as long each time up to ``retry_max_seconds``, until it has been queued for
    ``max_queue_hours`` (5 days, as Postfix's ``maximal_queue_lifetime``): an SMTP relay
    down for a night or a weekend loses no AR. Then it fails, its bytes kept for
    `mailbot outbox retry --failed`.

    ``max_attempts`` is no longer read (a mail failed after 10 attempts, about 3 hours: a
    night's outage failed every AR queued meanwhile). Still accepted, so that a file that
    sets it loads; a WARNING says so (``mailbot check``, and each start). A count of
    attempts says little of time under a backoff; ``max_queue_hours`` is the bound."""

    max_queue_hours: float = Field(default=120, gt=0, le=24 * 366)
    max_attempts: int | None = Field(default=None, ge=1)  # deprecated: not read
    retry_base_seconds: float = Field(default=30, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    claim_group: int = Field(default=8, ge=1, le=256)

    def warnings(self) -> list[str]:
        """What ``mailbot check`` and the delivery's start say of these settings."""
        if self.max_attempts is None:
            return []
        return [
            f"outbox.max_attempts ({self.max_attempts}) is no longer read: a deferred mail"
            f" fails once queued for longer than outbox.max_queue_hours"
            f" ({self.max_queue_hours:g} h); remove it from the configuration"
        ]


class ClusterConfig(Model):
    """Several workers on one PostgreSQL database (issue 16): how long a worker's lease on
    a mailbox folder (and its row in ``workers``) lasts without renewal, 2 to 120 s. The
    keeper renews every quarter of it, 5 s at most (``core.leases.Timing``). A killed
    worker's folders are taken over after about ``lease_seconds`` and that quarter more.
    Shorter leases mean more database writes, and a live worker held up longer than its
    lease (a loaded host, a paused VM) is taken for dead: its folders move to another
    worker (the fence keeps them from being recorded twice) and the mails it was sending
    are flagged uncertain. The 2 s floor serves tests; production keeps the default."""

    lease_seconds: float = Field(default=15, ge=2, le=120)


class Limits(Model):
    """A figure's WARNING and CRITICAL thresholds (reached at or above)."""

    warning: float = Field(ge=0)
    critical: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.critical < self.warning:
            raise ValueError(
                f"critical ({self.critical:g}) must not be below warning ({self.warning:g})"
            )
        return self


def _limits(warning: float, critical: float) -> Any:
    return Field(default_factory=lambda: Limits(warning=warning, critical=critical))


class StatusConfig(Model):
    """Thresholds of `mailbot status` (Nagios/Centreon exit codes) and of the metrics."""

    lag_seconds: Limits = _limits(300, 900)  # since a folder's last successful poll
    imap_errors: Limits = _limits(1, 5)  # failed polls in a row
    outbox_depth: Limits = _limits(50, 200)  # mail waiting to be sent
    # how long the oldest of it has waited: an AR leaves at once, so a stuck delivery shows
    # within minutes, not once 50 mails have piled up
    oldest_pending_seconds: Limits = _limits(900, 3600)
    deferred: Limits = _limits(1, 20)  # mail the SMTP server refused for now
    failed: Limits = _limits(1, 10)  # sends that failed for good, last 24 hours
    uncertain: Limits = _limits(1, 5)  # sends interrupted, last 7 days
    quarantined: Limits = _limits(1, 10)  # mail waiting for a person
    # mail the database refused even to quarantine (7 days): no row, no AR, out of the
    # indicators until retried, so its own bounds (raising ``quarantined`` hides none)
    passed_over: Limits = _limits(1, 3)
    overdue: Limits = _limits(1, 20)  # messages unanswered past 5 working days
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # None: no endpoint


class SignatureConfig(Model):
    """What a reply's signature must show (CRPA L111-2, and the audit's expectations)."""

    required: list[SignatureElement] = Field(default_factory=lambda: list(ELEMENTS))


def _valid_time(value: str) -> str:
    parse_time(value)
    return value


def _valid_weekly(value: str) -> str:
    parse_weekly(value)
    return value


# Checked here, at load, by the same parser the worker uses: a schedule that passes
# `mailbot check` cannot crash the worker later.
ClockTime = Annotated[str, AfterValidator(_valid_time)]
WeeklySchedule = Annotated[str, AfterValidator(_valid_weekly)]


RETENTION_MAX_DAYS = 36500


class RetentionConfig(Model):
    """How long citizens' data is kept. The worker purges what is older every day at
    ``purge_time`` (local time, on the worker holding the scheduler's lease), so retention
    holds without an operator's cron; None leaves it to ``mailbot purge``."""

    # At most a century: beyond, the cut-off date is no date (every purge failed with an
    # OverflowError while `mailbot check` said OK). Strict: `days: true` is no duration.
    days: int = Field(default=730, ge=1, le=RETENTION_MAX_DAYS, strict=True)
    purge_time: ClockTime | None = "03:30"


class AlertsConfig(Model):
    """The daily deadline digest to services (working days only)."""

    enabled: bool = True
    time: ClockTime = "08:30"


class WeeklyReportConfig(Model):
    to: list[Email] = Field(default_factory=list)
    cron: WeeklySchedule = "mon 08:00"
    # Late and unanswered messages listed in the mail's body, the oldest first: a manager
    # reads a screen of them, not thousands; the attached CSV lists every message.
    listed: int = Field(default=100, ge=0)
    # The listed messages' subjects (60 characters), which name a citizen's affair: the
    # report stays in its recipients' mailboxes beyond mailbot's retention. False: the
    # references, services and ages alone (the CSV never holds subjects).
    subjects: bool = True


class ReportsConfig(Model):
    weekly: WeeklyReportConfig = WeeklyReportConfig()


class TrackingConfig(Model):
    """A mailbox that services put in Bcc of their replies, so that they are counted."""

    address: Email
    imap: ImapConfig


class ProbeConfig(Model):
    """The mystery e-mail (issue 16): a test mail from this mailbox to each watched one,
    whose AR must come back here, on time and complete. Marked with an HMAC of its
    Message-ID (``secret_env``/``secret_file``): only mailbot's own probes are kept out of
    the indicators and of routing."""

    address: Email
    imap: ImapConfig
    secret_env: str | None = None
    secret_file: Path | None = None
    mailboxes: list[str] = Field(default_factory=list)  # default: every mailbox
    every_minutes: int = Field(default=60, ge=0)  # the worker's schedule; 0: never
    wait_seconds: float = Field(default=600, gt=0)  # no AR by then: missing
    late_seconds: float = Field(default=300, gt=0)  # an AR after this long: late
    alert_to: list[Email] = Field(default_factory=list)

    @field_validator("secret_file")
    @classmethod
    def _secret_beside_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _beside(value, info)

    @model_validator(mode="after")
    def _one_secret(self) -> ProbeConfig:
        if bool(self.secret_env) == bool(self.secret_file):
            raise ValueError("give secret_env or secret_file (one of them)")
        return self

    def secret(self) -> str:
        return read_secret(self.secret_env, self.secret_file, "probe") or ""


class PrefectureConfig(Model):
    name: str
    postal_address: str
    phone: str
    website: str


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
        return None if value is None else _beside(value, info)

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
        return _beside(value, info)


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
        return None if value is None else _beside(value, info)

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


class Config(Model):
    prefecture: PrefectureConfig
    timezone: str = "Europe/Paris"
    services: dict[str, ServiceConfig]
    mailboxes: dict[str, MailboxConfig]
    smtp: SmtpConfig
    # Relative paths here and in password_file/ca_file are relative to rules.yaml itself.
    database: str = Field(default="sqlite:///var/mailbot.db", validate_default=True)
    templates: Path = Field(default=Path("templates"), validate_default=True)
    agents: Path = Field(default=Path("agents.yaml"), validate_default=True)
    sender: SenderConfig = SenderConfig()
    policy: PolicyConfig = PolicyConfig()
    polling: PollingConfig = PollingConfig()
    outbox: OutboxConfig = OutboxConfig()
    cluster: ClusterConfig = ClusterConfig()
    status: StatusConfig = StatusConfig()
    retention: RetentionConfig = RetentionConfig()
    routing: RoutingConfig | None = None
    signature: SignatureConfig = SignatureConfig()
    alerts: AlertsConfig = AlertsConfig()
    reports: ReportsConfig = ReportsConfig()
    tracking: TrackingConfig | None = None
    probe: ProbeConfig | None = None
    web: WebConfig = WebConfig()
    organisation: OrganisationConfig = OrganisationConfig()

    @field_validator("templates", "agents")
    @classmethod
    def _paths_beside_config(cls, value: Path, info: ValidationInfo) -> Path:
        return _beside(value, info)

    @field_validator("database")
    @classmethod
    def _database_beside_config(cls, value: str, info: ValidationInfo) -> str:
        return _database_beside(value, info)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: expected an IANA name such as 'Europe/Paris'"
            ) from None
        return value

    @field_validator("mailboxes")
    @classmethod
    def _at_least_one_mailbox(cls, value: dict[str, MailboxConfig]) -> dict[str, MailboxConfig]:
        if not value:
            raise ValueError("at least one mailbox is required")
        for name in value:
            if not _MAILBOX_NAME.fullmatch(name):
                # The name is written into events (a passed-over mail's "mailbox/folder"
                # location), leases, metrics labels and command lines, read back from them.
                raise ValueError(
                    f"mailbox name {name!r}: letters, digits, '.', '_' or '-' expected "
                    "(no '/', no space)"
                )
        return value

    @model_validator(mode="after")
    def _probed_mailboxes_exist(self) -> Config:
        for name in self.probe.mailboxes if self.probe is not None else ():
            if name not in self.mailboxes:
                raise ValueError(f"probe.mailboxes: unknown mailbox {name!r}")
        return self

    @property
    def probed(self) -> list[str]:
        """The mailboxes the probe writes to (none without a probe)."""
        if self.probe is None:
            return []
        return list(self.probe.mailboxes or self.mailboxes)

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
        general = self.organisation.general_service
        # The default names a service every shipped configuration has; one written down
        # must exist.
        if "general_service" in self.organisation.model_fields_set and general not in self.services:
            raise ValueError(
                f"organisation.general_service: unknown service {general!r}"
                f" (known: {', '.join(sorted(self.services))})"
            )
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
        for name in routing.category_names:
            known(name, categories, f"routing.category_names.{name}", "category")
        for name, allowed in routing.combinations.items():
            known(name, services, f"routing.combinations.{name}", "service")
            for value in allowed:
                known(value, categories, f"routing.combinations.{name}", "category")
        self._check_implicit_decisions(routing, set(self.services), categories)
        for index, rule in enumerate(routing.rules):
            where = f"routing.rules[{index}]"
            known(rule.service, services, f"{where}.service", "service")
            known(rule.category, categories, f"{where}.category", "category")
            known(rule.reorient, set(routing.reorientation), f"{where}.reorient", "re-orientation")
            for mailbox in _mailboxes_in(rule.when):
                known(mailbox, set(self.mailboxes), f"{where}.when", "mailbox")

    @staticmethod
    def _check_implicit_decisions(
        routing: RoutingConfig, services: set[str], categories: set[str]
    ) -> None:
        """Each declaration names a service that answers (not the re-orientation target:
        another administration decides there) and a category that service may have
        (``routing.combinations``): one that could never apply is a mistake, said now."""
        for service, declared in routing.implicit_decisions.items():
            where = f"routing.implicit_decisions.{service}"
            if service == REORIENT_SERVICE:
                raise ValueError(
                    f"{where}: a re-oriented mail is decided by another administration;"
                    " declare implicit decisions for the prefecture's services only"
                )
            if service not in services:
                known = ", ".join(sorted(services))
                raise ValueError(f"{where}: unknown service {service!r} (known: {known})")
            allowed = routing.combinations.get(service)
            for category in declared:
                if category not in categories:
                    known = ", ".join(sorted(categories))
                    raise ValueError(
                        f"{where}.{category}: unknown category {category!r} (known: {known})"
                    )
                if allowed is not None and category not in allowed:
                    raise ValueError(
                        f"{where}.{category}: routing.combinations does not allow category"
                        f" {category!r} for service {service!r} (allowed: {', '.join(allowed)})"
                    )

    @property
    def own_addresses(self) -> set[str]:
        """Every address that is us: mail from these is never acknowledged."""
        found: set[str] = set()
        for mailbox in self.mailboxes.values():
            found.update(mailbox.own_addresses)
        return found

    @property
    def complaint_category(self) -> str:
        """The category whose messages are complaints (the complaint indicators)."""
        if self.routing is not None:
            return self.routing.complaint_category
        return str(RoutingConfig.model_fields["complaint_category"].default)

    @property
    def internal_sender(self) -> tuple[str, str]:
        """(name, address) of the mail to the prefecture's staff: alerts, reports."""
        sender = self.organisation.internal_sender
        return sender.name, sender.address or next(iter(self.mailboxes.values())).address

    @property
    def configured_recipients(self) -> set[str]:
        """The addresses mailbot may write to besides a citizen answering their own mail:
        the services' and the reports' recipients (lower case)."""
        found = self.service_addresses | set(self.reports.weekly.to)
        if self.probe is not None:  # its test mails, and its alerts to operators
            found |= {m.address for m in self.mailboxes.values()} | set(self.probe.alert_to)
        return {address.lower() for address in found}

    @property
    def service_addresses(self) -> set[str]:
        found: set[str] = set()
        for service in self.services.values():
            found.update(service.addresses)
        return found


REORIENT_SERVICE = "autres-administrations"
# Validators of the whole configuration name the key they refuse at the start of their message.
PREFIXED = ("mailboxes.", "services.", "routing.", "organisation.", "probe.")


def _mailboxes_in(condition: Condition) -> list[str]:
    found = list(condition.mailbox or [])
    for child in [*(condition.all or []), *(condition.any or [])]:
        found += _mailboxes_in(child)
    if condition.not_ is not None:
        found += _mailboxes_in(condition.not_)
    return found


def validation_problem(exc: ValidationError) -> tuple[str, str]:
    """The first problem pydantic found, as (key path, what was expected), for rules.yaml,
    agents.yaml and meta.yaml alike. An unknown key comes first: it is usually a misspelt
    one, and the "missing" it causes would hide it."""
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    return _format_location(tuple(errors[0]["loc"])), _describe(dict(errors[0]))


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


def config_from_mapping(data: Any, source: str, base: Path | None = None) -> Config:
    """Validate already-parsed YAML; ``source`` names the file in errors.

    Relative paths are resolved against ``base`` (load_config gives the folder of
    rules.yaml); without one they are left as written.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    try:
        return Config.model_validate(data, context={"base": base})
    except ValidationError as exc:
        key, message = validation_problem(exc)
        if message.startswith(PREFIXED) and ": " in message:
            key, message = message.split(": ", 1)
        raise ConfigError(source, key, message) from None


def _read_yaml(path: Path, cached: bool = True) -> Any:
    """A YAML file's value; ``cached``: through ``yamlcache`` (kept in the cache directory
    per version of the file, never deleted: not for a file that names people)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # an editor's Latin-1 or UTF-16: named, not a traceback
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path), f"line {line}", "not valid UTF-8 text; save the file as UTF-8"
        ) from None
    try:
        # parsed once per version of the file
        return yamlcache.safe_load(text) if cached else yamlfile.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None


def load_config(path: str | Path) -> Config:
    """Load and validate rules.yaml. The one entry point to configuration."""
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent  # absolute, '..' folded, symlinks kept
    return config_from_mapping(_read_yaml(path), str(path), base=folder)


AgentRole = Literal["agent", "head", "quality", "admin"]


class Agent(Model):
    """An agent's profile. Elements may be missing here: rendering a reply then refuses,
    naming what is missing, so an incomplete signature is never sent."""

    first_name: str | None = None
    last_name: str | None = None
    function: str | None = None
    service: str
    email: Email | None = None
    # The web console: what the agent may do, on which services (default: their service).
    role: AgentRole = "agent"
    services: list[str] | None = None

    @property
    def console_services(self) -> tuple[str, ...]:
        return tuple(self.services) if self.services is not None else (self.service,)


class AgentsFile(Model):
    agents: dict[str, Agent]


def load_agents(path: str | Path, config: Config) -> dict[str, Agent]:
    """Load agents.yaml; each agent's service must be a configured service."""
    path = Path(path)
    # Not cached: the agents' names and addresses would stay in the cache directory after
    # an agent is removed from the file (yamlcache keeps every version it parsed).
    data = _read_yaml(path, cached=False)
    try:
        agents = AgentsFile.model_validate(data if data is not None else {}).agents
    except ValidationError as exc:
        raise ConfigError(str(path), *validation_problem(exc)) from None
    known = ", ".join(sorted(config.services))
    owners: dict[str, str] = {}
    for agent_id, agent in agents.items():
        for index, service in [(None, agent.service), *enumerate(agent.services or [])]:
            if service not in config.services:
                key = f"agents.{agent_id}.service" + ("" if index is None else f"s[{index}]")
                raise ConfigError(str(path), key, f"unknown service {service!r} (known: {known})")
        if agent.email is not None:
            if agent.email in owners:
                raise ConfigError(
                    str(path),
                    f"agents.{agent_id}.email",
                    f"{agent.email} is already agent {owners[agent.email]}'s address"
                    " (the console matches agents by e-mail)",
                )
            owners[agent.email] = agent_id
    return agents
