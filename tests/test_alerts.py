"""The daily deadline digest: each service gets its late, soon-due and relanced messages,
and the answered ones the citizen wrote about again (unread)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from rulesfile import dump_rules, load_rules
from servers import SmtpServer, read_mail

from mailbot.cli import main
from mailbot.core.digests import bounce_window, digests
from mailbot.core.incoming import PassedOver
from mailbot.core.workdays import WorkingCalendar
from mailbot.store import NewMessage, Store, Transaction

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 11, 25)  # a Wednesday


def message(n: int, day: int, service: str, *, answered: bool = False, relances: int = 0):  # type: ignore[no-untyped-def]
    return n, datetime(2026, 11, day, 10, tzinfo=PARIS), service, answered, relances


ROWS = [
    message(1, 16, "permis"),  # 7 working days: overdue
    message(2, 19, "permis"),  # 4: soon due
    message(3, 20, "permis", answered=True),  # answered: nothing
    message(4, 24, "permis", relances=1),  # 1, but relanced
    message(5, 24, "permis"),  # 1: nothing yet
    message(6, 20, "cartes-grises"),  # 3: soon due
    message(7, 23, "cni-passeport"),  # 2: nothing -> no digest for that service
]


def citizen_row(
    n: int, received: datetime, service: str | None, decision: str = "acknowledge"
) -> NewMessage:
    """Citizen's mail number ``n``: acknowledged (reference SM-<year>-n) or quarantined."""
    acknowledged = decision == "acknowledge"
    return NewMessage(
        mailbox="general",
        folder="INBOX",
        uidvalidity=1,
        uid=n,
        message_id=f"<m{n}@x>",
        content_hash=f"h{n}",
        received_at=received,
        sender=f"u{n}@example.fr",
        subject=f"Sujet {n}",
        in_reply_to=None,
        decision=decision,
        reasons=["citizen-mail"] if acknowledged else ["error:boom"],
        size=1,
        defects=[],
        reference=f"SM-{received.year}-{n:06d}" if acknowledged else None,
        ar_status="sent" if acknowledged else "none",
        service=service,
        category="information",
    )


def fill(store: Store) -> None:
    with store.transaction() as tx:
        for n, received, service, answered, relances in ROWS:
            pk = tx.insert_message(citizen_row(n, received, service))
            if answered:
                tx.record_reply(pk, received, True, "<r@x>", "reply_sent")
            for r in range(relances):
                tx.insert_message(
                    NewMessage(
                        mailbox="general",
                        folder="INBOX",
                        uidvalidity=1,
                        uid=100 + n + r,
                        message_id=f"<f{n}{r}@x>",
                        content_hash=f"f{n}{r}",
                        received_at=received,
                        sender=f"u{n}@example.fr",
                        subject=f"Re: Sujet {n}",
                        in_reply_to=None,
                        decision="follow-up",
                        reasons=["follow-up"],
                        size=1,
                        defects=[],
                        parent_id=pk,
                    )
                )
                tx.count_relance(pk, received)  # as the intake does for a follow-up


def sending_config(
    tmp_path: Path, smtp_server: SmtpServer, permis_addresses: list[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """rules.yaml with a database of the test's own, sending to ``smtp_server``; the permis
    service's addresses replaced when given. The file and its data."""
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'a.db'}"
    data["smtp"] = smtp_server.smtp_config().model_dump(mode="json", exclude_none=True)
    data["templates"] = str(ROOT / "templates")
    if permis_addresses is not None:
        data["services"]["permis"]["addresses"] = permis_addresses
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data), encoding="utf-8")
    return config, data


def follow_up(tx: Transaction, parent: int, n: int, received: datetime) -> None:
    """The citizen's mail number ``n`` about the message ``parent``, recorded as the intake
    records a follow-up: a relance while unanswered; after the answer, no relance, but the
    message written about again (``written_again_at``) until an agent reads it."""
    tx.insert_message(
        NewMessage(
            mailbox="general",
            folder="INBOX",
            uidvalidity=1,
            uid=n,
            message_id=f"<w{n}@x>",
            content_hash=f"w{n}",
            received_at=received,
            sender="u@example.fr",
            subject="Re: pièces",
            in_reply_to=None,
            decision="follow-up",
            reasons=["follow-up"],
            size=1,
            defects=[],
            parent_id=parent,
        )
    )
    tx.count_relance(parent, received)
    if not tx.reopen_closed(parent):
        tx.mark_written_again(parent, received)


def written_again(store: Store, n: int, service: str, again: datetime) -> None:
    """Message ``n`` of ``service``, received and answered on 2026-11-16, then written about
    again by the citizen at ``again``."""
    received = datetime(2026, 11, 16, 10, tzinfo=PARIS)
    with store.transaction() as tx:
        pk = tx.insert_message(citizen_row(n, received, service))
        tx.record_reply(pk, received + timedelta(hours=2), True, "<r@x>", "reply_sent")
        follow_up(tx, pk, 300 + n, again)


def test_messages_written_about_again_after_their_answer_are_in_their_services_digest(
    tmp_path: Path,
) -> None:
    """Answered, then written about again (the console's « Nouveau message de l'usager »):
    in no deadline section (the answer counts), but listed apart, aged from the new mail, in
    their service's digest; a service with nothing else gets a digest for them. The mail
    written after the digest's day is not in it; read by an agent, it leaves the digest."""
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    fill(store)
    written_again(store, 31, "permis", datetime(2026, 11, 23, 18, tzinfo=PARIS))
    written_again(store, 32, "cni-passeport", datetime(2026, 11, 24, 9, tzinfo=PARIS))
    written_again(store, 33, "cartes-grises", datetime(2026, 11, 26, 9, tzinfo=PARIS))
    until = datetime(2026, 11, 26, tzinfo=PARIS)
    rows = store.open_rows(until)
    again = store.written_again_rows(until=until)
    assert [r["reference"] for r in again] == ["SM-2026-000031", "SM-2026-000032"]
    own = {"general": "general"}
    found = digests(rows, TODAY, WorkingCalendar(), own, "general", (), again)
    assert set(found) == {"permis", "cartes-grises", "cni-passeport"}
    assert found["permis"].written_again == [
        {"reference": "SM-2026-000031", "subject": "Sujet 31", "age": 2, "mailbox": "general"}
    ]
    assert found["permis"].entries == 4  # overdue, soon, relanced, and this one
    cni = found["cni-passeport"]
    assert [e["reference"] for e in cni.written_again] == ["SM-2026-000032"]
    assert cni.entries == 1 and not (cni.overdue or cni.soon or cni.relanced)
    assert cni.written_again[0]["age"] == 1
    assert not found["cartes-grises"].written_again  # written on the 26th: tomorrow's
    with store.transaction() as tx:
        assert tx.clear_written_again(again[1]["id"])  # « Marquer comme lu »
    later = store.written_again_rows(until=until)
    assert "cni-passeport" not in digests(
        store.open_rows(until), TODAY, WorkingCalendar(), own, "general", (), later
    )


def test_the_unanswered_list_as_of_a_day_leaves_out_mail_written_again_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailbot unanswered --as-of DAY` lists the mail as it stood that day: a message the
    citizen wrote about again only after it is not « written again » yet (aged from a new
    mail still to come), as the alerts of that day leave it out."""
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'a.db'}"
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data), encoding="utf-8")
    store = Store(data["database"])
    written_again(store, 31, "permis", datetime(2026, 11, 23, 18, tzinfo=PARIS))
    written_again(store, 33, "permis", datetime(2026, 11, 26, 9, tzinfo=PARIS))
    assert main(["--config", str(config), "unanswered", "--as-of", TODAY.isoformat()]) == 0
    again = capsys.readouterr().out.split("ANSWERED, THEN WRITTEN AGAIN", 1)[1]
    lines = [line.split() for line in again.splitlines() if re.search(r" SM-\d{4}-\d{6} ", line)]
    assert [(int(line[0]), line[1]) for line in lines] == [(2, "SM-2026-000031")]
    assert "\n1 answered then written again" in again


def test_digest_lists_the_right_messages(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    fill(store)
    rows = store.indicator_rows(
        datetime(2026, 8, 1, tzinfo=PARIS), datetime(2026, 11, 26, tzinfo=PARIS)
    )
    found = digests(rows, TODAY, WorkingCalendar(), {"general": "general"})
    assert set(found) == {"permis", "cartes-grises"}
    permis = found["permis"]
    assert [e["reference"] for e in permis.overdue] == ["SM-2026-000001"]
    assert [e["reference"] for e in permis.soon] == ["SM-2026-000002"]
    assert [e["reference"] for e in permis.relanced] == ["SM-2026-000004"]
    assert permis.overdue[0]["age"] == 7 and permis.relanced[0]["relances"] == 1
    assert [e["reference"] for e in found["cartes-grises"].soon] == ["SM-2026-000006"]


def test_a_mail_passed_over_goes_to_its_mailbox_service_or_the_general_one() -> None:
    """A mail passed over has no service, only a mailbox: its mailbox's service has it, as
    a quarantined row; a mailbox no longer configured, the general service. Its age counts
    from the day it was passed over, in working days."""
    passed = [
        PassedOver(7, datetime(2026, 11, 20, 9, tzinfo=PARIS), "etrangers", "INBOX", 1, 31, "x"),
        PassedOver(9, datetime(2026, 11, 24, 9, tzinfo=PARIS), "ancienne", "INBOX", 1, 2, "y"),
        PassedOver(8, datetime(2026, 11, 24, 9, tzinfo=PARIS), "", "", 0, 0, "z" * 200),
    ]
    own = {"general": "general", "etrangers": "etrangers"}
    found = digests([], TODAY, WorkingCalendar(), own, "general", passed)
    assert set(found) == {"etrangers", "general"}
    (entry,) = found["etrangers"].passed_over
    assert entry == {
        "reference": "P7",
        "mailbox": "etrangers",
        "folder": "INBOX",
        "uid": 31,
        "day": "20/11/2026",
        "age": 3,
        "why": "x",
    }
    assert found["etrangers"].entries == 1 and not found["etrangers"].unacknowledged
    general = found["general"].passed_over
    assert [(e["reference"], e["mailbox"], e["uid"]) for e in general] == [
        ("P8", "?", "?"),
        ("P9", "ancienne", 2),
    ]
    assert len(general[0]["why"]) == 80 and general[0]["why"].endswith("…")


def test_alerts_command_sends_one_digest_per_service(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    config, data = sending_config(tmp_path, smtp_server)
    fill(Store(data["database"]))

    assert main(["--config", str(config), "alerts", "--date", "2026-11-28"]) == 0  # Saturday
    assert smtp_server.messages == []
    assert main(["--config", str(config), "alerts", "--date", TODAY.isoformat()]) == 0
    received = smtp_server.wait_for(2)
    assert len(received) == 2
    by_rcpt = {r.rcpt_tos[0]: r for r in received}
    assert set(by_rcpt) == {
        "pref-permis@seine-maritime.gouv.fr",
        "pref-cartes-grises@seine-maritime.gouv.fr",
    }
    digest = read_mail(by_rcpt["pref-permis@seine-maritime.gouv.fr"].raw)
    assert str(digest["Subject"]).startswith("Délais de réponse : 1 en retard, 1 à traiter")
    text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "[SM-2026-000001] Sujet 1" in text and "7 jours ouvrés" in text
    assert "[SM-2026-000002]" in text and "[SM-2026-000004]" in text
    assert "SM-2026-000003" not in text and "SM-2026-000005" not in text
    assert "@example.fr" not in text  # no citizen addresses in digests
    # The service with its article (« du Bureau », never « de Bureau »), in both parts.
    said = "Voici les messages du Bureau des titres — permis de conduire à traiter"
    assert said in " ".join(text.split())
    page = digest.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert said in " ".join(re.sub("<[^>]+>", "", page).split())


def test_a_digest_for_a_service_without_an_address_is_said_not_sent(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service with late mail but no address in rules.yaml gets no digest: the command
    says so, naming the service and the key to set, and fails — "nothing to send" would
    tell IT that no mail is late."""
    config, data = sending_config(tmp_path, smtp_server, permis_addresses=[])
    fill(Store(data["database"]))
    assert main(["--config", str(config), "alerts", "--date", TODAY.isoformat()]) == 1
    out = capsys.readouterr().out
    assert "cartes-grises: digest of 1 message(s) queued" in out
    assert (
        f"permis: digest of 3 message(s) NOT sent: the service has no address"
        f" (services.permis.addresses in {config})"
    ) in out
    assert "nothing to send" not in out
    assert [list(r.rcpt_tos) for r in smtp_server.wait_for(1)] == [
        ["pref-cartes-grises@seine-maritime.gouv.fr"]
    ]


def test_alerts_command_says_a_digest_the_smtp_server_deferred_was_not_sent(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """IT runs `mailbot alerts` by hand while the relay defers (4xx): the digests are
    queued, not sent, and the command must not say "sent"; exit 1, as a `reply --send`
    that did not leave at once (README, exit codes). The worker sends them later."""
    config, data = sending_config(tmp_path, smtp_server)
    fill(Store(data["database"]))
    smtp_server.fail_next(2, 451)

    code = main(["--config", str(config), "-q", "alerts", "--date", TODAY.isoformat()])

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == [
        "permis: digest of 3 message(s) queued",
        "cartes-grises: digest of 1 message(s) queued",
        "sent: 0, deferred: 2, failed: 0",
    ]
    assert smtp_server.messages == []


def test_a_service_with_only_mail_written_again_gets_its_digest(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot alerts`` on real SMTP: a service whose one message to act on was answered,
    then written about again, gets a digest that lists it in its own section; once an
    agent has read it, nothing is sent, and the command says why in words that hold."""
    config, data = sending_config(tmp_path, smtp_server)
    store = Store(data["database"])
    written_again(store, 32, "cni-passeport", datetime(2026, 11, 24, 9, tzinfo=PARIS))

    assert main(["--config", str(config), "alerts", "--date", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "cni-passeport: digest of 1 message(s) queued",
        "sent: 1, deferred: 0, failed: 0",
    ]
    (sent,) = smtp_server.wait_for(1)
    assert sent.rcpt_tos == ("pref-cni-passeport@seine-maritime.gouv.fr",)
    digest = read_mail(sent.raw)
    assert "1 nouveau message d'usager" in str(digest["Subject"])
    text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    section = text.split("NOUVEAU MESSAGE DE L'USAGER APRÈS LA RÉPONSE\n", 1)[1]
    assert section.startswith("\n- [SM-2026-000032] Sujet 32\n  1 jour ouvré depuis le nouveau")
    assert "EN RETARD" not in text and "À TRAITER" not in text and "RELANCÉS" not in text
    html = digest.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Nouveau message de l'usager après la réponse" in html and "SM-2026-000032" in html
    assert "@example.fr" not in text + html  # no citizen addresses in digests

    smtp_server.clear()
    with store.transaction() as tx:
        ((pk,),) = tx.conn.execute(sa.text("SELECT id FROM messages WHERE reference IS NOT NULL"))
        assert tx.clear_written_again(pk)  # an agent read it: « Marquer comme lu »
    assert main(["--config", str(config), "alerts", "--date", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nothing to send (") and "written about again" in out
    assert smtp_server.messages == []


def bounced_row(n: int, service: str | None, mail: str, at: datetime) -> dict[str, Any]:
    """Message ``n`` whose ``mail`` (« accusé de réception »...) bounced at ``at``: as
    ``app/bounces.bounced_between`` gives it to the digests."""
    return {
        "id": n,
        "reference": f"SM-2026-{n:06d}",
        "subject": f"Sujet {n}",
        "mailbox": "etrangers" if service is None else "general",
        "service": service,
        "mail": mail,
        "reason": "adresse inconnue (5.1.1)",
        "bounced_at": at,
    }


def test_bounces_since_the_previous_working_days_digest_go_to_their_services_digest() -> None:
    """Our mail to a citizen that bounced since the previous working day's digest is listed
    in its service's digest (once per message: the last bounce), with which mail, the day
    and why in short; a service with nothing else gets a digest. A day's window runs from
    the previous working day's digest to its own: each bounce is told once."""
    calendar = WorkingCalendar()
    since, until = bounce_window(TODAY, calendar, time(8, 30))
    assert (since, until) == (
        datetime(2026, 11, 24, 8, 30, tzinfo=PARIS),
        datetime(2026, 11, 25, 8, 30, tzinfo=PARIS),
    )
    monday = bounce_window(date(2026, 11, 30), calendar, time(8, 30))
    assert monday[0] == datetime(2026, 11, 27, 8, 30, tzinfo=PARIS)  # from Friday's
    at = datetime(2026, 11, 24, 15, tzinfo=PARIS)
    bounced = [
        bounced_row(41, "permis", "accusé de réception", at),
        bounced_row(41, "permis", "réponse", at + timedelta(hours=1)),
        bounced_row(42, "cni-passeport", "avis de transfert", at),
        bounced_row(43, None, "réponse", at - timedelta(days=1)),
    ]
    own = {"general": "general", "etrangers": "etrangers"}
    found = digests([], TODAY, WorkingCalendar(), own, "general", (), (), bounced)
    assert set(found) == {"permis", "cni-passeport", "etrangers"}
    assert found["permis"].bounced == [
        {
            "reference": "SM-2026-000041",
            "subject": "Sujet 41",
            "mail": "réponse",
            "day": "24/11/2026",
            "reason": "adresse inconnue (5.1.1)",
            "mailbox": "general",
        }
    ]
    assert found["permis"].entries == 1 and found["cni-passeport"].entries == 1
    assert found["etrangers"].bounced[0]["day"] == "23/11/2026"


def bounce(store: Store, n: int, service: str, mail: str, at: datetime) -> None:
    """Message ``n`` of ``service``, received and answered on 2026-11-16, whose ``mail``
    (``ar``, ``reply``...) to the citizen bounced at ``at``: the ``bounced`` event the
    intake records (app/bounces)."""
    received = datetime(2026, 11, 16, 10, tzinfo=PARIS)
    detail = {
        "kind": mail,
        "sent_at": received.isoformat(),
        "bounced_at": at.isoformat(),
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 <adresse>: User unknown",
        "bounce": None,
    }
    with store.transaction() as tx:
        pk = tx.insert_message(citizen_row(n, received, service))
        tx.record_reply(pk, received + timedelta(hours=2), True, "<r@x>", "reply_sent")
        tx.add_events(pk, ("bounced", json.dumps(detail)), at=at)  # type: ignore[arg-type]


def test_a_service_with_only_bounced_mail_gets_a_digest_that_says_to_contact_the_citizen(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot alerts`` on real SMTP: a service whose only news is our mail to citizens
    that bounced since the previous working day's digest gets a digest; its subject counts
    them, both parts list which mail, the day and why, and say to reach the citizen
    otherwise; no citizen address. A bounce before the previous digest is not told again."""
    config, data = sending_config(tmp_path, smtp_server)
    store = Store(data["database"])
    bounce(store, 51, "cni-passeport", "ar", datetime(2026, 11, 24, 9, tzinfo=PARIS))
    bounce(store, 52, "cni-passeport", "reply", datetime(2026, 11, 25, 8, tzinfo=PARIS))
    bounce(store, 53, "cni-passeport", "ar", datetime(2026, 11, 24, 8, tzinfo=PARIS))  # told

    assert main(["--config", str(config), "alerts", "--date", TODAY.isoformat()]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "cni-passeport: digest of 2 message(s) queued"
    (sent,) = smtp_server.wait_for(1)
    assert sent.rcpt_tos == ("pref-cni-passeport@seine-maritime.gouv.fr",)
    digest = read_mail(sent.raw)
    assert "2 courriels non distribués" in str(digest["Subject"])
    text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    section = text.split("COURRIELS À L'USAGER NON DISTRIBUÉS\n", 1)[1]
    assert section.startswith(
        "\n- [SM-2026-000051] Sujet 51\n  accusé de réception, retour le 24/11/2026"
        " — boîte general\n  motif : adresse inconnue (5.1.1)\n"
    )
    assert "[SM-2026-000052] Sujet 52\n  réponse, retour le 25/11/2026" in section
    assert "SM-2026-000053" not in text  # in the previous working day's digest
    said = "Contactez l'usager par un autre moyen (téléphone, courrier)"
    assert said in " ".join(text.split())
    html = digest.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "SM-2026-000052" in html and said in " ".join(html.split())
    assert "adresse inconnue (5.1.1)" in html and "SM-2026-000053" not in html
    assert "@example.fr" not in text + html  # no citizen addresses in digests

    smtp_server.clear()
    bounce(store, 54, "cni-passeport", "notice", datetime(2026, 11, 25, 9, tzinfo=PARIS))
    assert main(["--config", str(config), "alerts", "--date", "2026-11-26"]) == 0
    (sent,) = smtp_server.wait_for(1)
    digest = read_mail(sent.raw)
    assert "1 courriel non distribué —" in str(digest["Subject"])
    text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "[SM-2026-000054] Sujet 54\n  avis de transfert, retour le 25/11/2026" in text
    assert "SM-2026-000051" not in text and "SM-2026-000052" not in text


def test_unanswered_lists_messages_with_their_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'a.db'}"
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data), encoding="utf-8")
    fill(Store(data["database"]))
    assert main(["--config", str(config), "unanswered", "--as-of", TODAY.isoformat()]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if re.search(r" SM-\d{4}-\d{6} ", line)]
    assert [(int(line[0]), line[1]) for line in lines] == [
        (7, "SM-2026-000001"),
        (4, "SM-2026-000002"),
        (3, "SM-2026-000006"),
        (2, "SM-2026-000007"),
        (1, "SM-2026-000004"),
        (1, "SM-2026-000005"),
    ]
    assert "6 unanswered" in out


def test_mail_forgotten_for_months_stays_in_the_digest_and_the_unanswered_list(
    tmp_path: Path,
) -> None:
    """Mail left unanswered, or without an AR, is listed however old it is: the digest
    once looked back 120 days only, the unanswered list a year, while the figures count
    every one of them as overdue."""
    from mailbot.app import alerts, indicators
    from mailbot.config import load_config
    from mailbot.render.templates import Renderer

    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'a.db'}"
    data["templates"] = str(ROOT / "templates")
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    config = load_config(path)
    store = Store(data["database"])
    fill(store)
    with store.transaction() as tx:
        old = citizen_row(21, datetime(2025, 10, 6, 10, tzinfo=PARIS), "permis")  # 13 months
        tx.insert_message(old)
        tx.insert_message(
            citizen_row(22, datetime(2026, 6, 1, 10, tzinfo=PARIS), None, "quarantine")
        )
    listed = {row["id"]: age for age, row in indicators.unanswered(config, store, TODAY)}
    assert len(listed) == 8  # the six of ROWS left unanswered, and both old ones
    assert max(listed.values()) > 250  # the 13-month-old one, in working days

    renderer = Renderer(config.templates, timezone=config.timezone)
    sent = alerts.send_alerts(config, store, renderer, TODAY).sent
    assert sent["permis"] == 4  # overdue: SM-2026-000001 and the old one; soon; relanced
    with store.engine.connect() as conn:
        queued = conn.execute(
            sa.text(
                "SELECT b.raw, o.recipient FROM outbox o JOIN outbox_bodies b ON b.outbox_id = o.id"
            )
        ).all()
    digests_by_to = {to: read_mail(raw) for raw, to in queued}
    permis = digests_by_to["pref-permis@seine-maritime.gouv.fr"]
    text = permis.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "[SM-2025-000021] Sujet 21" in text and "[SM-2026-000001]" in text
    general = digests_by_to["pref-contact@seine-maritime.gouv.fr"]
    assert "Sujet 22" in general.get_body(("plain",)).get_content()  # type: ignore[union-attr]
