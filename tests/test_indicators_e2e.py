"""The hand-computed scenario of test_indicators, end to end: the 32 citizens' mails, the
relances and the agents' replies go through Dovecot (INBOX and Sent), the ARs, transfers and
re-orientation through aiosmtpd, and `mailbot indicators --format json` gives the figures."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer
from test_e2e import BOUNCE, citizen_mail, db_rows, etrangers_user, poll, write_config
from test_indicators import EXPECTED, SCENARIO, run

from mailbot.cli import main

__all__ = ["etrangers_user"]
PARIS = ZoneInfo("Europe/Paris")
FULL = (
    "Cordialement,\r\n\r\n-- \r\nCamille Durand\r\nAdjointe au chef du bureau des titres\r\n"
    "Bureau des titres\r\nPréfecture de la Seine-Maritime\r\n"
    "7 place de la Madeleine, 76036 Rouen Cedex\r\nTél. : 02 32 76 50 12\r\n"
)
PARTIAL = "Cordialement,\r\nCamille Durand\r\n"


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=PARIS)


def wording(category: str, transferred: bool, how: str | None) -> tuple[str, str]:
    """Subjects and bodies that the default rules route as the scenario says."""
    if how == "auto":
        # Several mairie matters named: a confident re-orientation (a single weak hit in a
        # one-line mail would be held "to check", README "Routing").
        return "Acte de naissance", (
            "Bonjour, je voudrais un extrait d'acte de naissance et une copie de mon livret"
            " de famille (état civil).\n"
        )
    if category == "reclamation":
        return "Réclamation", "Bonjour, il y a une erreur sur le courrier reçu, je conteste.\n"
    topic = "Carte grise" if transferred else "Horaires"
    if category == "etat-avancement":
        return f"{topic} : où en est ma demande", "Bonjour, où en est ma demande ? Toujours rien.\n"
    if transferred:
        return topic, "Bonjour, j'ai vendu ma voiture, comment déclarer la cession ?\n"
    return topic, "Bonjour, quels sont les horaires d'ouverture le samedi ?\n"


def reply(n: int, signature: str) -> bytes:
    return (
        f"From: Préfecture <pref-contact@seine-maritime.gouv.fr>\r\nTo: u{n}@example.fr\r\n"
        f"Subject: Re: votre message\r\nIn-Reply-To: <m{n}@example.fr>\r\n"
        f"Message-ID: <reply{n}@seine-maritime.gouv.fr>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Bonjour,\r\nVoici la réponse à votre demande.\r\n{signature}"
    ).encode()


def text_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_scenario_through_the_servers(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    imap_user.create_folder("Sent")
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    data = load_rules(config)
    data["mailboxes"]["general"]["imap"]["sent_folder"] = "Sent"
    config.write_text(dump_rules(data), encoding="utf-8")
    for n, received, _replied, category, transferred, _ar, how, _relances in SCENARIO:
        subject, body = wording(category, transferred, how)
        raw = citizen_mail(
            n,
            sender=f"u{n}@example.fr",
            subject=subject,
            body=body,
            message_id=f"<m{n}@example.fr>",
        )
        imap_user.append(raw, internaldate=at(received, 10))
    for n, received, _replied, _c, _t, _a, _h, relances in SCENARIO:
        for r in range(relances):
            imap_user.append(
                citizen_mail(
                    100 + n * 10 + r,
                    sender=f"u{n}@example.fr",
                    subject="Re: relance",
                    body="Bonjour, je n'ai toujours pas de réponse.\n",
                    extra=f"In-Reply-To: <m{n}@example.fr>",
                    message_id=f"<f{n}-{r}@example.fr>",
                ),
                internaldate=at(received + 3, 9),
            )
    imap_user.append(BOUNCE, internaldate=at(10, 8))  # not a citizen's mail
    imap_user.append(
        citizen_mail(999, sender="late@example.fr", message_id="<late@x>"), internaldate=at(23, 8)
    )  # outside the period
    for n, _received, replied, _c, _t, _a, how, _r in SCENARIO:
        if how in {"mailbot", "sent-ok", "sent-partial"}:
            signature = PARTIAL if how == "sent-partial" else FULL
            imap_user.append(reply(n, signature), folder="Sent", internaldate=at(replied, 15))

    assert poll(config, acknowledge_existing=True) == 0

    transfers = db_rows(config, "SELECT COUNT(*) FROM events WHERE kind='transferred'")
    assert transfers == [(4,)]
    figures = json.loads(run(config, "--format", "json").stdout)
    # Every AR left through aiosmtpd here (the store-level test covers failed ones).
    expected = {**EXPECTED, "ars_sent": 32, "transfer_notice_share": 1.0}
    for name, value in expected.items():
        assert figures[name] == pytest.approx(value), name

    # The deadline digest of 25 November, from the same mailboxes.
    smtp_server.clear()
    assert main(["--config", str(config), "-q", "alerts", "--date", "2026-11-25"]) == 0
    digests = {r.rcpt_tos[0]: r.raw for r in smtp_server.wait_for(2)}
    assert set(digests) == {
        "pref-contact@seine-maritime.gouv.fr",
        "pref-cartes-grises@seine-maritime.gouv.fr",
    }

    general = text_of(digests["pref-contact@seine-maritime.gouv.fr"])
    cartes = text_of(digests["pref-cartes-grises@seine-maritime.gouv.fr"])
    overdue, soon = general.split("À TRAITER")
    prefix = f"[SM-{at(1, 0).year}-"  # every mail of the scenario is dated in that year
    assert prefix in overdue and "7 jours ouvrés" in overdue
    assert soon.count(prefix) == 4  # 5, 4, 3 and 3 working days
    assert "2 relances" in cartes and "6 jours ouvrés" in cartes
