"""What the CLI and the web console ask of mailbot for an agent: a free reply, a transfer to
another service, a message answered elsewhere — each done once, however often it is asked.

Real Dovecot and SMTP servers (tests/servers.py); the use cases are called as the console
will call them, and through `mailbot` as the CLI does.
"""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from replying import agents_everywhere, everywhere, routed
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer, read_mail
from test_e2e import citizen_mail, db_rows, etrangers_user, poll, setup, write_config

from mailbot.app import indicators, no_reply
from mailbot.app.answered import AnsweredHow, mark_answered
from mailbot.app.context import App, build_app
from mailbot.app.reply import Draft, Replies
from mailbot.app.requests import once
from mailbot.app.transfer import Transfers
from mailbot.cli import main
from mailbot.core.clock import utcnow
from mailbot.core.dates import date_fr
from mailbot.core.indicators import arrays_from_store, compute_arrays
from mailbot.core.statuses import NoReplyReason
from mailbot.core.workdays import calendar_for
from mailbot.errors import RequestError
from mailbot.mail.forward import size_fr
from mailbot.mail.originals import ImapOriginals
from mailbot.render.variables import answer_deadline

__all__ = ["etrangers_user", "setup"]
PARIS = ZoneInfo("Europe/Paris")
CARTES_GRISES = "pref-cartes-grises@seine-maritime.gouv.fr"
FREE_TEXT = (
    "Votre dossier est complet. Il est en cours d'instruction.\r\n\r\n\r\n"
    "Vous recevrez votre titre par courrier.   \r\nRien d'autre à faire."
)


def tracked(setup: Any) -> tuple[Path, str, datetime]:
    """One citizen's mail, acknowledged: (config, its reference, its INTERNALDATE)."""
    config, general, _etrangers, smtp = setup
    received = datetime.now(PARIS) - timedelta(hours=2)
    general.append(
        citizen_mail(1, subject="Horaires", message_id="<orig-1@example.fr>"),
        internaldate=received,
    )
    assert poll(config, acknowledge_existing=True) == 0
    smtp.wait_for(1)
    smtp.clear()
    ((reference,),) = db_rows(config, "SELECT reference FROM messages")
    return config, reference, received


def parsed(raw: bytes) -> EmailMessage:
    message = read_mail(raw)
    assert isinstance(message, EmailMessage)
    return message


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# --------------------------------------------------------------------------- free reply


def test_free_reply_is_the_agents_text_signed_and_threaded(setup: Any) -> None:
    config, reference, _received = tracked(setup)
    agents_everywhere(config)
    smtp = setup[3]
    args = ["--config", str(config), "reply", reference, "--text", FREE_TEXT]
    assert main([*args, "--agent", "cdurand", "--send"]) == 0
    (sent,) = smtp.wait_for(1)
    msg = parsed(sent.raw)
    assert sent.rcpt_tos == ("marie.dupont@example.fr",)
    assert msg["In-Reply-To"] == "<orig-1@example.fr>"
    assert msg["Auto-Submitted"] is None  # an agent's answer, not an automatic one
    assert f"[{reference}]" in str(msg["Subject"])
    text = plain(msg)
    assert "Votre dossier est complet. Il est en cours d'instruction.\n\nVous recevrez" in text
    assert "par courrier.\nRien d'autre à faire." in text  # line kept, trailing spaces gone
    assert "Camille Durand" in text and "Adjointe au chef du bureau des titres" in text
    events = dict(db_rows(config, "SELECT kind, detail FROM events WHERE kind LIKE 'reply%'"))
    assert json.loads(events["reply_queued"]) == {
        "agent": "cdurand",
        "template": "reponse-libre",
        "edited": False,
    }
    assert events["reply_sent"] == msg["Message-ID"]


def test_free_reply_preview_shows_the_text_and_sends_nothing(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference, _received = tracked(setup)
    agents_everywhere(config)
    args = ["--config", str(config), "reply", reference, "--text", "Bien reçu."]
    assert main([*args, "--agent", "cdurand"]) == 0
    out = capsys.readouterr().out
    assert "To: marie.dupont@example.fr" in out and "Bien reçu." in out
    assert "preview only" in out
    assert setup[3].messages == []


def test_empty_free_reply_is_refused(setup: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config, reference, _received = tracked(setup)
    agents_everywhere(config)
    args = ["--config", str(config), "reply", reference, "--text", " \n ", "--agent", "cdurand"]
    assert main([*args, "--send"]) == 2
    assert "a free reply needs its text" in capsys.readouterr().err
    assert setup[3].messages == []


def test_reply_api_for_the_console(setup: Any) -> None:
    """Preview (subject, text, html, recipients), then send twice with one form token:
    one mail leaves."""
    config, reference, _received = tracked(setup)
    routed(config, reference, "permis")
    app = build_app(config)
    replies = Replies(app.config, app.store, app.renderer, everywhere(app))
    draft = Draft.standard("reponse-permis", {"usager_nom": "Madame Dupont"})
    preview = replies.preview("cdurand", reference, draft)
    assert preview.recipients == ("marie.dupont@example.fr",)
    assert f"[{reference}]" in preview.subject
    assert "Bonjour Madame Dupont," in preview.text and "Camille Durand" in preview.html
    first = replies.send("cdurand", reference, draft, key="form-7f3a")
    again = replies.send("cdurand", reference, draft, key="form-7f3a")
    assert not first.repeated and again.repeated and again.outbox_ids == first.outbox_ids
    app.outbox.deliver_due()
    assert len(setup[3].wait_for(1)) == 1
    assert len(db_rows(config, "SELECT id FROM outbox WHERE kind = 'reply'")) == 1
    assert len(db_rows(config, "SELECT id FROM events WHERE kind = 'reply_queued'")) == 1
    other = replies.send("cdurand", reference, draft, key="form-8b21")  # a new form: a new mail
    assert not other.repeated and other.outbox_ids != first.outbox_ids


def test_reply_by_row_id_and_unknown_message(setup: Any) -> None:
    config, reference, _received = tracked(setup)
    app = build_app(config)
    replies = Replies(app.config, app.store, app.renderer, everywhere(app))
    ((row_id,),) = db_rows(config, "SELECT id FROM messages")
    draft = Draft.free("Bien reçu.")
    assert f"[{reference}]" in replies.preview("cdurand", f"#{row_id}", draft).subject
    with pytest.raises(RequestError, match="no tracked message with a sender"):
        replies.preview("cdurand", "SM-1999-000001", draft)


# --------------------------------------------------------------------------- transfer


def test_transfer_notifies_the_citizen_and_forwards_the_original(setup: Any) -> None:
    config, reference, received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    smtp = setup[3]
    code = main(
        [
            "--config",
            str(config),
            "transfer",
            reference,
            "--service",
            "cartes-grises",
            "--agent",
            "cdurand",
            "--reason",
            "question de carte grise",
            "--send",
        ]
    )
    assert code == 0
    mails = {r.rcpt_tos[0]: r.raw for r in smtp.wait_for(2)}
    assert set(mails) == {"marie.dupont@example.fr", CARTES_GRISES}
    notice = parsed(mails["marie.dupont@example.fr"])
    assert "a été transmis" in str(notice["Subject"]) and f"[{reference}]" in str(notice["Subject"])
    assert notice["In-Reply-To"] == "<orig-1@example.fr>"
    text = " ".join(plain(notice).split())
    assert "Bureau des titres — cartes grises" in text
    deadline = answer_deadline(received)  # counted from receipt, not from the transfer
    assert f"{deadline.day} " in text and str(deadline.year) in text
    forward = parsed(mails[CARTES_GRISES])
    note = " ".join(plain(forward).split())
    assert "Motif de la transmission : question de carte grise" in note
    attached = [p for p in forward.walk() if p.get_content_type() == "message/rfc822"]
    assert attached and b"<orig-1@example.fr>" in attached[0].as_bytes()
    row = db_rows(config, "SELECT service, transferred, received_at FROM messages")
    assert row[0][:2] == ("cartes-grises", 1)
    ((detail,),) = db_rows(config, "SELECT detail FROM events WHERE kind = 'transferred'")
    assert json.loads(detail) == {
        "service": "cartes-grises",
        "from": "general",
        "agent": "cdurand",
        "reason": "question de carte grise",
    }


def test_the_transfer_notice_is_the_agents_signed_mail_not_an_automatic_one(
    setup: Any, tmp_path: Path
) -> None:
    """An agent decided the transfer: the notice says so, never « envoyé automatiquement »,
    and is signed as their replies are (CRPA L111-2: first and last name, function, the
    service's name and address, and "Cordialement,"), in the text and the HTML as the
    citizen gets them; how to add to the request (reply keeping the reference) stays. An
    agent whose signature would be incomplete cannot transfer, as they cannot reply."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config, role="head")  # khaddad transfers as a head of every service
    smtp = setup[3]
    args = ["--config", str(config), "transfer", reference, "--service", "cartes-grises"]
    assert main([*args, "--agent", "khaddad", "--reason", "carte grise", "--send"]) == 0
    mails = {r.rcpt_tos[0]: r.raw for r in smtp.wait_for(2)}
    notice = parsed(mails["marie.dupont@example.fr"])
    text = plain(notice)
    html_part = notice.get_body(("html",))
    assert html_part is not None
    html = " ".join(str(html_part.get_content()).split())
    flat = " ".join(text.split())
    for body in (flat, html):
        assert "automatiquement" not in body
        assert "envoyé par l'agent qui a transmis votre demande" in body
        assert "sans changer l'objet" in body and reference in body
        assert "Cordialement," in body
    closing, delimiter, signature = text.rpartition("\n-- \n")
    assert delimiter and "Cordialement," in closing
    assert signature.startswith(
        "Karim Haddad\nInstructeur, section du séjour\n"
        "Direction des migrations et de l'intégration\n"
        "Préfecture de la Seine-Maritime\n7 place de la Madeleine, 76036 Rouen Cedex\n"
        "Téléphone : 02 32 76 50 00\nCourriel : karim.haddad@seine-maritime.gouv.fr\n"
    )
    assert (
        ">Karim Haddad</strong><br> Instructeur, section du séjour<br>"
        " Direction des migrations et de l'intégration<br>"
    ) in html

    agents = tmp_path / "agents.yaml"
    incomplete = {"first_name": "Jean", "last_name": "Petit", "service": "general"}
    # A head of the service the mail is in now: one who may transfer it.
    incomplete |= {"role": "head", "services": ["cartes-grises"]}
    agents.write_text(yaml.safe_dump({"agents": {"jpetit": incomplete}}), encoding="utf-8")
    data = load_rules(config)
    data["agents"] = str(agents)
    config.write_text(dump_rules(data), encoding="utf-8")
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    with pytest.raises(RequestError, match=r"agent\.function") as refused:
        transfers.preview("jpetit", reference, "permis", "permis de conduire")
    assert "votre signature est incomplète" in (refused.value.shown or "")
    with pytest.raises(RequestError, match=r"agent\.function"):
        transfers.transfer("jpetit", reference, "permis", "permis de conduire")
    assert len(db_rows(config, "SELECT id FROM events WHERE kind = 'transferred'")) == 1


def test_an_agents_transfer_of_a_huge_mail_forwards_its_header_and_says_so(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """An agent transfers a mail above ``max_message_bytes``: read again from IMAP, only
    its start comes (``ImapOriginals``), so the service gets its header and a note with
    the real size and the console's link, never the cut bytes as the mail."""
    config = write_config(
        tmp_path,
        imap_user,
        etrangers_user,
        smtp_server,
        polling={"max_message_bytes": 100_000},
        web={"public_url": "https://mailbot.seine-maritime.gouv.fr"},
    )
    original = citizen_mail(1, subject="Horaires", body="Bonjour,\n" + "scan " * 400_000)
    imap_user.append(original)
    assert poll(config, acknowledge_existing=True) == 0
    smtp_server.wait_for(1)
    smtp_server.clear()
    ((reference, size),) = db_rows(config, "SELECT reference, size FROM messages")
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    transfers.transfer("cdurand", reference, "cartes-grises", "question de carte grise")
    app.outbox.deliver_due()
    mails = {r.rcpt_tos[0]: r.raw for r in smtp_server.wait_for(2)}
    forward = parsed(mails[CARTES_GRISES])
    assert [p.get_content_type() for p in forward.iter_parts()] == [
        "text/plain",
        "text/rfc822-headers",
    ]
    assert b"scan scan" not in mails[CARTES_GRISES]
    note = " ".join(plain(forward).split())
    assert "Motif de la transmission : question de carte grise" in note
    assert f"ce message ({size_fr(size)}) est trop volumineux" in note
    assert f"https://mailbot.seine-maritime.gouv.fr/courriel/{reference}" in note
    assert "a été transmis" in str(parsed(mails["marie.dupont@example.fr"])["Subject"])


def test_transfer_is_refused_without_reason_or_to_the_same_service(setup: Any) -> None:
    config, reference, _received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    with pytest.raises(RequestError, match="say why"):
        transfers.transfer("cdurand", reference, "cartes-grises", "  ")
    with pytest.raises(RequestError, match="already this service's"):
        transfers.transfer("cdurand", reference, "general", "erreur")
    with pytest.raises(RequestError, match="no such service"):
        transfers.transfer("cdurand", reference, "nulle-part", "erreur")
    assert db_rows(config, "SELECT id FROM outbox WHERE kind != 'ar'") == []


def test_correct_to_another_service_transfers_only_when_asked(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot correct --transfer``: the console's « Corriger » to another service — the
    notice to the sender and the forward to the service's configured address, once, with
    the correction recorded. Without ``--transfer`` the mail moves queue and the output
    says that nobody was told; a message closed without a reply is not transferred."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    smtp = setup[3]
    args = ["--config", str(config), "correct", reference, "--category", "information"]
    assert main([*args, "--service", "permis"]) == 0
    out = capsys.readouterr().out
    assert "nothing was sent" in out and "the citizen was not told" in out
    assert main([*args, "--service", "cartes-grises", "--agent", "cdurand", "--transfer"]) == 0
    assert "transferred to cartes-grises" in capsys.readouterr().out
    assert sorted(to for r in smtp.wait_for(2) for to in r.rcpt_tos) == [
        "marie.dupont@example.fr",
        CARTES_GRISES,
    ]
    again = [*args, "--service", "cartes-grises", "--agent", "cdurand", "--transfer"]
    assert main(again) == 0  # already there: recorded, nothing sent again
    assert "nothing sent" in capsys.readouterr().out
    app = build_app(config)
    app.outbox.deliver_due()
    assert len(smtp.messages) == 2
    forward = parsed(next(r.raw for r in smtp.messages if r.rcpt_tos[0] == CARTES_GRISES))
    assert "correction de l'orientation" in " ".join(plain(forward).split())
    assert db_rows(config, "SELECT service, category, transferred FROM messages") == [
        ("cartes-grises", "information", 1)
    ]
    assert len(db_rows(config, "SELECT id FROM corrections")) == 3
    no_reply.close_without_reply(
        app.config, app.store, app.agent, "cdurand", reference, NoReplyReason.SPAM, ""
    )
    assert main([*args, "--service", "permis", "--agent", "cdurand", "--transfer"]) == 2
    assert "closed without a reply: nothing to transfer" in capsys.readouterr().err
    assert main([*args, "--service", "permis", "--transfer"]) == 2  # who, for the note?
    assert "--agent" in capsys.readouterr().err
    assert main([*args, "--service", "cartes-grises", "--agent", "nobody", "--transfer"]) == 2
    assert "agents.nobody: no such agent" in capsys.readouterr().err
    assert main([*args, "--service", "permis", "--reason", "erreur"]) == 2
    assert "--reason goes with --transfer only" in capsys.readouterr().err
    assert len(db_rows(config, "SELECT id FROM corrections")) == 3
    app.outbox.deliver_due()
    assert len(smtp.messages) == 2


def test_transfer_twice_with_one_key_sends_once(setup: Any) -> None:
    config, reference, _received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    preview = transfers.preview("cdurand", reference, "permis", "permis de conduire")
    assert preview.forward_to == ("pref-permis@seine-maritime.gouv.fr",)
    assert preview.notice.recipients == ("marie.dupont@example.fr",)
    first = transfers.transfer("cdurand", reference, "permis", "permis de conduire", key="k1")
    again = transfers.transfer("cdurand", reference, "permis", "permis de conduire", key="k1")
    assert again.repeated and again.outbox_ids == first.outbox_ids
    app.outbox.deliver_due()
    assert len(setup[3].wait_for(2)) == 2
    assert len(db_rows(config, "SELECT id FROM events WHERE kind = 'transferred'")) == 1


def notice_share(app: App, day: date) -> float | None:
    """``transfer_notice_share`` of ``day``, from the daily buckets and from the facts:
    both computations must give the same figure."""
    calendar = calendar_for(app.config.timezone)
    buckets = indicators.figures(app.config, app.store, day, day, day)
    since, until = indicators.period_bounds(calendar, day, day)
    columns = app.store.indicator_arrays(since, until, app.config.complaint_category)
    facts = compute_arrays(arrays_from_store(columns, calendar), day, calendar)
    assert buckets.transfer_notice_share == facts.transfer_notice_share
    return buckets.transfer_notice_share


@pytest.mark.parametrize("delivered", [True, False])
def test_an_agents_transfer_is_announced_once_its_notice_is_sent(
    setup: Any, delivered: bool
) -> None:
    """The AR said nothing of a transfer made later in the console: the citizen hears of it
    by the notice alone. Queued, or refused by the server, it announced nothing."""
    config, reference, received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    smtp = setup[3]
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    transfers.transfer("cdurand", reference, "permis", "permis de conduire")
    day = received.astimezone(PARIS).date()
    assert notice_share(app, day) == 0.0  # the notice is still in the queue
    if not delivered:
        smtp.refused.add("marie.dupont@example.fr")
    app.outbox.deliver_due()
    smtp.wait_for(1 + delivered)
    ((status,),) = db_rows(config, "SELECT status FROM outbox WHERE kind = 'notice'")
    assert status == ("sent" if delivered else "failed")
    assert notice_share(app, day) == (1.0 if delivered else 0.0)


@pytest.mark.parametrize("latest_sent", [True, False])
def test_transferred_twice_the_latest_notice_says_whether_the_transfer_is_announced(
    setup: Any, latest_sent: bool
) -> None:
    """Transferred by agents to a service, then to another, the message is the second's: the
    citizen was told who handles it now by the second notice alone. The message's notice
    status is that notice's, whatever order the deliveries settle the two in: here the
    first notice is deferred, the second settled, then the first settled the other way,
    last. Before, the last write won: the first notice's."""
    config, general, etrangers, smtp = setup
    # The deferred notice is retried only when the test says so (``now`` below).
    outbox = {"retry_base_seconds": 3600, "retry_max_seconds": 3600}
    write_config(config.parent, general, etrangers, smtp, outbox=outbox)
    config, reference, received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    transfers.transfer("cdurand", reference, "permis", "permis de conduire")
    smtp.fail_next(1)  # the first notice: 451, deferred; its forward leaves
    app.outbox.deliver_due()
    smtp.wait_for(1)
    transfers.transfer("cdurand", reference, "cartes-grises", "une carte grise, en fait")
    if not latest_sent:
        smtp.reject_next(1)  # the second notice: 550, failed
    app.outbox.deliver_due()
    smtp.wait_for(2 + latest_sent)
    if latest_sent:
        smtp.reject_next(1)  # the first notice, retried: 550, failed
    app.outbox.deliver_due(now=utcnow() + timedelta(hours=2))
    smtp.wait_for(3)
    notices = db_rows(config, "SELECT status FROM outbox WHERE kind = 'notice' ORDER BY id")
    first, latest = ("failed", "sent") if latest_sent else ("sent", "failed")
    assert notices == [(first,), (latest,)]
    assert db_rows(config, "SELECT service, notice_status FROM messages") == [
        ("cartes-grises", latest)
    ]
    day = received.astimezone(PARIS).date()
    assert notice_share(app, day) == (1.0 if latest_sent else 0.0)


def test_transfer_notice_of_an_overdue_message_says_the_deadline_has_passed(setup: Any) -> None:
    """The notice is written on the day of the transfer (the ``clock``): until the deadline's
    day included it promises that day; after it, it says the 5 working days have passed and
    the service answers as soon as possible — never a date gone by (B6)."""
    config, reference, received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand transfers as a head of every service
    app = build_app(config)
    deadline = answer_deadline(received, app.config.timezone)
    promised = date_fr(deadline, style="date")

    def notice_on(moment: datetime) -> str:
        transfers = Transfers(
            app.config,
            app.store,
            app.renderer,
            app.agent,
            ImapOriginals(app.config),
            clock=lambda: moment,
        )
        preview = transfers.preview("cdurand", reference, "permis", "permis de conduire")
        return " ".join(preview.notice.text.split())

    last_day = datetime.combine(deadline, datetime.max.time().replace(microsecond=0), PARIS)
    for moment in (received, last_day):
        text = notice_on(moment)
        assert f"au plus tard le {promised}." in text and "est dépassé" not in text
    late = notice_on(last_day + timedelta(seconds=1))
    assert "au plus tard" not in late
    assert "Le délai de réponse de 5 jours ouvrés, qui court à partir de la réception" in late
    assert "est dépassé : ce service vous répondra dans les meilleurs délais" in late
    assert db_rows(config, "SELECT id FROM outbox WHERE kind != 'ar'") == []


def test_a_transfer_of_a_message_answered_meanwhile_is_refused(
    setup: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A colleague answers between the transfer's checks and its writing: refused in the
    transaction that would record it, nothing queued (the citizen would get « c'est ce
    service qui vous répondra » after the answer); `mailbot transfer` refuses it then."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config, role="head")  # cdurand answers and transfers general's mail
    app = build_app(config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, ImapOriginals(app.config))
    checked = Transfers._check

    def answered_meanwhile(self: Transfers, *args: Any) -> tuple[str, dict[str, object]]:
        agent = checked(self, *args)
        how = AnsweredHow.PHONE
        mark_answered(app.config, app.store, app.agent, "cdurand", reference, how, "rappelée")
        return agent

    monkeypatch.setattr(Transfers, "_check", answered_meanwhile)
    with pytest.raises(RequestError, match="already answered: nothing to transfer"):
        transfers.transfer("cdurand", reference, "cartes-grises", "carte grise", key="t1")
    monkeypatch.undo()
    args = ["--config", str(config), "transfer", reference, "--service", "cartes-grises"]
    assert main([*args, "--agent", "cdurand", "--reason", "carte grise", "--send"]) == 2
    assert "already answered: nothing to transfer" in capsys.readouterr().err
    assert db_rows(config, "SELECT id FROM outbox WHERE kind != 'ar'") == []
    assert db_rows(config, "SELECT transferred FROM messages") == [(0,)]
    assert db_rows(config, "SELECT id FROM events WHERE kind = 'transferred'") == []
    assert setup[3].messages == []


# --------------------------------------------------------------------------- answered elsewhere


def test_answered_by_phone_counts_as_the_reply_at_that_time(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, reference, received = tracked(setup)
    agents_everywhere(config)  # cdurand may answer the general service's mail too
    at = received + timedelta(hours=1)
    args = ["--config", str(config), "answered", reference, "--agent", "cdurand"]
    args += ["--how", "phone", "--reason", "horaires donnés", "--at", at.isoformat()]
    assert main(args) == 0
    assert "counts as its reply" in capsys.readouterr().out
    ((first_reply_at, complete),) = db_rows(
        config, "SELECT first_reply_at, first_reply_complete FROM messages"
    )
    assert datetime.fromisoformat(first_reply_at).replace(tzinfo=ZoneInfo("UTC")) == at
    assert complete is None  # nothing to check: no signature on a phone call
    ((detail,),) = db_rows(config, "SELECT detail FROM events WHERE kind = 'answered_elsewhere'")
    assert json.loads(detail) == {"how": "phone", "agent": "cdurand", "reason": "horaires donnés"}
    assert setup[3].messages == []  # nothing is sent


def test_answered_elsewhere_is_checked_and_done_once(setup: Any) -> None:
    config, reference, received = tracked(setup)
    agents_everywhere(config)  # cdurand may answer the general service's mail too
    app: App = build_app(config)

    def answer(**changes: Any) -> Any:
        values: dict[str, Any] = {"how": AnsweredHow.COUNTER, "reason": "vu au guichet"}
        values |= changes
        return mark_answered(app.config, app.store, app.agent, "cdurand", reference, **values)

    with pytest.raises(RequestError, match="between the message's receipt and now"):
        answer(at=received - timedelta(days=1))
    with pytest.raises(RequestError, match="say how"):
        answer(reason="")
    first = answer(key="t1")
    again = answer(key="t1")
    assert first.first and not first.repeated and again.repeated
    assert len(db_rows(config, "SELECT id FROM events WHERE kind = 'answered_elsewhere'")) == 1


# --------------------------------------------------------------------------- two tabs at once


def test_one_key_from_two_tabs_at_the_same_moment_queues_one_mail(setup: Any) -> None:
    """Two requests with one key, the second arriving while the first is still in its
    transaction: the second waits, then returns the first one's result."""
    config, _reference, _received = tracked(setup)
    app = build_app(config)
    started = threading.Event()
    results: list[tuple[int, bool]] = []

    def work(tx: Any) -> int:
        started.set()
        threading.Event().wait(0.5)  # still in the transaction when the other tab comes
        return int(tx.enqueue(None, "digest", CARTES_GRISES, "", "<x@mailbot.test>", b"x"))

    def tab() -> None:
        results.append(once(app.store, "test", "form-1", work, agent="cdurand"))

    first = threading.Thread(target=tab)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=tab)
    second.start()
    first.join(15)
    second.join(15)
    assert sorted(repeated for _id, repeated in results) == [False, True]
    assert len({outbox_id for outbox_id, _repeated in results}) == 1
    assert len(db_rows(config, "SELECT id FROM outbox WHERE kind = 'digest'")) == 1


def test_a_message_whose_reply_is_on_its_way_cannot_be_closed_without_reply(
    setup: Any,
) -> None:
    """A reply queued (not yet sent) answers the message: « aucune réponse nécessaire » is
    refused then, and once the reply has left; the message is never closed."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config)  # cdurand may answer the general service's mail too
    app = build_app(config)
    replies = Replies(app.config, app.store, app.renderer, everywhere(app))
    replies.send("cdurand", reference, Draft.free("Bien reçu."), key="form-1")

    def close() -> None:
        no_reply.close_without_reply(
            app.config, app.store, app.agent, "cdurand", reference, NoReplyReason.SPAM, ""
        )

    with pytest.raises(RequestError, match="a reply is on its way"):
        close()
    app.outbox.deliver_due()
    assert len(setup[3].wait_for(1)) == 1
    with pytest.raises(RequestError, match="already answered"):
        close()
    assert db_rows(config, "SELECT no_reply FROM messages") == [(None,)]


def test_reopen_on_the_command_line_undoes_a_closing_made_by_mistake(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot reopen REF``: the console's « Rouvrir » (``no_reply.reopen``) for an IT
    team without the console; its refusals are the use case's, in English."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config)  # cdurand may answer the general service's mail too
    args = ["--config", str(config), "reopen", reference, "--agent", "cdurand"]
    assert main(args) == 2
    assert "not closed without a reply: nothing to reopen" in capsys.readouterr().err
    app = build_app(config)
    no_reply.close_without_reply(
        app.config, app.store, app.agent, "cdurand", reference, NoReplyReason.SPAM, ""
    )
    assert main([*args, "--reason", "pas un spam"]) == 0
    out = capsys.readouterr().out
    assert f"{reference}: reopened (it was closed as spam)" in out
    assert db_rows(config, "SELECT no_reply FROM messages") == [(None,)]
    ((detail,),) = db_rows(config, "SELECT detail FROM events WHERE kind = 'reopened'")
    said = json.loads(detail)
    assert (said["agent"], said["by"], said["reason"]) == ("cdurand", "agent", "pas un spam")
    assert main(args) == 2  # open again: nothing to reopen
    assert "nothing to reopen" in capsys.readouterr().err
    assert main([*args[:-1], "nobody"]) == 2  # an agent agents.yaml does not know
    assert capsys.readouterr().err.startswith("error:")
    assert setup[3].messages == []  # nothing is sent


def test_reply_cli_gives_a_list_variable_one_item_per_line(
    setup: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """« demande-precisions » from the command line: ``--var`` gives text, the template
    wants a list (« variable 'elements_manquants' must be a list, got str »): its lines
    are the items."""
    config, reference, _received = tracked(setup)
    agents_everywhere(config)
    missing = "elements_manquants=Le numéro de votre dossier.\n\nLa démarche concernée."
    args = ["--config", str(config), "reply", reference, "--template", "demande-precisions"]
    assert main([*args, "--var", missing, "--agent", "cdurand"]) == 0
    out = capsys.readouterr().out
    assert "\n- Le numéro de votre dossier.\n- La démarche concernée.\n" in out
    assert setup[3].messages == []
