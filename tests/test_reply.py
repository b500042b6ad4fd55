"""`mailbot reply`: a standard reply in the thread, with a complete signature, recorded."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
import yaml
from replying import agents_everywhere, routed
from rulesfile import dump_rules, load_rules
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, setup

from mailbot.cli import main

__all__ = ["etrangers_user", "setup"]


def tracked_reference(setup: Any, service: str = "permis") -> tuple[Path, str]:
    config, general, _etrangers, smtp = setup
    general.append(citizen_mail(1, subject="Horaires", message_id="<orig-1@example.fr>"))
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    smtp.clear()
    ((reference,),) = db_rows(config, "SELECT reference FROM messages")
    agents_everywhere(config)  # a reply is the mail's service's, in its templates' scope
    routed(config, reference, service)
    return config, reference


def test_reply_preview_sends_nothing(setup: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config, reference = tracked_reference(setup)
    args = ["--config", str(config), "reply", reference, "--template", "reponse-permis"]
    assert main([*args, "--agent", "cdurand"]) == 0
    out = capsys.readouterr().out
    assert f"[{reference}]" in out and "Camille Durand" in out and "preview only" in out
    assert setup[3].messages == []


def test_reply_send_is_threaded_signed_and_recorded(setup: Any) -> None:
    config, reference = tracked_reference(setup)
    smtp = setup[3]
    code = main(
        [
            "--config",
            str(config),
            "reply",
            reference,
            "--template",
            "reponse-permis",
            "--agent",
            "cdurand",
            "--var",
            "usager_nom=Madame Dupont",
            "--send",
        ]
    )
    assert code == 0
    (sent,) = smtp.wait_for(1)
    assert sent.rcpt_tos == ("marie.dupont@example.fr",)
    msg = email.message_from_bytes(sent.raw, policy=email.policy.default)
    assert msg["In-Reply-To"] == "<orig-1@example.fr>"
    assert "<orig-1@example.fr>" in msg["References"]
    assert msg["Auto-Submitted"] is None  # a person's answer, not an auto-reply
    assert f"[{reference}]" in str(msg["Subject"])
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Bonjour Madame Dupont," in text
    for element in (
        "Camille Durand",
        "Adjointe au chef du bureau des titres",
        "Bureau des titres",
        "Préfecture de la Seine-Maritime",
        "7 place de la Madeleine, 76036 Rouen Cedex",
        "02 32 76 50 00",
    ):
        assert element in text
    events = dict(db_rows(config, "SELECT kind, detail FROM events WHERE kind LIKE 'reply%'"))
    assert '"agent": "cdurand"' in events["reply_queued"]
    assert '"template": "reponse-permis"' in events["reply_queued"]
    assert events["reply_sent"] == msg["Message-ID"]


def test_incomplete_agent_profile_is_refused(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference = tracked_reference(setup)
    agents = tmp_path / "agents.yaml"
    agents.write_text(
        yaml.safe_dump(
            {
                "agents": {
                    "jpetit": {"first_name": "Jean", "last_name": "Petit", "service": "permis"}
                }
            }
        ),
        encoding="utf-8",
    )
    data = load_rules(config)
    data["agents"] = str(agents)
    config.write_text(dump_rules(data), encoding="utf-8")
    code = main(
        [
            "--config",
            str(config),
            "reply",
            reference,
            "--template",
            "reponse-permis",
            "--agent",
            "jpetit",
            "--send",
        ]
    )
    assert code == 2
    assert "agent.function" in capsys.readouterr().err
    assert setup[3].messages == []


def test_reply_greets_the_sender_by_the_name_their_mail_showed(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference = tracked_reference(setup, "cni-passeport")
    args = ["--config", str(config), "reply", reference, "--template", "reponse-cni-passeport"]
    assert main([*args, "--agent", "cdurand"]) == 0
    assert "Bonjour Marie Dupont," in capsys.readouterr().out


def test_a_templates_attachment_arrives_byte_identical_with_its_name(setup: Any) -> None:
    config, reference = tracked_reference(setup, "etrangers")
    smtp = setup[3]
    args = ["--config", str(config), "reply", reference, "--template", "reponse-dossier-etranger"]
    assert main([*args, "--agent", "cdurand", "--send"]) == 0
    (sent,) = smtp.wait_for(1)
    msg = email.message_from_bytes(sent.raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["In-Reply-To"] == "<orig-1@example.fr>"
    (attached,) = list(msg.iter_attachments())  # type: ignore[attr-defined]
    folder = Path(__file__).resolve().parent.parent / "templates" / "reponse-dossier-etranger"
    assert attached.get_content_type() == "text/plain"
    assert attached.get_filename() == "pièces-à-préparer.txt"
    assert b"filename*=utf-8''pi%C3%A8ces-%C3%A0-pr%C3%A9parer.txt" in sent.raw  # RFC 2231
    assert attached.get_payload(decode=True) == (folder / "pièces-à-préparer.txt").read_bytes()
    assert "Camille Durand" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_a_standard_reply_sent_with_the_agents_edit_of_its_text(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference = tracked_reference(setup)
    args = ["--config", str(config), "reply", reference, "--template", "reponse-permis"]
    args += ["--agent", "cdurand"]
    assert main(args) == 0
    rendered = capsys.readouterr().out.split("\n\n", 1)[1].rsplit("(preview only", 1)[0]
    edit = tmp_path / "edit.txt"
    edit.write_text(rendered.replace("Cordialement,", "{{ 6*7 }} <i>vu</i>\n\nCordialement,"))
    unsigned = tmp_path / "unsigned.txt"
    unsigned.write_text(rendered.replace("Adjointe au chef du bureau des titres", ""))
    assert main([*args, "--text-file", str(unsigned), "--send"]) == 2
    assert "agent.function" in capsys.readouterr().err
    assert main([*args, "--text-file", str(edit), "--send"]) == 0
    (sent,) = setup[3].wait_for(1)
    msg = email.message_from_bytes(sent.raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "{{ 6*7 }} <i>vu</i>" in text and "Camille Durand" in text
    markup = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "{{ 6*7 }} &lt;i&gt;vu&lt;/i&gt;" in markup
    assert msg["In-Reply-To"] == "<orig-1@example.fr>"
    events = dict(db_rows(config, "SELECT kind, detail FROM events WHERE kind LIKE 'reply%'"))
    assert '"edited": true' in events["reply_queued"]
