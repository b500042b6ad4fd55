"""`mailbot reply` refuses what the console never offers: a reply with a template whose
scope keeps it from the message's service (or that is no reply: the transfer notice), and
a reply by an agent on the mail of a service they do not handle. The check is the use
case's (``app.reply.allowed``), so every face gets it; the console's pages keep theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, setup

from mailbot.app.context import build_app
from mailbot.app.reply import Draft, Replies
from mailbot.cli import main
from mailbot.errors import RequestError, TemplateNotAllowedError

__all__ = ["etrangers_user", "setup"]


def general_message(setup: Any) -> tuple[Path, str]:
    """A citizen's mail to the general mailbox, acknowledged: the general service's."""
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1, subject="Horaires", message_id="<orig-1@example.fr>"))
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    smtp.clear()
    ((reference, service),) = db_rows(config, "SELECT reference, service FROM messages")
    assert service == "general"
    return config, reference


def test_the_cli_refuses_a_template_out_of_the_messages_scope(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference = general_message(setup)
    args = ["--config", str(config), "reply", reference, "--agent", "aleroux", "--send"]
    assert main([*args, "--template", "reponse-permis"]) == 2
    error = capsys.readouterr().err
    assert "template: reponse-permis:" in error and "service general's mail" in error, error
    assert main([*args, "--template", "notification-transfert"]) == 2  # no reply at all
    assert "template: notification-transfert:" in capsys.readouterr().err
    assert main([*args, "--template", "demande-precisions"]) == 2  # allowed: a variable lacks
    assert "not a reply allowed" not in capsys.readouterr().err
    assert setup[3].messages == []
    assert db_rows(config, "SELECT id FROM outbox WHERE kind = 'reply'") == []


def test_the_cli_refuses_an_agent_of_another_service(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference = general_message(setup)
    args = ["--config", str(config), "reply", reference, "--text", "Bien reçu.", "--send"]
    assert main([*args, "--agent", "cdurand"]) == 2  # cartes-grises only
    error = capsys.readouterr().err
    assert "agent: cdurand:" in error and "service general's" in error, error
    assert setup[3].messages == []
    assert main([*args, "--agent", "lmoreau"]) == 0  # etrangers and general
    assert len(setup[3].wait_for(1)) == 1


def test_the_use_case_refuses_them_whichever_face_asks(setup: Any) -> None:
    config, reference = general_message(setup)
    app = build_app(config)
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    with pytest.raises(TemplateNotAllowedError) as refused:
        replies.preview("aleroux", reference, Draft.standard("reponse-cartes-grises"))
    assert (refused.value.template, refused.value.service) == ("reponse-cartes-grises", "general")
    shown = refused.value.shown or ""
    assert "« Réponse type" in shown and "Préfecture de la Seine-Maritime — accueil" in shown
    with pytest.raises(RequestError, match=r"agent: smarchand: .*service general's") as other:
        replies.send("smarchand", reference, Draft.free("Bien reçu."))
    assert "que vous ne traitez pas" in (other.value.shown or "")
    assert db_rows(config, "SELECT id FROM outbox WHERE kind = 'reply'") == []
    sent = replies.send("aleroux", reference, Draft.free("Bien reçu."))  # their service's mail
    assert len(sent.outbox_ids) == 1
