"""Routing end to end against Dovecot and aiosmtpd: transfer, re-orientation, no stray mail."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Any

from rulesfile import load_rules
from servers import MailUser, SmtpServer
from test_e2e import (
    GENERAL,
    citizen_mail,
    db_rows,
    etrangers_user,
    poll,
    received_year,
    setup,
    write_config,
)

__all__ = ["etrangers_user", "setup"]  # fixtures shared with test_e2e

ROOT = Path(__file__).resolve().parent.parent
CONFIGURED = {
    address for service in load_rules()["services"].values() for address in service["addresses"]
}


def parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_routed_message_gives_one_notice_and_one_unaltered_forward(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    original = citizen_mail(
        1,
        subject="J'ai vendu ma voiture : déclaration de cession",
        body="Bonjour,\nComment faire la déclaration de cession de mon véhicule ?\nMerci\n",
    )
    general.append(original)
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(2)
    assert len(received) == 2
    by_rcpt = {r.rcpt_tos: r for r in received}
    notice = parsed(by_rcpt[("marie.dupont@example.fr",)].raw)
    forward_item = by_rcpt[("pref-cartes-grises@seine-maritime.gouv.fr",)]
    forward = parsed(forward_item.raw)

    text = notice.get_body(("plain",)).get_content()
    assert "Nous le lui avons transmis" in text
    assert "Bureau des titres — cartes grises" in text
    assert "pref-cartes-grises@seine-maritime.gouv.fr" in text  # how to contact that service
    year = received_year(general, "<citizen-1@example.fr>")
    assert str(notice["Subject"]).startswith(f"Accusé de réception [SM-{year}-")
    assert notice["Auto-Submitted"] == "auto-replied"

    reference = str(notice["Subject"]).split("[", 1)[1].split("]", 1)[0]
    assert str(forward["Subject"]).startswith(f"[{reference}] Transmis :")
    assert forward["Reply-To"] == "marie.dupont@example.fr"
    assert forward_item.mail_from == GENERAL  # bounces of a forward come back to us
    note = next(p for p in forward.iter_parts() if p.get_content_type() == "text/plain")
    assert f"gardez la référence [{reference}]" in note.get_content()
    attached = next(p for p in forward.iter_parts() if p.get_content_type() == "message/rfc822")
    assert attached.get_filename() == f"{reference}.eml"
    # byte for byte: the attachment is exactly what the citizen sent
    start = forward_item.raw.index(b"Content-Disposition: attachment")
    body_start = forward_item.raw.index(b"\r\n\r\n", start) + 4
    assert forward_item.raw[body_start : body_start + len(original)] == original

    rows = db_rows(config, "SELECT service, category, reference FROM messages")
    assert rows == [("cartes-grises", "information", reference)]
    kinds = [k for (k,) in db_rows(config, "SELECT kind FROM events ORDER BY id")]
    assert "transferred" in kinds
    assert sorted(k for (k,) in db_rows(config, "SELECT kind FROM outbox")) == ["ar", "forward"]


def test_reoriented_message_gets_one_reply_and_no_forward(setup: Any) -> None:
    config, general, _etrangers, smtp = setup
    general.append(
        citizen_mail(
            1,
            subject="Acte de naissance",
            body="Bonjour, je voudrais un extrait d'acte de naissance pour mon fils et une copie"
            " de notre livret de famille (état civil).\n",
        )
    )
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(1)
    assert len(received) == 1
    reply = parsed(received[0].raw)
    assert received[0].rcpt_tos == ("marie.dupont@example.fr",)
    assert "à qui vous adresser" in str(reply["Subject"]).lower()
    text = reply.get_body(("plain",)).get_content()
    assert "votre mairie" in text
    assert "https://www.service-public.fr" in text
    assert db_rows(config, "SELECT service, reorient FROM messages") == [
        ("autres-administrations", "mairie")
    ]
    events = [k for (k,) in db_rows(config, "SELECT kind FROM events ORDER BY id")]
    assert "reoriented" in events and "reply" in events
    assert db_rows(config, "SELECT detail FROM events WHERE kind='reply'") == [
        ("automatic:reorientation",)
    ]


def test_weak_decision_is_held_to_check_with_a_plain_ar(setup: Any) -> None:
    """One line naming a birth certificate (the mairie's) and an identity card (a prefecture
    title, made in the mairies): a weak decision, so nothing is transferred or re-oriented;
    the mail stays with the mailbox's own service, marked to check, its suggestion recorded
    (issue 13). The models of issue 13's rounds 8 and 9 are sure of the mairie for an earlier
    example of this test (a birth certificate, a residence permit and a carte grise: under the
    guide's R13 the prefecture's requests come first), a known error of those models; round 2's
    was sure of the mairie for the birth certificate alone."""
    config, general, _etrangers, smtp = setup
    body = "Bonjour, acte de naissance de mon fils et sa carte d'identité, à qui s'adresser ?\n"
    general.append(citizen_mail(1, subject="Acte de naissance", body=body))
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(1)
    assert len(received) == 1
    assert "à qui vous adresser" not in str(parsed(received[0].raw)["Subject"]).lower()
    assert db_rows(config, "SELECT service, reorient, to_check FROM messages") == [
        ("general", None, 1)
    ]
    (recorded,) = db_rows(config, "SELECT routing FROM messages")[0]
    assert json.loads(recorded)["suggested"] == {"service": "cni-passeport", "reorient": None}
    events = [k for (k,) in db_rows(config, "SELECT kind FROM events ORDER BY id")]
    assert "reoriented" not in events and "transferred" not in events


# Clear requests: routing transfers them with confidence (not "to check").
PERMIS = "Bonjour, comment faire l'échange de mon permis de conduire marocain ?\n"
CARTE = "Bonjour, j'ai vendu ma voiture : comment déclarer la cession de la carte grise ?\n"


def test_no_mail_leaves_for_an_unconfigured_address(setup: Any) -> None:
    """Headers that try to add recipients: Reply-To, Cc, Bcc, Resent-*, Disposition-Notification-To."""
    config, general, _etrangers, smtp = setup
    tricks = (
        "Reply-To: pirate@evil.example\r\nCc: pirate2@evil.example\r\n"
        "Bcc: pirate3@evil.example\r\nDisposition-Notification-To: pirate4@evil.example\r\n"
        "Resent-To: pirate5@evil.example\r\nReturn-Receipt-To: pirate6@evil.example"
    )
    general.append(
        citizen_mail(
            1,
            subject="Permis de conduire\r\n =?utf-8?q?=0ABcc:_pirate7@evil.example?=",
            body=PERMIS,
            extra=tricks,
        )
    )
    general.append(
        citizen_mail(2, sender="x@example.fr", subject="Carte grise", body=CARTE, extra=tricks)
    )
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(4)
    recipients = {rcpt for item in received for rcpt in item.rcpt_tos}
    assert recipients <= {"marie.dupont@example.fr", "x@example.fr"} | CONFIGURED
    for item in received:
        msg = parsed(item.raw)
        assert msg["Cc"] is None and msg["Bcc"] is None
        assert {a.addr_spec for a in msg["To"].addresses} == set(item.rcpt_tos)


def test_forward_to_a_forged_service_address_is_refused(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Even a tampered outbox row cannot reach an address that is not configured."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.append(citizen_mail(1, subject="Carte grise"))
    smtp_server.fail_next(2)  # keep both mails queued
    assert poll(config, acknowledge_existing=True) == 0
    db_rows(
        config, "UPDATE outbox SET recipient='pirate@evil.example', next_attempt_at='2000-01-01'"
    )
    assert poll(config) == 0
    assert smtp_server.messages == []
    assert {s for (s,) in db_rows(config, "SELECT status FROM outbox")} == {"failed"}
    errors = db_rows(config, "SELECT last_error FROM outbox")
    assert all("unauthorised recipient" in e for (e,) in errors)


def test_training_stops_when_the_server_drops_while_corrections_are_read(
    setup: Any, monkeypatch: Any
) -> None:
    """`routing train` reads the corrected mails again from Dovecot. The connection lost
    while reading them is an error naming the mailbox, not "mails no longer on the
    server" counted while the model is trained without them."""
    import socket

    import pytest

    from mailbot.cli import main
    from mailbot.config import load_config
    from mailbot.errors import MailboxError
    from mailbot.mail import originals
    from mailbot.routing_commands import corrections_samples

    config, general, _etrangers, _smtp = setup
    for n in (1, 2):
        general.append(citizen_mail(n, subject=f"Question {n}", body="Bonjour, une question."))
    assert poll(config, acknowledge_existing=True) == 0
    for (reference,) in db_rows(config, "SELECT reference FROM messages ORDER BY id"):
        fix = ["correct", reference, "--service", "etrangers", "--category", "information"]
        assert main(["--config", str(config), *fix]) == 0
    real = originals.refetch

    def dropped(source: Any, row: Any) -> Any:
        if source.connected:  # the first mail's: the server's side is gone
            source._client._imap.sock.shutdown(socket.SHUT_RDWR)
        return real(source, row)

    monkeypatch.setattr(originals, "refetch", dropped)
    with pytest.raises(MailboxError, match="general"):
        corrections_samples(load_config(config))


def test_training_dates_each_corrected_mail_by_its_receipt(
    setup: Any, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    """`routing train` reads the corrected mails again from Dovecot, each dated by its
    receipt (the INTERNALDATE the purge goes by): the model's header dates the oldest and
    the newest, so that `check` and `status` can say when the retention has purged them
    (test_model_retention), and `train` says when that will be."""
    from datetime import UTC, datetime, timedelta

    from test_routing_model import every_nth

    from mailbot.app import routing_scores
    from mailbot.cli import main
    from mailbot.core.classifier import load

    config, general, _etrangers, _smtp = setup
    now = datetime.now(UTC).replace(microsecond=0)
    dates = {1: now - timedelta(days=20), 2: now - timedelta(days=2)}
    for n, when in dates.items():
        raw = citizen_mail(n, subject=f"Question {n}", body="Bonjour, une question.")
        general.append(raw, internaldate=when)
    assert poll(config, acknowledge_existing=True) == 0
    for (reference,) in db_rows(config, "SELECT reference FROM messages ORDER BY id"):
        fix = ["correct", reference, "--service", "etrangers", "--category", "information"]
        assert main(["--config", str(config), *fix]) == 0
    # Written whatever the k-fold says: the header is what this test is about.
    monkeypatch.setattr(routing_scores, "worse_than_rules", lambda combined, alone: [])
    half = every_nth(ROOT / "tests/data/routing", 2, tmp_path / "data")
    out = tmp_path / "model.npz"
    train = ["routing", "train", "--folds", "2", "--labelled", str(half), "--out", str(out)]
    capsys.readouterr()
    assert main(["--config", str(config), *train]) == 0
    said = load(out).meta["corrected_mail"]
    assert said == {
        "mails": 2,
        "oldest_received": dates[1].isoformat(),
        "newest_received": dates[2].isoformat(),
    }
    purged = dates[1] + timedelta(days=730)
    assert f"the purge deletes the oldest on {purged:%Y-%m-%d}" in capsys.readouterr().out
