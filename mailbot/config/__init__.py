"""The one validated configuration model, loaded from rules.yaml in one place.

Every model forbids unknown keys: a typo in rules.yaml must be refused, not silently
ignored, because an ignored key in an autoresponder's config means mail going where
nobody expected.

One module per concept: ``base`` (the strict model, addresses, paths beside rules.yaml,
secrets), ``servers`` (IMAP, SMTP, TLS, the database's URL), ``routing``, ``organisation``
(the prefecture, its services and mailboxes, the sender, the signature), ``policy``,
``operations`` (polling, outbox, cluster, status, retention, alerts, reports, probe),
``web`` (the console, OIDC), ``root`` (``Config``: the whole file and its checks across
sections), ``loading`` (``load_config``, the errors with their location) and ``agents``
(agents.yaml). Every name is re-exported here: ``from mailbot.config import X``.
"""

from __future__ import annotations

from mailbot.config.agents import Agent, AgentRole, AgentsFile, load_agents
from mailbot.config.base import Email, Model, read_secret
from mailbot.config.loading import (
    PREFIXED,
    config_from_mapping,
    load_config,
    validation_problem,
)
from mailbot.config.operations import (
    RETENTION_MAX_DAYS,
    AlertsConfig,
    ClockTime,
    ClusterConfig,
    Limits,
    OutboxConfig,
    PollingConfig,
    ProbeConfig,
    ReportsConfig,
    RetentionConfig,
    StatusConfig,
    WeeklyReportConfig,
    WeeklySchedule,
)
from mailbot.config.organisation import (
    InternalSenderConfig,
    MailboxConfig,
    OrganisationConfig,
    PrefectureConfig,
    SenderConfig,
    ServiceConfig,
    SignatureConfig,
    TrackingConfig,
)
from mailbot.config.policy import ContactFormRelay, PolicyConfig, RateLimitConfig, RelayCheck
from mailbot.config.root import REORIENT_SERVICE, Config
from mailbot.config.routing import (
    CONDITION_KINDS,
    MAX_IMPLICIT_MONTHS,
    SHIPPED_MODELS,
    Condition,
    FormField,
    ImplicitDecision,
    ImplicitOutcome,
    MailboxDefault,
    ReorientTarget,
    RoutingConfig,
    RoutingModelConfig,
    RoutingParallelConfig,
    RoutingRule,
)
from mailbot.config.servers import (
    DATABASE_BACKENDS,
    ImapConfig,
    Security,
    ServerConfig,
    SmtpConfig,
    is_loopback,
)
from mailbot.config.web import LocalAccountsConfig, LoginRateLimitConfig, OidcConfig, WebConfig

__all__ = [
    "CONDITION_KINDS",
    "DATABASE_BACKENDS",
    "MAX_IMPLICIT_MONTHS",
    "PREFIXED",
    "REORIENT_SERVICE",
    "RETENTION_MAX_DAYS",
    "SHIPPED_MODELS",
    "Agent",
    "AgentRole",
    "AgentsFile",
    "AlertsConfig",
    "ClockTime",
    "ClusterConfig",
    "Condition",
    "Config",
    "ContactFormRelay",
    "Email",
    "FormField",
    "ImapConfig",
    "ImplicitDecision",
    "ImplicitOutcome",
    "InternalSenderConfig",
    "Limits",
    "LocalAccountsConfig",
    "LoginRateLimitConfig",
    "MailboxConfig",
    "MailboxDefault",
    "Model",
    "OidcConfig",
    "OrganisationConfig",
    "OutboxConfig",
    "PolicyConfig",
    "PollingConfig",
    "PrefectureConfig",
    "ProbeConfig",
    "RateLimitConfig",
    "RelayCheck",
    "ReorientTarget",
    "ReportsConfig",
    "RetentionConfig",
    "RoutingConfig",
    "RoutingModelConfig",
    "RoutingParallelConfig",
    "RoutingRule",
    "Security",
    "SenderConfig",
    "ServerConfig",
    "ServiceConfig",
    "SignatureConfig",
    "SmtpConfig",
    "StatusConfig",
    "TrackingConfig",
    "WebConfig",
    "WeeklyReportConfig",
    "WeeklySchedule",
    "config_from_mapping",
    "is_loopback",
    "load_agents",
    "load_config",
    "read_secret",
    "validation_problem",
]
