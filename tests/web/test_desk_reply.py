"""Answering from the console over HTTP, against Dovecot, the pipeline and aiosmtpd: the
suggested template, the preview rendered by the sending code, exactly one mail on a
double click, collision with a colleague's reply, required variables and the signature
enforced, and authorisation on the message's service for every POST."""

from __future__ import annotations

import email
import email.policy
import html
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
import yaml
from deskworld import Desk, desk_console
from rulesfile import dump_rules
from servers import read_mail
from webtools import RunningConsole, csrf_from, local_login

from mailbot.store.console import last_event_id

ACCOUNTS = ("khaddad", "lmoreau", "mlefebvre")
OVERDUE = "<citizen-1@example.fr>"


@pytest.fixture
def console(desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(desk, tmp_path, ACCOUNTS, site=True) as running:
        yield running


def form_of(page: str, form_id: str) -> dict[str, str]:
    """The hidden and text inputs of one form of the page, as a browser would send them."""
    block = page.split(f'id="{form_id}"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', block))
    return {k: v.replace("&#39;", "'") for k, v in fields.items()}


def open_page(client: httpx.Client, desk: Desk, message_id: str = OVERDUE) -> str:
    row = desk.row(message_id)
    page = client.get(f"/courriel/{row.id}")
    assert page.status_code == 200
    return page.text


def month_of(desk: Desk, at: datetime, since: datetime) -> str:
    """The indicators' month of ``at`` (recorded since ``since``, and not later than now):
    the prefecture's, not the clock's when the test looks (a reply prepared at 23:59:59 on
    the 31st, Paris time, is that month's, read a second later)."""
    assert since <= at <= datetime.now(UTC)
    return at.astimezone(ZoneInfo(desk.config.timezone)).strftime("%Y-%m")


def replies(desk: Desk, expected: int) -> list[email.message.EmailMessage]:
    received = desk.delivered()  # all the outbox sent: nothing more can come
    assert len(received) == expected
    return [read_mail(r.raw) for r in received]


def test_suggested_template_preview_and_one_mail_on_a_double_click(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        page = open_page(client, desk)
        assert re.search(r'<option value="reponse-[a-z-]+" selected>[^<]*\(suggérée\)', page)
        fields = form_of(page, "formulaire-reponse")
        assert fields["usager_nom"] == "Marie Dupont"  # pre-filled from the message
        # labelled in French, from the variables' descriptions in meta.yaml (B9)
        assert re.search(r'for="var-usager_nom">Civilité et nom de l(&#39;|\')usager[ <]', page)
        assert re.search(r'for="var-statut_dossier">Où en est le dossier[ <]', page)
        assert not re.search(r'for="var-[a-z_]+">[a-z_]+[ <]', page)  # no raw variable name
        fields["statut_dossier"] = "en cours d'instruction"
        shown = client.post(f"/courriel/{row.id}/apercu", data=fields)
        assert shown.status_code == 200 and "<html" not in shown.text
        assert "en cours d&#39;instruction" in shown.text
        assert f"[{row.reference}]" in shown.text and "Karim Haddad" in shown.text
        first = client.post(f"/courriel/{row.id}/reponse", data=fields)
        second = client.post(f"/courriel/{row.id}/reponse", data=fields)  # a double click
        assert first.status_code == second.status_code == 303
        assert first.headers["location"] == f"/?envoye={row.reference}"
        (mail,) = replies(desk, 1)
        assert mail["In-Reply-To"] == OVERDUE and OVERDUE in mail["References"]
        assert f"[{row.reference}]" in mail["Subject"] and mail["To"] == "usager1@example.fr"
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "en cours d'instruction" in text
        previewed = re.search(r'<pre[^>]*id="apercu-texte"[^>]*>(.*?)</pre>', shown.text, re.S)
        assert previewed and html.unescape(previewed.group(1)) == text  # seen is sent
        for element in ("Karim Haddad", "Instructeur, section du séjour", "Rouen"):
            assert element in text
        queue = client.get("/")
        assert row.reference not in re.findall(r'data-reference="([^"]+)"', queue.text)
        badge = re.search(r'id="badge">([^<]*)<', open_page(client, desk))
        assert badge and badge.group(1) in ("Réponse en cours d&#39;envoi", "Répondu")
        # The server accepted it: answered (was "En retard"), once the delivery's
        # bookkeeping (after its 'sent', in a transaction of its own) is committed too.
        deadline = time.monotonic() + 60
        while desk.row(OVERDUE).first_reply_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'id="badge">Répondu<' in open_page(client, desk)
    events = [e for e in desk.app.store.events(row.id) if e.kind == "reply_queued"]
    assert len(events) == 1 and '"agent": "khaddad"' in events[0].detail


def test_a_colleagues_reply_since_the_page_opened_stops_the_sending(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as lea, console.client() as karim:
        local_login(lea, "lmoreau")
        local_login(karim, "khaddad")
        stale = form_of(open_page(lea, desk), "formulaire-reponse")
        mine = form_of(open_page(karim, desk), "formulaire-reponse")
        assert karim.post(f"/courriel/{row.id}/reponse", data=mine).status_code == 303
        stopped = lea.post(f"/courriel/{row.id}/reponse", data=stale)
        assert stopped.status_code == 409 and 'id="collision"' in stopped.text
        assert "Réponse préparée par Karim Haddad" in stopped.text
    replies(desk, 1)


def take(client: httpx.Client, desk: Desk, agent_id: str) -> None:
    """The agent clicks « Me l'attribuer »: an event on the message, no answer."""
    row = desk.row(OVERDUE)
    fields = {**form_of(open_page(client, desk), "action-attribuer"), "a": agent_id}
    assert client.post(f"/courriel/{row.id}/action/attribuer", data=fields).status_code == 303


def at_once(path: str, *sends: tuple[httpx.Client, dict[str, str]]) -> list[httpx.Response]:
    """The forms posted to ``path`` at the same moment, each by its own session (threads
    behind a barrier), the answers in the order given."""
    barrier = threading.Barrier(len(sends))

    def send(client: httpx.Client, fields: dict[str, str]) -> httpx.Response:
        barrier.wait(10)
        return client.post(path, data=fields)

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(lambda pair: send(*pair), sends))


def test_two_tabs_either_side_of_an_assignment_share_the_form_and_send_one_mail(
    desk: Desk, console: RunningConsole
) -> None:
    """One agent, two sessions: one shows the page, the other takes the message and shows it
    again. An assignment answers nothing: both forms carry the same state (the latest
    answer), and sent at the same moment they queue one mail, as a double click does."""
    row = desk.row(OVERDUE)
    path = f"/courriel/{row.id}/reponse"
    with console.client() as one, console.client() as two:
        local_login(one, "khaddad")
        local_login(two, "khaddad")
        first = form_of(open_page(one, desk), "formulaire-reponse")
        take(two, desk, "khaddad")
        second = form_of(open_page(two, desk), "formulaire-reponse")
        assert first["etat"] == second["etat"]
        answers = at_once(path, (one, first), (two, second))
        assert [a.status_code for a in answers] == [303, 303]
    replies(desk, 1)
    assert [e.kind for e in desk.app.store.events(row.id)].count("reply_queued") == 1


def test_two_forms_with_different_states_at_the_same_moment_send_one_mail_and_a_409(
    desk: Desk, console: RunningConsole
) -> None:
    """Two agents' forms sent at the same moment with different keys — Léa's page was shown
    before this version, whose key was the latest event of any kind (her assignment): one
    mail, and the other agent is told a colleague answered (409), however the two requests
    interleave (the check is made again where the reply is queued)."""
    row = desk.row(OVERDUE)
    path = f"/courriel/{row.id}/reponse"
    with console.client() as karim, console.client() as lea:
        local_login(karim, "khaddad")
        local_login(lea, "lmoreau")
        mine = form_of(open_page(karim, desk), "formulaire-reponse")
        take(lea, desk, "lmoreau")
        hers = form_of(open_page(lea, desk), "formulaire-reponse")
        hers["etat"] = str(last_event_id(desk.app.store.engine, row.id))
        assert hers["etat"] != mine["etat"]
        answers = at_once(path, (karim, mine), (lea, hers))
        assert sorted(a.status_code for a in answers) == [303, 409]
        (stopped,) = [a for a in answers if a.status_code == 409]
        assert 'id="collision"' in stopped.text and "Réponse préparée par" in stopped.text
    replies(desk, 1)
    assert [e.kind for e in desk.app.store.events(row.id)].count("reply_queued") == 1


def previewed_text(shown: httpx.Response) -> str:
    """The previewed text, the standard reply's or the free one's (its ids apart)."""
    found = re.search(r'<pre[^>]*id="apercu(?:-libre)?-texte"[^>]*>(.*?)</pre>', shown.text, re.S)
    assert shown.status_code == 200 and found
    return html.unescape(found.group(1))


def test_an_emptied_greeting_name_gives_bonjour_in_the_preview_and_the_mail(
    desk: Desk, console: RunningConsole
) -> None:
    """The field says « Absent ou vide : « Bonjour, » »: the agent who empties it is not
    overruled by the name the citizen's mail showed — as ``--var usager_nom=`` in the CLI;
    the free reply's field is the agent's too."""
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        page = open_page(client, desk)
        free = form_of(page, "formulaire-libre")
        free.update(texte="Votre dossier est complet.", usager_nom="")
        assert previewed_text(client.post(f"/courriel/{row.id}/apercu", data=free)).startswith(
            "Bonjour,\n"
        )
        free["usager_nom"] = "Madame Dupont"
        shown = previewed_text(client.post(f"/courriel/{row.id}/apercu", data=free))
        assert shown.startswith("Bonjour Madame Dupont,\n")
        fields = form_of(page, "formulaire-reponse")
        assert fields["usager_nom"] == "Marie Dupont"
        fields["usager_nom"] = ""
        shown = previewed_text(client.post(f"/courriel/{row.id}/apercu", data=fields))
        assert "\nBonjour,\n" in shown and "Marie Dupont" not in shown
        assert client.post(f"/courriel/{row.id}/reponse", data=fields).status_code == 303
        (mail,) = replies(desk, 1)
    assert mail.get_body(("plain",)).get_content() == shown  # type: ignore[union-attr]


def test_required_variable_and_incomplete_signature_refuse_sending(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        free = form_of(open_page(client, desk), "formulaire-libre")
        free["texte"] = "  "
        refused = client.post(f"/courriel/{row.id}/reponse", data=free)
        assert (
            refused.status_code == 400
            and "champ obligatoire vide : « Votre texte »" in refused.text
        )
        agents_file = console.settings.agents_path
        data = yaml.safe_load(agents_file.read_text(encoding="utf-8"))
        del data["agents"]["khaddad"]["function"]
        agents_file.write_text(dump_rules(data), encoding="utf-8")
        page = open_page(client, desk)
        assert 'id="signature-incomplete"' in page and "il manque fonction" in page
        fields = form_of(page, "formulaire-reponse")
        fields["usager_nom"] = "Madame Valeur-Gardée"
        refused = client.post(f"/courriel/{row.id}/reponse", data=fields)
        assert refused.status_code == 400 and "Il manque : fonction" in refused.text
        assert "Madame Valeur-Gardée" in refused.text  # what the agent typed is kept
        free["texte"] = "Votre dossier est complet."
        assert client.post(f"/courriel/{row.id}/reponse", data=free).status_code == 400
    replies(desk, 0)


def test_replying_is_authorised_on_the_messages_service(
    desk: Desk, console: RunningConsole
) -> None:
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        fields = form_of(open_page(client, desk), "formulaire-reponse")
    with console.client() as client:
        local_login(client, "mlefebvre")  # permis
        fields["csrf_token"] = csrf_from(client.get("/").text)
        assert client.post(f"/courriel/{row.id}/apercu", data=fields).status_code == 403
        assert client.post(f"/courriel/{row.id}/reponse", data=fields).status_code == 403
        del fields["csrf_token"]
        assert client.post(f"/courriel/{row.id}/reponse", data=fields).status_code == 403
    replies(desk, 0)


def textarea_of(page: str) -> tuple[str, str]:
    """The editable text of the answer form and the text it was filled with."""
    text = re.search(r'<textarea[^>]*id="texte-modifie"[^>]*>(.*?)</textarea>', page, re.S)
    base = re.search(
        r'<input type="hidden" id="texte-base" name="texte_base" value="([^"]*)"', page
    )
    assert text and base
    return html.unescape(text.group(1)), html.unescape(base.group(1))


def test_the_agent_edits_the_text_the_edit_is_sent_escaped_and_recorded_as_edited(
    desk: Desk, console: RunningConsole
) -> None:
    since = datetime.now(UTC).replace(microsecond=0)
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        page = open_page(client, desk)
        text, base = textarea_of(page)
        assert text == base and "Bonjour Marie Dupont," in text and "Karim Haddad" in text
        fields = form_of(page, "formulaire-reponse")
        fields["statut_dossier"] = "Votre dossier est complet."
        untouched = client.post(
            f"/courriel/{row.id}/apercu", data={**fields, "texte_modifie": text, "texte_base": base}
        )
        refreshed, _ = textarea_of(untouched.text)  # the textarea follows the variables
        assert 'hx-swap-oob="true"' in untouched.text and "Votre dossier est complet." in refreshed
        assert 'id="apercu-modifie"' not in untouched.text
        mine = refreshed.replace(
            "Bonjour Marie Dupont,", "Bonjour Madame Dupont,\n\nVu au guichet : <b>{{ 7*7 }}</b>."
        ).replace("\n", "\r\n")  # as a browser sends a textarea
        edited = {**fields, "texte_modifie": mine, "texte_base": refreshed}
        unsigned = {**edited, "texte_modifie": mine.replace("Instructeur, section du séjour", "")}
        shown = client.post(f"/courriel/{row.id}/apercu", data=unsigned)
        assert "il manque : fonction" in shown.text
        refused = client.post(f"/courriel/{row.id}/reponse", data=unsigned)
        assert refused.status_code == 400 and "il manque : fonction" in refused.text
        shown = client.post(f"/courriel/{row.id}/apercu", data=edited)
        assert 'id="apercu-modifie"' in shown.text and "hx-swap-oob" not in shown.text
        assert "&lt;b&gt;{{ 7*7 }}&lt;/b&gt;" in shown.text
        first = client.post(f"/courriel/{row.id}/reponse", data=edited)
        second = client.post(f"/courriel/{row.id}/reponse", data=edited)  # a double click
        assert first.status_code == second.status_code == 303
        (mail,) = replies(desk, 1)
        sent = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert sent == mine.replace("\r\n", "\n").strip("\n") + "\n"
        previewed = re.search(r'<pre[^>]*id="apercu-texte"[^>]*>(.*?)</pre>', shown.text, re.S)
        assert previewed and html.unescape(previewed.group(1)) == sent  # seen is sent
        markup = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "&lt;b&gt;{{ 7*7 }}&lt;/b&gt;" in markup and "<b>" not in markup
        assert mail["In-Reply-To"] == OVERDUE and f"[{row.reference}]" in mail["Subject"]
        thread = open_page(client, desk)
        assert "texte modifié par l&#39;agent : oui" in thread
    (event,) = [e for e in desk.app.store.events(row.id) if e.kind == "reply_queued"]
    assert '"edited": true' in event.detail
    month = month_of(desk, event.at, since)
    with console.client() as head:
        local_login(head, "lmoreau")  # head of etrangers: the indicators count it
        board = head.get(f"/indicateurs?service=etrangers&periode={month}")
    assert board.status_code == 200
    assert "préparées dans la période : 1, dont 1 au texte modifié" in board.text


def test_an_untouched_text_is_recorded_as_not_edited_and_the_attachment_goes(
    desk: Desk, console: RunningConsole
) -> None:
    since = datetime.now(UTC).replace(microsecond=0)
    row = desk.row(OVERDUE)
    folder = Path(__file__).resolve().parents[2] / "templates" / "reponse-dossier-etranger"
    with console.client() as client:
        local_login(client, "khaddad")
        page = open_page(client, desk)
        assert 'id="pieces-jointes-modele"' in page and "pièces-à-préparer.txt" in page
        text, base = textarea_of(page)
        fields = {**form_of(page, "formulaire-reponse"), "texte_modifie": text, "texte_base": base}
        shown = client.post(f"/courriel/{row.id}/apercu", data=fields)
        assert re.search(r'id="apercu-pieces"><li>pièces-à-préparer\.txt</li>', shown.text)
        assert client.post(f"/courriel/{row.id}/reponse", data=fields).status_code == 303
        (mail,) = replies(desk, 1)
    assert mail.get_body(("plain",)).get_content() == text  # type: ignore[union-attr]
    (attached,) = list(mail.iter_attachments())
    assert attached.get_filename() == "pièces-à-préparer.txt"
    assert attached.get_payload(decode=True) == (folder / "pièces-à-préparer.txt").read_bytes()
    (event,) = [e for e in desk.app.store.events(row.id) if e.kind == "reply_queued"]
    assert '"edited": false' in event.detail
    month = month_of(desk, event.at, since)
    with console.client() as head:
        local_login(head, "lmoreau")
        board = head.get(f"/indicateurs?service=etrangers&periode={month}")
    assert "préparées dans la période : 1, dont 0 au texte modifié" in board.text


def test_the_html_preview_shows_neither_the_title_nor_the_hidden_preheader(
    desk: Desk, console: RunningConsole
) -> None:
    """« Ce qui sera envoyé »: the HTML preview is the mail as a client shows it. Its
    <title> and its preheader (hidden by its style, shown by mail lists after the subject)
    showed as the first lines of the reply, once the cleaning had removed the style."""
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        fields = {**form_of(open_page(client, desk), "formulaire-reponse")}
        fields["modele"] = "reponse-rendez-vous-dmi"
        shown = client.post(f"/courriel/{row.id}/apercu", data=fields)
    assert shown.status_code == 200
    # The document the preview's frame shows (its srcdoc attribute, escaped).
    frame = shown.text.split('id="apercu-html"', 1)[1].split("</details>", 1)[0]
    region = html.unescape(frame).split("<body", 1)[1]
    assert "Votre rendez-vous à la préfecture" in region  # the heading
    assert f"Votre rendez-vous — référence {row.reference}" not in region
    preheader = re.search(r"<div([^>]*)>La Direction des migrations et de l", region)
    assert preheader and "hidden" in preheader.group(1)


def test_the_request_for_details_takes_its_missing_elements_one_per_line(
    desk: Desk, console: RunningConsole
) -> None:
    """« demande-precisions » (the answer to « Bonjour, où en est mon dossier ? ») needs
    the list of what is missing: the form had no field for a list, and its preview and
    sending failed on the missing variable. A box, one element per line, each a bullet;
    left empty, the reply asks the citizen to say what the request is."""
    row = desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}?modele=demande-precisions").text
        assert re.search(
            r'for="var-elements_manquants">Ce qui manque pour traiter la demande[ <]', page
        )
        assert re.search(r'<textarea[^>]*id="var-elements_manquants"', page)
        fields = form_of(page, "formulaire-reponse")
        assert fields["modele"] == "demande-precisions"
        fields["elements_manquants"] = "Le numéro de votre dossier.\r\n\r\nLa démarche concernée."
        shown = previewed_text(client.post(f"/courriel/{row.id}/apercu", data=fields))
        assert "\n- Le numéro de votre dossier.\n- La démarche concernée.\n" in shown
        empty = previewed_text(
            client.post(f"/courriel/{row.id}/apercu", data={**fields, "elements_manquants": ""})
        )
        assert "Précisez votre demande" in empty
        assert client.post(f"/courriel/{row.id}/reponse", data=fields).status_code == 303
        (mail,) = replies(desk, 1)
    assert mail.get_body(("plain",)).get_content() == shown  # type: ignore[union-attr]
