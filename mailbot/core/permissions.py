"""What a role may do, on which services: one pure decision, role × services × action ×
service, shared by every face.

The table below is the whole policy. It sits in the pure core, not in the web console,
because the use cases (``app/``) must apply it too: ``mailbot reply`` or any other face
calling a use case must not let an agent do what their role forbids in the console
(tests/web/test_authz.py checks the table cell by cell, tests/test_permissions_usecase.py
that the use cases refuse). A service-scoped action without a service is refused: a
request must say whose mail it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    AGENT = "agent"  # handles the mail of their services
    HEAD = "head"  # head of service: also their services' indicators, reassignment
    QUALITY = "quality"  # quality mission: every service, read only, indicators
    ADMIN = "admin"  # quarantined mail, templates check; no citizen mail


class Action(StrEnum):
    VIEW_HOME = "view_home"
    VIEW_QUEUE = "view_queue"  # a service's list of messages
    VIEW_MESSAGE = "view_message"  # one message of a service
    REPLY = "reply"  # send a reply on a message of a service
    VIEW_INDICATORS = "view_indicators"  # a service's response-time indicators
    REASSIGN = "reassign"  # move a message out of a service (the source service)
    VIEW_QUARANTINE = "view_quarantine"
    RELEASE_QUARANTINE = "release_quarantine"
    CHECK_TEMPLATES = "check_templates"


class Reach(StrEnum):
    OWN = "own"  # the agent's services only
    ALL = "all"  # every service
    GLOBAL = "global"  # not about a service


SERVICE_SCOPED = frozenset(
    {
        Action.VIEW_QUEUE,
        Action.VIEW_MESSAGE,
        Action.REPLY,
        Action.VIEW_INDICATORS,
        Action.REASSIGN,
    }
)

_AGENT = {
    Action.VIEW_HOME: Reach.GLOBAL,
    Action.VIEW_QUEUE: Reach.OWN,
    Action.VIEW_MESSAGE: Reach.OWN,
    Action.REPLY: Reach.OWN,
}
POLICY: dict[Role, dict[Action, Reach]] = {
    Role.AGENT: _AGENT,
    Role.HEAD: _AGENT | {Action.VIEW_INDICATORS: Reach.OWN, Action.REASSIGN: Reach.OWN},
    Role.QUALITY: {
        Action.VIEW_HOME: Reach.GLOBAL,
        Action.VIEW_QUEUE: Reach.ALL,
        Action.VIEW_MESSAGE: Reach.ALL,
        Action.VIEW_INDICATORS: Reach.ALL,
    },
    Role.ADMIN: {
        Action.VIEW_HOME: Reach.GLOBAL,
        Action.VIEW_QUARANTINE: Reach.GLOBAL,
        Action.RELEASE_QUARANTINE: Reach.GLOBAL,
        Action.CHECK_TEMPLATES: Reach.GLOBAL,
    },
}


def allowed(role: Role, services: Iterable[str], action: Action, service: str | None) -> bool:
    """May an agent with this role and these services do ``action`` on ``service``'s mail?"""
    reach = POLICY[role].get(action)
    if reach is None:
        return False
    if action not in SERVICE_SCOPED:
        return True
    if service is None:
        return False
    return reach is Reach.ALL or service in set(services)


def services_for(
    role: Role, services: Iterable[str], action: Action, known: Iterable[str]
) -> tuple[str, ...]:
    """The configured services on which the agent may do ``action``, in configuration order:
    what a queue or an indicators page lists for them."""
    return tuple(s for s in known if allowed(role, services, action, s))
