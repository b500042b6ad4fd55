"""The desk's pages over HTTP, on mail read by the real pipeline from Dovecot: the queue
(order, badges, filters, search, the month's header), per-request authorisation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from deskworld import Desk, desk_world
from servers import DovecotServer, MailUser, SmtpServer
from webtools import RunningConsole, local_login, running_console

ACCOUNTS = ("cdurand", "lmoreau", "khaddad", "mlefebvre", "ngarnier", "tbernard")


@pytest.fixture
def desk(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> Desk:
    return desk_world(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    web = tmp_path / "web"
    web.mkdir()
    with running_console(web, accounts=ACCOUNTS, config=desk.config, backend=desk.app) as running:
        yield running


def references(html: str) -> list[str]:
    return re.findall(r'data-reference="([^"]+)"', html)


def test_queue_is_the_home_page_earliest_deadline_first(
    desk: Desk, console: RunningConsole
) -> None:
    old, recent, hostile = (desk.row(f"<citizen-{n}@example.fr>") for n in (1, 2, 3))
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get("/")
        assert page.status_code == 200
        assert references(page.text) == [old.reference, hostile.reference, recent.reference]
        assert 'data-urgency="overdue"' in page.text.split(hostile.reference)[0]
        assert "En retard" in page.text and "Dans les délais" in page.text
        assert "Marie Dupont" in page.text and "usager1@example.fr" not in page.text
        assert re.search(r"3 ouverts, dont <strong>1 en retard</strong>", page.text)
        assert "objectif : plus de 75 %" in page.text
        assert 'id="role">Agent<' in page.text


def test_queue_filters_search_and_htmx_fragment(desk: Desk, console: RunningConsole) -> None:
    old, recent = desk.row("<citizen-1@example.fr>"), desk.row("<citizen-2@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        assert references(client.get("/?etat=en-retard").text) == [old.reference]
        assert references(client.get("/", params={"q": "récépissé"}).text) == [recent.reference]
        assert references(client.get("/", params={"q": recent.reference.lower()}).text) == [
            recent.reference
        ]
        assert references(client.get("/?etat=mes-courriels").text) == []
        assert len(references(client.get("/?etat=non-attribues").text)) == 3
        assert references(client.get("/?categorie=reclamation").text) == []
        fragment = client.get("/?etat=en-retard", headers={"HX-Request": "true"})
        assert "<html" not in fragment.text and references(fragment.text) == [old.reference]
        assert len(references(client.get("/?etat=nimporte&service=permis").text)) == 3


def test_queue_shows_only_the_agents_services(desk: Desk, console: RunningConsole) -> None:
    with console.client() as client:
        local_login(client, "mlefebvre")  # permis: none of these mails
        page = client.get("/")
        assert references(page.text) == [] and "Aucun courriel ouvert" in page.text
        assert references(client.get("/?service=etrangers").text) == []
    with console.client() as client:
        local_login(client, "ngarnier")  # quality mission: every service
        assert len(references(client.get("/").text)) == 3
    with console.client() as client:
        local_login(client, "tbernard")  # admin: no citizen mail, the profile page
        page = client.get("/")
        assert page.status_code == 200 and "Ce que vous pouvez faire" in page.text
        assert references(page.text) == []
