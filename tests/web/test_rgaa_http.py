"""RGAA 4.1 checks that axe-core does not make, where the markup is enough (HTTP): the
footer's compliance mention and the accessibility statement it links to (loi 2005-102
art. 47, décret 2019-768), page titles that say where one is (8.5/8.6), the language and
direction of a citizen's text shown in the page (8.7). Behaviour in a browser (focus,
keyboard, announcements) is in test_rgaa_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from deskworld import ETRANGERS, Desk, desk_console
from webtools import RunningConsole, local_login

ACCOUNTS = ("khaddad", "tbernard")
ARABIC = "مرحبا، أرغب في تجديد بطاقة الإقامة الخاصة بي. ما هي الوثائق المطلوبة؟ شكرا جزيلا"


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS) as running:
        yield running


def arabic_mail(desk: Desk) -> Any:
    """A citizen's mail in Arabic, subject and body, read by the pipeline: its row."""
    mail = (
        "Return-Path: <usager9@example.fr>\r\nFrom: Amal <usager9@example.fr>\r\n"
        f"To: {ETRANGERS}\r\nSubject: =?utf-8?b?2KjYt9in2YLYqSDYp9mE2KXZgtin2YXYqQ==?=\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0100\r\nMessage-ID: <citizen-9@example.fr>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + ARABIC + "\r\n"
    ).encode()
    desk.etrangers.append(mail, internaldate=datetime.now(UTC))
    desk.poll()
    row = desk.row("<citizen-9@example.fr>")
    assert row.language == "ar"
    return row


def title_of(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html, re.S)
    assert found is not None
    return found.group(1).strip()


def test_footer_links_the_compliance_mention_to_a_public_statement(
    console: RunningConsole,
) -> None:
    """Every page's footer says « Accessibilité : non conforme » as a link to the
    statement; the statement is in French, reachable without logging in, and honest."""
    with console.client() as client:
        login = client.get("/connexion").text
        link = re.search(r'<a [^>]*href="/accessibilite"[^>]*>([^<]*)</a>', login)
        assert link is not None and link.group(1).strip() == "Accessibilité : non conforme"
        statement = client.get("/accessibilite")
        assert statement.status_code == 200
        assert '<html lang="fr"' in statement.text
        assert title_of(statement.text).startswith("Déclaration d’accessibilité — ")
        assert "<h1>Déclaration d’accessibilité</h1>" in statement.text
        assert "non conforme" in statement.text and "RGAA" in statement.text
        assert 'aria-current="page"' in statement.text  # the footer link, on its own page
        local_login(client, "khaddad")
        queue = client.get("/").text
        assert 'href="/accessibilite"' in queue.split('id="pied-de-page"')[1]


def test_message_page_title_says_it_is_a_mail(desk: Desk, console: RunningConsole) -> None:
    row = desk.row("<citizen-1@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}").text
    assert title_of(page).startswith(f"Courriel {row.reference} — ")


def test_arabic_mail_is_shown_right_to_left_in_its_language(
    desk: Desk, console: RunningConsole
) -> None:
    """A citizen's Arabic mail: its body and subject carry lang="ar" and dir="rtl", so a
    screen reader reads it with an Arabic voice and the text runs the right way (8.7)."""
    row = arabic_mail(desk)
    french = desk.row("<citizen-1@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}").text
        other = client.get(f"/courriel/{french.id}").text
    body = re.search(r'<pre [^>]*id="corps-texte"[^>]*>', page)
    assert body is not None and 'lang="ar"' in body.group(0) and 'dir="rtl"' in body.group(0)
    heading = re.search(r'<h1 [^>]*id="objet"[^>]*>', page)
    assert heading is not None and 'lang="ar"' in heading.group(0)
    assert 'dir="rtl"' in heading.group(0)
    body = re.search(r'<pre [^>]*id="corps-texte"[^>]*>', other)
    assert body is not None and 'lang="fr"' in body.group(0) and "rtl" not in body.group(0)


def subject_cell(queue: str, reference: str) -> str:
    """The opening tag of a queue row's subject cell (its second)."""
    row = re.search(rf'<tr [^>]*data-reference="{reference}"[^>]*>(.*?)</tr>', queue, re.S)
    assert row is not None, reference
    cells = re.findall(r"<td[^>]*>", row.group(1))
    return str(cells[1])


def test_queue_subjects_are_marked_in_their_language(desk: Desk, console: RunningConsole) -> None:
    """The queue lists the Arabic mail's subject in Arabic: its cell carries lang="ar" and
    dir="rtl", as on the message page (8.7), on the page and in the filtered table (htmx);
    a French mail's cell lang="fr"."""
    row = arabic_mail(desk)
    french = desk.row("<citizen-1@example.fr>")
    with console.client() as client:
        local_login(client, "khaddad")
        queue = client.get("/").text
        swapped = client.get("/", headers={"HX-Request": "true"}).text
    for page in (queue, swapped):
        cell = subject_cell(page, row.reference)
        assert 'lang="ar"' in cell and 'dir="rtl"' in cell
        cell = subject_cell(page, french.reference)
        assert 'lang="fr"' in cell and "rtl" not in cell


def test_a_follow_up_subject_is_marked_in_its_own_language(
    desk: Desk, console: RunningConsole
) -> None:
    """The citizen of a French mail writes again in its thread, in Arabic: the follow-up gets
    no AR but its language is detected, and the message page lists its subject with
    lang="ar" dir="rtl" (8.7), the French follow-ups' with lang="fr"."""
    french = desk.row("<citizen-1@example.fr>")
    for n, (subject, text) in enumerate(
        (
            ("=?utf-8?b?2KjYt9in2YLYqSDYp9mE2KXZgtin2YXYqQ==?=", ARABIC),
            (
                "Re: Renouvellement de mon titre",
                "Bonjour, je me permets de vous relancer : "
                "je n'ai toujours pas de nouvelles de mon dossier. Merci de me répondre.",
            ),
        ),
        start=1,
    ):
        mail = (
            "Return-Path: <usager1@example.fr>\r\nFrom: <usager1@example.fr>\r\n"
            f"To: {ETRANGERS}\r\nSubject: {subject}\r\n"
            f"Date: Thu, 26 Nov 2026 10:0{n}:00 +0100\r\nMessage-ID: <again-{n}@example.fr>\r\n"
            "In-Reply-To: <citizen-1@example.fr>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n"
        ).encode()
        desk.etrangers.append(mail, internaldate=datetime.now(UTC))
    desk.poll()
    arabic, again = desk.row("<again-1@example.fr>"), desk.row("<again-2@example.fr>")
    assert (arabic.decision, arabic.language) == ("follow-up", "ar")
    assert (again.decision, again.language) == ("follow-up", "fr")
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{french.id}").text
    listed = re.findall(r"<li>[^<]*<span([^>]*)>([^<]*)</span></li>", page)
    assert (' lang="ar" dir="rtl"', "بطاقة الإقامة") in listed
    assert (' lang="fr" dir="ltr"', "Re: Renouvellement de mon titre") in listed
