"""The first poll of a folder the database does not know, with mail already in it, answers
nothing: it stops with a message pointing to `backfill` or `--acknowledge-existing`.

Against the real Dovecot and aiosmtpd: what must not happen is an AR leaving.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer
from test_e2e import ETRANGERS, citizen_mail, db_rows, etrangers_user, poll, write_config

from mailbot.cli import main
from mailbot.store import Store

__all__ = ["etrangers_user"]
REFUSED = 3


@pytest.fixture
def filled(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> tuple[Path, MailUser, MailUser, SmtpServer]:
    """A fresh database; the general mailbox already holds two citizens' mails, from
    last month; the etrangers mailbox is empty."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    last_month = datetime.now(UTC) - timedelta(days=30)
    imap_user.append(citizen_mail(1), internaldate=last_month)
    imap_user.append(citizen_mail(2, sender="ancien@example.fr"), internaldate=last_month)
    return config, imap_user, etrangers_user, smtp_server


def test_first_poll_with_mail_already_there_sends_nothing_and_says_why(
    filled: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _general, etrangers, smtp = filled
    assert poll(config) == REFUSED
    err = capsys.readouterr().err
    assert "mailbox general, folder INBOX" in err
    assert "already holds 2 mail(s); nothing was acknowledged" in err
    assert "mailbot backfill --since" in err and "--acknowledge-existing" in err
    assert str(config.parent / "mailbot.db") in err  # which database it looked at
    assert smtp.messages == []
    assert db_rows(config, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert db_rows(config, "SELECT mailbox FROM folders") == [("etrangers",)]  # empty: fine
    assert poll(config) == REFUSED  # still refused: nothing was recorded as read

    etrangers.append(citizen_mail(3, sender="olena@example.net", to=ETRANGERS))
    assert poll(config) == REFUSED  # general still refused, etrangers served meanwhile
    assert smtp.wait_for(1)[0].rcpt_tos == ("olena@example.net",)


def test_backfill_then_only_new_mail_gets_an_ar(filled: Any) -> None:
    config, general, _etrangers, smtp = filled
    assert poll(config) == REFUSED
    since = (date.today() - timedelta(days=60)).isoformat()
    assert main(["--config", str(config), "-q", "backfill", "--since", since]) == 0
    assert smtp.messages == []
    rows = db_rows(config, "SELECT sender, ar_status FROM messages ORDER BY uid")
    assert rows == [("marie.dupont@example.fr", "backfill"), ("ancien@example.fr", "backfill")]

    general.append(citizen_mail(4, sender="nouveau@example.fr"))
    assert poll(config) == 0
    assert [r.rcpt_tos for r in smtp.wait_for(1)] == [("nouveau@example.fr",)]
    assert poll(config) == 0
    assert len(smtp.messages) == 1


def test_backfill_since_after_the_old_mail_still_marks_it_read(filled: Any) -> None:
    """History older than --since is not recorded, but it is not answered either."""
    config, general, _etrangers, smtp = filled
    today = date.today().isoformat()
    assert main(["--config", str(config), "-q", "backfill", "--since", today]) == 0
    assert db_rows(config, "SELECT COUNT(*) FROM messages") == [(0,)]
    general.append(citizen_mail(5, sender="apres@example.fr"))
    assert poll(config) == 0
    assert [r.rcpt_tos for r in smtp.wait_for(1)] == [("apres@example.fr",)]


def test_acknowledge_existing_answers_what_is_there(filled: Any) -> None:
    config, _general, _etrangers, smtp = filled
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "ancien@example.fr",
        "marie.dupont@example.fr",
    ]


def test_an_interrupted_backfill_keeps_the_folder_refused_until_finished(filled: Any) -> None:
    config, general, _etrangers, smtp = filled
    url = f"sqlite:///{config.parent / 'mailbot.db'}"
    store = Store(url)
    with store.transaction() as tx:  # what a backfill killed after its first mail leaves
        tx.set_backfill_pending("general", "INBOX", True)
        tx.save_folder_state("general", "INBOX", general.uid_validity(), 1)
    store.close()
    assert poll(config) == REFUSED
    assert smtp.messages == []
    since = (date.today() - timedelta(days=60)).isoformat()
    assert main(["--config", str(config), "-q", "backfill", "--since", since]) == 0
    assert db_rows(config, "SELECT uid FROM messages") == [(2,)]  # resumed after UID 1
    assert poll(config) == 0
    assert smtp.messages == []


def test_run_stops_with_the_message_and_sends_nothing(filled: Any) -> None:
    config, _general, _etrangers, smtp = filled
    result = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == REFUSED
    assert "error: mailbox general, folder INBOX" in result.stderr
    assert "nothing was acknowledged" in result.stderr
    assert smtp.messages == []


def test_sent_folder_first_poll_reads_its_history_sending_nothing(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Sent folders and the tracking mailbox send nothing: their first poll reads what they
    hold (replies to tracked messages are recorded), it is never refused."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    data = load_rules(config)
    data["mailboxes"]["general"]["imap"]["sent_folder"] = "Sent"
    config.write_text(dump_rules(data), encoding="utf-8")
    imap_user.append(
        b"From: agent@seine-maritime.gouv.fr\r\nTo: someone@example.fr\r\nSubject: old reply\r\n"
        b"Message-ID: <old-sent@seine-maritime.gouv.fr>\r\n\r\nBonjour\r\n",
        folder="Sent",
    )
    assert poll(config) == 0
    assert smtp_server.messages == []
    folders = db_rows(config, "SELECT folder, last_uid FROM folders WHERE mailbox='general'")
    assert sorted(folders) == [("INBOX", 0), ("Sent", 1)]
