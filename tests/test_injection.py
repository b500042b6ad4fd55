"""A citizen's subject or name with CR/LF, Jinja syntax or <script> is inert in every template."""

from __future__ import annotations

import email
import email.policy
import functools
import re
from pathlib import Path

import pytest

from mailbot.mail.compose import build_email
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def renderer() -> Renderer:
    """Built by the worker that runs these tests, not at every worker's collection."""
    return Renderer(ROOT / "templates")


# The templates' names as the parameters, read from the folders: building the renderer at
# collection cost every xdist worker 1.3 s (test_the_names_are_the_renderer_s checks them).
NAMES = sorted(path.parent.name for path in (ROOT / "templates").glob("*/meta.yaml"))


def test_the_names_are_the_renderer_s() -> None:
    assert renderer().names() == NAMES


HOSTILE = "<script>alert(1)</script>\r\nBcc: victim@evil.example {{ 7*7 }} {% for x in range(3) %}x{% endfor %}"


@pytest.mark.parametrize("name", NAMES)
def test_hostile_subject_and_name_are_inert(name: str) -> None:
    meta = renderer().meta(name)
    variables = dict(meta.examples())
    declared = {*meta.required, *meta.optional}
    if "original_subject" in declared:
        variables["original_subject"] = HOSTILE
    if "usager_nom" in declared:
        variables["usager_nom"] = HOSTILE
    for key in ("overdue", "soon", "relanced", "late", "unanswered"):  # lists of subjects
        if key in declared:
            variables[key] = [{**row, "subject": HOSTILE} for row in variables[key]]
    mail = renderer().render(name, variables)
    for text in (mail.subject, mail.text, mail.html):
        assert "49" not in re.sub(r"SM-\d{4}-\d+", "", text)  # {{ 7*7 }} never evaluated
        assert "xxx" not in text
    assert "\r" not in mail.subject and "\n" not in mail.subject
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    built = build_email(
        mail,
        from_address="pref-contact@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to="citoyen@example.fr",
        message_id_domain="mailbot.seine-maritime.gouv.fr",
    )
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert [a.addr_spec for a in parsed["To"].addresses] == ["citoyen@example.fr"]
    if "original_subject" in declared:  # shown in full there: the Jinja syntax stays literal
        assert "{{ 7*7 }}" in str(parsed["Subject"]) or "{{ 7*7 }}" in mail.text
