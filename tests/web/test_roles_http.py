"""Authorisation on every route of the console, over real HTTP: each role (and an anonymous
visitor) against each route, 200 (or the route's own answer) vs 403 vs the login page.

One line of ROUTES per route and resource: a new page adds its line (the roles allowed, and
the status an allowed agent gets). The demo agents: cdurand (agent, cartes-grises),
lmoreau (head of service, etrangers and general), ngarnier (quality mission), tbernard
(admin). A 403 is also an audit event naming the agent and the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx2 as httpx
import pytest
from rulesfile import dump_rules, load_rules
from test_indicators import load_scenario
from webtools import ROOT, RunningConsole, csrf_from, local_login, running_console

from mailbot.app import quarantine
from mailbot.app.context import build_app
from mailbot.core.statuses import Decision, EventKind
from mailbot.mail.originals import MaildirOriginals
from mailbot.store import NewMessage, Store

AGENT, HEAD, QUALITY, ADMIN, ANONYMOUS = "agent", "head", "quality", "admin", "anonymous"
LOGINS = {AGENT: "cdurand", HEAD: "lmoreau", QUALITY: "ngarnier", ADMIN: "tbernard"}
EVERYONE = frozenset(LOGINS)
QUARANTINED = "{quarantined}"  # replaced by the id of a quarantined mail of the fixture
PASSED = "{passed}"  # replaced by the event's id of a mail passed over (no row)
CARTES = "{cartes}"  # an open message of cartes-grises (the agent's service)
ETRANGERS = "{etrangers}"  # an open message of etrangers (one of the head's services)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    allowed: frozenset[str]
    status: int = 200  # what an allowed agent gets


W47 = "periode=2026-W47"
ROUTES = [
    Case("home", "GET", "/", EVERYONE),
    Case("indicators-default", "GET", "/indicateurs", frozenset({HEAD, QUALITY})),
    Case("indicators-own", "GET", f"/indicateurs?service=general&{W47}", frozenset({HEAD, QUALITY})),
    Case("indicators-agents-own", "GET", f"/indicateurs?service=cartes-grises&{W47}", frozenset({QUALITY})),
    Case("indicators-other", "GET", f"/indicateurs?service=permis&{W47}", frozenset({QUALITY})),
    Case("indicators-all", "GET", f"/indicateurs?service=tous&{W47}", frozenset({QUALITY})),
    Case("indicators-unknown-service", "GET", "/indicateurs?service=nulle-part", EVERYONE, 404),
    Case("csv-own", "GET", f"/indicateurs/export.csv?service=general&{W47}", frozenset({HEAD, QUALITY})),
    Case("csv-other", "GET", f"/indicateurs/export.csv?service=permis&{W47}", frozenset({QUALITY})),
    Case("csv-all", "GET", f"/indicateurs/export.csv?service=tous&{W47}", frozenset({QUALITY})),
    Case("chart-own", "GET", f"/indicateurs/graphique.png?service=etrangers&{W47}", frozenset({HEAD, QUALITY})),
    Case("chart-other", "GET", f"/indicateurs/graphique.png?service=cabinet&{W47}", frozenset({QUALITY})),
    Case("quarantine-list", "GET", "/admin/quarantaine", frozenset({ADMIN})),
    Case("quarantine-mail", "GET", f"/admin/quarantaine/{QUARANTINED}", frozenset({ADMIN})),
    Case("quarantine-no-such-mail", "GET", "/admin/quarantaine/999999", frozenset({ADMIN}), 404),
    Case("quarantine-retry", "POST", "/admin/quarantaine/999999/retraiter", frozenset({ADMIN}), 404),
    Case("passed-over-mail", "GET", f"/admin/quarantaine/P{PASSED}", frozenset({ADMIN})),
    Case("passed-over-no-such-mail", "GET", "/admin/quarantaine/P999999", frozenset({ADMIN}), 404),
    Case("passed-over-retry", "POST", "/admin/quarantaine/P999999/retraiter", frozenset({ADMIN}), 404),
    Case("passed-over-dismiss", "POST", "/admin/quarantaine/P999999/classer", frozenset({ADMIN}), 404),
    Case("templates-check", "GET", "/admin/modeles", frozenset({ADMIN})),
    # the agents' desk: on the message's own service (quality reads all, acts on none)
    Case("message-agents-own", "GET", f"/courriel/{CARTES}", frozenset({AGENT, QUALITY})),
    Case("message-heads-own", "GET", f"/courriel/{ETRANGERS}", frozenset({HEAD, QUALITY})),
    Case("message-no-such", "GET", "/courriel/999999", EVERYONE, 404),
    # by reference (a forward's note): sent on to the page, after the same checks
    Case("message-by-reference", "GET", "/courriel/SM-2026-007001", frozenset({AGENT, QUALITY}), 303),
    Case("message-by-no-such-reference", "GET", "/courriel/SM-2026-999999", EVERYONE, 404),
    Case("presence", "GET", f"/courriel/{CARTES}/presence", frozenset({AGENT, QUALITY})),
    Case("attachment", "GET", f"/courriel/{ETRANGERS}/piece-jointe/1", frozenset({HEAD, QUALITY}), 404),
    Case("preview", "POST", f"/courriel/{CARTES}/apercu", frozenset({AGENT}), 400),
    Case("reply", "POST", f"/courriel/{ETRANGERS}/reponse", frozenset({HEAD}), 400),
    Case("action", "POST", f"/courriel/{CARTES}/action/sans-reponse", frozenset({AGENT}), 400),
    Case("action-reassign", "POST", f"/courriel/{ETRANGERS}/action/transferer", frozenset({HEAD}), 400),
]  # fmt: skip
ROLES = [AGENT, HEAD, QUALITY, ADMIN, ANONYMOUS]
CELLS = [(case, role) for case in ROUTES for role in ROLES]


@dataclass
class Site:
    console: RunningConsole
    clients: dict[str, httpx.Client]
    quarantined: int
    passed: int
    cartes: int
    etrangers: int

    def path(self, case: Case) -> str:
        ids = {
            QUARANTINED: self.quarantined,
            PASSED: self.passed,
            CARTES: self.cartes,
            ETRANGERS: self.etrangers,
        }
        path = case.path
        for mark, pk in ids.items():
            path = path.replace(mark, str(pk))
        return path


def add_open(store: Store, uid: int, mailbox: str, service: str) -> int:
    """An acknowledged message waiting for its service's answer (its mail is not readable
    here: the page says so, which is all an authorisation test needs)."""
    with store.transaction() as tx:
        return tx.insert_message(
            NewMessage(
                mailbox=mailbox,
                folder="INBOX",
                uidvalidity=1,
                uid=uid,
                message_id=f"<open-{uid}@example.fr>",
                content_hash=f"open-{uid}",
                received_at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                sender=f"usager{uid}@example.fr",
                subject="Ma demande",
                in_reply_to=None,
                decision=Decision.ACKNOWLEDGE,
                reasons=["citizen-mail"],
                size=10,
                defects=[],
                reference=f"SM-2026-{uid:06d}",
                service=service,
                category="information",
            )
        )


def add_quarantined(store: Store) -> int:
    with store.transaction() as tx:
        pk = tx.insert_message(
            NewMessage(
                mailbox="general",
                folder="INBOX",
                uidvalidity=1,
                uid=7000,
                message_id="<q@example.fr>",
                content_hash="q",
                received_at=datetime(2026, 11, 20, 9, tzinfo=UTC),
                sender="someone@example.fr",
                subject="Demande de titre de séjour",
                in_reply_to=None,
                decision=Decision.QUARANTINE,
                reasons=["error"],
                size=10,
                defects=[],
            )
        )
        tx.add_event(pk, EventKind.QUARANTINED, "Traceback: ValueError")
    return pk


def add_passed_over(store: Store) -> int:
    """The event of a mail passed over, as ``Pipeline._unrecordable`` writes it (no row)."""
    with store.transaction() as tx:
        tx.add_event(
            None,
            EventKind.PASSED_OVER,
            "general/INBOX UIDVALIDITY 1 UID 7003: error:StoreError; its quarantine row refused"
            " 3 times in a row\nTraceback (most recent call last):\nStoreError",
        )
    ((event,),) = [(p.event_id,) for p in quarantine.passed_over(store)]
    return event


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("roles")
    data = load_rules()
    data["database"] = f"sqlite:///{work / 'roles.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    config = work / "rules.yaml"
    config.write_text(dump_rules(data, sort_keys=False), "utf-8")
    store = Store(data["database"])
    load_scenario(store)
    quarantined = add_quarantined(store)
    passed = add_passed_over(store)
    cartes = add_open(store, 7001, "general", "cartes-grises")
    etrangers = add_open(store, 7002, "etrangers", "etrangers")
    store.close()
    app = build_app(config)
    (work / "console").mkdir()
    no_mail = MaildirOriginals({})  # the messages' mail is nowhere: the page says so
    with running_console(
        work / "console", config=app.config, site=True, mailbot_app=app, originals=no_mail
    ) as c:
        clients = {role: c.client() for role in ROLES}
        for role, login in LOGINS.items():
            assert local_login(clients[role], login).status_code == 303, role
        csrf_from(clients[ANONYMOUS].get("/connexion").text)  # an anonymous session
        yield Site(c, clients, quarantined, passed, cartes, etrangers)
        for client in clients.values():
            client.close()


@pytest.mark.parametrize(
    ("case", "role"), CELLS, ids=[f"{case.name}-{role}" for case, role in CELLS]
)
def test_route_by_role(site: Site, case: Case, role: str) -> None:
    client = site.clients[role]
    path = site.path(case)
    if case.method == "POST":
        page = client.get("/connexion" if role == ANONYMOUS else "/")
        response = client.post(path, data={"csrf_token": csrf_from(page.text)})
    else:
        response = client.get(path)
    if role == ANONYMOUS:
        assert response.status_code == 303, response.text[:300]
        assert response.headers["location"].startswith("/connexion")
    elif role in case.allowed:
        assert response.status_code == case.status, response.text[:300]
        if case.name == "message-by-reference":  # sent on to the message's own page
            assert response.headers["location"] == f"/courriel/{site.cartes}"
    else:
        assert response.status_code == 403, response.text[:300]
        assert "Accès refusé" in response.text
        denied = site.console.events("denied")[-1]
        assert denied["agent"] == LOGINS[role] and denied["path"] == path.split("?")[0]


def test_the_table_names_every_route_of_the_console(site: Site) -> None:
    """A route added to the console without a line here fails this test."""
    from starlette.routing import Route

    from mailbot.web import desk, routes
    from mailbot.web.site import PAGES

    login_routes = {r.path for r in routes.ROUTES if isinstance(r, Route)} - {"/"}
    tested = {case.path.split("?")[0] for case in ROUTES}
    tested = {p.replace(QUARANTINED, "{id:int}").replace("999999", "{id:int}") for p in tested}
    tested = {p.replace(PASSED, "{id:int}") for p in tested}
    tested = {p.replace("/courriel/{id:int}", "/courriel/{message:int}") for p in tested}
    tested = {
        p.replace(CARTES, "{message:int}").replace(ETRANGERS, "{message:int}") for p in tested
    }
    tested = {re.sub(r"^/courriel/SM-[0-9-]+$", "/courriel/{message:str}", p) for p in tested}
    tested = {p.replace("/piece-jointe/1", "/piece-jointe/{index:int}") for p in tested}
    tested = {re.sub(r"/action/[a-z-]+$", "/action/{action}", p) for p in tested}
    pages = {r.path for r in [*PAGES, *desk.ROUTES] if isinstance(r, Route)} | {"/"}
    assert pages - tested == set(), "routes without a line in ROUTES"
    assert login_routes.isdisjoint(tested)  # login, logout, health: tested elsewhere


def test_quarantined_mail_page_shows_no_address(site: Site) -> None:
    page = site.clients[ADMIN].get(f"/admin/quarantaine/{site.quarantined}")
    assert "Demande de titre de séjour" in page.text and "Traceback: ValueError" in page.text
    assert "someone@example.fr" not in page.text
    listing = site.clients[ADMIN].get("/admin/quarantaine")
    assert f'href="/admin/quarantaine/{site.quarantined}"' in listing.text
    assert "someone@example.fr" not in listing.text


def test_passed_over_mail_is_shown_to_the_admin_with_its_traceback(site: Site) -> None:
    """Its location, why and traceback on its page; listed apart on the quarantine page."""
    page = site.clients[ADMIN].get(f"/admin/quarantaine/P{site.passed}").text
    assert "<dt>UID</dt><dd>7003</dd>" in page and "Traceback (most recent call last)" in page
    listing = site.clients[ADMIN].get("/admin/quarantaine").text
    assert f'href="/admin/quarantaine/P{site.passed}"' in listing.split('id="non-enregistres"')[1]


def test_templates_check_page_lists_every_template(site: Site) -> None:
    page = site.clients[ADMIN].get("/admin/modeles")
    names = sorted(p.name for p in (ROOT / "templates").iterdir() if (p / "meta.yaml").is_file())
    assert names and all(f'<th scope="row">{name}</th>' in page.text for name in names)
    assert f"Les {len(names)} modèles sont corrects." in page.text
