"""The authorisation policy, cell by cell: each role, each action, on one of the agent's
services, on another service, and with no service. The table is written out by hand (not
derived from mailbot.web.authz.POLICY) so that a change to the policy must change it too."""

from __future__ import annotations

import pytest

from mailbot.web.authz import Action, Role, allowed, services_for

OWN, OTHER, NONE = "own", "other", "none"
MINE = ("cartes-grises", "permis")
ELSEWHERE = "etrangers"

# action -> role -> the targets it is allowed on
TABLE: dict[Action, dict[Role, set[str]]] = {
    Action.VIEW_HOME: {
        Role.AGENT: {OWN, OTHER, NONE},
        Role.HEAD: {OWN, OTHER, NONE},
        Role.QUALITY: {OWN, OTHER, NONE},
        Role.ADMIN: {OWN, OTHER, NONE},
    },
    Action.VIEW_QUEUE: {
        Role.AGENT: {OWN},
        Role.HEAD: {OWN},
        Role.QUALITY: {OWN, OTHER},
        Role.ADMIN: set(),
    },
    Action.VIEW_MESSAGE: {
        Role.AGENT: {OWN},
        Role.HEAD: {OWN},
        Role.QUALITY: {OWN, OTHER},
        Role.ADMIN: set(),
    },
    Action.REPLY: {
        Role.AGENT: {OWN},
        Role.HEAD: {OWN},
        Role.QUALITY: set(),
        Role.ADMIN: set(),
    },
    Action.VIEW_INDICATORS: {
        Role.AGENT: set(),
        Role.HEAD: {OWN},
        Role.QUALITY: {OWN, OTHER},
        Role.ADMIN: set(),
    },
    Action.REASSIGN: {
        Role.AGENT: set(),
        Role.HEAD: {OWN},
        Role.QUALITY: set(),
        Role.ADMIN: set(),
    },
    Action.VIEW_QUARANTINE: {
        Role.AGENT: set(),
        Role.HEAD: set(),
        Role.QUALITY: set(),
        Role.ADMIN: {OWN, OTHER, NONE},
    },
    Action.RELEASE_QUARANTINE: {
        Role.AGENT: set(),
        Role.HEAD: set(),
        Role.QUALITY: set(),
        Role.ADMIN: {OWN, OTHER, NONE},
    },
    Action.CHECK_TEMPLATES: {
        Role.AGENT: set(),
        Role.HEAD: set(),
        Role.QUALITY: set(),
        Role.ADMIN: {OWN, OTHER, NONE},
    },
}

CASES = [
    (role, action, target, target in TABLE[action][role])
    for action in Action
    for role in Role
    for target in (OWN, OTHER, NONE)
]


def test_the_table_covers_every_role_and_action() -> None:
    assert set(TABLE) == set(Action)
    assert all(set(row) == set(Role) for row in TABLE.values())


@pytest.mark.parametrize(
    ("role", "action", "target", "expected"),
    CASES,
    ids=[f"{r.value}-{a.value}-{t}" for r, a, t, _ in CASES],
)
def test_policy(role: Role, action: Action, target: str, expected: bool) -> None:
    service = {OWN: MINE[1], OTHER: ELSEWHERE, NONE: None}[target]
    assert allowed(role, MINE, action, service) is expected


def test_an_agent_without_services_sees_no_mail() -> None:
    for action in (Action.VIEW_QUEUE, Action.VIEW_MESSAGE, Action.REPLY):
        assert not allowed(Role.AGENT, (), action, "permis")
    assert allowed(Role.AGENT, (), Action.VIEW_HOME, None)


def test_services_for_lists_what_a_page_may_show() -> None:
    known = ["general", "etrangers", "cartes-grises", "permis"]
    assert services_for(Role.AGENT, MINE, Action.VIEW_QUEUE, known) == ("cartes-grises", "permis")
    assert services_for(Role.QUALITY, ("qualite-accueil",), Action.VIEW_QUEUE, known) == tuple(
        known
    )
    assert services_for(Role.QUALITY, (), Action.REPLY, known) == ()
    assert services_for(Role.HEAD, ("etrangers",), Action.VIEW_INDICATORS, known) == ("etrangers",)
    assert services_for(Role.ADMIN, MINE, Action.VIEW_QUEUE, known) == ()
