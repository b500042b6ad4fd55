"""A bounce of our AR in the console, on mail read by the real pipeline from Dovecot: the
relay's DSN about the AR lands in the mailbox, the next poll records it, and the queue's
row has its marker and the message page its alert (app/bounces). Nothing is sent."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from deskworld import ETRANGERS, Desk, desk_console
from test_bounces_e2e import dsn
from webtools import RunningConsole, local_login


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ("khaddad",)) as running:
        yield running


def test_a_bounced_ar_is_shown_in_the_queue_and_on_the_message_page(
    desk: Desk, console: RunningConsole
) -> None:
    bounced, other = desk.row("<citizen-2@example.fr>"), desk.row("<citizen-3@example.fr>")
    desk.etrangers.append(dsn(bounced.ar_message_id, bounced.sender, to=ETRANGERS))
    desk.poll()
    assert desk.delivered() == []  # nothing sent in answer to the bounce
    with console.client() as client:
        local_login(client, "khaddad")
        queue = client.get("/").text
        rows = re.findall(r'<tr class="mb-row" data-reference="([^"]+)"(.*?)</tr>', queue, re.S)
        assert len(rows) == 3
        assert [ref for ref, row in rows if "Non distribué" in row] == [bounced.reference]
        page = client.get(f"/courriel/{bounced.id}").text
        alert = re.search(r'<div class="fr-alert[^"]*mb-bounce".*?</div>', page, re.S)
        assert alert is not None, "no bounce alert on the message page"
        text = html.unescape(" ".join(alert.group(0).split()))
        assert "Le courriel envoyé à l'usager le " in text
        assert "n'a pas pu être distribué : adresse inconnue (5.1.1)." in text
        assert "Contactez l'usager par un autre moyen." in text
        assert "Courriel concerné : l'accusé de réception." in text
        assert bounced.sender not in page.split("mb-bounce")[1].split("</div>")[0]
        assert "mb-bounce" not in client.get(f"/courriel/{other.id}").text
