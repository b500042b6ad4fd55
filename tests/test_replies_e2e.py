"""Response times end to end: agents' replies found in Sent, their signatures, relances."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, write_config

__all__ = ["etrangers_user"]
PARIS = ZoneInfo("Europe/Paris")
SIGNED = (
    "Cordialement,\r\n\r\n-- \r\nCamille Durand\r\nAdjointe au chef du bureau des titres\r\n"
    "Bureau des titres - cartes grises\r\nPréfecture de la Seine-Maritime\r\n"
    "7 place de la Madeleine, 76036 Rouen Cedex\r\nTél. : 02 32 76 50 12\r\n"
)


def agent_reply(to: str, in_reply_to: str, subject: str, signature: str) -> bytes:
    return (
        "From: Préfecture <pref-contact@seine-maritime.gouv.fr>\r\n"
        f"To: {to}\r\nSubject: {subject}\r\nIn-Reply-To: {in_reply_to}\r\n"
        f"References: {in_reply_to}\r\nMessage-ID: <agent-{abs(hash(subject))}@seine-maritime.gouv.fr>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "Bonjour,\r\nVotre demande est en cours d'instruction.\r\n" + signature
    ).encode()


def setup_with_sent(tmp_path: Path, user: MailUser, etrangers: MailUser, smtp: SmtpServer) -> Path:
    user.create_folder("Sent")
    config = write_config(tmp_path, user, etrangers, smtp)
    data = load_rules(config)
    data["mailboxes"]["general"]["imap"]["sent_folder"] = "Sent"
    config.write_text(dump_rules(data), encoding="utf-8")
    return config


def indicators(config: Path, start: str = "2026-11-01", end: str = "2026-11-30") -> dict[str, Any]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(config),
            "indicators",
            "--from",
            start,
            "--to",
            end,
            "--as-of",
            end,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(run.stdout))


def test_agent_replies_in_sent_are_detected_with_delay_and_signature(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    friday = datetime(2026, 11, 6, 16, 0, tzinfo=PARIS)
    imap_user.append(citizen_mail(1, message_id="<c1@example.fr>"), internaldate=friday)
    imap_user.append(
        citizen_mail(2, sender="paul@example.fr", message_id="<c2@example.fr>"),
        internaldate=friday,
    )
    assert poll(config, acknowledge_existing=True) == 0
    smtp_server.wait_for(2)
    # Complete signature, sent Thursday 12 (11 November is a holiday): 3 working days.
    imap_user.append(
        agent_reply("marie.dupont@example.fr", "<c1@example.fr>", "Re: renseignements", SIGNED),
        folder="Sent",
        internaldate=datetime(2026, 11, 12, 9, 0, tzinfo=PARIS),
    )
    # Partial signature (no function, no address), sent Monday 16: 5 working days (9, 10, 12, 13, 16).
    imap_user.append(
        agent_reply(
            "paul@example.fr",
            "<c2@example.fr>",
            "Re: votre demande",
            "Cordialement,\r\nCamille Durand\r\nBureau des titres\r\n",
        ),
        folder="Sent",
        internaldate=datetime(2026, 11, 16, 9, 0, tzinfo=PARIS),
    )
    # A forward to a colleague in the same thread is not a reply to the citizen.
    imap_user.append(
        agent_reply(
            "collegue@seine-maritime.gouv.fr", "<c1@example.fr>", "Tr: renseignements", SIGNED
        ),
        folder="Sent",
        internaldate=datetime(2026, 11, 9, 9, 0, tzinfo=PARIS),
    )
    assert poll(config) == 0
    replies = db_rows(
        config, "SELECT message_pk, at, detail FROM events WHERE kind='reply' ORDER BY message_pk"
    )
    assert len(replies) == 2
    first, second = (json.loads(r[2]) for r in replies)
    assert first["signature_complete"] is True and first["missing"] == []
    assert second["signature_complete"] is False
    assert {"function", "postal_address"} <= set(second["missing"])
    figures = indicators(config)
    assert figures["answered"] == 2
    assert figures["mean_delay"] == 4.0  # (3 + 5) / 2
    assert figures["signature_completeness"] == 0.5
    assert poll(config) == 0  # a second pass records nothing new
    assert len(db_rows(config, "SELECT id FROM events WHERE kind='reply'")) == 2


def test_a_reply_to_the_citizens_from_or_reply_to_is_the_answer(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """The AR goes to the Return-Path (RFC 3834); an agent answering from Outlook writes to
    the From or the Reply-To. When a provider's envelope (SRS, BATV) differs from
    From, that answer was passed over as "not sent to the citizen": the mail stayed
    unanswered and overdue. A reply to anyone else in the thread is still no answer: a
    colleague, or a contact-form relay's own address (the citizen is its Reply-To)."""
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    friday = datetime(2026, 11, 6, 16, 0, tzinfo=PARIS)
    srs = b"Return-Path: <SRS0=x1Yz=SB=example.fr=marie.dupont@fwd.example.net>"
    imap_user.append(
        citizen_mail(1, message_id="<c1@example.fr>").replace(
            b"Return-Path: <marie.dupont@example.fr>", srs
        ),
        internaldate=friday,
    )
    batv = b"Return-Path: <prvs=0123abcd45=paul@example.fr>"  # BATV-signed envelope
    imap_user.append(
        citizen_mail(
            2,
            sender="paul@example.fr",
            subject="Votre demande de titre",
            message_id="<c2@example.fr>",
            extra="Reply-To: Paul Martin <paul.martin@example.org>",
        ).replace(b"Return-Path: <paul@example.fr>", batv),
        internaldate=friday,
    )
    form = (
        b"Return-Path: <no-reply@seine-maritime.gouv.fr>\r\n"
        b"From: Site internet <no-reply@seine-maritime.gouv.fr>\r\n"
        b"Reply-To: Lucie Bernard <lucie.bernard@example.fr>\r\n"
        b"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: [Formulaire] Horaires\r\n"
        b"Message-ID: <f3@seine-maritime.gouv.fr>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, quels sont vos horaires ?\r\n"
    )
    imap_user.append(form, internaldate=friday)
    assert poll(config, acknowledge_existing=True) == 0
    assert db_rows(config, "SELECT answer_addresses FROM messages ORDER BY id") == [
        ('["marie.dupont@example.fr"]',),
        ('["paul@example.fr", "paul.martin@example.org"]',),
        (None,),  # the relay's citizen is the sender; the relay's From is no answer
    ]
    assert sorted(r.rcpt_tos[0] for r in smtp_server.wait_for(3)) == [
        "lucie.bernard@example.fr",
        "prvs=0123abcd45=paul@example.fr",
        "srs0=x1yz=sb=example.fr=marie.dupont@fwd.example.net",
    ]
    thursday = datetime(2026, 11, 12, 9, 0, tzinfo=PARIS)  # 3 working days (11: a holiday)
    for to, mid, subject in (
        ("collegue@seine-maritime.gouv.fr", "<c1@example.fr>", "Tr: renseignements"),
        ("no-reply@seine-maritime.gouv.fr", "<f3@seine-maritime.gouv.fr>", "Re: Horaires"),
        ("Marie Dupont <marie.dupont@example.fr>", "<c1@example.fr>", "Re: renseignements"),
        ("paul.martin@example.org", "<c2@example.fr>", "Re: votre demande"),
    ):
        imap_user.append(
            agent_reply(to, mid, subject, SIGNED), folder="Sent", internaldate=thursday
        )
    assert poll(config) == 0
    answered = db_rows(
        config, "SELECT message_id FROM messages WHERE first_reply_at IS NOT NULL ORDER BY id"
    )
    assert answered == [("<c1@example.fr>",), ("<c2@example.fr>",)]
    assert len(db_rows(config, "SELECT id FROM events WHERE kind='reply'")) == 2
    figures = indicators(config)
    assert figures["answered"] == 2 and figures["mean_delay"] == 3.0


def test_relance_by_same_sender_and_similar_subject_is_counted(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.append(
        citizen_mail(
            1,
            subject="Renouvellement de mon titre de séjour",
            body="Bonjour, mon titre de séjour expire bientôt : comment le renouveler ?\n",
        )
    )
    imap_user.append(
        citizen_mail(
            2, subject="RELANCE : renouvellement titre de sejour", message_id="<x2@example.fr>"
        )
    )
    assert poll(config, acknowledge_existing=True) == 0
    smtp_server.wait_for(1)
    to_citizen = [r for r in smtp_server.messages if r.rcpt_tos == ("marie.dupont@example.fr",)]
    assert len(to_citizen) == 1  # the relance gets no second AR
    rows = db_rows(config, "SELECT decision, parent_id FROM messages ORDER BY uid")
    assert rows == [("acknowledge", None), ("follow-up", 1)]
    today = datetime.now(PARIS).date()  # the mails arrived now: count them where they fall
    assert indicators(config, str(today - timedelta(days=1)), str(today))["relances"] == 1


def test_writing_again_after_the_answer_is_a_follow_up_but_no_relance(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """A relance is the citizen writing again about mail still unanswered: thanks sent in
    reply to the agent's answer join the thread (no AR) without counting as a relance."""
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    start = datetime.now(PARIS).replace(microsecond=0) - timedelta(hours=3)
    imap_user.append(citizen_mail(1), internaldate=start)
    answer = agent_reply(
        "marie.dupont@example.fr", "<citizen-1@example.fr>", "Re: renseignements", SIGNED
    )
    imap_user.append(answer, folder="Sent", internaldate=start + timedelta(hours=1))
    assert poll(config, acknowledge_existing=True) == 0
    (reference,) = db_rows(config, "SELECT reference FROM messages WHERE uid = 1")[0]
    answer_id = next(
        line.split(b": ", 1)[1].decode()
        for line in answer.split(b"\r\n")
        if line.startswith(b"Message-ID: ")
    )
    thanks = citizen_mail(
        2,
        subject=f"Re: Demande de renseignements [{reference}]",
        message_id="<thanks@example.fr>",
        extra=f"In-Reply-To: {answer_id}",
        body="Merci pour votre réponse.\n",
    )
    imap_user.append(thanks, internaldate=start + timedelta(hours=2))
    assert poll(config) == 0
    rows = db_rows(config, "SELECT decision, parent_id, relances FROM messages ORDER BY uid")
    assert rows == [("acknowledge", None, 0), ("follow-up", 1, 0)]
    today = datetime.now(PARIS).date()
    figures = indicators(config, str(today - timedelta(days=1)), str(today))
    assert (figures["answered"], figures["relances"]) == (1, 0)
    # Yet it is mail for an agent to read (thanks, or a new question: not told apart by
    # its text): the message is flagged, and `mailbot unanswered` lists it apart from the
    # unanswered mail it does not count among.
    (flagged,) = db_rows(config, "SELECT written_again_at IS NOT NULL FROM messages WHERE uid = 1")
    assert flagged == (1,)
    listed = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), "unanswered"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "\n0 unanswered" in listed
    again = listed.split("ANSWERED, THEN WRITTEN AGAIN", 1)[1]
    assert re.search(rf"\n +\d+  {re.escape(reference)} +general ", again), listed
    assert "\n1 answered then written again" in again


def test_a_relance_read_later_is_still_a_relance(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Two mails three days apart, read weeks later (a backlog): the window of 10 working
    days is measured between their arrivals, not from today."""
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    first = datetime.now(PARIS).replace(microsecond=0) - timedelta(days=60)
    imap_user.append(
        citizen_mail(1, subject="Renouvellement de mon titre de séjour"), internaldate=first
    )
    imap_user.append(
        citizen_mail(
            2, subject="RELANCE : renouvellement titre de sejour", message_id="<x2@example.fr>"
        ),
        internaldate=first + timedelta(days=3),
    )
    assert poll(config, acknowledge_existing=True) == 0
    rows = db_rows(config, "SELECT decision, parent_id FROM messages ORDER BY uid")
    assert rows == [("acknowledge", None), ("follow-up", 1)]


def test_a_reply_in_sent_meeting_a_locked_database_is_read_again_not_passed_over(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database error while recording an agent's reply is no fault of the mail: it was
    passed over like an unreadable mail (the mark moved past it, the reply never recorded,
    the message counted overdue). Now that poll fails, and the next one records the reply."""
    import sqlalchemy.exc

    from mailbot.store.transaction import Transaction

    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.append(citizen_mail(1, message_id="<c1@example.fr>"))
    assert poll(config, acknowledge_existing=True) == 0
    answer = agent_reply("marie.dupont@example.fr", "<c1@example.fr>", "Re: Demande", SIGNED)
    imap_user.append(answer, folder="Sent")
    record_reply, calls = Transaction.record_reply, []

    def locked_once(self: Transaction, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        record_reply(self, *args, **kwargs)

    monkeypatch.setattr(Transaction, "record_reply", locked_once)
    assert poll(config) == 1  # the Sent folder's poll failed: its mark did not move
    assert db_rows(config, "SELECT count(*) FROM events WHERE kind = 'sent_unreadable'") == [(0,)]
    assert poll(config) == 0
    assert db_rows(config, "SELECT count(*) FROM events WHERE kind = 'reply'") == [(1,)]
    assert db_rows(config, "SELECT first_reply_at IS NOT NULL FROM messages") == [(1,)]


def test_backfill_records_history_and_sends_nothing(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = setup_with_sent(tmp_path, imap_user, etrangers_user, smtp_server)
    old = datetime(2026, 10, 20, 10, 0, tzinfo=PARIS)
    imap_user.append(
        citizen_mail(1, subject="Ancien message", message_id="<old0@example.fr>"),
        internaldate=datetime(2026, 9, 1, tzinfo=PARIS),
    )  # before --since
    imap_user.append(citizen_mail(2, message_id="<old1@example.fr>"), internaldate=old)
    imap_user.append(
        agent_reply("marie.dupont@example.fr", "<old1@example.fr>", "Re: renseignements", SIGNED),
        folder="Sent",
        internaldate=datetime(2026, 10, 21, 10, 0, tzinfo=PARIS),
    )
    from mailbot.cli import main

    assert main(["--config", str(config), "-q", "backfill", "--since", "2026-10-01"]) == 0
    assert smtp_server.messages == []
    assert db_rows(config, "SELECT uid, decision, ar_status FROM messages") == [
        (2, "acknowledge", "backfill")
    ]
    assert len(db_rows(config, "SELECT id FROM events WHERE kind='reply'")) == 1
    # going live afterwards: history is not acknowledged, new mail is
    imap_user.append(citizen_mail(3, sender="nouveau@example.fr"))
    assert poll(config) == 0
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [("nouveau@example.fr",)]


def test_service_reply_seen_through_the_tracking_mailbox(
    tmp_path: Path,
    dovecot: Any,
    imap_user: MailUser,
    etrangers_user: MailUser,
    smtp_server: SmtpServer,
) -> None:
    tracking = dovecot.new_user("track")
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    data = load_rules(config)
    data["tracking"] = {
        "address": "suivi-courriels@seine-maritime.gouv.fr",
        "imap": tracking.imap_config().model_dump(mode="json", exclude_none=True),
    }
    data["sender"]["tracking_address"] = "suivi-courriels@seine-maritime.gouv.fr"
    config.write_text(dump_rules(data), encoding="utf-8")
    imap_user.append(
        citizen_mail(
            1,
            subject="Carte grise",
            body="Bonjour, j'ai vendu ma voiture : comment déclarer la cession de la carte grise ?\n",
            message_id="<cg1@example.fr>",
        )
    )
    assert poll(config, acknowledge_existing=True) == 0
    forward = next(r for r in smtp_server.wait_for(2) if r.rcpt_tos[0].startswith("pref-cartes"))
    assert b"suivi-courriels@seine-maritime.gouv.fr" in forward.raw  # the note asks for the Bcc
    ((reference,),) = db_rows(config, "SELECT reference FROM messages")
    tracking.append(
        agent_reply(
            "marie.dupont@example.fr", "<cg1@example.fr>", f"Re: [{reference}] Carte grise", SIGNED
        )
    )
    assert poll(config) == 0
    (detail,) = [
        json.loads(d) for (d,) in db_rows(config, "SELECT detail FROM events WHERE kind='reply'")
    ]
    assert detail["source"] == "tracking/INBOX" and detail["signature_complete"] is True
