"""The console while PostgreSQL refuses writes (a failover, a maintenance: SQLSTATE 25006,
``pg.read_only``) or cannot be reached (connection refused), over real HTTP, on mail the
real pipeline read from Dovecot into a PostgreSQL database of the test's own.

Before: the message page wrote the agent's presence on every view, and a refused write was
the 500 page (« Erreur inattendue ») with an ERROR line; a reply typed during a maintenance
was lost. Now reading goes on (the presence is skipped), and an action, a login or a
logout the database refuses is a French 503 page saying what was (not) done, the typed
text kept in its form, one WARNING line without traceback."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from deskworld import Desk, citizen_mail, desk_console, desk_rules, read_desk
from deskworld import three_weeks_back_on_monday as overdue_date
from pg import fresh_database, read_only
from rulesfile import dump_rules
from servers import DovecotServer, SmtpServer
from test_desk_actions import state_of
from test_desk_reply import form_of, replies, textarea_of
from webtools import PASSWORD, RunningConsole, csrf_from, local_login, running_console

from mailbot.app.context import app_from_config
from mailbot.core.statuses import OutboxKind
from mailbot.store.schema import outbox

ACCOUNTS = ("khaddad", "lmoreau", "ngarnier")
OVERDUE = "<citizen-1@example.fr>"
READ_ONLY = (
    "La base de données n'accepte pas d'enregistrement pour le moment (maintenance) :"
    " rien n'a été envoyé ni enregistré. Réessayez dans quelques minutes."
)
UNAVAILABLE = "La base de données est indisponible pour le moment (maintenance ou panne)"


@pytest.fixture
def pg_desk(
    tmp_path: Path, dovecot: DovecotServer, postgres: str, smtp_server: SmtpServer
) -> Iterator[Desk]:
    """Two citizens' mails to etrangers (one overdue) read by ``mailbot poll --once`` into
    a PostgreSQL database of the test's own; their ARs delivered and forgotten."""
    if not dovecot.running:
        dovecot.start()
    general, etrangers = dovecot.new_user(), dovecot.new_user("etr")
    etrangers.append(citizen_mail(1), internaldate=overdue_date(datetime.now(UTC)))
    etrangers.append(citizen_mail(2, name="Ali Ben", subject="Récépissé de demande de titre"))
    data = desk_rules(tmp_path, general, etrangers, smtp_server)
    data["database"] = fresh_database(postgres, "outage", str(tmp_path))
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    desk = read_desk(path, general, etrangers, smtp_server, 2)
    try:
        yield desk
    finally:
        desk.app.close()


@pytest.fixture
def console(pg_desk: Desk, tmp_path: Path) -> Iterator[RunningConsole]:
    with desk_console(pg_desk, tmp_path, ACCOUNTS, site=True) as running:
        yield running


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The console's log lines, debug ones included."""
    caplog.set_level(logging.DEBUG, logger="mailbot")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mailbot") and r.levelno == level]


def alert(page: str) -> str:
    """The text of the page's error alert (the DSFR alert of the message page's
    ``id="erreur"``), or of the error page."""
    found = re.search(r'id="(?:erreur|message-erreur)"[^>]*>(.*?)</(?:div|p)>', page, re.S)
    assert found, page[-3000:]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).replace("&#39;", "'")


def queued(desk: Desk) -> list[str]:
    """The kinds of mail the outbox holds besides the ARs (a reply, a notice, a forward)."""
    with desk.app.store.engine.connect() as conn:
        kinds = conn.execute(sa.select(outbox.c.kind).where(outbox.c.kind != OutboxKind.AR))
        return [str(kind) for (kind,) in kinds]


def events(desk: Desk, kind: str) -> list[object]:
    return [e for e in desk.app.store.events(desk.row(OVERDUE).id) if e.kind == kind]


def test_reading_pages_work_while_the_database_refuses_writes(
    pg_desk: Desk, console: RunningConsole, logged: pytest.LogCaptureFixture
) -> None:
    """The queue, a message page, its presence refresh and the indicators are reads: only
    the presence (who has the page open) was written, on each view, and its refusal made
    the page a 500. It is skipped (a debug line), the page shown."""
    url = str(pg_desk.config.database)
    row = pg_desk.row(OVERDUE)
    with console.client() as agent, console.client() as head:
        assert local_login(agent, "khaddad").status_code == 303
        assert local_login(head, "lmoreau").status_code == 303
        read_only(url)
        try:
            assert agent.get("/").status_code == 200
            page = agent.get(f"/courriel/{row.id}")
            assert page.status_code == 200, alert(page.text)
            assert "Renouvellement de mon titre de séjour" in page.text
            presence = agent.get(f"/courriel/{row.id}/presence", headers={"HX-Request": "true"})
            assert presence.status_code == 200
            assert head.get(f"/courriel/{row.id}").status_code == 200
            assert head.get("/indicateurs").status_code == 200
        finally:
            read_only(url, on=False)
    assert not lines(logged, logging.ERROR) and not lines(logged, logging.WARNING)
    skipped = [r for r in lines(logged, logging.DEBUG) if r.getMessage().startswith("presence")]
    assert len(skipped) == 3 and "SQLSTATE 25006" in str(skipped[0].__dict__["reason"])


def test_a_reply_refused_by_a_read_only_database_keeps_the_draft_and_sends_nothing(
    pg_desk: Desk, console: RunningConsole, logged: pytest.LogCaptureFixture
) -> None:
    url = str(pg_desk.config.database)
    row = pg_desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "khaddad")
        page = client.get(f"/courriel/{row.id}").text
        fields = form_of(page, "formulaire-reponse")
        fields["statut_dossier"] = "Votre dossier est en cours d'instruction."
        text, base = textarea_of(page)
        mine = text.replace("Bonjour Marie Dupont,", "Bonjour Madame Dupont, vue au guichet,")
        fields.update({"texte_modifie": mine, "texte_base": base})
        read_only(url)
        try:
            refused = client.post(f"/courriel/{row.id}/reponse", data=fields)
        finally:
            read_only(url, on=False)
        assert refused.status_code == 503
        assert alert(refused.text) == READ_ONLY
        assert 'role="alert"' in refused.text  # the page's usual error place
        # no lost draft: the variables and the text the agent edited, as they were
        assert "Votre dossier est en cours d&#39;instruction." in refused.text
        assert textarea_of(refused.text) == (mine, base)
        assert queued(pg_desk) == [] and events(pg_desk, "reply_queued") == []
        assert pg_desk.smtp.messages == []
        (warning,) = lines(logged, logging.WARNING)
        assert warning.exc_info is None and "SQLSTATE 25006" in str(warning.__dict__["reason"])
        assert not lines(logged, logging.ERROR)
        # writable again, the form shown again is sent: one reply
        again = form_of(refused.text, "formulaire-reponse")
        again.update(zip(("texte_modifie", "texte_base"), textarea_of(refused.text), strict=True))
        assert client.post(f"/courriel/{row.id}/reponse", data=again).status_code == 303
    (mail,) = replies(pg_desk, 1)
    sent = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Bonjour Madame Dupont, vue au guichet," in sent


def test_an_assignment_and_a_transfer_refused_by_a_read_only_database(
    pg_desk: Desk, console: RunningConsole, logged: pytest.LogCaptureFixture
) -> None:
    """Each a 503 with the French alert, the reason typed kept in its form (opened),
    nothing recorded, no notice nor forward queued, one WARNING each."""
    url = str(pg_desk.config.database)
    row = pg_desk.row(OVERDUE)
    with console.client() as client:
        local_login(client, "lmoreau")
        page = client.get(f"/courriel/{row.id}").text
        token = csrf_from(page)
        read_only(url)
        try:
            assign = {"csrf_token": token, "etat": state_of(page, "attribuer"), "a": "khaddad"}
            assigned = client.post(f"/courriel/{row.id}/action/attribuer", data=assign)
            transfer = {
                "csrf_token": token,
                "etat": state_of(page, "transferer"),
                "service": "cartes-grises",
                "motif": "Demande de certificat d'immatriculation",
            }
            moved = client.post(f"/courriel/{row.id}/action/transferer", data=transfer)
        finally:
            read_only(url, on=False)
    for response in (assigned, moved):
        assert response.status_code == 503 and alert(response.text) == READ_ONLY
    form = moved.text.split('id="action-transferer"', 1)[1].split("</form>", 1)[0]
    assert 'value="Demande de certificat d&#39;immatriculation"' in form
    assert re.search(r'<option value="cartes-grises" selected>', form)
    assert re.search(r"<details[^>]* open>\s*<summary>Transférer", moved.text)
    assert pg_desk.row(OVERDUE).assignee is None and pg_desk.row(OVERDUE).service == "etrangers"
    assert queued(pg_desk) == [] and events(pg_desk, "transferred") == []
    assert pg_desk.smtp.messages == []
    assert len(lines(logged, logging.WARNING)) == 2 and not lines(logged, logging.ERROR)


def test_login_and_logout_while_the_database_refuses_writes(
    pg_desk: Desk, console: RunningConsole, logged: pytest.LogCaptureFixture
) -> None:
    """A login writes nothing (the session is a signed cookie; the database only keeps
    the ended ones): it works. A login replacing a session must end that one in the
    database: refused, a 503 login page that says why. A logout ends the session in this
    browser and says that the database could not note it (503)."""
    url = str(pg_desk.config.database)
    with console.client() as fresh, console.client() as again, console.client() as leaving:
        local_login(again, "lmoreau")
        local_login(leaving, "ngarnier")
        token = csrf_from(leaving.get("/").text)
        # the login form of a tab opened before, sent by an agent still logged in
        login = {"identifiant": "lmoreau", "mot_de_passe": PASSWORD}
        login["csrf_token"] = csrf_from(again.get("/").text)
        read_only(url)
        try:
            assert local_login(fresh, "khaddad").status_code == 303
            assert fresh.get("/").status_code == 200
            replaced = again.post("/connexion", data=login)
            out = leaving.post("/deconnexion", data={"csrf_token": token})
            after = leaving.get("/")
        finally:
            read_only(url, on=False)
    assert replaced.status_code == 503 and "Connexion à la console mailbot" in replaced.text
    assert "n'accepte pas d'enregistrement pour le moment (maintenance)" in alert_of_login(
        replaced.text
    )
    assert out.status_code == 503 and "Vous êtes déconnecté de ce navigateur" in alert(out.text)
    assert after.status_code == 303 and after.headers["location"] == "/connexion"
    assert console.events("logout") == [{"agent": "ngarnier", "ip": "127.0.0.1"}]
    assert len(lines(logged, logging.WARNING)) == 2 and not lines(logged, logging.ERROR)


def alert_of_login(page: str) -> str:
    found = re.search(r'class="fr-alert fr-alert--error[^"]*"[^>]*>(.*?)</div>', page, re.S)
    assert found, page[-3000:]
    return re.sub(r"<[^>]+>", "", found.group(1)).replace("&#39;", "'")


class Cut:
    """A loopback port forwarding to PostgreSQL's, closed at will: the database as the
    console meets it when a failover takes it away (its connections dropped, new ones
    refused)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for end in self.open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def test_an_unreachable_database_gives_clear_503_pages(
    pg_desk: Desk, tmp_path: Path, logged: pytest.LogCaptureFixture
) -> None:
    """Connection refused: every page that reads is a 503 saying the database is
    unavailable (the login wall itself reads the ended sessions), an action too; a WARNING
    for the action and for the first page read, no ERROR, no traceback."""
    url = sa.make_url(str(pg_desk.config.database))
    cut = Cut(int(url.port or 5432))
    proxied = url.set(port=cut.port).render_as_string(hide_password=False)
    app = app_from_config(pg_desk.config.model_copy(update={"database": proxied}))
    row = pg_desk.row(OVERDUE)
    web = tmp_path / "cut"
    web.mkdir()
    try:
        with (
            running_console(
                web, accounts=ACCOUNTS, config=pg_desk.config, backend=app, site=True
            ) as running,
            running.client() as client,
            running.client() as late,
        ):
            local_login(client, "khaddad")
            page = client.get(f"/courriel/{row.id}").text
            fields = form_of(page, "formulaire-reponse")
            text, base = textarea_of(page)
            mine = text.replace("Bonjour Marie Dupont,", "Bonjour Madame Dupont, vue au guichet,")
            fields.update({"texte_modifie": mine, "texte_base": base})
            cut.close()
            pages = [client.get("/"), client.get(f"/courriel/{row.id}")]
            sent = client.post(f"/courriel/{row.id}/reponse", data=fields)
            assert local_login(late, "lmoreau").status_code == 303  # no database needed
            pages.append(late.get("/"))
    finally:
        app.close()
    for response in [*pages, sent]:
        assert response.status_code == 503, response.text[-2000:]
        assert alert(response.text).startswith(UNAVAILABLE)
    assert "la page ne peut pas être affichée" in alert(pages[0].text)
    assert "votre demande n'a peut-être pas abouti" in alert(sent.text)  # may it have been?
    # refused at the door (the login wall reads the database), the page cannot be shown
    # again: the reply's text is given to copy
    draft = re.search(
        r'<textarea[^>]*id="brouillon"[^>]*readonly>(.*?)</textarea>', sent.text, re.S
    )
    assert draft and html.unescape(draft.group(1)) == mine
    assert queued(pg_desk) == [] and pg_desk.smtp.messages == []
    # The first page read refused is a WARNING, the next reads for the same reason within
    # a minute are DEBUG (every open message page refreshes its presence: thousands of
    # lines an hour of an outage before); the agent's action refused is a WARNING itself.
    warnings = lines(logged, logging.WARNING)
    said = [(w.__dict__["method"], w.__dict__["path"]) for w in warnings]
    assert said == [("GET", "/"), ("POST", f"/courriel/{row.id}/reponse")], said
    assert all(w.exc_info is None for w in warnings)
    assert "connection" in str(warnings[0].__dict__["reason"])
    refused = "console request refused by the database"
    assert sum(r.getMessage() == refused for r in lines(logged, logging.DEBUG)) == 2
    assert not lines(logged, logging.ERROR)


def test_a_request_refused_uncaught_is_never_said_to_have_done_nothing() -> None:
    """The review: a request that reaches the error pages uncaught may have committed part
    of its work first (an administrator's retry records the AR, then delivers, and the
    delivery meets the read-only database): « rien n'a été envoyé ni enregistré » would be
    false there. Only a page that knows its one transaction was refused says it."""
    from mailbot.web import outage

    read_only = outage.Refusal(read_only=True, reason="SQLSTATE 25006")
    uncaught = outage.page_text(read_only, safe=False)
    assert uncaught.startswith(outage.READ_ONLY)
    assert "n'a peut-être pas abouti" in uncaught and "rien n'a été" not in uncaught
    assert "rien n'a été envoyé ni enregistré" in outage.nothing_done(read_only)
    assert "la page ne peut pas être affichée" in outage.page_text(read_only, safe=True)
