"""The variables templates are given, built in one place from rules.yaml and agents.yaml.

A service's contact details appear in ARs, transfer notices and agents' signatures; they
are built here once, with one rule for the address shown (``service_email``). A message's
variables (reference, dates, subject, service, prefecture) are those of every mail about
that message: the AR, the transfer notice, a reply.
"""

from __future__ import annotations

import functools
from datetime import date, datetime

from mailbot.config import Agent, Config, ImplicitDecision, ServiceConfig
from mailbot.core.articles import article_of
from mailbot.core.workdays import YEARS, WorkingCalendar
from mailbot.render.cache import open_cache


def service_email(service: ServiceConfig, fallback: str | None = None) -> str | None:
    """The address shown for a service: its ``email``, else its first address, else the
    ``fallback`` (the address of the mailbox the citizen wrote to): CRPA L112-11 wants an
    address shown, and answers to it reach the service."""
    return service.email or (service.addresses[0] if service.addresses else fallback)


def service_article(service: ServiceConfig) -> str:
    """The article a service's name takes in a sentence: rules.yaml's, else the one its
    head noun tells (core/articles), else "" (`mailbot check` warns of it). The templates'
    ``de``/``a`` filters take it: « transmis {{ service.name|a(service.article) }} » →
    « transmis au Cabinet du préfet », never « à Cabinet du préfet »."""
    return service.article or article_of(service.name) or ""


def service_variables(service: ServiceConfig, fallback_email: str | None) -> dict[str, object]:
    """The ``service`` mapping of the templates: name, its article and contact details."""
    return {
        "name": service.name,
        "article": service_article(service),
        "postal_address": service.postal_address,
        "phone": service.phone,
        "hours": service.hours,
        "website": service.website,
        "email": service_email(service, fallback_email),
    }


@functools.lru_cache(maxsize=4)
def working_calendar(timezone: str) -> WorkingCalendar:
    """The calendar of deadlines and relances, its public holidays from the render cache
    when it has them (a start then does not load the ``holidays`` package: issue 14 point
    9); one per process and zone."""
    cache = open_cache()
    public = cache.public_holidays(None, YEARS) if cache is not None else None
    return WorkingCalendar(timezone=timezone, public=public)


def answer_deadline(received_at: datetime, timezone: str = "Europe/Paris") -> date:
    """The last day of the 5-working-day answer commitment, holidays included."""
    return working_calendar(timezone).deadline(received_at)


def message_variables(
    config: Config,
    mailbox: str,
    *,
    reference: str,
    received_at: datetime,
    original_subject: str,
    service: str | None = None,
) -> dict[str, object]:
    """The variables of every mail about a message: its AR, a transfer notice, a reply.

    ``service`` is the service handling it (default: the mailbox's own). ``deadline`` is
    the date by which the citizen gets an answer: the 5th working day after receipt
    (README, "Working days"), whoever handles it — a transfer does not restart it.
    """
    box = config.mailboxes[mailbox]
    handling = config.services[service or box.service]
    return {
        "reference": reference,
        "received_at": received_at,
        "deadline": answer_deadline(received_at, config.timezone),
        "original_subject": original_subject,
        "service": service_variables(handling, box.address),
        "prefecture": config.prefecture.model_dump(),
    }


def implicit_decision_variables(declared: ImplicitDecision) -> dict[str, object]:
    """The ``implicit_decision`` mapping of the ARs: what silence means (``decision``,
    ``rejected``/``accepted`` for the templates' tests and the translated paragraphs'
    conditions) and after how many ``months`` from the receipt. The sentence itself is
    the templates' (``_partials/implicit_decision.*``), the date of receipt printed there
    from ``received_at``: a value of each mail, not of the AR's settings (render.once)."""
    return {
        "decision": declared.decision,
        "months": declared.delay,
        "rejected": declared.decision == "rejet",
        "accepted": declared.decision == "acceptation",
    }


def agent_variables(agent: Agent, config: Config) -> dict[str, object]:
    """The ``agent`` mapping of a reply's signature: the profile plus its service's contacts."""
    service = config.services[agent.service]
    return {
        "first_name": agent.first_name,
        "last_name": agent.last_name,
        "function": agent.function,
        "service": service.name,
        "postal_address": service.postal_address,
        "phone": service.phone,
        "website": service.website,
        "email": agent.email or service_email(service),
    }
