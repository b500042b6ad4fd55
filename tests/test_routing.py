"""Routing as pure logic: keyword matching, scoring, ambiguous cases, located config errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mailbot.cli import main
from mailbot.config import config_from_mapping, load_config
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import RoutingInput, decide, form_fields, normalize
from mailbot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(ROOT / "rules.yaml")
ROUTING = compiled_routing(CONFIG)


def route(subject: str, body: str = "", mailbox: str = "general", language: str | None = "fr"):  # type: ignore[no-untyped-def]
    assert ROUTING is not None
    facts = RoutingInput(mailbox, subject, body, "usager@example.fr", language, False)
    return decide(facts, ROUTING)


@pytest.mark.parametrize(
    "text", ["carte grise", "CARTE GRISE", "cartes grises", "Cartes Grises !", "carte-grise"]
)
def test_keywords_ignore_case_accents_and_plurals(text: str) -> None:
    assert route(text).service == "cartes-grises"


def test_normalize() -> None:
    assert normalize("Certificat d’IMMATRICULATION — été") == "certificat d immatriculation ete"


@pytest.mark.parametrize(
    ("subject", "body", "mailbox", "service", "category"),
    [
        (
            "Titre de séjour",
            "Mon titre de séjour expire le mois prochain.",
            "general",
            "etrangers",
            "information",
        ),
        (
            "titre d'identité",
            "Je dois refaire mon titre d'identité perdu.",
            "general",
            "cni-passeport",
            "information",
        ),
        (
            "Car registration",
            "I have a residence permit. How do I register my car (carte grise)?",
            "etrangers",
            "cartes-grises",
            "information",
        ),
        (
            "Passeport",
            "Mon passeport français est périmé, comment le renouveler ?",
            "etrangers",
            "cni-passeport",
            "information",
        ),
        (
            "Passeport talent",
            "Je demande un passeport talent chercheur.",
            "etrangers",
            "etrangers",
            "information",
        ),
        (
            "Attente",
            "Scandaleux : 4 heures d'attente au guichet des étrangers, personne ne répond au téléphone.",
            "etrangers",
            "qualite-accueil",
            "reclamation",
        ),
        (
            "Bruit",
            "Nuisances sonores toutes les nuits à cause d'un bar, je demande l'intervention du préfet.",
            "general",
            "general",  # guide R11: bars are the préfet's police, not public order (cabinet)
            "plainte-riverain",
        ),
        (
            "Acte de naissance",
            "Je voudrais un acte de naissance.",
            "general",
            "autres-administrations",
            "information",
        ),
        ("Bonjour", "Bonjour, j'ai une question.", "etrangers", "etrangers", "information"),
        (
            "Relance dossier",
            "Où en est mon dossier de naturalisation ? Toujours pas de nouvelles.",
            "etrangers",
            "etrangers",
            "etat-avancement",
        ),
    ],
)
def test_ambiguous_cases_resolve_sensibly(
    subject: str, body: str, mailbox: str, service: str, category: str
) -> None:
    decision = route(subject, body, mailbox)
    assert (decision.service, decision.category) == (service, category), decision.scores


def test_a_practical_question_about_the_reception_stays_at_general() -> None:
    """Guide § 8: the reception's address, hours, access, "do I need an appointment?" →
    `general`, not the quality mission (which takes complaints, suggestions and thanks about
    the reception). Round 9's stacked regression was sure of `qualite-accueil` at 0.821 for
    this mail, as bench/run.py's stay-short scenario sends it: its bar was raised by hand
    0.82 → 0.84 (tests/data/corpus/PLAN.md, round 9; 2 of the 3677 mails' grouped-fold answers
    change, no wrong transfer more). The service only: the category is the hand-set rule's,
    `rendez-vous` where the guide says `information`. Known errors left for the next round's
    data (no bar mends them): the same question without greeting or signature, or "Quelle est
    l'adresse de l'accueil de la préfecture ?", is read as a complaint to `qualite-accueil` by
    round 8's model and round 9's alike (the word "accueil" is mostly written in complaints)."""
    body = (
        "Bonjour Madame, Monsieur,\n\nPourriez-vous m'indiquer l'adresse exacte de l'accueil du"
        " public et s'il faut prendre rendez-vous avant de se présenter au guichet d'information"
        " générale ?\n\nJe vous remercie par avance.\nCordialement,\nCamille Durand\n"
    )
    decision = route("Renseignement sur l'accueil", body, "general")
    assert decision.service == "general", decision.confidence
    assert not decision.transfer_allowed


def test_decision_records_hits_and_misses_in_rule_order() -> None:
    decision = route("Carte grise", "Je voudrais prendre rendez-vous.")
    assert [hit.rule for hit in decision.rule_hits] == [rule.id for rule in CONFIG.routing.rules]  # type: ignore[union-attr]
    matched = {hit.rule: hit.detail for hit in decision.rule_hits if hit.matched}
    assert matched["cartes-grises"] == "carte grise"
    assert "rendez-vous" in matched
    assert not next(h for h in decision.rule_hits if h.rule == "permis").matched


def test_transfer_only_to_another_service() -> None:
    assert route("carte grise", mailbox="general").transfer_allowed
    assert not route("titre de séjour", mailbox="etrangers").transfer_allowed
    assert not route("acte de naissance").transfer_allowed  # re-orientation, not a transfer


def test_form_fields_parsed() -> None:
    body = "Nom : Dupont\nObjet : Carte grise\nMessage : bonjour\n"
    assert form_fields(body) == {"nom": "Dupont", "objet": "Carte grise", "message": "bonjour"}


def broken(tmp_path: Path, rule: dict[str, object]) -> Path:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["routing"]["rules"].insert(2, rule)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rule", "key", "expected"),
    [
        (
            {"id": "x", "service": "nowhere", "when": {"keywords": ["a"]}},
            "routing.rules[2].service",
            "unknown service 'nowhere'",
        ),
        (
            {"id": "x", "service": "permis", "when": {"regex": "(unclosed"}},
            "routing.rules[2].when",
            "invalid regex",
        ),
        (
            {"id": "x", "service": "permis", "when": {"subject_contains": "a"}},
            "routing.rules[2].when.subject_contains",
            "unknown key",
        ),
        (
            {"id": "x", "service": "permis", "when": {"keywords": ["a"], "mailbox": ["general"]}},
            "routing.rules[2].when",
            "exactly one of",
        ),
        (
            {"id": "x", "category": "urgentissime", "when": {"keywords": ["a"]}},
            "routing.rules[2].category",
            "unknown category",
        ),
        (
            {"id": "x", "reorient": "mars", "when": {"keywords": ["a"]}},
            "routing.rules[2].reorient",
            "unknown re-orientation",
        ),
        (
            {"id": "x", "service": "permis", "when": {"mailbox": ["nulle-part"]}},
            "routing.rules[2].when",
            "unknown mailbox",
        ),
    ],
)
def test_broken_rules_are_refused_with_location(
    tmp_path: Path, rule: dict[str, object], key: str, expected: str
) -> None:
    path = broken(tmp_path, rule)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {key}: "), str(info.value)
    assert expected in str(info.value)


def test_config_without_routing_is_valid() -> None:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    del data["routing"]
    assert config_from_mapping(data, "x.yaml").routing is None


def run_explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "explain",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def explain_here(
    capsys: pytest.CaptureFixture[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """The same command in this process (a new interpreter per call cost seconds each)."""
    capsys.readouterr()
    try:
        code = main(["--config", str(ROOT / "rules.yaml"), "explain", *args])
    finally:
        logging.getLogger().handlers[:] = []  # setup_logging's handler writes to capsys
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_explain_single_file_and_directory_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.eml").write_bytes(
        b"Return-Path: <a@example.fr>\r\nFrom: a@example.fr\r\n"
        b"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: Carte grise\r\n\r\nBonjour\r\n"
    )
    (tmp_path / "b.eml").write_bytes(
        b"Return-Path: <>\r\nFrom: MAILER-DAEMON <>\r\nTo: pref-etrangers@seine-maritime.gouv.fr\r\n"
        b"Subject: Undelivered\r\nContent-Type: multipart/report; boundary=x\r\n\r\n--x--\r\n"
    )
    text = run_explain(str(tmp_path / "a.eml"))  # the real command, once
    assert text.returncode == 0, text.stderr
    assert "service:  cartes-grises" in text.stdout and "✔ cartes-grises" in text.stdout
    single = explain_here(capsys, str(tmp_path / "a.eml"), "--json")
    obj = json.loads(single.stdout)
    assert {"ar", "ar_reasons", "service", "category", "actions", "rule_hits"} <= set(obj)
    assert obj["ar"] is True and obj["service"] == "cartes-grises"
    many = explain_here(capsys, str(tmp_path), "--json")
    objects = [json.loads(line) for line in many.stdout.splitlines()]
    assert [Path(o["file"]).name for o in objects] == ["a.eml", "b.eml"]
    assert objects[1]["ar"] is False and "null-return-path" in objects[1]["ar_reasons"]
    assert objects[1]["mailbox"] == "etrangers"
    forced = explain_here(capsys, str(tmp_path / "a.eml"), "--json", "--mailbox", "etrangers")
    assert json.loads(forced.stdout)["mailbox"] == "etrangers"
    directory_text = explain_here(capsys, str(tmp_path))
    assert directory_text.stdout.count("  AR:") == 2


def test_contact_form_objet_field_routes() -> None:
    assert ROUTING is not None
    facts = RoutingInput(
        "general",
        "[Formulaire de contact] Nouveau message",
        "Nom : Durand\nObjet : Permis de conduire\nMessage : je n'ai pas reçu mon titre\n",
        "durand@example.fr",
        "fr",
        False,
        form_fields("Nom : Durand\nObjet : Permis de conduire\nMessage : je n'ai pas reçu\n"),
    )
    decision = decide(facts, ROUTING)
    assert decision.service == "permis"
    assert any(h.rule == "formulaire-permis" and h.matched for h in decision.rule_hits)


def test_urgent_priority_is_an_action() -> None:
    decision = route(
        "Passeport", "Je pars demain au Maroc et mon passeport a été volé, c'est urgent"
    )
    assert decision.priority == "urgent"
    assert "priority:urgent" in decision.actions
    assert route("Passeport", "Bonjour").priority == "normal"


@pytest.mark.parametrize("phrase", ["سند الإقامة", "بطاقة الإقامة", "تصريح الإقامة"])
def test_arabic_residence_permit_terms_route_to_etrangers(phrase: str) -> None:
    """Arabic names of the titre de séjour (Maghreb and Mashriq usage) reach the DMI."""
    decision = route(f"سؤال عن {phrase}", f"أريد تجديد {phrase} الخاص بي.", language="ar")
    assert decision.service == "etrangers"


def test_no_arabic_keyword_means_a_club() -> None:
    """A former keyword read « نادي الإقامة » (“residence club”): not a residence permit."""
    assert "نادي" not in (ROOT / "rules.yaml").read_text(encoding="utf-8")


def test_a_name_for_an_unknown_category_is_refused_with_its_location(tmp_path: Path) -> None:
    """``routing.category_names`` names categories for the console: a name for a category
    the routing does not have (a typo) would never show, and is refused where it is."""
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["routing"]["category_names"] = {"etat-avancment": "État d'avancement"}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: routing.category_names.etat-avancment: ")
    assert "unknown category 'etat-avancment'" in str(info.value)
