"""The desk's pages over HTTP, on mail read by the real pipeline from Dovecot: the queue
(order, badges, filters, search, the month's header), per-request authorisation."""

from __future__ import annotations

import base64
import dataclasses
import random
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from deskworld import ETRANGERS, Desk, citizen_mail, desk_console, move_mail
from rulesfile import dump_rules, load_rules
from webtools import RunningConsole, local_login

from mailbot.config import load_config
from mailbot.mail.originals import ImapOriginals
from mailbot.web.message_pages import served_type

ACCOUNTS = ("cdurand", "lmoreau", "khaddad", "mlefebvre", "ngarnier", "tbernard")


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS) as running:
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
        crafted = client.get("/", params={"envoye": "Appelez le 08 99 00 00 00"}).text
        assert 'id="avis"' not in crafted and "08 99" not in crafted  # only a reference shows
        banner = client.get("/", params={"envoye": old.reference}).text
        assert 'id="avis"' in banner and old.reference in banner


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


def test_message_page_reads_the_mail_without_marking_it_seen(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row("<citizen-1@example.fr>")
    flags_before = desk.etrangers.flags()
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}")
        assert page.status_code == 200
        assert "Mon titre de séjour expire bientôt" in page.text
        assert row.reference in page.text and "Marie Dupont" in page.text
        assert "Accusé de réception envoyé" in page.text and "par mailbot" in page.text
        assert 'id="orientation"' in page.text
    assert desk.etrangers.flags() == flags_before
    assert all("\\Seen" not in flags for flags in desk.etrangers.flags().values())


def test_message_page_is_refused_outside_the_agents_services(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row("<citizen-1@example.fr>")
    with console.client() as client:
        local_login(client, "mlefebvre")  # permis
        assert client.get(f"/courriel/{row.id}").status_code == 403
        assert client.get(f"/courriel/{row.id}/piece-jointe/1").status_code == 403
        assert client.get("/courriel/999999").status_code == 404
    denied = console.events("denied")
    assert denied and denied[0]["agent"] == "mlefebvre" and denied[0]["service"] == "etrangers"


def test_hostile_html_is_shown_inert_with_its_attachment(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row("<citizen-3@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}")
        body = page.text.split('id="corps-html"', 1)[1].split("</section>", 1)[0]
        assert "Bonjour, je joins mon dossier." in body
        for bad in ("<script", "onerror", "javascript:", "tracker.invalid", "mbPwned"):
            assert bad not in body
        assert "1 image distante bloquée" in page.text
        link = re.search(r'href="(/courriel/\d+/piece-jointe/\d+)"', page.text)
        assert link and "passeport.pdf" in page.text
        pdf = client.get(link.group(1))
        assert pdf.status_code == 200 and pdf.content == b"%PDF-1.4\n"
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == "attachment; filename*=utf-8''passeport.pdf"


def test_message_page_shows_where_a_citizens_link_really_goes(
    desk: Desk, console: RunningConsole
) -> None:
    """A mail posing as ProConnect: the agent reads the host its link leads to, after the
    link's words; a link that shows its own address gets no note."""
    html = (
        '<p><a href="https://proconnect-reconnexion.example/session">Votre session a expiré '
        ": reconnectez-vous sur ProConnect</a></p>"
        '<p><a href="https://www.ants.gouv.fr">https://www.ants.gouv.fr</a></p>'
    )
    desk.etrangers.append(citizen_mail(8, subject="Session expirée", html=html))
    desk.poll()
    row = desk.row("<citizen-8@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}")
        body = page.text.split('id="corps-html"', 1)[1].split("</section>", 1)[0]
        assert (
            "reconnectez-vous sur ProConnect</a> "
            '<span class="mb-link-dest">[proconnect-reconnexion.example]</span>'
        ) in body
        assert body.count('class="mb-link-dest"') == 1
        assert 'rel="noopener noreferrer nofollow"' in body


def huge_mail_with_a_scan(scan: bytes) -> bytes:
    """A citizen's mail of a text and a scanned PDF, above the test's max_message_bytes."""
    head = citizen_mail(9, subject="Mon dossier scanné").split(b"Content-Type: text/plain")[0]
    return head + (
        b'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        b"--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVoici mon dossier.\r\n"
        b"--mix\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="dossier.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(scan) + b"--mix--\r\n"
    )


def test_an_attachment_of_a_huge_mail_read_in_part_is_served_whole_or_refused(
    desk: Desk, tmp_path: Path
) -> None:
    """A mail above polling.max_message_bytes is read as its start, where its scan is cut:
    the scan downloaded is fetched alone from IMAP and is the citizen's file to the byte;
    above web.max_attachment_bytes, the agent is told where the mail is — never cut bytes."""
    scan = b"%PDF-1.4\n" + random.Random(9).randbytes(800_000) + b"\n%%EOF\n"
    uid = desk.etrangers.append(huge_mail_with_a_scan(scan))
    rules = load_rules(desk.path)
    rules.setdefault("polling", {})["max_message_bytes"] = 100_000
    desk.path.write_text(dump_rules(rules), encoding="utf-8")
    desk.poll()
    small = dataclasses.replace(desk, config=load_config(desk.path))
    row = desk.row("<citizen-9@example.fr>")
    (tmp_path / "whole").mkdir()
    with desk_console(small, tmp_path / "whole", ACCOUNTS) as console, console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}")
        assert page.status_code == 200 and "dossier.pdf" in page.text
        # the size of a cut attachment is that of its start: not shown
        assert "application/pdf</span>" in page.text and "seul son début" in page.text
        link = re.search(r'href="(/courriel/\d+/piece-jointe/\d+)"', page.text)
        assert link
        pdf = client.get(link.group(1))
        assert pdf.status_code == 200 and pdf.content == scan
        assert pdf.headers["content-disposition"] == "attachment; filename*=utf-8''dossier.pdf"
    strict = small.config.model_copy(
        update={"web": small.config.web.model_copy(update={"max_attachment_bytes": 1_000_000})}
    )
    (tmp_path / "strict").mkdir()
    refusing = ImapOriginals(strict)
    with (
        desk_console(small, tmp_path / "strict", ACCOUNTS, originals=refusing) as console,
        console.client() as client,
    ):
        local_login(client, "khaddad")
        refused = client.get(link.group(1))
        assert refused.status_code == 413 and refused.content != scan
        assert "Pièce jointe non téléchargeable" in refused.text
        assert "trop volumineuse pour être téléchargée" in refused.text
        assert f"dans la boîte {ETRANGERS}, sous la référence {row.reference}" in refused.text
    assert "\\Seen" not in desk.etrangers.flags()[uid]


@pytest.mark.parametrize(
    "declared",
    [
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/javascript",
        "application/x-javascript",
        # JavaScript MIME types too (WHATWG MIME Sniffing §4.6): served as they are, a
        # citizen's attachment would be a same-origin script that CSP's 'self' lets run.
        "text/ecmascript",
        "application/ecmascript",
        "text/jscript",
        "text/livescript",
        "text/css",  # and a same-origin stylesheet for style-src 'self'
    ],
)
def test_an_attachment_that_a_browser_could_run_is_served_as_bytes(declared: str) -> None:
    assert served_type(declared) == "application/octet-stream"


@pytest.mark.parametrize("declared", ["application/pdf", "image/jpeg", "text/plain"])
def test_other_attachments_keep_their_type(declared: str) -> None:
    assert served_type(declared) == declared


def test_a_moved_mail_is_found_again_and_a_deleted_one_said_gone(
    desk: Desk, console: RunningConsole
) -> None:
    moved, deleted = desk.row("<citizen-2@example.fr>"), desk.row("<citizen-1@example.fr>")
    move_mail(desk.etrangers, "<citizen-2@example.fr>", "Classement")
    move_mail(desk.etrangers, "<citizen-1@example.fr>", None)
    with console.client() as client:
        local_login(client, "khaddad")
        found = client.get(f"/courriel/{moved.id}")
        assert "Mon titre de séjour expire bientôt" in found.text
        assert 'id="courriel-absent"' not in found.text
        gone = client.get(f"/courriel/{deleted.id}")
        assert gone.status_code == 200 and 'id="courriel-absent"' in gone.text
        assert "est plus dans la boîte" in gone.text
        assert "Accusé de réception envoyé" in gone.text  # the thread is still there


def test_colleagues_with_the_message_open_are_shown(desk: Desk, console: RunningConsole) -> None:
    row = desk.row("<citizen-1@example.fr>")
    with console.client() as first, console.client() as second:
        local_login(first, "khaddad")
        local_login(second, "lmoreau")
        first.get(f"/courriel/{row.id}")
        page = second.get(f"/courriel/{row.id}")
        assert re.search(r"Également ouvert par : Karim Haddad", page.text)


def test_the_page_refreshes_who_has_the_message_open(desk: Desk, console: RunningConsole) -> None:
    row = desk.row("<citizen-1@example.fr>")
    with console.client() as first, console.client() as second:
        local_login(first, "khaddad")
        local_login(second, "lmoreau")
        assert 'hx-trigger="every 45s"' in first.get(f"/courriel/{row.id}").text
        fragment = second.get(f"/courriel/{row.id}/presence", headers={"HX-Request": "true"})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert "Également ouvert par : Karim Haddad" in fragment.text
    with console.client() as outsider:
        local_login(outsider, "mlefebvre")
        assert outsider.get(f"/courriel/{row.id}/presence").status_code == 403


def test_queue_shows_the_mails_held_to_check_first(desk: Desk, console: RunningConsole) -> None:
    """A mail the routing was unsure of stays at its mailbox's service "to check" (issue 13):
    the queue shows it first, then the others by deadline, so that it is re-routed while the
    right service still has time to answer."""

    from mailbot.store.schema import messages

    old, recent, hostile = (desk.row(f"<citizen-{n}@example.fr>") for n in (1, 2, 3))
    with desk.app.store.engine.begin() as conn:
        conn.execute(messages.update().where(messages.c.id == recent.id).values(to_check=1))
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get("/").text
        assert references(page) == [recent.reference, old.reference, hostile.reference]
        assert references(client.get("/?etat=a-verifier").text) == [recent.reference]


def test_counts_and_sizes_are_written_in_french(desk: Desk, tmp_path: Path) -> None:
    """Zero and one take the singular (« 0 courriel », « 1 reçu, 0 répondu », not « 0
    courriels », « 1 reçus, 0 répondus »), and a size is written as elsewhere (« 1 ko »,
    « 31,5 Mo »: ``size_fr``), not « 0.0 ko » here and « 1.0 Ko » there."""
    old = desk.row("<citizen-1@example.fr>")
    hostile = desk.row("<citizen-3@example.fr>")
    week = old.received_at.astimezone(ZoneInfo(desk.config.timezone)).isocalendar()
    period = f"{week.year}-W{week.week:02d}"  # the old mail's week: it alone
    with (
        desk_console(desk, tmp_path, ACCOUNTS, site=True) as console,
        console.client() as agent,
        console.client() as head,
    ):
        local_login(agent, "khaddad")
        nothing = agent.get("/", params={"q": "aucun objet ne contient ceci"})
        assert re.search(r'id="total">0 courriel — page 1 sur 1<', nothing.text)
        page = agent.get(f"/courriel/{hostile.id}")
        assert "application/pdf – 1 ko<" in page.text  # « %PDF-1.4\n », 9 bytes
        form = agent.get(f"/courriel/{old.id}", params={"modele": "reponse-dossier-etranger"})
        assert "pièces-à-préparer.txt (text/plain, 1 ko)" in form.text  # 1039 bytes
        local_login(head, "lmoreau")
        board = head.get("/indicateurs", params={"service": "etrangers", "periode": period})
        assert board.status_code == 200
        assert re.search(r"\s1 reçu, 0 répondu, 1 en retard\.", board.text)


def test_the_mails_date_is_written_in_french(desk: Desk, console: RunningConsole) -> None:
    """The citizen's Date header (« Thu, 26 Nov 2026 10:00:00 +0100 ») was shown as
    written: English in a French page. It is in French, in the prefecture's time."""
    row = desk.row("<citizen-1@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}")
    assert 'id="date-courriel">jeudi 26 novembre 2026 à 10 h<' in page.text
    assert "Thu, 26 Nov" not in page.text


def test_categories_are_named_as_agents_read_them(desk: Desk, console: RunningConsole) -> None:
    """Categories were shown by their keys (« etat-avancement ») in the queue, its filter,
    the message page and the correction form: they are shown by their names in rules.yaml
    (routing.category_names: « Information », « État d'avancement »), the keys staying the
    forms' values."""
    assert desk.config.routing is not None
    names = desk.config.routing.category_names
    row = desk.row("<citizen-1@example.fr>")
    label = names[row.category]
    assert label != row.category
    with console.client() as client:
        local_login(client, "khaddad")
        queue = client.get("/").text
    with console.client() as client:
        local_login(client, "lmoreau")  # a head of service: the correction form too
        message = client.get(f"/courriel/{row.id}").text
    queue, message = (html.replace("&#39;", "'") for html in (queue, message))
    cell = queue.split(f'data-reference="{row.reference}"')[1].split("</tr>")[0]
    assert f"<td>{label}</td>" in cell
    assert f"/ {label}" in message
    for page in (queue, message):
        found = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)<', page)
        options = {value: text for value, text in found if value in names}
        assert options == names, page is queue
