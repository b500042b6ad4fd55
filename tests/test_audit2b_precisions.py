"""« demande-precisions » says « Il nous manque des informations » once, in each part of
the mail the citizen gets: its title, not again as the heading of its first section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailbot.config import load_config
from mailbot.mail.compose import Composer
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"il nous manque des informations", re.IGNORECASE)


@pytest.mark.parametrize("missing", [True, False])
def test_the_heading_is_said_once_in_each_part(missing: bool) -> None:
    config = load_config(ROOT / "rules.yaml")
    renderer = Renderer(ROOT / "templates")
    variables = renderer.meta("demande-precisions").examples(include_optional=True)
    if not missing:
        variables["elements_manquants"] = []
    rendered = renderer.render("demande-precisions", variables)
    mail = Composer.from_config(config).to_citizen(
        rendered,
        mailbox_address="pref-contact@seine-maritime.gouv.fr",
        to="jean@example.org",
        in_reply_to="<question-1@example.org>",
        references=[],
        automatic=False,
    )
    parsed = mail.parsed()
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    lines = [line for line in text.get_content().splitlines() if HEADING.search(line)]
    assert lines == ["IL NOUS MANQUE DES INFORMATIONS"], lines
    # In the HTML: the <h1> alone (the <title> and the preheader say « Votre demande … :
    # il nous manque des informations », a sentence, not the heading).
    body = html.get_content()
    headings = re.findall(r"<h[1-6][^>]*>([^<]*)</h[1-6]>", body)
    assert [h for h in headings if HEADING.search(h)] == ["Il nous manque des informations"]
    # The request for the missing elements still comes first, after the reference.
    said = " ".join(text.get_content().split())
    first = "nous avons besoin des éléments suivants" if missing else "Précisez votre demande"
    assert first in said
