"""rules.yaml as a whole (``Config``): its sections, and the checks that read across them
(a mailbox's service, a rule's category, a probed mailbox must exist)."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mailbot.config.base import Model, beside
from mailbot.config.operations import (
    AlertsConfig,
    ClusterConfig,
    OutboxConfig,
    PollingConfig,
    ProbeConfig,
    ReportsConfig,
    RetentionConfig,
    StatusConfig,
)
from mailbot.config.organisation import (
    MailboxConfig,
    OrganisationConfig,
    PrefectureConfig,
    SenderConfig,
    ServiceConfig,
    SignatureConfig,
    TrackingConfig,
)
from mailbot.config.policy import PolicyConfig
from mailbot.config.routing import Condition, RoutingConfig
from mailbot.config.servers import SmtpConfig, database_beside
from mailbot.config.web import WebConfig

_MAILBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
        return beside(value, info)

    @field_validator("database")
    @classmethod
    def _database_beside_config(cls, value: str, info: ValidationInfo) -> str:
        return database_beside(value, info)

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


def _mailboxes_in(condition: Condition) -> list[str]:
    found = list(condition.mailbox or [])
    for child in [*(condition.all or []), *(condition.any or [])]:
        found += _mailboxes_in(child)
    if condition.not_ is not None:
        found += _mailboxes_in(condition.not_)
    return found
