"""Signature check of the replies the prefecture sends (CRPA L111-2 + the audit grid).

Unit tests per element (what counts, what does not), the quoted original (a complete
signature in the citizen's mail or in our quoted AR must not count), HTML layouts,
configurable required elements, mailbot's own standard replies, and the agreement with a
labelled set of realistic replies (tests/data/signatures, labels.csv) : ≥ 95 %.
"""

from __future__ import annotations

import ast
import csv
import email
import sys
from email import policy
from pathlib import Path

import pytest

from mailbot.app.sent import signature_check
from mailbot.config import load_agents, load_config
from mailbot.core.message import parse_message
from mailbot.core.signature import (
    ELEMENTS,
    SignatureCheck,
    check_signature,
    html_text,
    signature_block,
    strip_quoted,
)
from mailbot.render.templates import Renderer
from mailbot.render.variables import agent_variables

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "signatures"

PREF = "Préfecture de la Seine-Maritime"
ADDR = "7 place de la Madeleine, 76036 Rouen Cedex"
FULL = [
    "Camille Durand",
    "Adjointe au chef du bureau des titres",
    "Bureau des titres — cartes grises",
    PREF,
    ADDR,
    "Tél. : 02 32 76 50 14",
]
BODY = "Bonjour Monsieur,\n\nVotre certificat d'immatriculation a été envoyé hier.\n\n"
CITIZEN = (
    "Bonjour,\nJe n'ai toujours pas reçu ma carte grise.\nCordialement,\n"
    "Jean Dupont\nChef de projet\nService informatique\n14 rue des Lilas\n76100 Rouen\n"
    "06 00 00 00 14\n"
)
AR_BLOCK = (
    "Nous avons bien reçu votre message.\n\nBureau des titres — cartes grises\n"
    f"Adresse : {ADDR}\nTéléphone : 02 32 76 50 00\n\n-- \nCamille Durand\n"
    f"Adjointe au chef du bureau des titres\n{PREF}\n{ADDR}\nhttps://www.seine-maritime.example.fr\n"
)


def reply(*signature: str, body: str = BODY, closing: str = "Cordialement,") -> str:
    return body + closing + "\n" + "\n".join(signature) + "\n"


def quoted(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def only(element: str, line: str) -> bool:
    """Is `element` found in a signature made of this single line?"""
    return check_signature(reply(line), required=(element,)).complete


# --------------------------------------------------------------------------- elements


@pytest.mark.parametrize(
    "line",
    [
        "Camille Durand",
        "Camille DURAND",
        "DURAND Camille",
        "Jean-Pierre Martin",
        "Élodie FOURNIER",
        "Anne-Sophie PERRIN",
        "Marie-Claire de La Fontaine",
        "Marc-Antoine d'Almeida",
        "Ophélie N'Diaye",
        "Madame Camille Durand",
        "*Camille Durand*",
        "Nom : Camille Durand",
        "Camille Durand, adjointe au chef du bureau des titres",
        "Camille Durand | Bureau des titres",
        "Camille Durand - Instructrice",
    ],
)
def test_name_found(line: str) -> None:
    assert only("name", line)


@pytest.mark.parametrize(
    "line",
    [
        "C. Durand",
        "J.-P. Martin",
        "Camille D.",
        "Camille",
        "Madame Durand",
        "Le chef de bureau",
        "Service des titres",
        "Bureau des étrangers",
        PREF,
        "L'équipe",
        "L'équipe du pôle naturalisation",
        "Pôle Naturalisation",
        "Bien cordialement",
        "Liberté Égalité Fraternité",
        "Rouen Cedex",
        "Direction des migrations et de l'intégration",
    ],
)
def test_name_not_found(line: str) -> None:
    assert not only("name", line)


@pytest.mark.parametrize(
    "line",
    [
        "Adjointe au chef du bureau des titres",
        "Cheffe de la section accueil",
        "Instructeur permis de conduire",
        "Instructrice titres d'identité",
        "Gestionnaire cartes grises",
        "Responsable du pôle naturalisation",
        "Chargée d'accueil",
        "Chargé de mission",
        "Agent d'accueil",
        "Secrétaire générale",
        "Directrice des migrations et de l'intégration",
        "Attachée d'administration",
        "Assistante de direction",
        "Conseiller associations",
        "Référente qualité de l'accueil",
        "Rédacteur",
        "Le sous-préfet du Havre",
        "La cheffe du bureau du séjour,",
        "Le chef de bureau",
    ],
)
def test_function_found(line: str) -> None:
    assert only("function", line)


@pytest.mark.parametrize(
    "line",
    [
        "Camille Durand",
        "Bureau des titres — cartes grises",
        PREF,
        "Pour le préfet et par délégation,",
        "PRÉFET DE LA SEINE-MARITIME",
        "Cabinet du préfet",
        "Service de prise en charge des dossiers",
        # In a sentence of the reply, "l'agent" is not the signer's function.
        "L'agent en charge de votre dossier vous contactera.",
    ],
)
def test_function_not_found(line: str) -> None:
    assert not only("function", line)


@pytest.mark.parametrize(
    "line",
    [
        "Bureau des titres — permis de conduire",
        "Direction des migrations et de l'intégration",
        "Pôle naturalisation",
        "Mission qualité de l'accueil",
        "Cellule éloignement",
        "Cabinet du préfet",
        "Section du séjour",
        "Le bureau des titres",
        "L'équipe du pôle naturalisation",
        "Adjointe au chef du bureau des titres",
        "Instructeur, section du séjour",
        "Préfecture de la Seine-Maritime — accueil général",
    ],
)
def test_service_found(line: str) -> None:
    assert only("service", line)


@pytest.mark.parametrize(
    "line",
    [
        "Camille Durand",
        "Chargée de mission",
        "Le chef de bureau",
        "Assistante de direction",
        PREF,
        "Bureau 214",
        "https://www.service-public.fr",
        "Le département de la Seine-Maritime",
    ],
)
def test_service_not_found(line: str) -> None:
    assert not only("service", line)


@pytest.mark.parametrize(
    "line",
    [
        PREF,
        "Préfecture de Seine-Maritime",
        "PRÉFECTURE DE LA SEINE-MARITIME",
        "Prefecture de la Seine Maritime",
        "Préfecture de la région Normandie, préfecture de la Seine-Maritime",
        "Sous-préfecture du Havre",
        "Sous-préfecture de Dieppe",
        "PRÉFET DE LA SEINE-MARITIME",
        f"Bureau des titres | {PREF} | {ADDR}",
    ],
)
def test_prefecture_found(line: str) -> None:
    assert only("prefecture", line)


@pytest.mark.parametrize(
    "line",
    [
        "Préfecture",
        "Bureau des titres — cartes grises",
        "https://www.seine-maritime.example.fr",
        ADDR,
        "Déposez votre dossier à la préfecture de la Seine-Maritime.",
    ],
)
def test_prefecture_not_found(line: str) -> None:
    assert not only("prefecture", line)


@pytest.mark.parametrize(
    "line",
    [
        ADDR,
        "7 place de la Madeleine",
        "7, place de la Madeleine",
        "76036 Rouen Cedex",
        "76036 ROUEN CEDEX",
        "CS 76036",
        "BP 42 - 76600 Le Havre",
        "Place de la Madeleine",
        "Adresse : 7 place de la Madeleine - CS 76036 - 76036 Rouen Cedex",
        "12 rue Jean Lecanuet, 75001 Paris",
    ],
)
def test_postal_address_found(line: str) -> None:
    assert only("postal_address", line)


@pytest.mark.parametrize(
    "line",
    [
        "Rouen",
        "Préfecture de la Seine-Maritime, Rouen",
        "Tél. : 02 32 76 50 14",
        "0232765014",
        "+33 2 32 76 50 14",
        "Référence : SM-2026-000412",
    ],
)
def test_postal_address_not_found(line: str) -> None:
    assert not only("postal_address", line)


@pytest.mark.parametrize(
    "line",
    [
        "Tél. : 02 32 76 50 14",
        "02.32.76.50.14",
        "02-32-76-50-14",
        "0232765014",
        "+33 2 32 76 50 14",
        "Tél. +33 (0)2 32 76 50 14",
        "Standard : 02 32 76 50 00 / 06 00 00 00 15",
        "https://www.seine-maritime.example.fr",
        "www.seine-maritime.example.fr",
        "camille.durand@seine-maritime.example.fr",
        "Courriel : pref-titres@seine-maritime.example.fr",
    ],
)
def test_contact_found(line: str) -> None:
    assert only("contact", line)


@pytest.mark.parametrize(
    "line",
    [
        ADDR,
        "Accueil du public sur rendez-vous uniquement",
        "Tél. :",
        "02 32 76",
        # A phone number in a sentence of the reply is not the signature's contact.
        "Vous pouvez joindre le bureau au 02 32 76 50 00.",
    ],
)
def test_contact_not_found(line: str) -> None:
    assert not only("contact", line)


def test_complete_signature_one_per_line() -> None:
    result = check_signature(reply(*FULL))
    assert result == SignatureCheck(True, (), result.found)
    assert dict(result.found) == {
        "name": "Camille Durand",
        "function": "Adjointe au chef du bureau des titres",
        "service": "Adjointe au chef du bureau des titres",
        "prefecture": PREF,
        "postal_address": ADDR,
        "contact": "Tél. : 02 32 76 50 14",
    }


def test_missing_elements_in_element_order() -> None:
    result = check_signature(reply("Camille Durand", "Tél. 02 32 76 50 14"))
    assert not result.complete
    assert result.missing == ("function", "service", "prefecture", "postal_address")
    assert set(result.found) == {"name", "contact"}


@pytest.mark.parametrize(
    "layout",
    [
        " | ".join(FULL),
        " - ".join(FULL),
        "\t".join(FULL),
        "Camille Durand, adjointe au chef du bureau des titres\n"
        "Préfecture de la Seine-Maritime - 7 place de la Madeleine - 76036 Rouen Cedex\n"
        "Tél. 02.32.76.50.14",
        "\n\n".join(FULL),
        "*Camille Durand*\n" + "\n".join(FULL[1:]),
    ],
)
def test_usual_layouts(layout: str) -> None:
    assert check_signature(reply(layout)).complete


def test_nothing_at_all() -> None:
    result = check_signature("Bonjour,\n\nC'est fait.\n")
    assert result.missing == ELEMENTS
    assert not result.found
    assert check_signature("").missing == ELEMENTS
    assert check_signature(reply("Camille")).missing == ELEMENTS


# --------------------------------------------------------------------------- block and quotes


def test_signature_block_after_separator() -> None:
    text = "Bonjour,\nLe bureau des titres vous répond.\n-- \n" + "\n".join(FULL)
    assert signature_block(text) == "\n".join(FULL)
    assert signature_block(text.replace("-- \n", "--\n")) == "\n".join(FULL)


def test_signature_block_after_closing_formula() -> None:
    assert signature_block(reply(*FULL)) == "\n".join(FULL)
    assert signature_block(reply("Camille", closing="Cordialement,")) == "Camille"
    assert signature_block(BODY + "Cordialement, Camille Durand\n") == "Camille Durand"
    assert signature_block(BODY + "Bien cordialement\n") == ""
    formal = (
        "Je vous prie d'agréer, Monsieur, l'expression de mes salutations\n"
        "distinguées.\n\nPour le préfet et par délégation,\n"
    )
    assert signature_block(BODY + formal + "Camille Durand\n").splitlines() == [
        "Pour le préfet et par délégation,",
        "Camille Durand",
    ]
    for closing in ("Salutations distinguées.", "Bien à vous,", "Best regards,", "Cdlt"):
        assert signature_block(reply(*FULL, closing=closing)) == "\n".join(FULL)


def test_signature_block_last_lines_without_formula() -> None:
    lines = [f"Ligne {i}" for i in range(30)]
    assert signature_block("\n".join(lines)).splitlines() == lines[-15:]


def test_strip_quoted_gt_lines_and_attribution() -> None:
    text = reply(*FULL) + "\nLe 23/11/2026 à 09:14, Jean Dupont a écrit :\n" + quoted(CITIZEN)
    assert strip_quoted(text) == reply(*FULL).strip("\n")


@pytest.mark.parametrize(
    "quote",
    [
        "Le lun. 23 nov. 2026 à 09:14, Jean Dupont <jean.dupont@example.fr> a\nécrit :\n\n"
        + CITIZEN,
        "On Mon, 23 Nov 2026 at 09:14, Jean Dupont <jean.dupont@example.fr> wrote:\n" + CITIZEN,
        "-----Original Message-----\nFrom: Jean Dupont\nSent: Monday\n" + CITIZEN,
        "----- Message d'origine -----\nDe : Jean Dupont\n" + CITIZEN,
        "-------- Message original --------\n" + CITIZEN,
        "________________________________\nDe : Jean Dupont <jean.dupont@example.fr>\n"
        "Envoyé : lundi 23 novembre 2026 09:14\nÀ : pref-titres@seine-maritime.example.fr\n"
        "Objet : carte grise\n\n" + CITIZEN,
        "De : Jean Dupont <jean.dupont@example.fr>\nDate : lundi 23 novembre 2026 à 09:14\n"
        "À : pref-titres@seine-maritime.example.fr\n\n" + CITIZEN,
        "De : Jean Dupont <jean.dupont@example.fr> Envoyé : lundi 23 novembre 2026 09:14 "
        "À : pref-titres Objet : carte grise " + CITIZEN.replace("\n", " "),
    ],
)
def test_quoted_original_is_cut(quote: str) -> None:
    text = reply("Camille Durand") + "\n" + quote
    assert "Jean Dupont" not in strip_quoted(text)
    result = check_signature(text)
    assert result.missing == ELEMENTS[1:]  # the citizen's signature does not count


@pytest.mark.parametrize(
    "attribution",
    [
        "Le 23/11/2026 à 09:14, Jean Dupont a écrit :",
        "Le lun. 23 nov. 2026 à 09:14, Jean Dupont <jean.dupont@example.fr> a\nécrit :",
        "Jean Dupont a écrit :",
    ],
)
def test_bottom_posting_keeps_the_answer(attribution: str) -> None:
    text = attribution + "\n" + quoted(CITIZEN) + "\n\n" + reply(*FULL)
    assert strip_quoted(text) == reply(*FULL).strip("\n")
    assert check_signature(text).complete


def test_sentence_ending_with_a_ecrit_is_not_a_quote() -> None:
    text = reply(*FULL, body="Bonjour,\nLe 3 mars, votre conseiller vous a écrit :\nil manque.\n")
    assert "votre conseiller" in strip_quoted(text)
    assert check_signature(text).complete


def test_quoted_ar_with_full_signature_does_not_count() -> None:
    ours = "Bonjour,\n\nVotre carte grise a été envoyée.\n\nCordialement,\nCamille Durand\n"
    outlook = (
        "\n________________________________\nDe : Préfecture de la Seine-Maritime "
        "<pref-cartes-grises@seine-maritime.example.fr>\nEnvoyé : lundi 23 novembre 2026 09:14\n"
        "À : Jean Dupont\nObjet : Accusé de réception\n\n" + AR_BLOCK
    )
    gmail = "\nLe lun. 23 nov. 2026 à 09:14, Préfecture <p@example.fr> a écrit :\n" + quoted(
        AR_BLOCK
    )
    for text in (ours + outlook, ours + gmail):
        result = check_signature(text)
        assert result.missing == ELEMENTS[1:], text
    # ... and the same AR quoted without anything of ours: nothing at all.
    assert check_signature("OK." + gmail).missing == ELEMENTS


# --------------------------------------------------------------------------- HTML


def table(rows: list[str]) -> str:
    cells = "".join(f"<tr><td style='font-size:9pt'>{row}</td></tr>" for row in rows)
    return f"<table cellpadding=0>{cells}</table>"


def test_html_table_one_cell_per_element() -> None:
    markup = f"<html><body><p>Bonjour,</p><p>C'est fait.</p><p>Cordialement,</p>{table(FULL)}"
    assert html_text(markup).splitlines()[-6:] == FULL
    assert check_signature("", markup).complete
    partial = table([r for r in FULL if not r.startswith("Tél")])
    assert check_signature("", f"<p>Cordialement,</p>{partial}").missing == ("contact",)


def test_html_br_bold_and_source_line_breaks() -> None:
    markup = (
        "<div>Bonjour Monsieur,<br><br>Votre carte grise\na été envoyée.</div>"
        "<div>Cordialement,</div><div><b>Camille\nDurand</b><br>" + "<br>".join(FULL[1:]) + "</div>"
    )
    assert "Votre carte grise a été envoyée." in html_text(markup).splitlines()
    result = check_signature("", markup)
    assert result.complete
    assert result.found["name"] == "Camille Durand"


def test_html_logo_alt_text_and_link_target() -> None:
    markup = (
        "<p>Cordialement,</p><table><tr><td><img src='cid:logo' alt='Préfecture de la "
        "Seine-Maritime'></td><td><b>Karim Haddad</b><br>Instructeur, section du séjour<br>"
        f"{ADDR}<br><a href='https://www.seine-maritime.example.fr/sejour'>Nous écrire</a>"
        "</td></tr></table>"
    )
    lines = html_text(markup).splitlines()
    assert PREF in lines
    assert "Nous écrire (https://www.seine-maritime.example.fr/sejour)" in lines
    assert check_signature("", markup).complete


def test_html_linked_logo_is_not_a_contact_link() -> None:
    logo = "<a href='https://www.seine-maritime.example.fr'><img src='cid:l' alt=''></a>"
    markup = "<p>Cordialement,</p>" + table([*FULL[:-1], logo])
    assert check_signature("", markup).missing == ("contact",)


def test_html_blockquote_is_quoted() -> None:
    markup = (
        "<div>C'est fait.</div><div>Camille</div><div class='gmail_quote'>Le lun. 23 nov. 2026 "
        "à 09:14, Préfecture &lt;p@example.fr&gt; a écrit&nbsp;:<br>"
        f"<blockquote>{table(FULL)}</blockquote></div>"
    )
    assert all(line.startswith("> ") for line in html_text(markup).splitlines()[3:])
    assert check_signature("", markup).missing == ELEMENTS


def test_html_outlook_quote_header_cuts() -> None:
    markup = (
        "<p class=MsoNormal>OK.<o:p></o:p></p><p class=MsoNormal>Camille Durand</p>"
        "<div style='border-top:solid #E1E1E1 1.0pt'><p class=MsoNormal><b>De&nbsp;:</b> "
        "Jean Dupont &lt;jean.dupont@example.fr&gt;<br><b>Envoyé&nbsp;:</b> lundi 23 novembre "
        f"2026 09:14<br><b>Objet&nbsp;:</b> carte grise</p></div>{table(FULL)}"
    )
    assert check_signature("", markup).missing == ELEMENTS[1:]


def test_html_used_when_text_lacks_the_signature() -> None:
    text = reply("Camille Durand")
    markup = f"<p>Cordialement,</p>{table(FULL)}"
    assert not check_signature(text).complete
    assert check_signature(text, markup).complete
    assert check_signature(reply(*FULL), "<p>rien</p>").complete  # text complete: kept
    both_partial = check_signature(text, "<p>Cordialement,</p><p>Camille</p>")
    assert both_partial.missing == ELEMENTS[1:]  # the better of the two


# --------------------------------------------------------------------------- configuration


def test_required_elements_are_configurable() -> None:
    text = reply("Camille Durand", "Instructrice", ADDR)  # no service, prefecture, contact
    legal = ("name", "function", "postal_address")  # the CRPA L111-2 minimum
    assert check_signature(text, required=legal) == SignatureCheck(
        True, (), check_signature(text).found
    )
    result = check_signature(text, required=("contact", "name", "service"))
    assert result.missing == ("service", "contact")  # ELEMENTS order, only the required ones
    assert "postal_address" in result.found  # found still explains everything
    assert check_signature("", required=()).complete
    with pytest.raises(ValueError, match="unknown signature element"):
        check_signature(text, required=("name", "signature"))


def test_sent_pipeline_adapter() -> None:
    """mailbot.app.sent records replies through this adapter."""
    assert signature_check(reply(*FULL), "", list(ELEMENTS)) == (True, ())
    assert signature_check(reply(*FULL[:2]), "", ["name", "contact"]) == (False, ("contact",))


def test_pure_and_standard_library_only() -> None:
    tree = ast.parse((ROOT / "mailbot" / "core" / "signature.py").read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open"
    for module in modules - {"mailbot.core.message"}:
        assert module.split(".")[0] in sys.stdlib_module_names, module
    assert not modules & {"os", "io", "pathlib", "socket", "subprocess", "logging"}


# --------------------------------------------------------------------------- our own replies


def test_mailbot_standard_replies_have_complete_signatures() -> None:
    """Every standard reply, signed by every agent of agents.yaml: text and HTML alone."""
    renderer = Renderer(ROOT / "templates")
    config = load_config(ROOT / "rules.yaml")
    agents = load_agents(ROOT / "agents.yaml", config)
    names = [n for n in renderer.names() if n.startswith("reponse-") or n == "demande-precisions"]
    assert names and agents
    for name in names:
        for key, agent in agents.items():
            variables = renderer.meta(name).examples()
            variables["agent"] = agent_variables(agent, config)
            mail = renderer.render(name, variables)
            assert check_signature(mail.text).missing == (), (name, key, "text")
            assert check_signature("", mail.html).missing == (), (name, key, "html")


# --------------------------------------------------------------------------- labelled set


def html_part(raw: bytes) -> str | None:
    message = email.message_from_bytes(raw, policy=policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/html" and not part.is_attachment():
            content = part.get_content()
            return content if isinstance(content, str) else None
    return None


def test_labelled_set_agreement() -> None:
    with (DATA / "labels.csv").open(encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    assert len(labels) >= 45
    assert {row["file"] for row in labels} == {p.name for p in DATA.glob("*.eml")}
    assert {"true", "false"} == {row["complete"] for row in labels}
    for element in ELEMENTS:  # every element is missing somewhere in the set
        assert any(element in row["missing"].split() for row in labels), element
    agree = flag_agree = 0
    wrong: list[str] = []
    for row in labels:
        raw = (DATA / row["file"]).read_bytes()
        parsed = parse_message(raw)
        result = check_signature(parsed.body_text, html_part(raw))
        expected_complete = row["complete"] == "true"
        expected_missing = set(row["missing"].split())
        assert expected_complete == (not expected_missing), row["file"]  # labels consistent
        flag_agree += result.complete == expected_complete
        if result.complete == expected_complete and set(result.missing) == expected_missing:
            agree += 1
        else:
            wrong.append(
                f"{row['file']}: expected missing {sorted(expected_missing)}, "
                f"got {list(result.missing)} (found {dict(result.found)})"
            )
    rate = agree / len(labels)
    report = (
        f"signature agreement {rate:.1%} ({agree}/{len(labels)} with the same complete flag "
        f"and missing set; complete flag alone {flag_agree}/{len(labels)})\n" + "\n".join(wrong)
    )
    print(report)
    assert rate >= 0.95, report
