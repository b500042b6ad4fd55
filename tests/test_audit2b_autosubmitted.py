"""Auto-Submitted (RFC 3834 §5) of every kind of mail mailbot sends: ``auto-replied`` for a
mail sent in reply to a citizen's (the AR, with or without a transfer notice, the
re-orientation, an agent's transfer notice), ``auto-generated`` for one in reply to none
(the weekly report, the deadline alerts, the probe's alerts, the forward to a service),
none for a person's mail (an agent's reply) or for the probe, which must pass for one."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from servers import SmtpServer
from test_report import config

from mailbot.cli import main
from mailbot.config import load_config
from mailbot.mail.compose import Composer
from mailbot.render.rendering import RenderedMail

__all__ = ["config"]
ROOT = Path(__file__).resolve().parent.parent
TEXT = RenderedMail("Objet", "Texte.\n", "<p>Texte.</p>")


def auto_submitted(raw: bytes) -> str | None:
    value = email.message_from_bytes(raw, policy=email.policy.default)["Auto-Submitted"]
    return None if value is None else str(value)


def test_the_weekly_report_is_auto_generated(config: Path, smtp_server: SmtpServer) -> None:
    args = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    assert main([*args, "--as-of", "2026-11-25", "--send"]) == 0
    received = smtp_server.wait_for(2)
    assert [auto_submitted(r.raw) for r in received] == ["auto-generated"] * 2


def test_each_kind_of_mail_says_what_it_is() -> None:
    composer = Composer.from_config(load_config(ROOT / "rules.yaml"))
    citizen = {
        "mailbox_address": "pref-contact@seine-maritime.gouv.fr",
        "to": "marie@example.fr",
        "in_reply_to": "<q@example.fr>",
        "references": ["<q@example.fr>"],
    }
    ar = composer.to_citizen(TEXT, **citizen)  # the AR, the re-orientation, a notice
    reply = composer.to_citizen(TEXT, **citizen, automatic=False)  # an agent's reply
    alert = composer.internal(TEXT, to="chef@seine-maritime.gouv.fr")  # digest, probe alert
    report = composer.report(TEXT, b"\x89PNG", b"a;b\r\n", "d.csv")
    probe = composer.probe(TEXT, from_address="s@probe.example.org", to="x@y.fr", secret="s")
    _mid, forward = composer.forward(
        b"Subject: Q\r\n\r\nBonjour.\r\n",
        mailbox_address="pref-contact@seine-maritime.gouv.fr",
        reference="SM-2026-000001",
        subject="Q",
        note="Bonjour,\n",
        to="pref-permis@seine-maritime.gouv.fr",
        citizen="marie@example.fr",
    )
    assert auto_submitted(ar.as_bytes()) == "auto-replied"
    assert auto_submitted(reply.as_bytes()) is None
    assert auto_submitted(alert.as_bytes()) == "auto-generated"
    assert auto_submitted(report.as_bytes()) == "auto-generated"
    assert auto_submitted(probe.as_bytes()) is None
    assert auto_submitted(forward) == "auto-generated"
