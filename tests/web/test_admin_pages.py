"""The administrator's quarantine pages on a real quarantine: a mail whose row the database
refused (real Dovecot, aiosmtpd, `mailbot poll`), then processed again from the console —
the same row updated, its AR delivered once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from poison import citizen
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
from test_poison import allow_rows, ars_to, query, refuse_rows
from webtools import csrf_from, local_login, running_console

from mailbot.config import load_config


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
