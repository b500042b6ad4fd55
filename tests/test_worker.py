"""`mailbot run` as a real process: IDLE pick-up, reconnection after a drop, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config


def start_worker(config: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), "run", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_run_acknowledges_new_mail_reconnects_and_stops_on_sigterm(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    etrangers = dovecot.new_user("etr")
    config = write_config(tmp_path, imap_user, etrangers, smtp_server)
    imap_user.append(citizen_mail(1))  # backlog, read at start
    worker = start_worker(config, "--acknowledge-existing")
    try:
        smtp_server.wait_for(1, timeout=20)
        etrangers.append(
            citizen_mail(2, sender="idle@example.fr", to="pref-etrangers@seine-maritime.gouv.fr")
        )
        smtp_server.wait_for(2, timeout=10)  # seen through IDLE, well before the 60 s poll

        imap_user.drop_connections()  # the server drops mailbot's session
        time.sleep(0.5)
        imap_user.append(citizen_mail(3, sender="after.drop@example.fr"))
        received = smtp_server.wait_for(3, timeout=30)
        assert received[-1].rcpt_tos == ("after.drop@example.fr",)

        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err
    assert "mailbox unreachable, reconnecting later" in err
    lines = [line for line in err.splitlines() if "msg=message " in line]
    assert len(lines) == 3
    years = {m.internaldate.year for m in [*imap_user.messages(), *etrangers.messages()]}
    for line in lines:
        assert "decision=acknowledge" in line
        found = re.search(r"reference=SM-(\d{4})-\d{6}\b", line)
        assert found and int(found.group(1)) in years  # the year of the mail's INTERNALDATE
    assert "Bonjour" not in err  # no bodies in the logs
    assert len(smtp_server.messages) == 3  # nothing sent twice across the reconnection


def test_demo_acknowledges_citizens_only(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(root / "rules.yaml"),
            "demo",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line[:1].isdigit()]
    decisions = [row[2] for row in rows]
    assert decisions.count("acknowledge") == 12
    assert decisions.count("skip") == 3
    skipped = "\n".join(line for line in result.stdout.splitlines() if " skip " in line)
    assert (
        "null-return-path" in skipped and "mailing-list" in skipped and "auto-submitted" in skipped
    )
    outgoing = [path.read_bytes() for path in (tmp_path / "out" / "outgoing").glob("*.eml")]
    to_citizens = [raw for raw in outgoing if b"Auto-Submitted: auto-replied" in raw]
    forwards = [raw for raw in outgoing if b"Content-Type: message/rfc822" in raw]
    assert len(to_citizens) == 12
    assert len(forwards) == result.stdout.count(" → ") >= 5
    assert len(outgoing) == len(to_citizens) + len(forwards)
