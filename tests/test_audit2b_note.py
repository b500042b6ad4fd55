"""The note sent with a citizen's mail to a service names the service with its article,
contracted (« relève du Cabinet du préfet », never « relève de Cabinet du préfet »), and
says who sent the mail on: mailbot at receipt, the agent on an agent's transfer (never
« transmis par mailbot » beside « Transmis par <agent> »)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.app import maintenance
from mailbot.app.outgoing import Transfer, forwards
from mailbot.config import Config, ServiceConfig
from mailbot.core.articles import article_of, of_service
from mailbot.mail.compose import Composer

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = (
    b"From: Marie Dupont <marie.dupont@example.fr>\r\nTo: pref-contact@seine-maritime.gouv.fr\r\n"
    b"Subject: Question\r\nMessage-ID: <q-1@example.fr>\r\n\r\nBonjour.\r\n"
)


def note_of(config: Config, service: str, by: str | None = None, reason: str | None = None) -> str:
    """The note of the forward to ``service``, its lines joined (wrapping aside)."""
    transfer = Transfer(
        mailbox="general",
        reference="SM-2026-000123",
        subject="Question",
        received_at=datetime(2026, 3, 9, 10, 30, tzinfo=UTC),
        citizen="marie.dupont@example.fr",
        service=service,
        category="autre",
        by=by,
        reason=reason,
    )
    queued = forwards(config, Composer.from_config(config), transfer, ORIGINAL)[0]
    mail = email.message_from_bytes(queued.raw, policy=email.policy.default)
    note = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    return " ".join(note.get_content().split())


@pytest.mark.parametrize(
    ("service", "said"),
    [
        ("cabinet", "relève du Cabinet du préfet."),
        ("etrangers", "relève de la Direction des migrations et de l'intégration."),
        ("cartes-grises", "relève du Bureau des titres — cartes grises"),
        ("qualite-accueil", "relève de la Mission qualité de l'accueil."),
        ("general", "relève de la Préfecture de la Seine-Maritime — accueil général."),
    ],
)
def test_the_note_names_the_service_with_its_article(
    config: Config, service: str, said: str
) -> None:
    note = note_of(config, service)
    assert said in note, note
    assert "Il vous est transmis par mailbot." in note  # the routing, at receipt


def test_an_agents_transfer_says_the_agent_sent_it_not_mailbot(config: Config) -> None:
    note = note_of(config, "cabinet", by="Camille Durand (cdurand)", reason="élu local")
    assert "relève du Cabinet du préfet. Il vous est transmis par Camille Durand (cdurand)." in (
        note
    ), note
    assert "mailbot." not in note.split("Référence")[0]
    assert "Transmis par" not in note
    assert "Motif de la transmission : élu local" in note


@pytest.mark.parametrize(
    ("name", "article", "said"),
    [
        ("Service des étrangers", None, "du Service des étrangers"),
        ("Pôle juridique", None, "du Pôle juridique"),
        ("Cellule de crise", None, "de la Cellule de crise"),
        ("Unité départementale", None, "de l'Unité départementale"),
        ("Accueil", None, "de l'Accueil"),
        ("Sous-préfecture du Havre", None, "de la Sous-préfecture du Havre"),
        ("Haut-commissariat", None, "du Haut-commissariat"),
        ("Hôtel de police", None, "de l'Hôtel de police"),
        ("Services du cabinet", None, "des Services du cabinet"),
        ("La Mission d'appui", None, "de la Mission d'appui"),
        ("Le Bureau du courrier", None, "du Bureau du courrier"),
        ("L'Antenne de Dieppe", None, "de l'Antenne de Dieppe"),
        ("SGCD", "le", "du SGCD"),  # rules.yaml says what the name cannot
        ("Halle aux grains", "la", "de la Halle aux grains"),
        ("SGCD", None, "du service « SGCD »"),  # told nowhere: a sentence without article
    ],
)
def test_of_service(name: str, article: str | None, said: str) -> None:
    assert of_service(name, article) == said


def test_rules_yaml_article_is_used_and_check_warns_of_a_name_that_tells_none(
    config: Config,
) -> None:
    """``services.<id>.article`` is read by the note; `mailbot check` warns of a name whose
    article neither it nor rules.yaml tells; the shipped services need none."""
    assert maintenance.service_article_warnings(config) == []
    assert all(article_of(s.name) for s in config.services.values())
    told = config.model_copy(
        update={
            "services": {
                **config.services,
                "cabinet": ServiceConfig(
                    **{**config.services["cabinet"].model_dump(), "name": "SGCD", "article": "le"}
                ),
                "permis": ServiceConfig(
                    **{**config.services["permis"].model_dump(), "name": "DRLP"}
                ),
            }
        }
    )
    assert "relève du SGCD." in note_of(told, "cabinet")
    assert "relève du service « DRLP »." in note_of(told, "permis")
    (warning,) = maintenance.service_article_warnings(told)
    assert warning.startswith("services.permis: ") and "article: le, la, l' or les" in warning
