"""The administrator's quarantine pages on a real quarantine: a mail whose row the database
refused (real Dovecot, aiosmtpd, `mailbot poll`), then processed again from the console —
the same row updated, its AR delivered once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from poison import citizen
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
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
    assert retries == [{"agent": "tbernard", "message": str(pk), "result": "traite"}]


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
