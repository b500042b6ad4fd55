"""A re-orientation target's name holds its article (« les services des impôts », « la
justice »): after « de » and « à » the article contracts, as French says it — « relève des
services des impôts », « Adressez-vous aux services des impôts », never « de les » or
« à les ». The shipped rules.yaml's targets, and one a prefecture may add (« le tribunal
judiciaire »), in the re-orientation mail's text and HTML parts, rendered in full and from
the skeleton, and the mail the planner queues."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

import pytest

from mailbot.app.acknowledge import Planner, Received
from mailbot.config import Config
from mailbot.core.articles import of_named, to_named
from mailbot.core.message import parse_message
from mailbot.core.plaintext import LRI, PDI, RLI, RLM
from mailbot.core.routing import RoutingDecision
from mailbot.mail.compose import Composer
from mailbot.render.rendering import RenderedMail
from mailbot.render.templates import Renderer
from mailbot.render.variables import message_variables

ROOT = Path(__file__).resolve().parent.parent
# « de le », « de les », « à le », « à les » as words, whatever the case (« DE LES »).
UNCONTRACTED = re.compile(r"\b(?:de|à)\s+(?:le|les)\b", re.IGNORECASE)
TRIBUNAL = {
    "name": "le tribunal judiciaire",
    "website": "https://www.justice.fr",
    "details": "Les litiges civils relèvent du tribunal judiciaire.",
}


@pytest.mark.parametrize(
    ("name", "of", "to"),
    [
        ("le tribunal judiciaire", "du tribunal judiciaire", "au tribunal judiciaire"),
        ("Le Tribunal", "du Tribunal", "au Tribunal"),  # the article in the sentence's case
        ("la justice", "de la justice", "à la justice"),
        ("La Poste", "de la Poste", "à la Poste"),
        (
            "l'Assurance maladie (CPAM)",
            "de l'Assurance maladie (CPAM)",
            "à l'Assurance maladie (CPAM)",
        ),
        ("L'Agence", "de l'Agence", "à l'Agence"),
        ("l’Agence", "de l’Agence", "à l’Agence"),  # its own apostrophe
        ("les services des impôts", "des services des impôts", "aux services des impôts"),
        ("Les Services", "des Services", "aux Services"),
        ("votre mairie", "de votre mairie", "à votre mairie"),
        ("France Travail", "de France Travail", "à France Travail"),  # no article: none added
        ("Action Logement", "d'Action Logement", "à Action Logement"),  # « de » elided
        ("  les services  ", "des services", "aux services"),
        # A name in capitals keeps its article in capitals.
        ("LE TRIBUNAL JUDICIAIRE", "DU TRIBUNAL JUDICIAIRE", "AU TRIBUNAL JUDICIAIRE"),
        ("LES SERVICES DES IMPÔTS", "DES SERVICES DES IMPÔTS", "AUX SERVICES DES IMPÔTS"),
        ("LA JUSTICE", "DE LA JUSTICE", "À LA JUSTICE"),
        ("L'URSSAF ET LA CARSAT", "DE L'URSSAF ET LA CARSAT", "À L'URSSAF ET LA CARSAT"),
        ("L'URSSAF", "de l'URSSAF", "à l'URSSAF"),  # an acronym after « L' »: no shouting
        ("FRANCE TRAVAIL", "de FRANCE TRAVAIL", "à FRANCE TRAVAIL"),  # no article to keep
    ],
)
def test_the_article_a_name_holds_contracts(name: str, of: str, to: str) -> None:
    assert of_named(name) == of
    assert to_named(name) == to


def test_an_article_given_for_a_name_without_one() -> None:
    """``article`` (a service's, rules.yaml) is used when the name holds none, never added
    to a name that does."""
    assert of_named("SGCD", "le") == "du SGCD" and to_named("SGCD", "le") == "au SGCD"
    assert to_named("Bureaux du cabinet", "les") == "aux Bureaux du cabinet"
    assert to_named("Unité", "l'") == "à l'Unité" and of_named("Cellule", "la") == "de la Cellule"
    assert to_named("Le Bureau", "la") == "au Bureau"  # the name's own article wins
    assert of_named("SGCD", None) == "de SGCD"


def _read(part: str) -> str:
    """A part as the citizen reads it: style, tags and isolates gone, entities decoded,
    on one line."""
    text = re.sub(r"<style[^>]*>.*?</style>", " ", part, flags=re.DOTALL)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return " ".join(re.sub(f"[{LRI}{RLI}{PDI}{RLM}]", "", text).split())


def _targets(config: Config) -> dict[str, dict[str, object]]:
    assert config.routing is not None
    shipped = {
        key: {**target.model_dump(), "id": key}
        for key, target in config.routing.reorientation.items()
    }
    return {**shipped, "tribunal": TRIBUNAL}


def _parts(mail: RenderedMail) -> dict[str, str]:
    return {"subject": mail.subject, "text": _read(mail.text), "html": _read(mail.html or "")}


@pytest.mark.parametrize("language", ["fr", "en"])
def test_no_uncontracted_article_in_the_reorientation_mail(
    config: Config, renderer: Renderer, language: str
) -> None:
    """Every target, subject, text and HTML (preheader, heading, sentence), full render
    and skeleton, French alone or followed by a translation: no « de le(s) », « à le(s) »."""
    examples = renderer.meta("reorientation").examples()
    for key, target in _targets(config).items():
        variables = {**examples, "target": target}
        for mail in (
            renderer.render("reorientation", variables, language=language),
            renderer.render_once("reorientation", variables, language=language),
        ):
            for part, said in _parts(mail).items():
                assert not UNCONTRACTED.search(said), f"{key}, {part}: {said}"


def test_the_shipped_targets_read_as_french_says_them(config: Config, renderer: Renderer) -> None:
    examples = renderer.meta("reorientation").examples()
    said = {
        "impots": ("relève des services des impôts", "Adressez-vous aux services des impôts."),
        "caf": (
            "relève de la Caisse d'allocations familiales (CAF)",
            "Adressez-vous à la Caisse d'allocations familiales (CAF).",
        ),
        "cpam": (
            "relève de l'Assurance maladie (CPAM)",
            "Adressez-vous à l'Assurance maladie (CPAM).",
        ),
        "mairie": ("relève de votre mairie", "Adressez-vous à votre mairie."),
        "france-travail": ("relève de France Travail", "Adressez-vous à France Travail."),
        "tribunal": ("relève du tribunal judiciaire", "Adressez-vous au tribunal judiciaire."),
    }
    targets = _targets(config)
    for key, (of, to) in said.items():
        mail = renderer.render("reorientation", {**examples, "target": targets[key]})
        page = _read(mail.html or "")
        assert f"Votre demande {of}. Voici à qui vous adresser." in page  # the preheader
        assert f"Votre demande {of}" in page and to in page
        assert f"VOTRE DEMANDE {of.upper()}" in _read(mail.text) and to in _read(mail.text)


def test_the_queued_reorientation_mail_contracts_the_article(
    config: Config, renderer: Renderer
) -> None:
    """The mail the planner queues for a mail re-oriented to the tax services."""
    raw = (
        b"From: usager@example.org\r\nTo: pref-contact@seine-maritime.gouv.fr\r\n"
        b"Subject: Taxe fonciere\r\nMessage-ID: <q-1@example.org>\r\n\r\nBonjour\r\n"
    )
    mail = Received(
        mailbox="general",
        raw=raw,
        parsed=parse_message(raw),
        received_at=datetime(2026, 3, 9, 10, 30, tzinfo=UTC),
        reference="SM-2026-000123",
        recipient="usager@example.org",
        language="fr",
    )
    routing = RoutingDecision(
        service="general",
        category="information",
        priority="normal",
        reorient="impots",
        transfer_allowed=False,
        rule_hits=(),
        scores={},
        defaulted=False,
    )
    (reply,) = Planner(config, renderer, Composer.from_config(config)).plan(mail, routing).mails
    message = message_from_bytes(reply.raw, policy=compat32)
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            said = _read(payload.decode("utf-8"))
            assert not UNCONTRACTED.search(said), said
            assert "Adressez-vous aux services des impôts." in said


NOTICE_SAID = [
    ("cabinet", "transmis au Cabinet du préfet, qui"),
    ("etrangers", "transmis à la Direction des migrations et de l'intégration, qui"),
    ("general", "transmis à la Préfecture de la Seine-Maritime — accueil général, qui"),
    ("permis", "transmis au Bureau des titres — permis de conduire, qui"),
    ("qualite-accueil", "transmis à la Mission qualité de l'accueil, qui"),
]


def _with_service(config: Config, key: str, **changes: object) -> Config:
    """``config`` with the service ``key`` renamed (or given an article)."""
    service = config.services[key].model_copy(update=changes)
    return config.model_copy(update={"services": {**config.services, key: service}})


def _notice(config: Config, renderer: Renderer, service: str) -> RenderedMail:
    """The transfer notice to the citizen, with the variables the transfer gives it."""
    variables = {
        **renderer.meta("notification-transfert").examples(),
        **message_variables(
            config,
            "general",
            reference="SM-2026-000123",
            received_at=datetime(2026, 3, 9, 10, 30, tzinfo=UTC),
            original_subject="Question",
            service=service,
        ),
    }
    return renderer.render("notification-transfert", variables)


@pytest.mark.parametrize(("service", "said"), NOTICE_SAID)
def test_the_transfer_notice_names_the_service_with_its_article(
    config: Config, renderer: Renderer, service: str, said: str
) -> None:
    """The preheader: « Votre message a été transmis au Cabinet du préfet », never « à
    Cabinet du préfet » (the article rules.yaml gives or the name's head noun tells)."""
    page = _read(_notice(config, renderer, service).html or "")
    assert f"Votre message a été {said}" in page, page[:300]
    assert not UNCONTRACTED.search(page)


@pytest.mark.parametrize(
    ("name", "article", "said"),
    [
        ("Le Bureau du courrier", None, "transmis au Bureau du courrier, qui"),
        ("Les Services du cabinet", None, "transmis aux Services du cabinet, qui"),
        ("SGCD", "le", "transmis au SGCD, qui"),  # rules.yaml's article
        ("SGCD", None, "transmis à SGCD, qui"),  # told nowhere (`mailbot check` warns)
    ],
)
def test_a_configured_service_name_in_the_notice(
    config: Config, renderer: Renderer, name: str, article: str | None, said: str
) -> None:
    named = _with_service(config, "cabinet", name=name, article=article)
    page = _read(_notice(named, renderer, "cabinet").html or "")
    assert said in page
    assert not UNCONTRACTED.search(page)


@pytest.mark.parametrize(
    ("service", "said"),
    [
        ({"name": "Bureau des titres — permis de conduire", "article": "le"}, "du Bureau"),
        ({"name": "Les Bureaux du cabinet", "article": ""}, "des Bureaux du cabinet"),
        ({"name": "Direction des migrations", "article": "la"}, "de la Direction"),
    ],
)
def test_the_deadline_digest_names_the_service_with_its_article(
    renderer: Renderer, service: dict[str, str], said: str
) -> None:
    examples = renderer.meta("alertes-delais").examples()
    mail = renderer.render("alertes-delais", {**examples, "service": service})
    for part in (_read(mail.text), _read(mail.html or "")):
        assert f"Voici les messages {said}" in part
        assert not UNCONTRACTED.search(part)
