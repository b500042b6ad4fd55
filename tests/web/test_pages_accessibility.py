"""The console's pages in Chromium with axe-core (RGAA: WCAG 2.1 A/AA rules): no serious or
critical violation, no Content-Security-Policy refusal, no script error. One line of PAGES
per page (the agent who may see it, its path); the indicators page is also used with the
keyboard-free form (select, submit) and its chart must load. The quarantine's pages for a
mail passed over are checked on the desk's world, where the real pipeline passed one over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deskworld import Desk, desk_console, pass_over
from playwright.sync_api import Page, expect
from refusals import query
from test_indicators_page import WEEK, console_on, scenario
from webtools import RunningConsole, browser_login, serious

__all__ = ["scenario"]  # the fixture, imported for pytest

PAGES = [
    ("ngarnier", f"/indicateurs?service=tous&periode={WEEK}"),
    ("lmoreau", f"/indicateurs?service=general&periode={WEEK}"),
    ("lmoreau", "/indicateurs?periode=2026-11"),
    ("tbernard", "/admin/quarantaine"),
    ("tbernard", "/admin/modeles"),
    ("tbernard", "/accessibilite"),
]


@pytest.fixture(scope="module")
def console(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    with console_on(scenario, tmp_path_factory.mktemp("a11y")) as running:
        yield running  # type: ignore[misc]


def login(page: Page, url: str, agent: str) -> None:
    """Logged in (webtools.browser_login): each test then opens the page it checks."""
    browser_login(page, url, agent)


@pytest.mark.parametrize(("agent", "path"), PAGES, ids=[p for _, p in PAGES])
def test_page_has_no_serious_axe_violation(
    console: RunningConsole, page: Page, axe: Any, agent: str, path: str
) -> None:
    login(page, console.url, agent)
    response = page.goto(console.url + path)
    assert response is not None and response.status == 200
    violations = axe(page)
    assert serious(violations) == []
    assert page.problems == []  # type: ignore[attr-defined]
    found = ", ".join(f"{v['id']} ({v['impact']})" for v in violations)
    print(f"axe {path}: {len(violations)} violations ({found}), none serious or critical")


def test_passed_over_pages_have_no_serious_axe_violation(
    desk: Desk, tmp_path: Path, page: Page, axe: Any
) -> None:
    """The list with both its sections, a mail passed over's page, and both after a retry
    the database refused (its error alert shown); its « Classer » form refused for want of
    a reason, the list after it, and the page of the mail dismissed."""
    (event,) = pass_over(desk, (4,))
    with desk_console(desk, tmp_path, ("tbernard",), site=True) as console:
        login(page, console.url, "tbernard")
        for path in ("/admin/quarantaine", f"/admin/quarantaine/P{event}"):
            response = page.goto(console.url + path)
            assert response is not None and response.status == 200
            assert serious(axe(page)) == [], path
        database = str(desk.config.database)
        trigger = (
            "CREATE TRIGGER refuse BEFORE INSERT ON messages"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        query(database, trigger)
        page.click("#bouton-retraiter")
        expect(page.locator("#resultat")).to_contain_text("il reste non enregistré")
        assert serious(axe(page)) == []
        # « Classer »: refused without a reason (the browser's check taken off, as an old
        # browser would send it), the field marked; then dismissed: the list says so, and
        # the mail's page tells who closed it, without its forms.
        page.evaluate("document.getElementById('motif-classer').removeAttribute('required')")
        page.click("#bouton-classer")
        expect(page.locator("#erreur-classer")).to_contain_text("indiquez comment")
        assert page.locator("#motif-classer").get_attribute("aria-invalid") == "true"
        assert serious(axe(page)) == []
        page.fill("#motif-classer", "Réponse envoyée à la main")
        page.click("#bouton-classer")
        expect(page.locator("#resultat")).to_contain_text(f"P{event} a été classé")
        assert serious(axe(page)) == []
        page.goto(f"{console.url}/admin/quarantaine/P{event}")
        expect(page.locator("#classement")).to_contain_text("par tbernard")
        assert serious(axe(page)) == []
        assert page.problems == []  # type: ignore[attr-defined]


def test_indicators_form_and_chart_in_the_browser(console: RunningConsole, page: Page) -> None:
    login(page, console.url, "ngarnier")
    page.goto(console.url + "/")  # the quality mission's first page
    page.click("nav#navigation >> text=Indicateurs")
    expect(page.locator("h1")).to_have_text("Indicateurs de délai de réponse")
    page.select_option("#service", "cartes-grises")
    page.select_option("#periode", WEEK)
    page.click("#bouton-afficher")
    expect(page.locator("#titre-periode")).to_contain_text("Semaine 47")
    assert "service=cartes-grises" in page.url
    chart = page.locator("#graphique")
    expect(chart).to_have_attribute("alt", "Graphique : part des réponses dans les 5 jours"
                                    " ouvrés (objectif 75 %) et délai moyen de réponse"
                                    " (objectif 5 jours), par semaine. Les valeurs sont dans"
                                    " le tableau « Données du graphique » qui suit.")  # fmt: skip
    width = "document.getElementById('graphique').naturalWidth"
    for _ in range(100):  # the chart is drawn on request (matplotlib): wait until it loads
        if page.evaluate("document.getElementById('graphique').complete"):
            break
        page.wait_for_timeout(100)
    assert page.evaluate(width) > 300
    expect(page.locator("#donnees-graphique tbody tr")).to_have_count(12)
    with page.expect_download() as download:
        page.click("#export-csv")
    assert download.value.suggested_filename == f"indicateurs-cartes-grises-{WEEK}.csv"
    assert page.problems == []  # type: ignore[attr-defined]
