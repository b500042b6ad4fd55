"""RGAA 4.1 checks that axe-core does not make, where the browser's behaviour matters
(Debian's Chromium through Playwright, on mail the pipeline read from Dovecot): where the
focus goes after a refused form (11.10, 11.11), errors tied to their field, status
messages announced without taking the focus (7.5), the keyboard's path (12.7, 12.8)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from deskworld import (
    ETRANGERS,
    GENERAL,
    Desk,
    citizen_mail,
    desk_console,
    move_mail,
    pass_over,
)
from playwright.sync_api import Page, expect
from refusals import allow_rows, query
from webtools import RunningConsole, browser_login

ACCOUNTS = ("khaddad", "cdurand")
OVERDUE = "<citizen-1@example.fr>"


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS) as running:
        yield running


def open_free_reply(page: Page) -> None:
    """The free reply's section opened, once the page's first preview is in: that preview
    (htmx, on load) moves the page down, and a click made before it can miss the summary."""
    expect(page.locator("#apercu pre")).to_be_visible()
    page.click("#reponse-libre summary")
    expect(page.locator("#libre-texte")).to_be_visible()


def login(page: Page, console: RunningConsole, agent: str = "khaddad") -> None:
    """Logged in (webtools.browser_login), on the queue, an agent's first page."""
    browser_login(page, console.url, agent)
    page.goto(console.url + "/")
    expect(page.locator("h1")).to_have_text("File des courriels")
    # htmx sets the page up once it is loaded: a filter chosen before is a plain select's
    page.wait_for_load_state()


def sign_in(page: Page, console: RunningConsole, agent: str) -> None:
    """Log in an agent whose first page is not the queue (an administrator's, a quality
    mission's)."""
    browser_login(page, console.url, agent)
    page.goto(console.url + "/")
    expect(page.locator("#agent-connecte")).to_be_visible()


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id : ''"))


def test_refused_free_reply_ties_the_error_to_its_field_and_focuses_it(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """A required field left blank (spaces pass the browser's own check): the page comes
    back with the free reply's section open, the field marked in error, its message naming
    it and tied by aria-describedby, the focus on it, and a title that says there is an
    error. (No standard template of the repository has a required field the agent fills:
    the standard form's fields are marked the same way, by the same errors.)"""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    open_free_reply(page)
    page.fill("#libre-texte", "  ")
    page.click("#envoyer-libre")
    expect(page.locator("#erreur")).to_be_visible()
    expect(page.locator("#reponse-libre")).to_have_attribute("open", "")
    field = page.locator("#libre-texte")
    expect(field).to_have_attribute("aria-invalid", "true")
    message = page.locator(f"#{field.get_attribute('aria-describedby')}")
    expect(message).to_have_class("fr-error-text")
    expect(message).to_contain_text("« Votre texte » est obligatoire")
    expect(page.locator(".fr-input-group--error #libre-texte")).to_have_count(1)
    expect(field).to_be_focused()  # autofocus: once the page is drawn
    assert page.title().startswith("Erreur : ")
    expect(page.locator("#formulaire-reponse [aria-invalid]")).to_have_count(0)
    assert desk.smtp.messages == []
    assert page.problems == []  # type: ignore[attr-defined]


def test_refused_action_sends_the_focus_to_its_error(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """An action the server refuses (a blank reason): its message, at the top of the page
    shown again, takes the focus — not the start of the page, far from it."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    page.click("text=Répondu par un autre moyen")
    page.fill("#motif-ailleurs", "  ")
    page.click("#action-repondu-ailleurs button[type=submit]")
    expect(page.locator("#erreur")).to_be_visible()
    expect(page.locator("#erreur")).to_be_focused()  # autofocus: once the page is drawn
    assert page.title().startswith("Erreur : ")


def test_queue_filter_is_announced_and_keeps_the_focus(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """Filtering the queue (htmx swaps the table): the new count is said by a live region
    that was in the page before the swap (a region inserted with its text is not read),
    and the focus stays on the filter."""
    login(page, console)
    status = page.locator('[role="status"]#annonce-file')
    expect(status).to_have_count(1)
    page.focus("#filtre-etat")
    page.select_option("#filtre-etat", "en-retard")
    expect(page.locator("#total")).to_contain_text("1 courriel ")
    expect(status).to_contain_text("1 courriel ")
    assert focused_id(page) == "filtre-etat"


def test_keyboard_skip_link_then_preview_keeps_the_focus(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """The first Tab reaches « Aller au contenu », which moves the focus to the main
    content; typing in a field refreshes the preview (htmx) without moving the focus."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Aller au contenu"
    page.keyboard.press("Enter")
    assert focused_id(page) == "contenu"
    page.focus("#var-statut_dossier")
    page.keyboard.type("en cours")
    expect(page.locator("#apercu-texte")).to_contain_text("en cours")
    assert focused_id(page) == "var-statut_dossier"


def test_refused_login_sends_the_focus_to_its_error(page: Page, console: RunningConsole) -> None:
    page.goto(console.url + "/connexion")
    page.fill("#identifiant", "khaddad")
    page.fill("#mot_de_passe", "not-the-password")
    page.click("#bouton-connexion")
    expect(page.locator("#erreur-connexion")).to_contain_text("incorrect")
    expect(page.locator("#erreur-connexion")).to_be_focused()
    assert page.title().startswith("Erreur : Connexion — ")


def test_preview_says_its_problems_not_the_whole_mail_at_each_keystroke(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """The preview follows the typing (htmx): a live region around it had a screen reader
    read the whole reply again at each pause. Only what stops the sending is said, through
    a region that stays in the page; the focus stays in the field."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    expect(page.locator("#apercu-texte")).to_be_visible()
    for region in ("#apercu", "#apercu-libre"):
        assert page.locator(region).get_attribute("aria-live") is None
    status = page.locator('[role="status"]#annonce-apercu')
    page.focus("#var-statut_dossier")
    page.keyboard.type("en cours")
    expect(page.locator("#apercu #apercu-texte")).to_contain_text("en cours")
    expect(status).to_have_text("")
    page.focus("#texte-modifie")
    page.keyboard.press("Control+A")
    page.keyboard.type("Bonjour, c'est en cours.")  # the signature is gone: refused
    expect(page.locator("#apercu #apercu-probleme")).to_be_visible()
    expect(status).to_contain_text("signature complète")
    assert focused_id(page) == "texte-modifie"


def test_a_done_action_is_said_on_the_page_it_leads_to(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """After an action the browser loads a new page: a status region there from the start
    is not read (only its changes are), so the confirmation takes the focus — else a
    screen reader says the page's title and the agent does not know it was done."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    page.click("#prendre")
    expect(page.locator("#avis")).to_be_visible()
    expect(page.locator("#avis")).to_be_focused()
    page.click("text=Répondu par un autre moyen")
    page.fill("#motif-ailleurs", "Rappelé au téléphone : dossier complet.")
    page.click("#action-repondu-ailleurs button[type=submit]")
    expect(page.locator("#avis-action")).to_be_visible()
    expect(page.locator("#avis-action")).to_be_focused()


@pytest.fixture
def site(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    """Every page of the console (the administrator's too), on the desk's world."""
    accounts = (*ACCOUNTS, "tbernard", "ngarnier")
    with desk_console(desk, tmp_path, accounts, site=True) as running:
        yield running


def quarantine_two(desk: Desk) -> tuple[int, int]:
    """Two citizens' mails quarantined by the real pipeline (the database refused their rows
    as a constraint would), then the database as before: the ids of their rows."""
    for n in (4, 5):
        desk.etrangers.append(citizen_mail(n, subject=f"Demande {n}"))
    database = str(desk.config.database)
    query(
        database,
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.uid > 3"
        " AND NEW.decision <> 'quarantine' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    desk.poll()
    allow_rows(database)
    first, second = (desk.row(f"<citizen-{n}@example.fr>") for n in (4, 5))
    assert first.decision == second.decision == "quarantine"
    return first.id, second.id


def test_a_quarantine_retry_is_said_on_the_page_it_leads_to(
    page: Page, desk: Desk, site: RunningConsole
) -> None:
    """« Traiter à nouveau » loads a new page (the list when the mail left the quarantine,
    the mail's page when it could not): its result takes the focus, as an action's
    confirmation does on the message page — a region there at load is not read (7.5)."""
    released, lost = quarantine_two(desk)
    move_mail(desk.etrangers, "<citizen-5@example.fr>", None)  # deleted: cannot be found
    sign_in(page, site, "tbernard")
    page.goto(f"{site.url}/admin/quarantaine/{released}")
    page.click("#bouton-retraiter")
    expect(page.locator("#resultat")).to_contain_text(f"Le courriel #{released} a été traité")
    expect(page.locator("#resultat")).to_be_focused()
    page.goto(f"{site.url}/admin/quarantaine/{lost}")
    page.click("#bouton-retraiter")
    # Said as gone (MailGoneError), not as a mailbox that could not be read: check IMAP.
    expect(page.locator("#resultat")).to_contain_text("n’a pas été retrouvé")
    expect(page.locator("#resultat")).to_be_focused()


class _Ids(HTMLParser):
    """A page's ids, each as often as it occurs, and the ids its aria and label attributes
    point to."""

    REFERENCES = ("aria-describedby", "aria-labelledby", "aria-controls", "for")

    def __init__(self) -> None:
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, id)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids[value] += 1
            elif name in self.REFERENCES and value and (tag == "label" or name != "for"):
                self.references += [(tag, name, ref) for ref in value.split()]


def id_problems(html: str) -> list[str]:
    """An id given twice (RGAA 8.2: the page is not valid, and a reference to it reaches
    the first only), and an aria-describedby, aria-labelledby, aria-controls or label[for]
    to an id the page does not have."""
    found = _Ids()
    found.feed(html)
    twice = [f"id {i!r} ×{n}" for i, n in found.ids.items() if n > 1]
    dangling = [f"{t}[{a}] → {i!r}" for t, a, i in found.references if i not in found.ids]
    return twice + dangling


def test_every_id_is_unique_and_every_reference_reaches_one(
    page: Page, desk: Desk, site: RunningConsole
) -> None:
    """Each page the browser tests visit, as the browser has it (htmx fragments swapped in:
    both previews shown, a refused form, a retry's result)."""
    row = desk.row(OVERDUE)
    released, _ = quarantine_two(desk)
    seen: dict[str, list[str]] = {}

    def check(name: str) -> None:
        seen[name] = id_problems(page.content())

    page.goto(site.url + "/connexion")
    check("connexion")
    page.fill("#identifiant", "khaddad")
    page.fill("#mot_de_passe", "not-the-password")
    page.click("#bouton-connexion")
    expect(page.locator("#erreur-connexion")).to_be_visible()
    check("connexion refusée")
    login(page, site)
    check("file")
    page.select_option("#filtre-etat", "en-retard")
    expect(page.locator("#total")).to_contain_text("1 courriel ")
    check("file filtrée")
    page.goto(f"{site.url}/courriel/{row.id}")
    open_free_reply(page)
    page.fill("#libre-texte", "Votre dossier est complet.")
    expect(page.locator("#apercu-libre pre")).to_contain_text("Votre dossier est complet.")
    check("courriel, deux aperçus")
    page.fill("#texte-modifie", "Bonjour, c'est en cours.")  # the signature is gone
    expect(page.locator("#apercu .fr-alert")).to_be_visible()
    check("courriel, aperçu refusé")
    page.fill("#libre-texte", "  ")
    page.click("#envoyer-libre")
    expect(page.locator("#erreur")).to_be_visible()
    check("courriel, réponse libre refusée")
    page.goto(site.url + "/accessibilite")
    check("accessibilité")
    page.click("text=Se déconnecter")
    sign_in(page, site, "tbernard")
    check("accueil administrateur")
    page.goto(f"{site.url}/admin/quarantaine/{released}")
    check("courriel en quarantaine")
    page.click("#bouton-retraiter")
    expect(page.locator("#resultat")).to_be_visible()
    check("quarantaine")
    page.goto(site.url + "/admin/modeles")
    check("modèles")
    page.click("text=Se déconnecter")
    sign_in(page, site, "ngarnier")
    page.goto(site.url + "/indicateurs")
    expect(page.locator("#titre-periode")).to_be_visible()
    check("indicateurs")
    assert {name: problems for name, problems in seen.items() if problems} == {}


def test_a_passed_over_retry_is_said_on_the_page_it_leads_to(
    page: Page, desk: Desk, site: RunningConsole
) -> None:
    """The mail passed over, as the quarantined one: « Traiter à nouveau » loads the list
    (recorded) or the mail's page (not found at its location), its result focused (7.5);
    each page, as the browser has it, with unique ids and references that reach one."""
    recorded, lost = pass_over(desk, (4, 5))
    move_mail(desk.etrangers, "<citizen-5@example.fr>", None)  # deleted: cannot be found
    seen: dict[str, list[str]] = {}
    sign_in(page, site, "tbernard")
    page.goto(f"{site.url}/admin/quarantaine")
    expect(page.locator("#non-enregistres caption")).to_have_text(
        "2 courriel(s) non enregistré(s), du plus récent au plus ancien"
    )
    seen["liste"] = id_problems(page.content())
    page.click(f"#non-enregistres >> text=P{recorded}")
    expect(page.locator("h1")).to_have_text(f"Courriel non enregistré P{recorded}")
    seen["courriel non enregistré"] = id_problems(page.content())
    page.click("#bouton-retraiter")
    expect(page.locator("#resultat")).to_contain_text(f"Le courriel non enregistré P{recorded}")
    expect(page.locator("#resultat")).to_be_focused()
    seen["enregistré"] = id_problems(page.content())
    page.goto(f"{site.url}/admin/quarantaine/P{lost}")
    page.click("#bouton-retraiter")
    expect(page.locator("#resultat")).to_contain_text("n’a pas été retrouvé à son emplacement")
    expect(page.locator("#resultat")).to_be_focused()
    seen["introuvable"] = id_problems(page.content())
    assert {name: problems for name, problems in seen.items() if problems} == {}
    assert desk.row("<citizen-4@example.fr>").decision == "acknowledge"
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_emptied_free_reply_says_so_in_its_preview(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """The agent empties the free reply's text (required): the preview says the text is
    empty, and the status region says it once — it used to stay as it was, the old text
    shown as what would be sent, htmx checking the form before asking for a preview."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    open_free_reply(page)
    page.focus("#libre-texte")
    page.keyboard.type("Votre dossier est complet.")
    expect(page.locator("#apercu-libre pre")).to_contain_text("Votre dossier est complet.")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    problem = page.locator("#apercu-libre #apercu-libre-probleme")
    expect(problem).to_contain_text("obligatoire vide : « Votre texte »")
    expect(page.locator("#apercu-libre pre")).to_have_count(0)
    expect(page.locator('[role="status"]#annonce-apercu')).to_contain_text("obligatoire vide")
    assert focused_id(page) == "libre-texte"
    page.keyboard.type("Votre dossier est en cours.")
    expect(page.locator("#apercu-libre pre")).to_contain_text("Votre dossier est en cours.")


def page_overflow(page: Page) -> list[str]:
    """Empty when the page does not scroll sideways; else its width and the elements with
    an id that reach past the window's right edge (outside a table's or a text's own
    scrolling box)."""
    return list(
        page.evaluate(
            """() => {
              const width = document.documentElement.clientWidth;
              const scroll = document.documentElement.scrollWidth;
              if (scroll <= width) return [];
              const wide = [...document.querySelectorAll('body [id]')]
                .filter(e => e.getBoundingClientRect().right > width + 1)
                .filter(e => !e.closest('.fr-table__content, pre'))
                .map(e => '#' + e.id);
              return [`page ${scroll}px`, ...wide];
            }"""
        )
    )


def test_queue_and_message_reflow_at_320_pixels(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """At 320 CSS pixels (RGAA 10.11) nothing but a data table or a mail's preformatted
    text scrolls sideways, the forms folded in the message page's <details> opened
    included: their fields were content-box there (DSFR's box-sizing does not reach a
    <details>' content), so the page scrolled sideways."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.set_viewport_size({"width": 320, "height": 800})
    assert page_overflow(page) == []
    page.goto(f"{console.url}/courriel/{row.id}")
    expect(page.locator("#apercu-texte")).to_be_visible()
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    expect(page.locator("#motif-ailleurs")).to_be_visible()
    assert page_overflow(page) == []


HEADINGS = """() => [...document.querySelectorAll('h1, h2, h3, h4, h5, h6, [role=heading]')]
    .filter(h => h.getClientRects().length > 0 || h.closest('details'))
    .map(h => [Number(h.getAttribute('aria-level') || h.tagName.slice(1)), h.textContent.trim()])"""


def outline_jumps(headings: list[list[object]]) -> list[str]:
    """The page's heading levels as a screen reader lists them: one h1, and no level
    skipped on the way down (RGAA 9.1)."""
    levels = [int(str(level)) for level, _ in headings]
    problems = [f"{levels.count(1)} h1"] if levels.count(1) != 1 else []
    return problems + [
        f"h{levels[i - 1]} → h{levels[i]} « {headings[i][1]} »"
        for i in range(1, len(levels))
        if levels[i] > levels[i - 1] + 1
    ]


def test_the_html_preview_keeps_its_headings_out_of_the_page_outline(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """The reply's HTML has its own h1 and h2 (« Votre dossier en cours »): shown in the
    page, they were a second h1 in the console's outline, under its h3 « Aperçu ». Shown
    in a sandboxed frame (no script, no origin of its own), with a title, the page keeps
    one h1 and headings in order, the mail keeps its own; the keyboard reaches it, and
    typing still updates it without moving the focus."""
    row = desk.row(OVERDUE)
    login(page, console)
    page.goto(f"{console.url}/courriel/{row.id}")
    expect(page.locator("#apercu-texte")).to_be_visible()
    page.click("#apercu summary")
    assert outline_jumps(page.evaluate(HEADINGS)) == []
    frame = page.locator("iframe#apercu-html")
    expect(frame).to_have_attribute("title", "Aperçu HTML de la réponse")
    allowed = str(frame.get_attribute("sandbox")).split()
    assert allowed == ["allow-popups", "allow-popups-to-escape-sandbox"]  # links: a new tab
    mail = page.frame_locator("iframe#apercu-html")
    expect(mail.locator("h1")).to_have_text("Votre dossier en cours")
    expect(mail.locator("html")).to_have_attribute("lang", "fr")
    # From the summary, the next Tab reaches the frame.
    page.focus("#apercu summary")
    page.keyboard.press("Tab")
    assert focused_id(page) == "apercu-html"
    page.focus("#var-statut_dossier")
    page.keyboard.type("en cours")
    expect(mail.locator("body")).to_contain_text("en cours")
    assert focused_id(page) == "var-statut_dossier"
    assert outline_jumps(page.evaluate(HEADINGS)) == []
    assert page.problems == []  # type: ignore[attr-defined]


ARABIC = (
    "السلام عليكم،\r\n\r\n"
    "أنا مقيم في روان منذ ثلاث سنوات. بطاقة الإقامة الخاصة بي تنتهي في شهر فبراير.\r\n"
    "هل يمكنني الحصول على موعد في المحافظة لمساعدتي؟\r\n\r\n"
    "شكرا جزيلا.\r\n"
)


def test_a_citizens_text_is_read_in_the_pages_font_and_its_own_direction(
    page: Page, desk: Desk, console: RunningConsole
) -> None:
    """A citizen's plain text is prose: the page's proportional font, wrapped to its box;
    an Arabic one runs right to left. The reply's text part keeps its monospace and its
    own line breaks: the code that sends it cut them at 78 columns, and its indented
    lines line up in columns."""
    desk.etrangers.append(
        citizen_mail(6, name="Karim Ben Ali", subject="تجديد بطاقة الإقامة", text=ARABIC)
    )
    desk.poll()
    login(page, console)

    def style(selector: str, name: str) -> str:
        return str(page.eval_on_selector(selector, f"e => getComputedStyle(e).{name}"))

    page.goto(f"{console.url}/courriel/{desk.row(OVERDUE).id}")
    expect(page.locator("#apercu-texte")).to_be_visible()
    assert "monospace" not in style("#corps-texte", "fontFamily")
    assert style("#corps-texte", "fontFamily") == style("#resume", "fontFamily")
    assert style("#corps-texte", "whiteSpace") == "pre-wrap"
    assert style("#corps-texte", "direction") == "ltr"
    assert "monospace" in style("#apercu-texte", "fontFamily")
    assert style("#apercu-texte", "whiteSpace") == "pre"

    page.goto(f"{console.url}/courriel/{desk.row('<citizen-6@example.fr>').id}")
    expect(page.locator("#corps-texte")).to_contain_text("شكرا جزيلا")
    assert "monospace" not in style("#corps-texte", "fontFamily")
    assert style("#corps-texte", "direction") == "rtl"
    assert style("#corps-texte", "whiteSpace") == "pre-wrap"
    assert page.problems == []  # type: ignore[attr-defined]


# The longest subjects, names and categories of the demo's mail (mailbot/demo_data).
DEMO_LIKE = [
    (
        7,
        GENERAL,
        "Hélène Dubois-Leclère",
        "Renouvellement passeport urgent – départ le 15 décembre",
    ),
    (8, GENERAL, "Martine Guérin", "A l'attention de Monsieur le Préfet - nuisances sonores"),
    (9, GENERAL, "Kevin Lefebvre", "carte grise toujours pas recu"),
    (10, ETRANGERS, "Fatou Sow", "Pièces complémentaires - dossier titre de séjour"),
    (11, ETRANGERS, "Moussa Diallo", "Renouvellement titre de séjour - pas de récépissé"),
]


def test_the_queue_fits_a_1280_pixel_window(page: Page, desk: Desk, tmp_path: Path) -> None:
    """At 1280 × 900, the queue of a head of two services, on mail like the demo's, is read
    without scrolling its table sideways; at 320 px only the table scrolls, not the page
    (RGAA 10.11: a data table may, as DSFR's does)."""
    for n, to, name, subject in DEMO_LIKE:
        mailbox = desk.general if to == GENERAL else desk.etrangers
        mailbox.append(citizen_mail(n, to=to, name=name, subject=subject))
    desk.poll()
    with desk_console(desk, tmp_path, ("lmoreau",)) as running:
        login(page, running, "lmoreau")
        expect(page.locator("tbody tr.mb-row")).to_have_count(3 + len(DEMO_LIKE))
        table = page.locator("#table-file")
        for part in (".fr-table__wrapper", ".fr-table__container"):
            scroll, client = table.locator(part).evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert scroll <= client, (part, scroll, client)
        assert page_overflow(page) == []
        page.set_viewport_size({"width": 320, "height": 800})
        assert page_overflow(page) == []
        assert page.problems == []  # type: ignore[attr-defined]
