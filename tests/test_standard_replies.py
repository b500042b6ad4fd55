"""Standard replies that agents pick, fill and send: content, signature, safety, agents.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from markupsafe import escape

from mailbot.app import answer_form
from mailbot.config import Agent, load_agents, load_config
from mailbot.errors import TemplateError
from mailbot.render.rendering import RenderedMail
from mailbot.render.templates import Renderer
from mailbot.render.variables import agent_variables

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"

# Template name -> the official site it must point to.
ANEF = "https://administration-etrangers-en-france.interieur.gouv.fr"
STANDARD_REPLIES = {
    "reponse-cartes-grises": "https://immatriculation.ants.gouv.fr",
    "reponse-permis": "https://permisdeconduire.ants.gouv.fr",
    "reponse-cni-passeport": "https://ants.gouv.fr",
    "reponse-dossier-etranger": ANEF,
    "reponse-rendez-vous-dmi": ANEF,
    "demande-precisions": "https://www.service-public.fr",
}
# Subject when the citizen's subject is empty.
DEFAULT_TITLES = {
    "reponse-cartes-grises": "Votre carte grise",
    "reponse-permis": "Votre permis de conduire",
    "reponse-cni-passeport": "Votre carte d'identité ou votre passeport",
    "reponse-dossier-etranger": "Votre dossier en cours",
    "reponse-rendez-vous-dmi": "Votre rendez-vous à la préfecture",
    "demande-precisions": "Votre demande",
}
NAMES = list(STANDARD_REPLIES)
COMMON_REQUIRED = {"reference", "received_at", "original_subject", "agent", "prefecture"}
AGENT_FIELDS = ("first_name", "last_name", "function", "service", "postal_address", "phone")
KNOWN_SERVICES = {
    "general",
    "etrangers",
    "cartes-grises",
    "permis",
    "cni-passeport",
    "cabinet",
    "qualite-accueil",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def examples(renderer: Renderer, name: str, **changes: object) -> dict[str, object]:
    """The meta.yaml examples of a template; a change set to None removes the variable."""
    variables = renderer.meta(name).examples()
    for key, value in changes.items():
        if value is None:
            variables.pop(key, None)
        else:
            variables[key] = value
    return variables


def agent_of(renderer: Renderer, name: str, **changes: object) -> dict[str, object]:
    agent = dict(renderer.meta(name).required["agent"].example)  # type: ignore[call-overload]
    for key, value in changes.items():
        if value is None:
            agent.pop(key, None)
        else:
            agent[key] = value
    return agent


def flat(body: str) -> str:
    """A body on one line, so that a check does not depend on where the text wraps."""
    return " ".join(body.split())


def text_signature(mail: RenderedMail) -> str:
    """The agent's signature: after "-- ", up to the prefecture's footer (a blank line)."""
    head, delimiter, signature = mail.text.rpartition("\n-- \n")
    assert delimiter, "the text part has no '-- ' signature delimiter"
    assert "Cordialement," in head
    signature, _, footer = signature.partition("\n\n")
    assert footer.startswith("Préfecture de la Seine-Maritime\n")  # as in the HTML footer
    return signature + "\n"


def escaped(value: object) -> str:
    """A value as it appears in a text node of the HTML part.

    The stylesheet is inlined by an HTML5 serialiser, which escapes &, < and > in text
    (quotes need no escaping there); attribute values stay quoted and escaped.
    """
    return str(escape(value)).replace("&#39;", "'").replace("&#34;", '"')


def html_signature(mail: RenderedMail, agent: dict[str, object]) -> str:
    """The signature table: from the agent's name to the end of its table."""
    name = escaped(f"{agent['first_name']} {agent['last_name']}")
    assert mail.html.count(name) == 1, "the agent's name should appear once, in the signature"
    rest = mail.html[mail.html.index(name) :]
    return rest[: rest.index("</table>")]


# --------------------------------------------------------------------------- loading


def test_renderer_loads_the_standard_replies(renderer: Renderer) -> None:
    assert set(NAMES) <= set(renderer.names())
    for name in NAMES:
        meta = renderer.meta(name)
        assert meta.language == "fr"
        expected = COMMON_REQUIRED | (
            {"elements_manquants"} if name == "demande-precisions" else set()
        )
        assert set(meta.required) == expected, name
        assert "usager_nom" in meta.optional
        assert meta.required["received_at"].type == "datetime"
        assert meta.required["agent"].type == "mapping"
        assert set(meta.required["agent"].fields) == {*AGENT_FIELDS, "website"}
        assert meta.required["prefecture"].fields == ("name", "postal_address", "phone", "website")
    assert set(renderer.meta("reponse-cni-passeport").optional) == {"usager_nom", "numero_demande"}
    assert set(renderer.meta("reponse-dossier-etranger").optional) == {
        "usager_nom",
        "statut_dossier",
    }
    assert renderer.meta("demande-precisions").required["elements_manquants"].type == "list"


def test_scopes_use_known_names(renderer: Renderer) -> None:
    config = load_config(ROOT / "rules.yaml")
    renderer.check_config(config)  # every scope service exists in rules.yaml
    for name in NAMES:
        scope = renderer.meta(name).scope
        assert set(scope.services) <= KNOWN_SERVICES, name
        assert set(scope.mailboxes) <= set(config.mailboxes), name
    assert renderer.meta("reponse-cartes-grises").scope.services == ("cartes-grises",)
    assert renderer.meta("reponse-permis").scope.services == ("permis",)
    assert renderer.meta("reponse-cni-passeport").scope.services == ("cni-passeport",)
    assert renderer.meta("reponse-dossier-etranger").scope.services == ("etrangers",)
    assert renderer.meta("reponse-rendez-vous-dmi").scope.services == ("etrangers",)
    assert renderer.meta("demande-precisions").scope.services == ()


def test_the_agents_choice_of_replies_is_the_standard_replies(renderer: Renderer) -> None:
    """The console offers the standard replies (and, apart, the free one): the transfer
    notice takes an ``agent`` who signs it too, but only a transfer sends it."""
    config = load_config(ROOT / "rules.yaml")
    for mailbox, box in config.mailboxes.items():
        for service in config.services:
            offered = {c.name for c in answer_form.choices(renderer, mailbox, service, None)}
            assert offered <= set(NAMES), (mailbox, service)
        assert {c.name for c in answer_form.choices(renderer, mailbox, box.service, None)}
    assert "agent" in renderer.meta("notification-transfert").required
    assert not answer_form.is_reply_template(renderer.meta("notification-transfert"))


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize("include_optional", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_examples_render_with_reference_and_official_site(
    renderer: Renderer, name: str, include_optional: bool
) -> None:
    meta = renderer.meta(name)
    mail = renderer.render(name, meta.examples(include_optional=include_optional))
    reference = str(meta.required["reference"].example)
    site = STANDARD_REPLIES[name]
    assert mail.subject.startswith(f"Re: [{reference}] ")
    for body in (mail.text, mail.html):
        assert reference in body
        assert site in body
        assert "point d'accueil numérique" in body
        assert "France Services" in body
        assert "sans changer l'objet" in flat(body)
        assert "None" not in body
        assert "{{" not in body and "{%" not in body
    assert f'href="{site}"' in mail.html
    assert "jours ouvrés" not in mail.text  # a reply, not an acknowledgement


@pytest.mark.parametrize("name", NAMES)
def test_text_part_is_readable(renderer: Renderer, name: str) -> None:
    text = renderer.render(name, examples(renderer, name)).text
    assert all(len(line) <= 78 for line in text.splitlines()), name
    assert text.count("\n-- \n") == 1
    assert "\n\n\n" not in text


@pytest.mark.parametrize("name", NAMES)
def test_subject_falls_back_to_a_title(renderer: Renderer, name: str) -> None:
    reference = renderer.meta(name).required["reference"].example
    for subject in ("", "   ", "\r\n"):
        mail = renderer.render(name, examples(renderer, name, original_subject=subject))
        assert mail.subject == f"Re: [{reference}] {DEFAULT_TITLES[name]}"
        assert "Objet :" not in mail.text
    mail = renderer.render(name, examples(renderer, name, original_subject="Ma\r\nquestion"))
    assert mail.subject == f"Re: [{reference}] Ma question"
    assert "Objet : Ma question" in mail.text


@pytest.mark.parametrize("name", NAMES)
def test_greeting(renderer: Renderer, name: str) -> None:
    mail = renderer.render(name, examples(renderer, name, usager_nom="Madame Dupont"))
    # The text part opens with the HTML part's title, then the greeting.
    title, greeting = mail.text.split("\n\n")[:2]
    assert title.isupper() and greeting == "Bonjour Madame Dupont,"
    assert ">Bonjour Madame Dupont,</p>" in mail.html
    for absent in ({"usager_nom": None}, {"usager_nom": ""}, {"usager_nom": "  "}):
        mail = renderer.render(name, examples(renderer, name, **absent))
        assert mail.text.split("\n\n")[1] == "Bonjour,"
        assert ">Bonjour,</p>" in mail.html


# --------------------------------------------------------------------------- signature


@pytest.mark.parametrize("name", NAMES)
def test_signature_shows_what_crpa_l111_2_requires(renderer: Renderer, name: str) -> None:
    variables = examples(renderer, name)
    agent = agent_of(renderer, name)
    prefecture = variables["prefecture"]
    assert isinstance(prefecture, dict)
    mail = renderer.render(name, variables)
    elements = [
        f"{agent['first_name']} {agent['last_name']}",
        agent["function"],
        agent["service"],
        prefecture["name"],
        agent["postal_address"],
        agent["phone"],
    ]
    text_sig = text_signature(mail)
    html_sig = html_signature(mail, agent)
    for element in elements:
        assert str(element) in text_sig, element
        assert escaped(element) in html_sig, element
    assert text_sig.startswith(f"{agent['first_name']} {agent['last_name']}\n")
    assert 'href="tel:+33232765000"' in html_sig
    assert f'href="{agent["website"]}"' in html_sig
    assert str(agent["website"]) in text_sig
    assert f"Courriel : {agent['email']}" in text_sig
    assert f'href="mailto:{agent["email"]}"' in html_sig


@pytest.mark.parametrize("name", NAMES)
def test_signature_email_is_optional(renderer: Renderer, name: str) -> None:
    for agent in (agent_of(renderer, name, email=None), agent_of(renderer, name, email="")):
        mail = renderer.render(name, examples(renderer, name, agent=agent))
        assert "Courriel :" not in text_signature(mail)
        assert "mailto:" not in html_signature(mail, agent)


def test_signature_does_not_repeat_the_prefecture(renderer: Renderer) -> None:
    name = "demande-precisions"
    agent = agent_of(renderer, name, service="Préfecture de la Seine-Maritime — accueil général")
    mail = renderer.render(name, examples(renderer, name, agent=agent))
    assert text_signature(mail).count("Préfecture de la Seine-Maritime") == 1
    agent = agent_of(renderer, name, service="Mission qualité de l'accueil")
    mail = renderer.render(name, examples(renderer, name, agent=agent))
    signature = text_signature(mail)
    assert "Mission qualité de l'accueil\nPréfecture de la Seine-Maritime\n" in signature
    assert "Préfecture de la Seine-Maritime" in html_signature(mail, agent)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", [*AGENT_FIELDS, "website"])
def test_missing_agent_field_is_an_error(renderer: Renderer, name: str, field: str) -> None:
    for agent in (
        agent_of(renderer, name, **{field: None}),
        agent_of(renderer, name, **{field: " "}),
    ):
        with pytest.raises(TemplateError, match=rf"agent\.{field} is missing or empty"):
            renderer.render(name, examples(renderer, name, agent=agent))


@pytest.mark.parametrize("name", NAMES)
def test_missing_agent_is_an_error(renderer: Renderer, name: str) -> None:
    with pytest.raises(TemplateError, match=r"missing required variable\(s\): .*agent"):
        renderer.render(name, examples(renderer, name, agent=None))


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("name", NAMES)
def test_usager_nom_is_escaped_in_html(renderer: Renderer, name: str) -> None:
    evil = '<script>alert("x")</script> & <b>Dupont</b>'
    mail = renderer.render(name, examples(renderer, name, usager_nom=evil))
    assert "<script>" not in mail.html and "<b>Dupont" not in mail.html
    assert '&lt;script&gt;alert("x")&lt;/script&gt; &amp; &lt;b&gt;Dupont' in mail.html
    assert f"\n\nBonjour {evil},\n" in mail.text  # text is never interpreted


@pytest.mark.parametrize("name", NAMES)
def test_citizen_subject_is_data_not_template(renderer: Renderer, name: str) -> None:
    reference = renderer.meta(name).required["reference"].example
    for subject in ("{{ 7*7 }}", "{% for x in range(3) %}boucle{% endfor %}"):
        mail = renderer.render(name, examples(renderer, name, original_subject=subject))
        assert mail.subject == f"Re: [{reference}] {subject}"
        assert f"Objet : {subject}" in mail.text
        assert subject in mail.html
        assert "49" not in mail.subject and "boucleboucle" not in mail.text
    mail = renderer.render(
        name, examples(renderer, name, original_subject="<img src=x onerror=alert(1)>")
    )
    assert "<img" not in mail.html and "&lt;img src=x onerror=alert(1)&gt;" in mail.html
    mail = renderer.render(
        name, examples(renderer, name, original_subject="Permis\r\nBcc: victim@example.org")
    )
    assert "\n" not in mail.subject and "\r" not in mail.subject


# --------------------------------------------------------------------------- optional parts


def test_numero_demande(renderer: Renderer) -> None:
    name = "reponse-cni-passeport"
    mail = renderer.render(name, examples(renderer, name, numero_demande="2611AB12345"))
    assert "Votre numéro : 2611AB12345" in mail.text
    assert "2611AB12345" in mail.html
    for absent in ({"numero_demande": None}, {"numero_demande": ""}):
        mail = renderer.render(name, examples(renderer, name, **absent))
        assert "Votre numéro :" not in mail.text
        assert "récépissé remis par la mairie" in mail.text
        assert "récépissé remis par la mairie" in mail.html
    for body in (mail.text, mail.html):
        assert "https://rendezvouspasseport.ants.gouv.fr" in body
        assert "SMS" in body
        assert "3 mois" in body


def test_statut_dossier(renderer: Renderer) -> None:
    name = "reponse-dossier-etranger"
    status = "Votre dossier est complet. Il est en cours d'examen."
    mail = renderer.render(name, examples(renderer, name, statut_dossier=status))
    assert "OÙ EN EST VOTRE DOSSIER ?" in mail.text and status in mail.text
    assert escaped(status) in mail.html
    mail = renderer.render(name, examples(renderer, name, statut_dossier=None))
    assert "OÙ EN EST VOTRE DOSSIER" not in mail.text
    assert "Où en est votre dossier" not in mail.html
    for body in (flat(mail.text), flat(mail.html)):
        assert "attestation de prolongation d'instruction" in body
        assert "120e et le 60e jour" in body
    mail = renderer.render(name, examples(renderer, name, statut_dossier="<b>complet</b>"))
    assert "&lt;b&gt;complet&lt;/b&gt;" in mail.html


def test_rendez_vous_dmi_content(renderer: Renderer) -> None:
    name = "reponse-rendez-vous-dmi"
    mail = renderer.render(name, examples(renderer, name))
    for body in (flat(mail.text), flat(mail.html)):
        assert "uniquement sur rendez-vous ou sur convocation" in body
        assert "convocation" in body and "originaux" in body


def test_cartes_grises_content(renderer: Renderer) -> None:
    name = "reponse-cartes-grises"
    mail = renderer.render(name, examples(renderer, name))
    for body in (flat(mail.text), flat(mail.html)):
        assert "seul site officiel" in body
        assert "sites payants" in body
        assert "changement de titulaire" in body and "changement d'adresse" in body
        assert "à compléter" in body and "en instruction" in body
        assert "duplicata" in body and "cession" in body


def test_permis_content(renderer: Renderer) -> None:
    name = "reponse-permis"
    mail = renderer.render(name, examples(renderer, name))
    for body in (flat(mail.text), flat(mail.html)):
        assert "permis étranger" in body
        assert "duplicata" in body
        assert "solde de points" in body


def test_elements_manquants_are_bullets(renderer: Renderer) -> None:
    name = "demande-precisions"
    items = [
        "Votre numéro de dossier.",
        "Une copie de votre titre de séjour <recto & verso>.",
        "  ",
        "Une phrase assez longue pour être coupée en deux lignes dans la partie texte du "
        "courriel, avec un retrait sous la puce.",
    ]
    mail = renderer.render(name, examples(renderer, name, elements_manquants=items))
    assert "\n- Votre numéro de dossier.\n" in mail.text
    assert "\n- Une copie de votre titre de séjour <recto & verso>.\n" in mail.text
    assert "\n-  \n" not in mail.text and "\n-\n" not in mail.text  # blank items are skipped
    assert re.search(r"\n- Une phrase assez longue.*\n  \S", mail.text)
    assert '<li style="margin:0 0 8px 0">Votre numéro de dossier.</li>' in mail.html
    assert "Une copie de votre titre de séjour &lt;recto &amp; verso&gt;." in mail.html


def test_elements_manquants_empty_asks_to_specify(renderer: Renderer) -> None:
    name = "demande-precisions"
    for empty in ([], ["", "  "]):
        mail = renderer.render(name, examples(renderer, name, elements_manquants=empty))
        assert "Précisez votre demande" in mail.text
        assert "Précisez votre demande" in mail.html
        assert "éléments suivants" not in mail.text


def test_elements_manquants_must_be_a_list(renderer: Renderer) -> None:
    name = "demande-precisions"
    with pytest.raises(TemplateError, match="elements_manquants"):
        renderer.render(name, examples(renderer, name, elements_manquants="Votre adresse"))
    with pytest.raises(TemplateError, match="elements_manquants"):
        renderer.render(name, examples(renderer, name, elements_manquants=None))


# --------------------------------------------------------------------------- agents.yaml


def raw_agents() -> dict[str, dict[str, object]]:
    data = yaml.safe_load((ROOT / "agents.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict) and set(data) == {"agents"}
    agents = data["agents"]
    assert isinstance(agents, dict)
    return agents


def test_agents_yaml_is_complete() -> None:
    agents = raw_agents()
    assert len(agents) >= 5
    for key, agent in agents.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", key), key
        assert {"first_name", "last_name", "function", "service"} <= set(agent), key
        allowed = {"first_name", "last_name", "function", "service", "email", "role", "services"}
        assert set(agent) <= allowed, key
        for field, value in agent.items():
            if field == "services":  # the web console's services: a list of service ids
                assert isinstance(value, list) and set(value) <= KNOWN_SERVICES, key
            else:
                assert isinstance(value, str) and value.strip(), f"{key}.{field}"
        assert agent["service"] in KNOWN_SERVICES, key
        assert agent.get("role", "agent") in {"agent", "head", "quality", "admin"}, key
    assert agents["cdurand"] == {
        "first_name": "Camille",
        "last_name": "Durand",
        "function": "Adjointe au chef du bureau des titres",
        "service": "cartes-grises",
    }
    # The deliberately incomplete example stays a comment.
    assert "jpetit" not in agents
    assert "# jpetit:" in (ROOT / "agents.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_every_agent_can_sign(renderer: Renderer, name: str) -> None:
    """agents.yaml + the agent's service in rules.yaml -> a complete signature."""
    config = load_config(ROOT / "rules.yaml")
    agents = load_agents(ROOT / "agents.yaml", config)
    assert set(agents) == set(raw_agents())
    for agent in agents.values():
        variables = agent_variables(agent, config)
        mail = renderer.render(name, examples(renderer, name, agent=variables))
        signature = text_signature(mail)
        assert f"{agent.first_name} {agent.last_name}\n{agent.function}\n" in signature
        service = config.services[agent.service]
        for value in (service.name, service.postal_address, service.phone, service.website):
            assert value in signature
            assert escaped(value) in html_signature(mail, variables)


def test_agent_without_function_is_refused(renderer: Renderer) -> None:
    """The commented-out example of agents.yaml: loaded, but it may not sign a reply."""
    config = load_config(ROOT / "rules.yaml")
    incomplete = Agent(first_name="Julien", last_name="Petit", service="permis")
    name = "reponse-permis"
    variables = examples(renderer, name, agent=agent_variables(incomplete, config))
    with pytest.raises(TemplateError, match=r"agent\.function is missing or empty"):
        renderer.render(name, variables)
