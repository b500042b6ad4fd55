"""Implicit decisions (CRPA L112-11): what the prefecture declares in rules.yaml
(``routing.implicit_decisions``, by service and category), what the AR then says in French
and in the citizen's language, what ``mailbot explain --json`` and ``mailbot check`` show,
and the refusal of a broken declaration, naming the file and the key. Nothing declared:
nothing said. The AR through the pipeline and a real SMTP server: tests/test_e2e.py."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from in_process import run_main
from rulesfile import dump_rules, load_rules

from mailbot.config import config_from_mapping, load_config
from mailbot.core.dates import date_fr
from mailbot.core.routing import RoutingDecision, implicit_decision
from mailbot.errors import ConfigError, TemplateError
from mailbot.render.catalogue import parse_meta
from mailbot.render.templates import Renderer
from mailbot.render.translations import load_translations
from mailbot.render.variables import implicit_decision_variables, message_variables

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PARIS = ZoneInfo("Europe/Paris")
RECEIVED = datetime(2026, 11, 26, 14, 5, tzinfo=PARIS)
TELERECOURS = "https://citoyens.telerecours.fr"
DECLARED = {
    "general": {"information": {"decision": "rejet", "delay": "2 mois"}},
    "etrangers": {"rendez-vous": {"decision": "acceptation", "delay": 4}},
}


def one_line(text: str) -> str:
    """The text with its wrapping undone: a sentence reads whole whatever its line breaks."""
    return re.sub(r"\s+", " ", text.replace("\u200f", ""))


def write_rules(tmp_path: Path, declared: Any = None, **top: Any) -> Path:
    data = load_rules()
    if declared is not None:
        data["routing"]["implicit_decisions"] = declared
    data.update(templates=str(TEMPLATES), agents=str(ROOT / "agents.yaml"), **top)
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- configuration


def test_the_shipped_rules_declare_none_and_their_example_loads() -> None:
    """The prefecture decides: nothing declared. The commented example is a valid one."""
    text = (ROOT / "rules.yaml").read_text(encoding="utf-8")
    config = load_config(ROOT / "rules.yaml")
    assert config.routing is not None and config.routing.implicit_decisions == {}
    lines = text.split("\n")
    start = lines.index("  # implicit_decisions:")
    example = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  #   "):
            break
        example.append(line)
    assert len(example) >= 3
    uncommented = text.replace(
        "\n".join(example) + "\n", "\n".join(line.replace("# ", "", 1) for line in example) + "\n"
    )
    data = yaml.safe_load(uncommented)
    declared = config_from_mapping(data, "rules.yaml").routing
    assert declared is not None and declared.implicit_decisions
    for categories in declared.implicit_decisions.values():
        for decision in categories.values():
            assert decision.decision in {"acceptation", "rejet"} and decision.delay >= 1


def test_a_declaration_is_read_in_months() -> None:
    data = load_rules()
    data["routing"]["implicit_decisions"] = DECLARED
    routing = config_from_mapping(data, "rules.yaml").routing
    assert routing is not None
    general = routing.implicit_decision("general", "information")
    assert general is not None and (general.decision, general.delay) == ("rejet", 2)
    etrangers = routing.implicit_decision("etrangers", "rendez-vous")
    assert etrangers is not None and (etrangers.decision, etrangers.delay) == ("acceptation", 4)
    assert routing.implicit_decision("etrangers", "information") is None


@pytest.mark.parametrize(
    ("declared", "key", "expected"),
    [
        (
            {"general": {"information": {"decision": "refus", "delay": 2}}},
            "routing.implicit_decisions.general.information.decision",
            "Input should be 'acceptation' or 'rejet' (got 'refus')",
        ),
        (
            {"general": {"information": {"decision": "rejet", "delay": "deux mois"}}},
            "routing.implicit_decisions.general.information.delay",
            "expected a number of months, such as 2 or '2 mois' (got 'deux mois')",
        ),
        (
            {"general": {"information": {"decision": "rejet", "delay": "15 jours"}}},
            "routing.implicit_decisions.general.information.delay",
            "expected a number of months, such as 2 or '2 mois' (got '15 jours')",
        ),
        (
            {"general": {"information": {"decision": "rejet", "delay": 0}}},
            "routing.implicit_decisions.general.information.delay",
            "expected 1 to 24 months (got 0)",
        ),
        (
            {"general": {"information": {"decision": "rejet"}}},
            "routing.implicit_decisions.general.information.delay",
            "required key is missing",
        ),
        (
            {"general": {"information": {"decision": "rejet", "delai": 2, "delay": 2}}},
            "routing.implicit_decisions.general.information.delai",
            "unknown key (not allowed here; check its spelling)",
        ),
        (
            {"generale": {"information": {"decision": "rejet", "delay": 2}}},
            "routing.implicit_decisions.generale",
            "unknown service 'generale' (known: cabinet, cartes-grises, cni-passeport,"
            " etrangers, general, permis, qualite-accueil)",
        ),
        (
            {"general": {"infos": {"decision": "rejet", "delay": 2}}},
            "routing.implicit_decisions.general.infos",
            "unknown category 'infos'",
        ),
        (
            {"etrangers": {"suggestion": {"decision": "rejet", "delay": 2}}},
            "routing.implicit_decisions.etrangers.suggestion",
            "routing.combinations does not allow category 'suggestion' for service 'etrangers'",
        ),
        (
            {"autres-administrations": {"information": {"decision": "rejet", "delay": 2}}},
            "routing.implicit_decisions.autres-administrations",
            "a re-oriented mail is decided by another administration",
        ),
        (
            {"general": ["information"]},
            "routing.implicit_decisions.general",
            "Input should be a valid dictionary",
        ),
    ],
)
def test_a_broken_declaration_names_the_file_and_the_key(
    tmp_path: Path, declared: Any, key: str, expected: str
) -> None:
    path = write_rules(tmp_path, declared)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {key}: {expected}")


def test_an_ar_template_that_cannot_say_it_is_refused_at_start(tmp_path: Path) -> None:
    """A template of the prefecture's own that does not take the variable would drop the
    declared sentence without a word: refused, naming the mailbox and the template."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    meta = templates / "ar-general" / "meta.yaml"
    text = meta.read_text(encoding="utf-8")
    meta.write_text(
        re.sub(r"\n    implicit_decision:\n(      .*\n|        .*\n)*", "\n", text)
        .replace("  - {text: ar.implicit_rejection, if: implicit_decision.rejected}\n", "")
        .replace("  - {text: ar.implicit_acceptance, if: implicit_decision.accepted}\n", ""),
        encoding="utf-8",
    )
    for body in ("body.txt.j2", "body.html.j2"):
        path = templates / "ar-general" / body
        path.write_text(
            path.read_text(encoding="utf-8").replace(
                '{% include "_partials/implicit_decision.' + body.split(".")[1] + '.j2" %}\n', ""
            ),
            encoding="utf-8",
        )
    renderer = Renderer(templates)
    data = load_rules()
    renderer.check_config(config_from_mapping(data, "rules.yaml"))  # nothing declared: fine
    data["routing"]["implicit_decisions"] = DECLARED
    with pytest.raises(TemplateError, match=r"mailboxes\.general\.ar_template: template "):
        renderer.check_config(config_from_mapping(data, "rules.yaml"))


# --------------------------------------------------------------------------- which mail


def decision(service: str, category: str, **extra: Any) -> RoutingDecision:
    return RoutingDecision(
        service=service,
        category=category,
        priority="normal",
        reorient=extra.pop("reorient", None),
        transfer_allowed=True,
        rule_hits=(),
        scores={},
        defaulted=False,
        **extra,
    )


def test_the_declaration_follows_the_service_and_category_recorded() -> None:
    data = load_rules()
    data["routing"]["implicit_decisions"] = DECLARED
    routing = config_from_mapping(data, "rules.yaml").routing
    assert routing is not None
    found = implicit_decision(routing, "general", decision("general", "information"))
    assert found is not None and found.decision == "rejet"
    moved = implicit_decision(routing, "general", decision("etrangers", "rendez-vous"))
    assert moved is not None and moved.decision == "acceptation"  # transferred: its service's
    assert implicit_decision(routing, "general", decision("general", "reclamation")) is None
    # Held "to check": recorded at the mailbox's own service, which has none for the pair.
    held = decision("etrangers", "rendez-vous", to_check=True)
    assert implicit_decision(routing, "general", held) is None
    assert implicit_decision(routing, "etrangers", held) is not None
    # Re-oriented to another administration: no AR of a request the prefecture decides.
    away = decision("autres-administrations", "information", reorient="mairie")
    assert implicit_decision(routing, "general", away) is None


# --------------------------------------------------------------------------- the AR


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def ar_variables(decision: str | None, received: datetime = RECEIVED) -> dict[str, object]:
    data = load_rules()
    data["routing"]["implicit_decisions"] = {
        "general": {"information": {"decision": decision or "rejet", "delay": 2}}
    }
    config = config_from_mapping(data, "rules.yaml")
    variables = message_variables(
        config, "general", reference="SM-2026-000123", received_at=received, original_subject="x"
    )
    assert config.routing is not None
    declared = config.routing.implicit_decision("general", "information")
    if decision is not None and declared is not None:
        variables["implicit_decision"] = implicit_decision_variables(declared)
    return variables


FRENCH = (
    "Sans réponse de notre part dans un délai de 2 mois à compter du jeudi 26 novembre 2026"
    " (date de réception), votre demande sera considérée comme"
)


@pytest.mark.parametrize("template", ["ar-general", "ar-etrangers"])
def test_a_rejection_is_said_with_the_ways_to_contest_it(renderer: Renderer, template: str) -> None:
    mail = renderer.render(template, ar_variables("rejet"), language="fr")
    text = one_line(mail.text)
    assert f"{FRENCH} rejetée. Vous pourrez alors contester ce refus dans les 2 mois" in text
    assert f"aussi en ligne sur {TELERECOURS}" in text
    html = one_line(mail.html.replace("&nbsp;", " "))
    assert "délai de 2 mois à compter du jeudi 26 novembre 2026 (date de réception)" in html
    assert "<strong>rejetée</strong>" in html and f'href="{TELERECOURS}"' in html
    assert "attestation" not in text


@pytest.mark.parametrize("template", ["ar-general", "ar-etrangers"])
def test_an_acceptance_is_said_with_the_attestation(renderer: Renderer, template: str) -> None:
    mail = renderer.render(template, ar_variables("acceptation"), language="fr")
    text = one_line(mail.text)
    assert f"{FRENCH} acceptée. Vous pourrez alors demander à ce service une attestation" in text
    assert "<strong>acceptée</strong>" in mail.html
    assert TELERECOURS not in text and TELERECOURS not in mail.html


@pytest.mark.parametrize("template", ["ar-general", "ar-etrangers"])
def test_nothing_declared_nothing_said(renderer: Renderer, template: str) -> None:
    for language in ("fr", "en", "ar"):
        mail = renderer.render(template, ar_variables(None), language=language)
        for part in (mail.text, mail.html):
            assert "Sans réponse" not in part and TELERECOURS not in part
        assert "month(s)" not in mail.text


def test_the_translation_says_it_in_every_language(renderer: Renderer) -> None:
    translations = load_translations(TEMPLATES / "i18n")
    assert {"en", "ar", "uk"} <= set(translations)
    for language, translation in translations.items():
        for key in ("ar.implicit_rejection", "ar.implicit_acceptance"):
            assert translation.placeholders(key) == ["implicit_decision.months"], language
        rejected = renderer.render("ar-general", ar_variables("rejet"), language=language)
        # The French paragraph, then the translated one: the link twice in each part.
        assert rejected.text.count(TELERECOURS) == 2, language
        assert rejected.html.count(f'href="{TELERECOURS}"') == 2, language
        accepted = renderer.render("ar-general", ar_variables("acceptation"), language=language)
        # The French sentence's, then the translated one's (the French word kept).
        assert accepted.text.count("attestation") == 2, language
        assert accepted.html.count("attestation") == 2, language
        assert TELERECOURS not in accepted.text
    english = renderer.render("ar-etrangers", ar_variables("rejet"), language="en")
    text = one_line(english.text)
    assert "If we have not answered you within 2 month(s) from the day we received" in text
    assert "your request will be considered refused" in text
    english = renderer.render("ar-etrangers", ar_variables("acceptation"), language="en")
    assert "your request will be considered accepted" in one_line(english.text)


def test_the_receipt_date_is_the_mails_own_value_in_one_skeleton() -> None:
    """The sentence's date is ``received_at``, a value of each mail (render.once): the ARs of
    one declaration share a skeleton across days, each filled with its date, and are what
    a full render gives."""
    fresh = Renderer(TEMPLATES)
    for language in ("fr", "en", "ar"):
        for decision_taken in ("rejet", "acceptation"):
            for days in range(0, 70, 7):
                received = RECEIVED + timedelta(days=days, hours=days % 5)
                variables = ar_variables(decision_taken, received)
                expected = fresh.render("ar-general", variables, language=language)
                assert fresh.render_once("ar-general", variables, language=language) == expected
                shown = date_fr(received, style="date")
                assert f"à compter du {shown.split()[0]}" in one_line(expected.text)
    counts = fresh._skeletons.counts
    assert counts["full"] == 0 and counts["skeleton"] == 60
    assert len(fresh._skeletons._keys) == 6  # one per language and decision, not per day


def test_a_condition_names_a_variable_or_a_field_of_a_mapping(tmp_path: Path) -> None:
    meta = (TEMPLATES / "ar-general" / "meta.yaml").read_text(encoding="utf-8")
    path = tmp_path / "meta.yaml"
    parsed = parse_meta(path, meta, "ar-general")
    (rejection,) = [p for p in parsed.translated if p.text == "ar.implicit_rejection"]
    assert rejection.shown({"implicit_decision": {"rejected": True}})
    assert not rejection.shown({"implicit_decision": {"rejected": False}})
    assert not rejection.shown({})
    broken = meta.replace("if: implicit_decision.rejected", "if: reference.rejected")
    with pytest.raises(TemplateError, match=r"'reference' is not a mapping"):
        parse_meta(path, broken, "ar-general")
    broken = meta.replace("if: implicit_decision.rejected", "if: implicit.rejected")
    with pytest.raises(TemplateError, match=r"undeclared variable 'implicit\.rejected'"):
        parse_meta(path, broken, "ar-general")


# --------------------------------------------------------------------------- the commands


def mail_to(address: str, subject: str, body: str, sender: str = "marie@example.fr") -> bytes:
    return (
        f"Return-Path: <{sender}>\r\nFrom: {sender}\r\nTo: {address}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{sender}.{len(body)}@example.fr>\r\n\r\n{body}\r\n"
    ).encode()


def test_explain_json_shows_the_declaration_a_mail_follows(tmp_path: Path) -> None:
    general = tmp_path / "general.eml"
    general.write_bytes(
        mail_to("pref-contact@seine-maritime.gouv.fr", "Horaires", "Quels sont vos horaires ?")
    )
    etrangers = tmp_path / "etrangers.eml"
    etrangers.write_bytes(
        mail_to(
            "pref-etrangers@seine-maritime.gouv.fr",
            "Titre de séjour",
            "Quels sont les horaires d'ouverture ?",
        )
    )
    unanswered = tmp_path / "bounce.eml"
    unanswered.write_bytes(
        mail_to(
            "pref-contact@seine-maritime.gouv.fr", "Horaires", "Horaires ?", "MAILER-DAEMON@x.fr"
        )
    )
    path = write_rules(tmp_path, DECLARED)
    found = {}
    for eml in (general, etrangers, unanswered):
        result = run_main(path, "explain", "--json", str(eml))
        assert result.returncode == 0, result.stderr
        found[eml.stem] = json.loads(result.stdout)
    shown = found["general"]
    assert {"ar", "ar_reasons", "service", "category", "actions", "rule_hits"} <= set(shown)
    assert (shown["ar"], shown["service"], shown["category"]) == (True, "general", "information")
    assert shown["implicit_decision"] == {
        "service": "general",
        "category": "information",
        "decision": "rejet",
        "months": 2,
    }
    assert (found["etrangers"]["service"], found["etrangers"]["category"]) == (
        "etrangers",
        "information",
    )
    assert found["etrangers"]["implicit_decision"] is None  # etrangers / rendez-vous only
    assert found["bounce"]["ar"] is False and found["bounce"]["implicit_decision"] is None
    text = run_main(path, "explain", str(general))
    assert (
        "  implicit: rejet after 2 month(s) from receipt"
        " (routing.implicit_decisions.general.information; said in the AR)"
    ) in text.stdout
    shipped = run_main(write_rules(tmp_path), "explain", "--json", str(general))
    assert json.loads(shipped.stdout)["implicit_decision"] is None
    assert "implicit:" not in run_main(write_rules(tmp_path), "explain", str(general)).stdout


def test_check_reports_the_declarations(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    result = run_main(write_rules(tmp_path, database=database), "check")
    assert result.returncode == 0, result.stderr
    assert (
        "implicit decisions: none declared (routing.implicit_decisions): no AR speaks of silence"
        in result.stdout.splitlines()
    )
    result = run_main(write_rules(tmp_path, DECLARED, database=database), "check")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("implicit")]
    assert sorted(lines) == [
        "implicit decisions: etrangers / rendez-vous: acceptation after 4 month(s) from receipt,"
        " said in the AR",
        "implicit decisions: general / information: rejet after 2 month(s) from receipt,"
        " said in the AR",
    ]
    broken = {"general": {"information": {"decision": "rejet", "delay": "2 semaines"}}}
    path = write_rules(tmp_path, broken, database=database)
    result = run_main(path, "check")
    assert result.returncode == 2
    assert (
        f"{path}: routing.implicit_decisions.general.information.delay: expected a number of"
        " months, such as 2 or '2 mois' (got '2 semaines')"
    ) in result.stderr
