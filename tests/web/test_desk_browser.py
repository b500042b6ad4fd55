"""The desk in Debian's headless Chromium, on mail the pipeline read from Dovecot, with
aiosmtpd as SMTP: the issue's scenario (log in, the overdue message first, open it, the
suggested template preselected, fill a variable, the preview shows it, send: exactly one
threaded reply with the agent's complete signature, the message leaves the queue), an
agent without the service refused, a hostile HTML mail shown inert, and axe-core on the
queue and message pages. The browser may only reach 127.0.0.1 (see conftest)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deskworld import HOSTILE_HOST, Desk, desk_console
from playwright.sync_api import Page, Request, expect
from test_desk_actions import written_again_after_the_answer
from webtools import RunningConsole, browser_login, serious

ACCOUNTS = ("khaddad", "mlefebvre")


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS) as running:
        yield running


def login(page: Page, console: RunningConsole, agent: str) -> None:
    """Logged in (webtools.browser_login), on the queue, an agent's first page."""
    browser_login(page, console.url, agent)
    page.goto(console.url + "/")
    expect(page.locator("h1")).to_have_text("File des courriels")


def test_answer_the_overdue_message_with_the_suggested_template(
    page: Page, axe: Any, desk: Desk, console: RunningConsole
) -> None:
    overdue = desk.row("<citizen-1@example.fr>")
    login(page, console, "khaddad")
    first = page.locator("tbody tr.mb-row").first
    expect(first).to_have_attribute("data-reference", overdue.reference)
    expect(first).to_have_attribute("data-urgency", "overdue")
    expect(first.locator(".fr-badge")).to_have_text("En retard")
    queue_violations = axe(page)
    assert serious(queue_violations) == []

    first.locator("a").click()
    expect(page.locator("h1")).to_have_text(overdue.subject)
    selected = page.locator("#modele option:checked")
    expect(selected).to_contain_text("(suggérée)")
    expect(page.locator("#var-usager_nom")).to_have_value("Marie Dupont")
    page.fill("#var-statut_dossier", "en cours d'instruction")
    expect(page.locator("#apercu-texte")).to_contain_text("en cours d'instruction")
    expect(page.locator("#apercu-texte")).to_contain_text("Karim Haddad")
    message_violations = axe(page)
    assert serious(message_violations) == []

    page.click("#envoyer")
    expect(page).to_have_url(f"{console.url}/?envoye={overdue.reference}")
    expect(page.locator("#avis")).to_contain_text(overdue.reference)
    expect(page.locator(f'tr[data-reference="{overdue.reference}"]')).to_have_count(0)
    (received,) = desk.delivered()  # exactly one, once the outbox has sent all it holds
    mail = email.message_from_bytes(received.raw, policy=email.policy.default)
    assert received.rcpt_tos == ("usager1@example.fr",)
    assert mail["In-Reply-To"] == "<citizen-1@example.fr>"
    assert f"[{overdue.reference}]" in str(mail["Subject"])
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "en cours d'instruction" in text
    for element in ("Karim", "Haddad", "Instructeur, section du séjour", "7 place de la Madeleine"):
        assert element in text
    assert page.problems == []  # type: ignore[attr-defined]
    print(
        f"axe: queue {len(queue_violations)} violations, message {len(message_violations)}"
        " (none serious or critical)"
    )


def test_the_text_follows_the_variables_until_the_agent_edits_it(
    page: Page, axe: Any, desk: Desk, console: RunningConsole
) -> None:
    overdue = desk.row("<citizen-1@example.fr>")
    login(page, console, "khaddad")
    page.goto(f"{console.url}/courriel/{overdue.id}")
    text = page.locator("#texte-modifie")
    expect(text).to_have_value(page.locator("#apercu-texte").inner_text(), timeout=10_000)
    expect(page.locator("#pieces-jointes-modele")).to_contain_text("pièces-à-préparer.txt")
    expect(page.locator("#apercu-pieces")).to_contain_text("pièces-à-préparer.txt")
    page.fill("#var-statut_dossier", "en cours d'instruction")
    expect(page.locator("#texte-modifie")).to_have_value(  # swapped out of band
        page.locator("#apercu-texte").inner_text()
    )
    expect(page.locator("#texte-modifie")).to_contain_text("en cours d'instruction")
    # No preview still on its way: htmx marks an element while its request is in flight (a
    # "networkidle" pause of 500 ms timed out once in 30 s on a loaded machine).
    page.wait_for_function("() => !document.querySelector('.htmx-request')")
    edited = (
        page.locator("#texte-modifie")
        .input_value()
        .replace("Cordialement,", "Votre récépissé est prêt.\n\nCordialement,")
    )
    page.fill("#texte-modifie", edited)
    expect(page.locator("#apercu-modifie")).to_be_visible()
    expect(page.locator("#apercu-texte")).to_contain_text("Votre récépissé est prêt.")
    assert serious(axe(page)) == []
    page.click("#envoyer")
    expect(page).to_have_url(f"{console.url}/?envoye={overdue.reference}")
    (received,) = desk.delivered()  # exactly one, once the outbox has sent all it holds
    mail = email.message_from_bytes(received.raw, policy=email.policy.default)
    text_part = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Votre récépissé est prêt." in text_part and "en cours d'instruction" in text_part
    assert [a.get_filename() for a in mail.iter_attachments()] == ["pièces-à-préparer.txt"]
    (event,) = [e for e in desk.app.store.events(overdue.id) if e.kind == "reply_queued"]
    assert '"edited": true' in event.detail
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_agent_without_the_service_is_refused(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    row = desk.row("<citizen-1@example.fr>")
    login(page, console, "mlefebvre")
    expect(page.locator(f'tr[data-reference="{row.reference}"]')).to_have_count(0)
    response = page.goto(f"{console.url}/courriel/{row.id}")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Accès refusé")


def test_a_hostile_html_mail_is_shown_inert(
    page: Page, axe: Any, desk: Desk, console: RunningConsole
) -> None:
    row = desk.row("<citizen-3@example.fr>")
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    login(page, console, "khaddad")
    page.goto(f"{console.url}/courriel/{row.id}")
    body = page.locator("#corps-html")
    expect(body).to_contain_text("Bonjour, je joins mon dossier.")
    expect(page.locator("#images-bloquees")).to_contain_text("1 image distante bloquée")
    page.locator("#corps-html a", has_text="cliquez ici").click()
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.mbPwned") == "undefined"
    assert page.title() != "pwned"
    assert body.locator("script").count() == 0
    assert [r.url for r in seen if HOSTILE_HOST in r.url] == []
    assert serious(axe(page)) == []


def test_closing_reopening_and_answering_in_the_browser(
    page: Page, axe: Any, desk: Desk, console: RunningConsole
) -> None:
    """The forms a state forbids give way to a sentence, and « Rouvrir » appears on a
    closed message: each page so changed passes axe-core, and the buttons work."""
    row = desk.row("<citizen-1@example.fr>")
    url = f"{console.url}/courriel/{row.id}"
    login(page, console, "khaddad")
    page.goto(url)
    page.click("summary:has-text('Aucune réponse nécessaire')")
    page.select_option("#motif-sans", "spam")
    page.click("#action-sans-reponse button[type=submit]")
    expect(page).to_have_url(f"{console.url}/?fait=sans-reponse")

    page.goto(url)
    expect(page.locator("#sans-reponse-impossible")).to_contain_text("classé sans réponse le")
    expect(page.locator("#action-sans-reponse")).to_have_count(0)
    expect(page.locator("#rouvrir")).to_be_visible()
    assert serious(axe(page)) == []
    page.fill("#motif-rouvrir", "Classé par erreur")
    page.click("#rouvrir")
    expect(page.locator("#avis")).to_contain_text("Le courriel est rouvert")
    expect(page.locator("#action-rouvrir")).to_have_count(0)
    expect(page.locator("#suivi")).to_contain_text("Rouvert par un agent")
    assert serious(axe(page)) == []

    page.click("summary:has-text('Répondu par un autre moyen')")
    page.fill("#motif-ailleurs", "Rappelée le matin")
    page.click("#action-repondu-ailleurs button[type=submit]")
    page.goto(url)
    expect(page.locator("#sans-reponse-impossible")).to_contain_text("a reçu une réponse le")
    expect(page.locator("#formulaire-libre")).to_have_count(1)
    assert serious(axe(page)) == []
    assert page.problems == []  # type: ignore[attr-defined]


def test_mail_after_the_answer_flagged_and_marked_read_in_the_browser(
    page: Page, axe: Any, desk: Desk, console: RunningConsole
) -> None:
    """The queue's « Nouveau message de l'usager » badge and the message page's « Marquer
    comme lu » form pass axe-core; the button takes the message out of the queue."""
    row = written_again_after_the_answer(desk)
    login(page, console, "khaddad")
    page.goto(console.url + "/")
    first = page.locator("tr.mb-row").first
    expect(first).to_have_attribute("data-reference", row.reference)
    expect(first.locator(".mb-written-again")).to_have_text("Nouveau message de l'usager")
    assert serious(axe(page)) == []
    page.goto(f"{console.url}/courriel/{row.id}")
    expect(page.locator("#nouveau-message")).to_be_visible()
    assert serious(axe(page)) == []
    page.click("#marquer-lu")
    expect(page).to_have_url(f"{console.url}/?fait=lu")
    expect(page.locator(f'tr[data-reference="{row.reference}"]')).to_have_count(0)
    assert serious(axe(page)) == []
    assert page.problems == []  # type: ignore[attr-defined]
