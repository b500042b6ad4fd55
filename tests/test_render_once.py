"""Rendering once per template and settings, filling each mail's values (issue 14, point 6):
``Renderer.render_once`` gives exactly ``Renderer.render``'s result, from a skeleton where
the template allows one, in full where it does not."""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot.config import load_config
from mailbot.core.dates import date_fr
from mailbot.errors import TemplateError
from mailbot.render import skeleton_fill
from mailbot.render.skeleton_trace import Trace
from mailbot.render.skeletons import CHECKED_MAILS
from mailbot.render.templates import Renderer
from mailbot.render.variables import message_variables

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PARIS = ZoneInfo("Europe/Paris")
RECEIVED = datetime(2026, 11, 26, 14, 5, 7, tzinfo=PARIS)

HOSTILE_SUBJECTS = [
    "Demande de carte grise",
    "",
    "   ",
    "<script>alert('x')</script> & \"cité\"",
    "{{ 7*7 }} {% for x in range(3) %}boucle{% endfor %}",
    "l'usager d'Évreux",
    "طلب تجديد بطاقة الإقامة",
    "Jean-Baptiste " * 60,
    "Carte grise\r\nBcc: victim@example.org",
    "ligne\nsuivante\u2028séparée\x85fin",
    "\xa0espace insécable\xa0",
    "\ue000&h0\ue001 \ue000&s3\ue001",  # a marker forged by the citizen stays text
    "contrôle \x00\x1b\x7f",
    "-- ",
    "--",
    "émoji 🚗 e\u0301",
]
HOSTILE_REFERENCES = ["SM-2026-000123", "<b>SM</b>", "R\ue000&s1\ue001", "SM-2026\r\n000123"]
HOSTILE_DATES = [
    RECEIVED,
    datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1),  # the hour that happens twice
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
]
LANGUAGES = ["fr", "ar", None]  # None: not detected, English paragraphs (as for "zz")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def settings() -> list[tuple[str, str, dict[str, object]]]:
    """The mails mailbot plans (app/acknowledge): AR, AR + transfer notice, re-orientation,
    for each mailbox of the shipped rules, with their variables as the planner builds them."""
    config = load_config(ROOT / "rules.yaml")
    found = []
    for key, box in config.mailboxes.items():
        variables = message_variables(
            config, key, reference="SM-2026-000001", received_at=RECEIVED, original_subject="x"
        )
        found.append((f"{key} AR", box.ar_template, variables))
        for service, handling in config.services.items():
            if handling.addresses and service != box.service:
                moved = message_variables(
                    config,
                    key,
                    reference="SM-2026-000001",
                    received_at=RECEIVED,
                    original_subject="x",
                    service=service,
                )
                found.append((f"{key} transfer", box.ar_template, {**moved, "transferred": True}))
                break
        if config.routing is not None:
            for target in config.routing.reorientation.values():
                target_vars = {**variables, "target": target.model_dump()}
                found.append((f"{key} re-orientation", "reorientation", target_vars))
                break
    return found


def mails(base: dict[str, object]) -> list[dict[str, object]]:
    """One ordinary mail, then every hostile value, each in turn."""
    out = [dict(base)]
    out += [{**base, "original_subject": subject} for subject in HOSTILE_SUBJECTS]
    out += [{**base, "reference": reference} for reference in HOSTILE_REFERENCES]
    for received in HOSTILE_DATES:
        deadline = (received + timedelta(days=7)).date()
        out.append({**base, "received_at": received, "deadline": deadline})
    return out


def same(renderer: Renderer, name: str, variables: dict[str, object], language: str | None) -> None:
    expected = renderer.render(name, variables, language=language)
    assert renderer.render_once(name, variables, language=language) == expected


@pytest.mark.parametrize("language", LANGUAGES)
def test_planned_mails_are_identical_to_full_renders(
    renderer: Renderer, language: str | None
) -> None:
    before = renderer._skeletons.counts.copy()
    for _, name, variables in settings():
        for variables_of_one in mails(variables):
            same(renderer, name, variables_of_one, language)
    used = renderer._skeletons.counts - before
    # Every planned mail comes from a skeleton; translated paragraphs carry classes, so
    # their HTML gets the stylesheet per mail, as does a value css_inline would change (CR).
    assert used["skeleton"] > 0 and used["full"] == 0
    assert 0 < used["inlined"] < used["skeleton"] or language != "fr"


def test_every_template_with_its_examples(renderer: Renderer) -> None:
    for name in renderer.names():
        for optional in (True, False):
            base = renderer.meta(name).examples(include_optional=optional)
            same(renderer, name, base, "ar")  # translated paragraphs: a full render
            for variables in mails(base)[::3] if "reference" in base else [base]:
                variables = {k: v for k, v in variables.items() if k in base}
                same(renderer, name, variables, "fr")


def test_skeletons_are_used_for_the_ars(renderer: Renderer) -> None:
    for name in ("ar-general", "ar-etrangers", "reorientation", "notification-transfert"):
        assert renderer._skeletons.refusals(name) == []
    fresh = Renderer(TEMPLATES)
    base = fresh.meta("ar-general").examples(include_optional=False)
    for number in range(10):
        variables = {**base, "reference": f"SM-2026-{number:06d}"}
        same(fresh, "ar-general", variables, "fr")
    counts = fresh._skeletons.counts
    assert counts["skeleton"] == 10 and counts["full"] == 0
    assert counts["checked"] == CHECKED_MAILS  # then trusted


def test_empty_and_given_subjects_are_two_skeletons(renderer: Renderer) -> None:
    fresh = Renderer(TEMPLATES)
    base = fresh.meta("ar-general").examples(include_optional=False)
    for subject in ("Objet", "", "Autre objet", ""):
        same(fresh, "ar-general", {**base, "original_subject": subject}, "fr")
    (entry,) = fresh._skeletons._keys.values()
    assert len(entry.variants) == 2
    assert fresh._skeletons.counts["skeleton"] == 4
    assert fresh._skeletons.counts["checked"] == 4  # each skeleton's first mails


def test_user_text_is_never_a_template(renderer: Renderer) -> None:
    base = renderer.meta("ar-general").examples(include_optional=False)
    for _ in range(2):  # the second from the skeleton, unchecked or not
        mail = renderer.render_once(
            "ar-general", {**base, "original_subject": "{{ 7*7 }} <b>gras</b>"}, language="fr"
        )
        assert "{{ 7*7 }}" in mail.subject and "{{ 7*7 }}" in mail.text
        assert "&lt;b&gt;gras&lt;/b&gt;" in mail.html and "<b>gras" not in mail.html
        assert "\r" not in mail.subject and "\n" not in mail.subject


def write_template(
    root: Path, text: str, html: str, subject: str = "Réf. {{ reference }}", css: bool = True
) -> None:
    """A template of the two per-mail values; with the shipped stylesheet (``css``)."""
    directory = root / "demo"
    directory.mkdir(parents=True)
    if css:
        (root / "_partials").mkdir()
        stylesheet = (TEMPLATES / "_partials" / "mail.css").read_text(encoding="utf-8")
        (root / "_partials" / "mail.css").write_text(stylesheet, encoding="utf-8")
    (directory / "meta.yaml").write_text(
        "name: demo\ntitle: Démo\ndescription: Modèle de test.\n"
        "scope: {mailboxes: [], services: []}\nlanguage: fr\n"
        f"subject: '{subject}'\n"
        "variables:\n  required:\n"
        "    reference: {description: Référence, example: SM-2026-000123}\n"
        "    original_subject: {description: Objet, example: Carte grise}\n",
        encoding="utf-8",
    )
    (directory / "body.txt.j2").write_text(text, encoding="utf-8")
    (directory / "body.html.j2").write_text(html, encoding="utf-8")


@pytest.mark.parametrize(
    "body",
    [
        "{% set copy = original_subject %}{{ copy }}",
        "{{ reference ~ '!' }}",
        "{% if reference == 'SM-2026-000123' %}oui{% endif %}",
        "{{ original_subject[0] }}",
        "{{ 'x'|replace('x', reference) }}",
        "{% for c in original_subject %}{{ c }}{% endfor %}",
        "{% set block %}{{ reference }}{% endset %}{{ block|length }}",
        "{% macro m() %}{{ reference }}{% endmacro %}{{ m() }}",
        "{{ original_subject.upper() }}",
    ],
)
def test_a_template_that_reads_a_value_renders_in_full(tmp_path: Path, body: str) -> None:
    write_template(tmp_path, body + "\n", "<p>" + body + "</p>\n")
    renderer = Renderer(tmp_path, cache=False)
    assert renderer._skeletons.refusals("demo")
    for subject in ("Carte grise", "Permis"):
        variables = {"reference": "SM-2026-000123", "original_subject": subject}
        assert renderer.render_once("demo", variables) == renderer.render("demo", variables)
    assert renderer._skeletons.counts["skeleton"] == 0


@pytest.mark.parametrize("css", [True, False])
def test_what_the_syntax_tree_allows(tmp_path: Path, css: bool) -> None:
    body = (
        "{{ reference }} {{ original_subject|oneline|truncate(20)|upper }}\n"
        "{% if original_subject|oneline %}sujet{% else %}aucun{% endif %}\n"
        "{{ original_subject or 'vide' }} {% if reference is defined %}r{% endif %}\n"
        "{% filter upper %}réf {{ reference }}{% endfilter %}\n"
    )
    write_template(tmp_path, body, "<p>" + body + "</p>\n", css=css)
    renderer = Renderer(tmp_path, cache=False)
    assert renderer._skeletons.refusals("demo") == []
    for subject in ("Carte grise " * 4, "", "<i>x</i> d'eux", "Permis"):
        variables = {"reference": f"SM-{len(subject)}", "original_subject": subject}
        assert renderer.render_once("demo", variables) == renderer.render("demo", variables)
    assert renderer._skeletons.counts["full"] == 0


@pytest.mark.parametrize("css", [True, False])
def test_a_value_in_an_attribute(tmp_path: Path, css: bool) -> None:
    html = (
        '<p title="a &gt; b {{ original_subject }}">'  # css_inline writes that ">" raw
        '<a href="https://x.fr/{{ reference }}">r</a></p>\n'
    )
    write_template(tmp_path, "{{ original_subject }}\n", html, css=css)
    renderer = Renderer(tmp_path, cache=False)
    for subject in ('"guillemets" & l\'apostrophe', "\xa0", "<b>", "simple"):
        variables = {"reference": "SM-1", "original_subject": subject}
        assert renderer.render_once("demo", variables) == renderer.render("demo", variables)
    assert renderer._skeletons.counts["skeleton"] == 4


def test_a_difference_sends_the_settings_to_full_renders(
    renderer: Renderer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = Renderer(TEMPLATES)
    base = fresh.meta("ar-general").examples(include_optional=False)
    monkeypatch.setattr(skeleton_fill, "html_value", lambda text, attribute: text + "!")
    with caplog.at_level(logging.WARNING, logger="mailbot.render.templates"):
        for number in range(5):
            same(fresh, "ar-general", {**base, "reference": f"SM-2026-{number:06d}"}, "fr")
    differed = [r for r in caplog.records if "differed from the full render" in r.message]
    assert len(differed) == 1  # logged once
    assert fresh._skeletons.counts["full"] == 4


def test_errors_are_those_of_a_full_render(renderer: Renderer) -> None:
    base = renderer.meta("ar-general").examples(include_optional=False)
    naive = {**base, "received_at": datetime(2026, 11, 26, 14, 5)}
    with pytest.raises(TemplateError) as full:
        renderer.render("ar-general", naive)
    with pytest.raises(TemplateError) as fast:
        renderer.render_once("ar-general", naive)
    assert str(fast.value) == str(full.value)


def test_kept_dates_are_date_fr(renderer: Renderer) -> None:
    """The renderer keeps date_fr's results by local minute: the same as formatting each."""
    pick = random.Random(14)
    zones = [PARIS, UTC, ZoneInfo("America/Cayenne"), ZoneInfo("Indian/Reunion")]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values: list[datetime | date] = []
    for _ in range(400):
        moment = start + timedelta(seconds=pick.randrange(3 * 366 * 86400))
        values.append(moment.astimezone(pick.choice(zones)))
    values += [datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=f) for f in (0, 1)]
    values += [date(2026, 12, 25), date(2028, 2, 29)]
    for _ in range(2):  # the second time from what was kept
        for value in values:
            styles = (
                ("full", "date", "time", "numeric") if isinstance(value, datetime) else ("date",)
            )
            for style in styles:
                expected = date_fr(value, timezone=renderer.timezone, style=style)
                assert renderer._date_filter(value, style) == expected


def test_a_slot_refuses_to_be_read() -> None:
    trace = Trace()
    slot = trace.root("reference", "SM-1")
    for use in (lambda: slot == "SM-1", lambda: len(slot), lambda: slot + "x", lambda: slot.x):
        with pytest.raises(skeleton_fill.Unsupported):
            use()
    assert bool(slot) is True and trace.ops[-1] == ("guard", 0, True)


@pytest.mark.parametrize(
    ("escaped", "attribute", "expected"),
    [
        ("l&#39;usager", False, "l'usager"),
        ("&#34;x&#34;", False, '"x"'),
        ("&#34;x&#34;", True, "&quot;x&quot;"),
        ("&lt;b&gt; &amp;", True, "<b> &amp;"),
        ("&lt;b&gt;", False, "&lt;b&gt;"),
        ("a\xa0b", False, "a&nbsp;b"),
        ("<bdi>x &amp; y</bdi>", False, "<bdi>x &amp; y</bdi>"),
        ("<bdi>x</bdi>", True, None),
        ("<b>x</b>", False, None),
        ("a\rb", False, None),
        ("a\x00b", False, None),
    ],
)
def test_html_value(escaped: str, attribute: bool, expected: str | None) -> None:
    assert skeleton_fill.html_value(escaped, attribute) == expected


def test_random_values_in_text_and_attributes(tmp_path: Path) -> None:
    """Values drawn from what HTML parsers and serializers treat specially, in text, in
    attributes and through the stylesheet: the same as a full render, every one."""
    html = (
        "<!DOCTYPE html><html><head><title>Réf. {{ reference }}</title></head><body>"
        '<p class="lead" title="{{ original_subject }}">{{ original_subject }}</p>'
        '<table class="box"><tr><td><span class="ref">{{ reference }}</span></td></tr></table>'
        '<a href="mailto:{{ reference }}@x.fr">{{ original_subject|upper }}</a></body></html>\n'
    )
    write_template(tmp_path, "Objet : {{ original_subject }}\n{{ reference }}\n", html)
    renderer = Renderer(tmp_path, cache=False)
    alphabet = "ab é<>&\"'\xa0\t\n\r\x00\x0c\x85\u2028\u200f\u2068\ue000\ue001;#=/-–🚗"
    pick = random.Random(6)
    for _ in range(600):
        subject = "".join(pick.choice(alphabet) for _ in range(pick.randrange(12)))
        reference = "".join(pick.choice(alphabet) for _ in range(pick.randrange(1, 6)))
        variables = {"reference": reference, "original_subject": subject}
        assert renderer.render_once("demo", variables) == renderer.render("demo", variables)
    assert renderer._skeletons.counts["skeleton"] > 50  # the others hold a CR, a NUL...
    assert not any(entry.full for entry in renderer._skeletons._keys.values())  # no mismatch
