"""The message page's other actions over HTTP, on mail the pipeline read from Dovecot:
each allowed for the roles the policy names and refused (403) for the others, recorded
with who and why, and effective (the queue, the mails the citizen and service receive)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from deskworld import Desk, citizen_mail, desk_console, in_thread, move_mail
from webtools import RunningConsole, csrf_from, local_login

from mailbot.app import indicators
from mailbot.app.reply import Draft, Replies
from mailbot.cli import main
from mailbot.core.indicators import Indicators
from mailbot.core.statuses import OutboxKind
from mailbot.store.schema import corrections, outbox
from mailbot.web import action_pages

ACCOUNTS = ("khaddad", "lmoreau", "mlefebvre", "ngarnier")
OVERDUE = "<citizen-1@example.fr>"
CARTES_GRISES = "pref-cartes-grises@seine-maritime.gouv.fr"


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS) as running:
        yield running


def state_of(page: str, action: str) -> str:
    """The state an action's own form carries (the answer form's is another: the latest
    answer, not the latest event); "" when the page has no such form."""
    form = page.split(f'id="action-{action}"', 1)[-1] if f'id="action-{action}"' in page else ""
    found = re.search(r'name="etat" value="(\d+)"', form)
    return found.group(1) if found else ""


def act(
    client: httpx.Client, desk: Desk, action: str, message: str = OVERDUE, **fields: str
) -> httpx.Response:
    row = desk.row(message)
    page = client.get(f"/courriel/{row.id}")
    token = csrf_from(page.text) if page.status_code == 200 else csrf_from(client.get("/").text)
    data = {"csrf_token": token, "etat": state_of(page.text, action) or "0", **fields}
    return client.post(f"/courriel/{row.id}/action/{action}", data=data)


def sent_after(desk: Desk, message_pk: int) -> list[Any]:
    """What the outbox queued for a message besides its AR (notices, forwards)."""
    query = sa.select(outbox).where(
        outbox.c.message_pk == message_pk, outbox.c.kind != OutboxKind.AR
    )
    with desk.app.store.engine.connect() as conn:
        return list(conn.execute(query))


def clicked_twice(url: str, *clicks: tuple[httpx.Client, dict[str, str]]) -> list[httpx.Response]:
    """The same form posted from two tabs at the same moment, answers by status code."""
    with ThreadPoolExecutor(len(clicks)) as pool:
        posted = [pool.submit(client.post, url, data=data) for client, data in clicks]
        return sorted((p.result() for p in posted), key=lambda r: r.status_code)


def queued(client: httpx.Client) -> list[str]:
    return re.findall(r'data-reference="([^"]+)"', client.get("/").text)


def details(desk: Desk, kind: str) -> list[dict[str, str]]:
    row = desk.row(OVERDUE)
    return [json.loads(e.detail) for e in desk.app.store.events(row.id) if e.kind == kind]


ACTIONS = {
    "attribuer-moi": ("attribuer", {"a": "khaddad"}),
    "attribuer-collegue": ("attribuer", {"a": "lmoreau"}),  # to a colleague of etrangers
    "transferer": ("transferer", {"service": "cartes-grises", "motif": "Question de carte grise"}),
    "repondu-ailleurs": ("repondu-ailleurs", {"moyen": "phone", "motif": "Rappelée le matin"}),
    "corriger": ("corriger", {"service": "etrangers", "categorie": "rendez-vous"}),
    "sans-reponse": ("sans-reponse", {"motif": "spam", "precision": ""}),
    "rouvrir": ("rouvrir", {"motif": ""}),
    "lu": ("lu", {}),
}
# Who is refused what, on a message of etrangers (the allowed side is tested below).
REFUSED = [
    ("mlefebvre", "attribuer-moi"),  # permis: not their service
    ("mlefebvre", "attribuer-collegue"),
    ("mlefebvre", "transferer"),
    ("mlefebvre", "repondu-ailleurs"),
    ("mlefebvre", "corriger"),
    ("mlefebvre", "sans-reponse"),
    ("ngarnier", "attribuer-moi"),  # quality mission: reads, acts on nothing
    ("ngarnier", "attribuer-collegue"),
    ("ngarnier", "repondu-ailleurs"),
    ("ngarnier", "sans-reponse"),
    ("mlefebvre", "rouvrir"),  # reopening: who may close may reopen, no one else
    ("ngarnier", "rouvrir"),
    ("mlefebvre", "lu"),  # marking the mail after the answer read: who may reply, no one else
    ("ngarnier", "lu"),
    ("khaddad", "attribuer-collegue"),  # an agent: gives nothing to others (heads do)
    ("khaddad", "transferer"),  # an agent: no reassignment (heads of service do it)
    ("khaddad", "corriger"),
]


@pytest.mark.parametrize(("agent", "action"), REFUSED)
def test_actions_are_refused_outside_the_policy(
    desk: Desk, console: RunningConsole, agent: str, action: str
) -> None:
    name, fields = ACTIONS[action]
    if agent != "khaddad" and action == "attribuer-moi":
        fields = {"a": agent}
    with console.client() as client:
        local_login(client, agent)
        assert act(client, desk, name, **fields).status_code == 403
    assert desk.app.store.events(desk.row(OVERDUE).id)[-1].kind != "assigned"
    assert details(desk, "transferred") == [] and details(desk, "no_reply_needed") == []
    assert details(desk, "answered_elsewhere") == []


def test_an_action_without_the_csrf_token_is_refused(desk: Desk, console: RunningConsole) -> None:
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        refused = client.post(f"/courriel/{row.id}/action/attribuer", data={"a": "khaddad"})
        assert refused.status_code == 403
    assert details(desk, "assigned") == []


def test_an_agent_lets_go_of_their_own_message_not_a_colleagues(
    desk: Desk, console: RunningConsole
) -> None:
    """« Ne plus traiter »: an agent who took a message could not give it back (giving it
    to nobody was a head's reassignment: 403). The page now offers it to the agent who has
    it, and the console and the use case allow it to them — not on a colleague's."""
    row = desk.row(OVERDUE)
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert 'id="ne-plus-traiter"' not in karim.get(f"/courriel/{row.id}").text
        assert act(karim, desk, "attribuer", a="khaddad").status_code == 303
        page = karim.get(f"/courriel/{row.id}").text
        assert 'id="ne-plus-traiter"' in page and 'id="prendre"' not in page
        form = page.split('id="action-liberer"', 1)[1].split("</form>", 1)[0]
        assert 'name="a" value=""' in form and "Ne plus traiter" in form
        data = {"csrf_token": csrf_from(page), "etat": state_of(page, "liberer"), "a": ""}
        released = karim.post(f"/courriel/{row.id}/action/attribuer", data=data)
        assert released.status_code == 303
        assert desk.row(OVERDUE).assignee is None
        assert row.reference not in karim.get("/?etat=mes-courriels").text
    with console.client() as lea:
        local_login(lea, "lmoreau")
        assert act(lea, desk, "attribuer", a="lmoreau").status_code == 303
    with console.client() as karim:
        local_login(karim, "khaddad")
        page = karim.get(f"/courriel/{row.id}").text
        assert 'id="ne-plus-traiter"' not in page and 'id="prendre"' in page
        assert act(karim, desk, "attribuer", a="").status_code == 403  # Léa's: a head's to undo
    assert desk.row(OVERDUE).assignee == "lmoreau"
    assert [(d["agent"], d["assignee"]) for d in details(desk, "assigned")] == [
        ("khaddad", "khaddad"),
        ("khaddad", None),
        ("lmoreau", "lmoreau"),
    ]


def test_assign_to_me_and_to_a_colleague(desk: Desk, console: RunningConsole) -> None:
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert act(karim, desk, "attribuer", a="khaddad").status_code == 303
        assert act(karim, desk, "attribuer", a="lmoreau").status_code == 403  # heads only
        mine = karim.get("/?etat=mes-courriels").text
        assert "Karim Haddad" in mine and desk.row(OVERDUE).reference in mine
    with console.client() as lea:
        local_login(lea, "lmoreau")
        assert act(lea, desk, "attribuer", a="lmoreau").status_code == 303
        assert act(lea, desk, "attribuer", a="khaddad").status_code == 303  # a colleague
    who = details(desk, "assigned")
    assert [(d["agent"], d["assignee"]) for d in who] == [
        ("khaddad", "khaddad"),
        ("lmoreau", "lmoreau"),
        ("lmoreau", "khaddad"),
    ]
    assert desk.row(OVERDUE).assignee == "khaddad"


def test_transfer_with_a_reason_sends_the_notice_and_leaves_the_queue(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as lea:
        local_login(lea, "lmoreau")
        empty = act(lea, desk, "transferer", service="cartes-grises", motif=" ")
        assert empty.status_code == 400 and "Action impossible" in empty.text
        done = act(lea, desk, "transferer", service="cartes-grises", motif="Carte grise")
        assert done.status_code == 303 and done.headers["location"] == "/?fait=transferer"
        assert row.reference not in queued(lea)
    received = desk.delivered()  # the console sends after its answer
    assert len(received) == 2
    assert any("usager1@example.fr" in r.rcpt_tos for r in received)  # the citizen's notice
    (detail,) = details(desk, "transferred")
    assert detail["agent"] == "lmoreau" and detail["reason"] == "Carte grise"


def badge(page: str) -> str:
    found = re.search(r'id="badge">([^<]*)<', page)
    assert found
    return html.unescape(found.group(1))


def test_answered_elsewhere_and_no_reply_needed_close_the_message(
    desk: Desk, console: RunningConsole
) -> None:
    other = desk.row("<citizen-2@example.fr>")
    with console.client() as karim:
        local_login(karim, "khaddad")
        missing = act(karim, desk, "repondu-ailleurs", moyen="phone", motif="")
        assert missing.status_code == 400
        assert (
            act(karim, desk, "repondu-ailleurs", moyen="phone", motif="Rappel").status_code == 303
        )
        assert desk.row(OVERDUE).reference not in queued(karim)
        page = karim.get(f"/courriel/{other.id}")
        data = {"csrf_token": csrf_from(page.text), "motif": "spam", "precision": "publicité"}
        data["etat"] = state_of(page.text, "sans-reponse")
        closed = karim.post(f"/courriel/{other.id}/action/sans-reponse", data=data)
        assert closed.status_code == 303 and other.reference not in queued(karim)
        # the page says how the message left the queue, not its (past) deadline
        assert badge(karim.get(f"/courriel/{desk.row(OVERDUE).id}").text) == "Répondu"
        assert badge(karim.get(f"/courriel/{other.id}").text) == "Clos sans réponse"
    (answered,) = details(desk, "answered_elsewhere")
    assert answered == {"how": "phone", "agent": "khaddad", "reason": "Rappel"}
    (event,) = [e for e in desk.app.store.events(other.id) if e.kind == "no_reply_needed"]
    assert json.loads(event.detail) == {"agent": "khaddad", "reason": "spam", "note": "publicité"}


def test_a_head_corrects_the_category(desk: Desk, console: RunningConsole) -> None:
    with console.client() as lea:
        local_login(lea, "lmoreau")
        done = act(lea, desk, "corriger", service="etrangers", categorie="rendez-vous")
        assert done.status_code == 303
        page = lea.get(done.headers["location"])
        assert "La correction de l" in page.text
        assert "Orientation corrigée" in page.text


def test_a_transfer_posted_twice_is_done_once(desk: Desk, console: RunningConsole) -> None:
    """A double click on « Transférer » (the same form state twice, at once): one notice
    to the citizen, one forward to the service; a form without its state is refused."""
    row = desk.row(OVERDUE)
    with console.client() as lea, console.client() as again:
        local_login(lea, "lmoreau")
        local_login(again, "lmoreau")
        page = lea.get(f"/courriel/{row.id}")
        data = {"csrf_token": csrf_from(page.text), "service": "cartes-grises", "motif": "CG"}
        url = f"/courriel/{row.id}/action/transferer"
        assert lea.post(url, data=data).status_code == 400  # no etat: no key, not done
        assert lea.post(url, data=data | {"etat": "x"}).status_code == 400
        assert details(desk, "transferred") == []
        data["etat"] = state_of(page.text, "transferer")
        second = data | {"csrf_token": csrf_from(again.get(f"/courriel/{row.id}").text)}
        codes = [r.status_code for r in clicked_twice(url, (lea, data), (again, second))]
    assert codes[0] == 303 and codes[1] in (303, 400, 403)
    queued_mail = sent_after(desk, row.id)
    assert sorted(r.recipient for r in queued_mail) == sorted(["usager1@example.fr", CARTES_GRISES])
    received = desk.delivered()  # all the outbox holds, sent: no third can come
    assert sum("usager1@example.fr" in r.rcpt_tos for r in received) == 1
    assert sum(CARTES_GRISES in r.rcpt_tos for r in received) == 1
    assert len(received) == 2
    assert len(details(desk, "transferred")) == 1


def test_a_correction_of_the_service_transfers_the_mail_once(
    desk: Desk, console: RunningConsole
) -> None:
    """« Corriger » to another service moves the mail: the citizen gets the transfer
    notice, the service the forward, the reason is the default one, and the correction is
    recorded for the routing; a double click does all this once."""
    row = desk.row(OVERDUE)
    with console.client() as lea, console.client() as again:
        local_login(lea, "lmoreau")
        local_login(again, "lmoreau")
        page = lea.get(f"/courriel/{row.id}")
        assert 'id="motif-correction"' in page.text
        url = f"/courriel/{row.id}/action/corriger"
        data = {"csrf_token": csrf_from(page.text), "service": "cartes-grises"}
        data |= {"categorie": "information", "motif": ""}
        data["etat"] = state_of(page.text, "corriger")
        second = data | {"csrf_token": csrf_from(again.get(f"/courriel/{row.id}").text)}
        answers = clicked_twice(url, (lea, data), (again, second))
    assert answers[0].status_code == 303 and answers[0].headers["location"] == "/?fait=transferer"
    assert answers[1].status_code in (303, 400, 403)
    queued_mail = sent_after(desk, row.id)
    assert sorted(r.recipient for r in queued_mail) == sorted(["usager1@example.fr", CARTES_GRISES])
    received = desk.delivered()  # all the outbox holds, sent: no third can come
    assert sum("usager1@example.fr" in r.rcpt_tos for r in received) == 1
    assert sum(CARTES_GRISES in r.rcpt_tos for r in received) == 1
    assert len(received) == 2
    (detail,) = details(desk, "transferred")
    assert detail["reason"] == "correction de l'orientation" and detail["agent"] == "lmoreau"
    query = sa.select(corrections).where(corrections.c.message_pk == row.id)
    with desk.app.store.engine.connect() as conn:
        (correction,) = conn.execute(query)
    assert (correction.old_service, correction.service) == (row.service, "cartes-grises")
    assert correction.category == "information" and correction.agent == "lmoreau"
    moved = desk.row(OVERDUE)
    assert (moved.service, moved.category, moved.transferred) == ("cartes-grises", "information", 1)


def etrangers_figures(desk: Desk) -> Indicators:
    """The indicators of etrangers' mail of the last six weeks, as of today in the
    prefecture's time zone (the machine's may be a day behind or ahead)."""
    today = datetime.now(ZoneInfo(desk.config.timezone)).date()
    start = today - timedelta(days=42)
    return indicators.figures(desk.config, desk.app.store, start, today, today, service="etrangers")


def write_again(desk: Desk, at: datetime | None = None) -> None:
    """The citizen of the overdue message writes in its AR's thread (a follow-up), received
    ``at`` (default: now)."""
    raw = citizen_mail(1, subject="Re: Renouvellement de mon titre de séjour").replace(
        b"Message-ID: <citizen-1@example.fr>",
        b"Message-ID: <relance-1@example.fr>\r\nIn-Reply-To: <citizen-1@example.fr>",
    )
    desk.etrangers.append(raw, internaldate=at)
    desk.poll()


def test_a_relance_reopens_a_message_closed_without_reply(
    desk: Desk, console: RunningConsole
) -> None:
    """« Aucune réponse nécessaire », then the citizen writes again: the message is back in
    the queue, the alerts and the figures, with the relance counted and the reopening in
    its history (left closed, nobody would ever see the relance)."""
    row = desk.row(OVERDUE)
    received = etrangers_figures(desk).received
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert act(karim, desk, "sans-reponse", motif="spam", precision="").status_code == 303
        assert row.reference not in queued(karim)
        assert etrangers_figures(desk).received == received - 1
        write_again(desk)
        assert row.reference in queued(karim)
        assert row.reference in queued_page(karim, "relances")
        page = karim.get(f"/courriel/{row.id}").text
        assert "Rouvert : l&#39;usager a écrit de nouveau" in page
    reopened = desk.row(OVERDUE)
    assert (reopened.no_reply, reopened.relances) == (None, 1)
    kinds = [e.kind for e in desk.app.store.events(row.id)]
    assert kinds[-2:] == ["no_reply_needed", "reopened"]
    follow_up = desk.row("<relance-1@example.fr>")
    assert details(desk, "reopened") == [{"follow_up": follow_up.id}]
    figures = etrangers_figures(desk)
    assert (figures.received, figures.relances) == (received, 1)
    unanswered = desk.app.store.open_rows(reopened.received_at + timedelta(days=30))
    assert row.id in [r["id"] for r in unanswered]  # the alerts' list


def written_again_after_the_answer(desk: Desk, answered_hours_ago: int = 2) -> Any:
    """The overdue message answered ``answered_hours_ago`` hours ago (as mailbot's own
    re-orientation reply would be: recorded on the row), then the citizen writes again an
    hour later, read by the intake from Dovecot: its row after that."""
    row = desk.row(OVERDUE)
    now = datetime.now(UTC).replace(microsecond=0)
    with desk.app.store.transaction() as tx:
        answered = now - timedelta(hours=answered_hours_ago)
        tx.record_reply(row.id, answered, True, "automatic:reorientation")
    write_again(desk, answered + timedelta(hours=1))
    return desk.row(OVERDUE)


def test_mail_after_the_answer_is_back_in_the_queue_until_an_agent_reads_it(
    desk: Desk, console: RunningConsole
) -> None:
    """Writing again after the answer (the citizen contests a re-orientation, sends the
    documents asked for, or thanks) is no relance and the answer still counts, but the
    message is back in the queue, first, flagged « Nouveau message de l'usager » (a word,
    not a colour), until an agent who read it marks it read — recorded with their name."""
    row = desk.row(OVERDUE)
    before = etrangers_figures(desk)
    with console.client() as karim:
        local_login(karim, "khaddad")
        after = written_again_after_the_answer(desk)
        assert after.relances == 0 and after.first_reply_at is not None
        assert after.written_again_at is not None
        answered = etrangers_figures(desk)
        assert (answered.received, answered.answered) == (before.received, before.answered + 1)
        assert answered.relances == before.relances
        home = karim.get("/").text
        assert queued(karim)[0] == row.reference  # first, before the overdue ones
        assert "Nouveau message de l'usager</span>" in home  # the template's text
        assert row.reference in queued_page(karim, "nouveaux-messages")
        assert row.reference not in queued_page(karim, "en-retard")  # answered: not late
        page = karim.get(f"/courriel/{row.id}").text
        assert badge(page) == "Répondu"
        assert 'id="nouveau-message">Nouveau message de l\'usager<' in page
        assert "Nouveau message de l&#39;usager après la réponse" in page  # the thread
        assert 'id="action-lu"' in page
        done = act(karim, desk, "lu")
        assert done.status_code == 303 and done.headers["location"] == "/?fait=lu"
        assert (
            "Le nouveau message de l&#39;usager est marqué comme lu" in karim.get("/?fait=lu").text
        )
        assert row.reference not in queued(karim)
        page = karim.get(f"/courriel/{row.id}").text
        assert 'id="action-lu"' not in page and 'id="nouveau-message"' not in page
        assert re.search(
            r"Nouveau message de l&#39;usager lu, sans réponse à donner</strong> — [^—]+— "
            r"par Karim Haddad",
            page,
        )
        again = act(karim, desk, "lu")
        assert again.status_code == 400
        assert refusal(again) == "ce courriel n'a pas de nouveau message de l'usager à lire."
    assert desk.row(OVERDUE).written_again_at is None
    assert details(desk, "follow_up_read") == [{"agent": "khaddad"}]
    follow_up = desk.row("<relance-1@example.fr>")
    assert details(desk, "reopened") == [{"follow_up": follow_up.id, "answered": True}]
    assert etrangers_figures(desk) == answered


def test_replying_again_takes_the_mail_after_the_answer_out_of_the_queue(
    desk: Desk, console: RunningConsole
) -> None:
    """The agent answers the citizen's new mail (here by phone, « Répondu par un autre
    moyen »): the message leaves the queue, its first answer still the one counted."""
    row = desk.row(OVERDUE)
    with console.client() as karim:
        local_login(karim, "khaddad")
        first = written_again_after_the_answer(desk).first_reply_at
        figures = etrangers_figures(desk)
        assert queued(karim)[0] == row.reference
        done = act(karim, desk, "repondu-ailleurs", moyen="phone", motif="Rappelée")
        assert done.status_code == 303
        assert row.reference not in queued(karim)
    after = desk.row(OVERDUE)
    assert after.written_again_at is None and after.first_reply_at == first
    assert etrangers_figures(desk) == figures
    assert details(desk, "follow_up_read") == []


def test_an_answer_after_closing_counts_once_as_answered(
    desk: Desk, console: RunningConsole
) -> None:
    """Closed as needing no reply, then answered by phone after all: no longer closed (nor
    listed apart in the report), counted once, as answered."""
    row = desk.row(OVERDUE)
    before = etrangers_figures(desk)
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert act(karim, desk, "sans-reponse", motif="spam", precision="").status_code == 303
        answered = act(karim, desk, "repondu-ailleurs", moyen="phone", motif="Rappel")
        assert answered.status_code == 303
        assert row.reference not in queued(karim)
    after = desk.row(OVERDUE)
    assert after.no_reply is None and after.first_reply_at is not None
    figures = etrangers_figures(desk)
    assert (figures.received, figures.answered) == (before.received, before.answered + 1)


def test_a_message_answered_or_closed_is_not_transferred(
    desk: Desk, console: RunningConsole
) -> None:
    """A transfer of a message answered, or closed without a reply, is refused: the citizen
    would be told another service will answer after the answer."""
    other = "<citizen-2@example.fr>"
    with console.client() as lea:
        local_login(lea, "lmoreau")
        assert act(lea, desk, "repondu-ailleurs", moyen="phone", motif="Rappel").status_code == 303
        closed = act(lea, desk, "sans-reponse", other, motif="spam", precision="")
        assert closed.status_code == 303
        settled = (
            (OVERDUE, "ce courriel a déjà reçu une réponse : il ne peut plus être transféré."),
            (other, "ce courriel a été classé sans réponse : il ne peut plus être transféré."),
        )
        for message, why in settled:
            refused = act(lea, desk, "transferer", message, service="cartes-grises", motif="CG")
            assert refused.status_code == 400 and refusal(refused) == why
            moved = act(
                lea, desk, "corriger", message, service="cartes-grises", categorie="information"
            )
            assert moved.status_code == 400 and refusal(moved) == why
    for message in (OVERDUE, other):
        row = desk.row(message)
        assert row.service == "etrangers" and not row.transferred
        assert sent_after(desk, row.id) == []
        assert "transferred" not in [e.kind for e in desk.app.store.events(row.id)]


def test_a_transfer_leaves_the_assignee_only_if_they_handle_the_new_service(
    desk: Desk, console: RunningConsole
) -> None:
    """Karim (etrangers) loses the message transferred to cartes-grises: it is unassigned
    there; Léa (etrangers and general) keeps the one transferred to general."""
    other = "<citizen-2@example.fr>"
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert act(karim, desk, "attribuer", a="khaddad").status_code == 303
    with console.client() as lea:
        local_login(lea, "lmoreau")
        assert act(lea, desk, "attribuer", other, a="lmoreau").status_code == 303
        done = act(lea, desk, "transferer", service="cartes-grises", motif="Carte grise")
        assert done.status_code == 303
        kept = act(lea, desk, "transferer", other, service="general", motif="Accueil")
        assert kept.status_code == 303
        assert desk.row(other).reference in queued_page(lea, "mes-courriels")
    assert desk.row(OVERDUE).assignee is None
    assert desk.row(other).assignee == "lmoreau"
    last = details(desk, "assigned")[-1]
    assert (last["agent"], last["previous"]) == ("lmoreau", "khaddad")
    assert last.get("assignee") is None
    with console.client() as nathalie:  # the quality mission sees every service's queue
        local_login(nathalie, "ngarnier")
        unassigned = queued_page(nathalie, "non-attribues", "cartes-grises")
        assert desk.row(OVERDUE).reference in unassigned


def refusal(page: httpx.Response) -> str:
    """The action's refusal as the agent reads it, after « Action impossible : »."""
    found = re.search(r'id="erreur" role="alert"><p>Action impossible : ([^<]*)</p>', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


CARTES_GRISES_NAME = "Bureau des titres — cartes grises (certificats d'immatriculation)"
ETRANGERS_NAME = "Direction des migrations et de l'intégration"


def test_a_refused_correction_says_why_in_french(desk: Desk, console: RunningConsole) -> None:
    """The routing guide's refusal, as an agent reads it: the category, the service by its
    name, where the rule is and what to choose — not the CLI's English."""
    with console.client() as lea:
        local_login(lea, "lmoreau")
        wrong = act(lea, desk, "corriger", service="cartes-grises", categorie="plainte-riverain")
        assert wrong.status_code == 400
        assert refusal(wrong) == (
            f"la catégorie « plainte-riverain » n'est pas prévue pour le service"
            f" « {CARTES_GRISES_NAME} » (guide de routage, § 3) : choisissez l'une de"
            " celles-ci : information, etat-avancement, rendez-vous, reclamation, autre."
        )
        unknown = act(lea, desk, "corriger", service="etrangers", categorie="n-importe")
        assert refusal(unknown) == (
            "la catégorie « n-importe » n'existe pas : choisissez-en une dans la liste."
        )
        nowhere = act(lea, desk, "corriger", service="autres-administrations", categorie="autre")
        assert refusal(nowhere).startswith("une réorientation vers une autre administration")
    row = desk.row(OVERDUE)
    assert (row.service, row.transferred) == ("etrangers", 0) and sent_after(desk, row.id) == []


def test_a_refused_transfer_says_why_in_french(desk: Desk, console: RunningConsole) -> None:
    with console.client() as lea:
        local_login(lea, "lmoreau")
        empty = act(lea, desk, "transferer", service="cartes-grises", motif=" ")
        assert empty.status_code == 400
        assert refusal(empty) == "indiquez le motif du transfert."
        same = act(lea, desk, "transferer", service="etrangers", motif="Erreur")
        assert refusal(same) == f"ce courriel est déjà au service « {ETRANGERS_NAME} »."
        unknown = act(lea, desk, "transferer", service="douanes", motif="Douane")
        assert refusal(unknown) == (
            "le service « douanes » n'existe pas : choisissez-en un dans la liste."
        )
    assert details(desk, "transferred") == []


def test_a_refused_assignment_says_why_in_french(desk: Desk, console: RunningConsole) -> None:
    with console.client() as lea:
        local_login(lea, "lmoreau")
        elsewhere = act(lea, desk, "attribuer", a="mlefebvre")  # permis, not etrangers
        assert elsewhere.status_code == 400
        assert refusal(elsewhere) == (
            f"Mathieu Lefebvre (mlefebvre) ne traite pas le service « {ETRANGERS_NAME} » :"
            " attribuez ce courriel à un agent de ce service."
        )
        nobody = act(lea, desk, "attribuer", a="inconnu")
        assert refusal(nobody) == (
            "l'agent « inconnu » n'existe pas : choisissez-en un dans la liste."
        )
    assert details(desk, "assigned") == []


def test_the_cli_still_refuses_in_english(desk: Desk, capsys: pytest.CaptureFixture[str]) -> None:
    """The French is the console's: the CLI's refusal is the English it always printed."""
    reference = desk.row(OVERDUE).reference
    command = ["--config", str(desk.path), "transfer", reference, "--service", "etrangers"]
    command += ["--agent", "lmoreau", "--reason", "Erreur", "--send"]
    assert in_thread(lambda: main(command)) == 2
    err = capsys.readouterr().err
    assert err == f"error: service: etrangers: {reference} is already this service's\n"


def queued_page(client: httpx.Client, state: str, service: str = "") -> list[str]:
    query = f"/?etat={state}" + (f"&service={service}" if service else "")
    return re.findall(r'data-reference="([^"]+)"', client.get(query).text)


def day_fr(desk: Desk, at: datetime, since: datetime) -> str:
    """The day of ``at`` (recorded since ``since``, and not later than now) as the page dates
    its sentences: in the prefecture's time zone. The day of what was recorded, not of the
    clock when the test looks: a test running across midnight in Paris acts on one day and
    reads the page on the next."""
    assert since <= at <= datetime.now(UTC)
    return at.astimezone(ZoneInfo(desk.config.timezone)).strftime("%d/%m/%Y")


def sentence(page: str, element: str) -> str:
    """The text of the paragraph ``element`` (the reason a form is not shown), "" if none."""
    found = re.search(rf'id="{element}">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


def test_the_page_offers_only_the_actions_the_state_allows(
    desk: Desk, console: RunningConsole
) -> None:
    """An open message offers closing and transferring; answered, closed, or with a reply
    on its way, it does not — the page says why in their place, in the words the refusal
    would use — while the reply form stays (a second reply is still a reply)."""
    other, third = desk.row("<citizen-2@example.fr>"), desk.row("<citizen-3@example.fr>")
    with console.client() as lea:
        local_login(lea, "lmoreau")
        page = lea.get(f"/courriel/{desk.row(OVERDUE).id}").text
        for form in ("sans-reponse", "transferer", "corriger"):
            assert f'id="action-{form}"' in page
        assert 'id="action-rouvrir"' not in page and 'id="corriger-service"' in page
        assert not sentence(page, "sans-reponse-impossible")
        assert not sentence(page, "transferer-impossible")

        since = datetime.now(UTC).replace(microsecond=0)  # kept to the second, or finer
        assert act(lea, desk, "repondu-ailleurs", moyen="phone", motif="Rappel").status_code == 303
        answered = lea.get(f"/courriel/{desk.row(OVERDUE).id}").text
        day = day_fr(desk, desk.row(OVERDUE).first_reply_at, since)  # answered by phone then
        assert 'id="action-sans-reponse"' not in answered
        assert 'id="action-transferer"' not in answered and 'id="action-rouvrir"' not in answered
        assert sentence(answered, "transferer-impossible") == (
            f"Ce courriel a reçu une réponse le {day} : il ne peut plus être transféré."
        )
        assert sentence(answered, "sans-reponse-impossible") == (
            f"Ce courriel a reçu une réponse le {day} : il ne peut plus être classé sans réponse."
        )
        assert 'id="formulaire-libre"' in answered  # replying again stays possible
        assert 'id="action-corriger"' in answered and 'id="corriger-service"' not in answered

        since = datetime.now(UTC).replace(microsecond=0)
        shut = act(lea, desk, "sans-reponse", "<citizen-2@example.fr>", motif="spam", precision="")
        assert shut.status_code == 303
        closed = lea.get(f"/courriel/{other.id}").text
        (closing,) = [e for e in desk.app.store.events(other.id) if e.kind == "no_reply_needed"]
        day = day_fr(desk, closing.at, since)
        assert 'id="action-sans-reponse"' not in closed and 'id="action-transferer"' not in closed
        assert sentence(closed, "sans-reponse-impossible") == (
            f"Ce courriel a été classé sans réponse le {day}."
        )
        assert sentence(closed, "transferer-impossible") == (
            f"Ce courriel a été classé sans réponse le {day} : il ne peut plus être transféré."
        )
        assert 'id="action-rouvrir"' in closed and 'id="formulaire-libre"' in closed

        reply_queued(desk, third)  # not delivered: on its way
        sending = lea.get(f"/courriel/{third.id}").text
        assert 'id="action-transferer"' not in sending
        assert sentence(sending, "transferer-impossible") == (
            "Une réponse à ce courriel est en cours d'envoi : il ne peut plus être transféré."
        )


def reply_queued(desk: Desk, row: Any) -> None:
    """A reply of Karim's queued on ``row`` and left undelivered (no worker runs here)."""
    replies = Replies(desk.config, desk.app.store, desk.app.renderer, desk.app.agent)
    replies.send("khaddad", row.id, Draft.free("Votre demande est en cours d'examen."))


def test_an_agent_reopens_a_message_closed_by_mistake(desk: Desk, console: RunningConsole) -> None:
    """« Rouvrir » undoes « Aucune réponse nécessaire »: the message is back in the queue
    with the deadline it had from its receipt (three weeks ago: overdue), counted again
    among the received and unanswered, in the alerts' list, with who reopened it and why
    in its history."""
    row = desk.row(OVERDUE)
    before = etrangers_figures(desk)
    with console.client() as karim:
        local_login(karim, "khaddad")
        closed = act(karim, desk, "sans-reponse", motif="spam", precision="publicité")
        assert closed.status_code == 303 and row.reference not in queued(karim)
        assert etrangers_figures(desk).received == before.received - 1
        done = act(karim, desk, "rouvrir", motif="Classé par erreur")
        assert done.status_code == 303
        assert done.headers["location"] == f"/courriel/{row.id}?fait=rouvrir"
        page = karim.get(done.headers["location"]).text
        assert "Le courriel est rouvert" in page and "Rouvert par un agent" in page
        assert 'id="action-sans-reponse"' in page and 'id="action-rouvrir"' not in page
        assert badge(page) == "En retard"  # its deadline from receipt, long gone
        assert row.reference in queued(karim)
        assert row.reference in queued_page(karim, "en-retard")
    assert desk.row(OVERDUE).no_reply is None
    assert details(desk, "reopened") == [
        {
            "agent": "khaddad",
            "by": "agent",
            "reason": "Classé par erreur",
            "closed_reason": "spam",
            "closed_note": "publicité",
        }
    ]
    after = etrangers_figures(desk)
    assert (after.received, after.pending, after.overdue) == (
        before.received,
        before.pending,
        before.overdue,
    )
    unanswered = desk.app.store.open_rows(row.received_at + timedelta(days=30))
    assert row.id in [r["id"] for r in unanswered]  # the alerts' list


def test_reopening_an_open_message_or_without_the_token_is_refused(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as karim:
        local_login(karim, "khaddad")
        refused = act(karim, desk, "rouvrir", motif="")
        assert refused.status_code == 400
        assert refusal(refused) == (
            "ce courriel n'est pas classé sans réponse : il n'y a rien à rouvrir."
        )
        assert act(karim, desk, "sans-reponse", motif="spam", precision="").status_code == 303
        state = state_of(karim.get(f"/courriel/{row.id}").text, "rouvrir")
        forged = karim.post(f"/courriel/{row.id}/action/rouvrir", data={"etat": state})
        assert forged.status_code == 403
    assert desk.row(OVERDUE).no_reply == "spam"
    assert details(desk, "reopened") == []


def test_an_agent_missing_from_agents_yaml_is_told_in_french(
    desk: Desk,
    console: RunningConsole,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """agents.yaml edited while the agent is logged in (their profile gone between the
    login check and the action): the action says so in French; the CLI's English stays."""
    with console.client() as karim:
        local_login(karim, "khaddad")
        monkeypatch.setattr(action_pages, "agents", lambda request: lambda agent_id: None)
        refused = act(karim, desk, "sans-reponse", motif="spam", precision="")
        assert refused.status_code == 400
        assert refusal(refused) == (
            "l'identifiant « khaddad » n'a pas de profil dans le fichier des agents"
            " (agents.yaml) : demandez à l'administrateur de mailbot de l'y ajouter."
        )
    assert desk.row(OVERDUE).no_reply is None
    command = ["--config", str(desk.path), "transfer", desk.row(OVERDUE).reference]
    command += ["--service", "cartes-grises", "--agent", "inconnu", "--reason", "CG"]
    assert in_thread(lambda: main(command)) == 2
    assert (
        capsys.readouterr().err == f"error: {desk.config.agents}: agents.inconnu: no such agent\n"
    )


def test_a_transfer_of_a_mail_gone_from_its_mailbox_is_refused_in_french(
    desk: Desk, console: RunningConsole, capsys: pytest.CaptureFixture[str]
) -> None:
    """The citizen's mail deleted from the server (mailbot keeps no copy): nothing to
    forward to the service, said in French; the CLI's English is unchanged."""
    row = desk.row(OVERDUE)
    move_mail(desk.etrangers, OVERDUE, None)
    with console.client() as lea:
        local_login(lea, "lmoreau")
        refused = act(lea, desk, "transferer", service="cartes-grises", motif="CG")
        assert refused.status_code == 400
        assert refusal(refused) == (
            "le courriel de l'usager n'est plus dans la boîte « etrangers » (supprimé, ou"
            " déplacé hors de ses dossiers) : mailbot n'en garde pas de copie et ne peut donc"
            " plus le transmettre."
        )
    assert sent_after(desk, row.id) == [] and details(desk, "transferred") == []
    command = ["--config", str(desk.path), "transfer", row.reference, "--service", "cartes-grises"]
    command += ["--agent", "lmoreau", "--reason", "CG", "--send"]
    assert in_thread(lambda: main(command)) == 2
    assert capsys.readouterr().err == (
        f"error: mailbox etrangers: mail #{row.id} is no longer in 'INBOX' nor, by its"
        " Message-ID, in the mailbox's other folders (deleted or moved)\n"
    )


def test_a_transfer_of_a_mail_the_server_will_not_read_is_refused_in_french(
    desk: Desk, console: RunningConsole
) -> None:
    with console.client() as lea:
        local_login(lea, "lmoreau")
        with desk.etrangers.unreadable(b"<citizen-1@example.fr>"):
            refused = act(lea, desk, "transferer", service="cartes-grises", motif="CG")
        assert refused.status_code == 400
        assert refusal(refused) == (
            "le serveur de messagerie refuse de lire ce courriel : il ne peut pas être"
            " transmis ; signalez-le à l'administrateur de mailbot."
        )
    assert details(desk, "transferred") == []


def thread(page: str) -> list[str]:
    """The message's history as the agent reads it, one entry per event (tags stripped)."""
    found = re.search(r'<ol class="mb-thread" id="suivi">(.*?)</ol>', page, re.S)
    assert found
    items = re.findall(r"<li[^>]*>(.*?)</li>", found.group(1), re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", item)).split()) for item in items]


def test_the_history_says_the_reason_and_the_means_in_french(
    desk: Desk, console: RunningConsole
) -> None:
    """The history of a message closed without a reply, or answered by phone, names the
    reason and the means as the forms did (« Doublon… », « Par téléphone »), not by the
    codes stored (« duplicate », « phone »)."""
    other = desk.row("<citizen-2@example.fr>")
    with console.client() as karim:
        local_login(karim, "khaddad")
        assert (
            act(karim, desk, "repondu-ailleurs", moyen="phone", motif="Rappel").status_code == 303
        )
        shut = act(karim, desk, "sans-reponse", other.message_id, motif="duplicate", precision="")
        assert shut.status_code == 303
        answered = thread(karim.get(f"/courriel/{desk.row(OVERDUE).id}").text)
        closed = thread(karim.get(f"/courriel/{other.id}").text)
    (by_phone,) = [e for e in answered if "moyen :" in e]
    assert "moyen : Par téléphone" in by_phone and "motif : Rappel" in by_phone
    (closing,) = [e for e in closed if e.startswith("Clos sans réponse")]
    assert "motif : Doublon d'une demande traitée par ailleurs" in closing
