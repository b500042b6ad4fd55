"""The administrator's quarantine pages on a real quarantine: a mail whose row the database
refused (real Dovecot, aiosmtpd, `mailbot poll`), then processed again from the console —
the same row updated, its AR delivered once. And a mail passed over (its quarantine row
refused three polls in a row: no row, an event saying where it is), listed apart, shown
and recorded from the console by a retry, as `mailbot quarantine retry P7` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from poison import citizen
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
from test_passed_over import pass_over_mail_1
from test_poison import allow_rows, ars_to, query, refuse_rows
from webtools import csrf_from, local_login, running_console

from mailbot.config import load_config
from mailbot.mail.originals import ImapOriginals


@pytest.fixture
def etrangers(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def test_admin_retries_a_quarantined_mail_from_the_console(
    tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=False)
    imap_user.deliver([citizen(1, "Titre de séjour urgent"), citizen(2, "Horaires")])
    poll = [sys.executable, "-m", "mailbot.cli", "--config", str(config), "poll", "--once"]
    result = subprocess.run(
        [*poll, "--acknowledge-existing"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    ((pk,),) = query(database, "SELECT id FROM messages WHERE decision = 'quarantine'")
    assert ars_to(smtp_server, "usager1@example.fr") == 0
    allow_rows(database)
    (tmp_path / "console").mkdir()
    with (
        running_console(tmp_path / "console", config=load_config(config), site=True) as console,
        console.client() as admin,
        console.client() as agent,
    ):
        local_login(admin, "tbernard")
        local_login(agent, "lmoreau")
        listing = admin.get("/admin/quarantaine")
        assert f'href="/admin/quarantaine/{pk}"' in listing.text
        assert "Titre de séjour urgent" in listing.text and "usager1@" not in listing.text
        page = agent.get("/")
        refused = agent.post(
            f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert refused.status_code == 403
        page = admin.get(f"/admin/quarantaine/{pk}")
        assert 'id="bouton-retraiter"' in page.text and "Traceback" in page.text
        with imap_user.unreadable(b"<poison-1@example.fr>"):  # found, but Dovecot won't read it
            unread = admin.post(
                f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": csrf_from(page.text)}
            )
        assert unread.headers["location"] == f"/admin/quarantaine/{pk}?resultat=illisible"
        assert (
            "le serveur de messagerie refuse de le lire"
            in admin.get(unread.headers["location"]).text
        )
        done = admin.post(
            f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/quarantaine?traite={pk}"
        after = admin.get(done.headers["location"])
        assert f"Le courriel #{pk} a été traité à nouveau" in after.text
        assert f'href="/admin/quarantaine/{pk}"' not in after.text
        again = admin.post(
            f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert again.status_code == 404  # no longer quarantined: nothing to do
        retries = console.events("quarantine_retry")
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    rows = query(database, "SELECT id, decision FROM messages ORDER BY id")
    assert len(rows) == 2 and (rows[0].id, rows[0].decision) == (pk, "acknowledge")
    assert retries == [
        {"agent": "tbernard", "message": str(pk), "result": "illisible"},
        {"agent": "tbernard", "message": str(pk), "result": "traite"},
    ]


def _quarantined(
    tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> tuple[Path, str, int]:
    """A real quarantine: the database refused the first mail's row during `mailbot poll`."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=False)
    imap_user.deliver([citizen(1, "Titre de séjour urgent")])
    poll = [sys.executable, "-m", "mailbot.cli", "--config", str(config), "poll", "--once"]
    result = subprocess.run(
        [*poll, "--acknowledge-existing"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    ((pk,),) = query(database, "SELECT id FROM messages WHERE decision = 'quarantine'")
    allow_rows(database)
    return config, database, pk


def test_two_retries_at_once_send_one_ar(
    tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    """A double click on « Traiter à nouveau »: the second POST arrives while the first one
    fetches the mail from Dovecot (both passed the "still quarantined?" check). The mail is
    read through the console's own originals, and the citizen gets one AR, not two."""
    config, database, pk = _quarantined(tmp_path, imap_user, etrangers, smtp_server)
    imap = ImapOriginals(load_config(config))
    fetched: list[int] = []
    second: list[int] = []

    class DoubleClick:
        """The real IMAP originals; during the first fetch, the admin clicks again."""

        def fetch(self, row: Any) -> Any:
            fetched.append(row.id)
            mail = imap.fetch(row)
            if len(fetched) == 1:
                again = other.post(f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": token})
                second.append(again.status_code)
            return mail

    (tmp_path / "console").mkdir()
    with (
        running_console(
            tmp_path / "console", config=load_config(config), site=True, originals=DoubleClick()
        ) as console,
        console.client() as admin,
        console.client() as other,
    ):
        local_login(admin, "tbernard")
        local_login(other, "tbernard")
        token = csrf_from(other.get(f"/admin/quarantaine/{pk}").text)
        page = admin.get(f"/admin/quarantaine/{pk}")
        first = admin.post(
            f"/admin/quarantaine/{pk}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
    assert fetched == [pk, pk]  # the console's originals, both clicks past the first check
    assert second == [303]  # the inner click processed it
    assert first.status_code == 404  # the outer one found it done: nothing queued
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert query(database, "SELECT decision FROM messages") == [("acknowledge",)]


def passed_over_events(database: str) -> list[tuple[int, int | None]]:
    rows = query(database, "SELECT id, message_pk FROM events WHERE kind = 'passed_over'")
    return [(int(event), pk) for event, pk in rows]


def test_admin_sees_and_records_a_mail_passed_over_from_the_console(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The mail passed over is listed in a section of its own (its location, never its
    sender), shown with its traceback to the administrator only, and « Traiter à nouveau »
    runs `quarantine retry P7`: refused again, it stays passed over and the page says so;
    once the database takes it, a row records it, its AR leaves once, it leaves the page."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event = pass_over_mail_1(config, database, imap_user, capsys)
    (tmp_path / "console").mkdir()
    with (
        running_console(tmp_path / "console", config=load_config(config), site=True) as console,
        console.client() as admin,
        console.client() as agent,
    ):
        local_login(admin, "tbernard")
        local_login(agent, "lmoreau")
        listing = admin.get("/admin/quarantaine").text
        assert '<h2 id="titre-non-enregistres">Courriels non enregistrés</h2>' in listing
        assert "toujours sur le serveur" in listing and "aucun accusé de réception" in listing
        section = listing.split('id="non-enregistres"', 1)[1]
        assert f'<a href="/admin/quarantaine/P{event}">P{event}</a>' in section
        assert "<td>general</td>" in section and "<td>INBOX</td>" in section
        assert "Titre de séjour urgent" not in listing and "usager1@" not in listing
        page = admin.get(f"/admin/quarantaine/P{event}")
        assert page.status_code == 200
        assert f"<h1>Courriel non enregistré P{event}</h1>" in page.text
        assert "<dt>UID</dt><dd>1</dd>" in page.text and "<dd>INBOX</dd>" in page.text
        assert 'id="trace"' in page.text and "Traceback" in page.text
        assert 'id="bouton-retraiter"' in page.text and "usager1@" not in page.text
        assert agent.get(f"/admin/quarantaine/P{event}").status_code == 403
        denied = agent.post(
            f"/admin/quarantaine/P{event}/retraiter",
            data={"csrf_token": csrf_from(agent.get("/").text)},
        )
        assert denied.status_code == 403
        forged = admin.post(f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": "x"})
        assert forged.status_code == 403

        # The database still refuses it: nothing recorded, the page says it stays so.
        still = admin.post(
            f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert still.status_code == 303
        assert still.headers["location"] == f"/admin/quarantaine/P{event}?resultat=refuse"
        assert "il reste non enregistré" in admin.get(still.headers["location"]).text
        assert passed_over_events(database) == [(event, None)]

        # At its place, but Dovecot will not read it: said as such, not as a mailbox down.
        with imap_user.unreadable(b"Titre de s"):
            unread = admin.post(
                f"/admin/quarantaine/P{event}/retraiter",
                data={"csrf_token": csrf_from(page.text)},
            )
        assert unread.headers["location"] == f"/admin/quarantaine/P{event}?resultat=illisible"
        assert (
            "le serveur de messagerie refuse de le lire"
            in admin.get(unread.headers["location"]).text
        )
        assert passed_over_events(database) == [(event, None)]

        allow_rows(database)
        done = admin.post(
            f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/quarantaine?enregistre={event}"
        after = admin.get(done.headers["location"]).text
        assert f"Le courriel non enregistré P{event} a été traité à nouveau" in after
        assert f"/admin/quarantaine/P{event}" not in after and "non-enregistres" not in after
        again = admin.post(
            f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        assert again.status_code == 404  # a row records it: nothing to do
        assert admin.get(f"/admin/quarantaine/P{event}").status_code == 404
        retries = console.events("quarantine_retry")
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    ((row_id, decision),) = query(database, "SELECT id, decision FROM messages WHERE uid = 1")
    assert decision == "acknowledge"
    assert passed_over_events(database) == [(event, row_id)]
    assert retries == [
        {"agent": "tbernard", "message": f"P{event}", "result": "refuse"},
        {"agent": "tbernard", "message": f"P{event}", "result": "illisible"},
        {"agent": "tbernard", "message": f"P{event}", "result": "traite"},
    ]


def test_a_mail_passed_over_that_raises_again_leads_to_its_quarantined_row(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The retry meets the mail's own error again, but the database takes its quarantine
    row now: the page leads to that row, which says so, its history holding the event."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event = pass_over_mail_1(config, database, imap_user, capsys)
    allow_rows(database)
    refuse_rows(database, 1)  # its row refused, not its quarantine row
    (tmp_path / "console").mkdir()
    with (
        running_console(tmp_path / "console", config=load_config(config), site=True) as console,
        console.client() as admin,
    ):
        local_login(admin, "tbernard")
        page = admin.get(f"/admin/quarantaine/P{event}")
        done = admin.post(
            f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        ((pk,),) = query(database, "SELECT id FROM messages WHERE decision = 'quarantine'")
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/quarantaine/{pk}?resultat=enregistre"
        row_page = admin.get(done.headers["location"]).text
        assert "il est maintenant enregistré, mais en quarantaine" in row_page
        assert "passed_over" in row_page.split('id="evenements"', 1)[1]
        listing = admin.get("/admin/quarantaine").text
        assert f'href="/admin/quarantaine/{pk}"' in listing and "non-enregistres" not in listing
        retries = console.events("quarantine_retry")
    assert retries == [{"agent": "tbernard", "message": f"P{event}", "result": "reste"}]
    assert passed_over_events(database) == [(event, pk)]
    assert ars_to(smtp_server, "usager1@example.fr") == 0


def test_two_retries_of_a_mail_passed_over_at_once_send_one_ar(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A double click on « Traiter à nouveau » for a mail passed over: the second POST
    arrives while the first fetches the mail from Dovecot (both found it still passed
    over). The inner one records it; the outer one, at its claim of the event, finds a row
    recording it and records nothing: one row, one AR."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event = pass_over_mail_1(config, database, imap_user, capsys)
    allow_rows(database)
    imap = ImapOriginals(load_config(config))
    fetched: list[str] = []
    second: list[int] = []

    class DoubleClick:
        """The real IMAP originals; during the first fetch, the admin clicks again."""

        def fetch(self, row: Any) -> Any:
            fetched.append(str(row.id))
            mail = imap.fetch(row)
            if len(fetched) == 1:
                again = other.post(
                    f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": token}
                )
                second.append(again.status_code)
            return mail

    (tmp_path / "console").mkdir()
    with (
        running_console(
            tmp_path / "console", config=load_config(config), site=True, originals=DoubleClick()
        ) as console,
        console.client() as admin,
        console.client() as other,
    ):
        local_login(admin, "tbernard")
        local_login(other, "tbernard")
        token = csrf_from(other.get(f"/admin/quarantaine/P{event}").text)
        page = admin.get(f"/admin/quarantaine/P{event}")
        first = admin.post(
            f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": csrf_from(page.text)}
        )
        retries = console.events("quarantine_retry")
    assert fetched == [f"P{event}", f"P{event}"]  # both clicks past the first check
    assert second == [303]  # the inner click recorded it
    assert first.status_code == 404  # the outer one found it done: nothing queued
    assert retries == [{"agent": "tbernard", "message": f"P{event}", "result": "traite"}]
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert query(database, "SELECT uid, decision FROM messages ORDER BY uid") == [
        (1, "acknowledge"),
        (2, "acknowledge"),
    ]


def dismissals(database: str) -> list[str]:
    return [d for (d,) in query(database, "SELECT detail FROM events WHERE kind LIKE '%dismissed'")]


def test_admin_dismisses_a_mail_passed_over_from_the_console(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """« Classer » on a mail passed over's page (`quarantine dismiss P7`): the
    administrator's alone, under the CSRF token; a reason is required (refused: the page
    again, the field marked, nothing recorded). Dismissed, the mail leaves the list (which
    says so), its page tells who closed it and why, without the forms; a second click
    dismisses nothing more, and a retry finds nothing to do. The server's copy is left
    alone; each dismissal asked is audited as a retry is."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event = pass_over_mail_1(config, database, imap_user, capsys)
    on_server = (imap_user.uids(), imap_user.flags())
    (tmp_path / "console").mkdir()
    with (
        running_console(tmp_path / "console", config=load_config(config), site=True) as console,
        console.client() as admin,
        console.client() as agent,
    ):
        local_login(admin, "tbernard")
        local_login(agent, "lmoreau")
        page = admin.get(f"/admin/quarantaine/P{event}")
        assert f'action="/admin/quarantaine/P{event}/classer"' in page.text
        assert '<label class="fr-label" for="motif-classer">' in page.text
        assert 'id="bouton-classer">Classer</button>' in page.text
        token = csrf_from(page.text)
        denied = agent.post(
            f"/admin/quarantaine/P{event}/classer",
            data={"csrf_token": csrf_from(agent.get("/").text), "motif": "vu"},
        )
        assert denied.status_code == 403
        forged = admin.post(f"/admin/quarantaine/P{event}/classer", data={"motif": "vu"})
        assert forged.status_code == 403
        empty = admin.post(
            f"/admin/quarantaine/P{event}/classer", data={"csrf_token": token, "motif": "  "}
        )
        assert empty.status_code == 400
        assert 'aria-invalid="true"' in empty.text and 'id="erreur-classer"' in empty.text
        assert "indiquez comment ce courriel a été traité hors de mailbot" in empty.text
        assert dismissals(database) == []

        reason = "Fichier illisible : <b>répondu</b> à la main"
        done = admin.post(
            f"/admin/quarantaine/P{event}/classer", data={"csrf_token": token, "motif": reason}
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/admin/quarantaine?classe={event}"
        listing = admin.get(done.headers["location"]).text
        assert f"Le courriel non enregistré P{event} a été classé" in listing
        assert "non-enregistres" not in listing and f"/admin/quarantaine/P{event}" not in listing
        shown = admin.get(f"/admin/quarantaine/P{event}")
        assert shown.status_code == 200
        assert "par tbernard : traité hors de mailbot" in shown.text
        assert "Fichier illisible : &lt;b&gt;répondu&lt;/b&gt; à la main" in shown.text
        assert "<b>répondu</b>" not in shown.text
        assert "bouton-classer" not in shown.text and "bouton-retraiter" not in shown.text
        assert 'id="trace"' in shown.text  # its story kept

        again = admin.post(
            f"/admin/quarantaine/P{event}/classer", data={"csrf_token": token, "motif": "bis"}
        )
        assert again.status_code == 303
        assert again.headers["location"] == f"/admin/quarantaine/P{event}"
        retry = admin.post(f"/admin/quarantaine/P{event}/retraiter", data={"csrf_token": token})
        assert retry.status_code == 404
        audited = console.events("quarantine_dismiss")
    (detail,) = dismissals(database)
    assert '"agent": "tbernard"' in detail and "<b>répondu</b>" in detail
    assert audited == [
        {"agent": "tbernard", "message": f"P{event}", "result": "motif"},
        {"agent": "tbernard", "message": f"P{event}", "result": "classe"},
    ]
    assert (imap_user.uids(), imap_user.flags()) == on_server
    assert query(database, "SELECT uid FROM messages") == [(2,)]
    assert ars_to(smtp_server, "usager1@example.fr") == 0
