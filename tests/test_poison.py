"""Poison mail never stops a mailbox, and what cannot be processed is seen (issues 9 and 10).

Real processes (`mailbot poll --once`, `mailbot run`), the real Dovecot and aiosmtpd, on
SQLite and on PostgreSQL. Database failures are real too: a trigger makes the database
refuse one mail's row, as a column limit or a constraint would.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from poison import citizen, poison_mails
from refusals import allow_rows, query, refuse_rows
from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config

from mailbot.cli import main
from mailbot.core.workdays import WorkingCalendar
from mailbot.store import Store

GOOD = citizen(99, "Demande de rendez-vous en préfecture")


@pytest.fixture
def etrangers(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def inproc(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> Any:
    """The same command in this process (quicker than a new interpreter), output captured."""
    capsys.readouterr()
    try:
        code = main(["--config", str(config), *args])
    finally:
        logging.getLogger().handlers[:] = []  # setup_logging's handler writes to capsys
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def start_worker(config: Path, log: Path, verbose: bool = False) -> subprocess.Popen[bytes]:
    """``mailbot run`` (``verbose``: its DEBUG lines too, to count what it repeats)."""
    with log.open("wb") as err:  # a file, not a pipe: a chatty worker never blocks on it
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailbot.cli",
                "--config",
                str(config),
                *(["--verbose"] if verbose else []),
                "run",
                "--acknowledge-existing",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            # faulthandler: a worker that does not stop is sent SIGABRT (stop_worker) and
            # writes every thread's stack into its log, for the failure to show why
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM, once the worker takes it: a process still starting its interpreter (the
    first ~0.1 s, before `run` takes the signals) would die of it, as any process would."""
    deadline = time.monotonic() + 10
    while worker.poll() is None and not catches_sigterm(worker.pid):
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGABRT)  # its threads' stacks into its log (faulthandler)
        worker.wait(timeout=10)
        raise
    finally:
        if worker.poll() is None:
            worker.kill()


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (the SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def wait_until(condition: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def ars_to(smtp: SmtpServer, address: str) -> int:
    return sum(r.rcpt_tos == (address,) for r in smtp.messages)


def no_python_traceback(err: str) -> bool:
    """Tracebacks only ever appear inside a logfmt field, never as Python prints them."""
    return not any(line.startswith(("Traceback", "  File ")) for line in err.splitlines())


# -- one crafted mail never stops a mailbox ------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "run"])
def test_poison_mail_never_stops_a_mailbox(
    mode: str,
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
) -> None:
    """Issue 9.1: the undefined charset, the 1,200-character Message-ID (PostgreSQL's
    column), 2,000 nested parts... and a good mail after them, which gets its AR."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    mails = poison_mails()
    imap_user.deliver([*mails.values(), GOOD])
    if mode == "poll":
        result = cli(config, "poll", "--once", "--acknowledge-existing")
        assert result.returncode == 0, result.stderr
        err = result.stderr
    else:
        log = tmp_path / "worker.log"
        worker = start_worker(config, log)
        try:
            wait_until(lambda: ars_to(smtp_server, "usager99@example.fr") == 1, what="the AR")
        finally:
            assert stop_worker(worker) == 0, log.read_text()
        err = log.read_text()
        assert "language models loaded" not in err  # write_config turns the warm-up off
    assert ars_to(smtp_server, "usager99@example.fr") == 1
    rows = query(database, "SELECT uid, decision, message_id FROM messages ORDER BY uid")
    assert len(rows) == len(mails) + 1  # every mail recorded, none left behind
    decisions = dict(zip(mails, (row.decision for row in rows), strict=False))
    assert decisions["undefined-charset-subject"] == "acknowledge"
    assert decisions["message-id-1200"] == "acknowledge"
    assert rows[list(mails).index("message-id-1200")].message_id.startswith("sha256:")
    assert rows[-1].decision == "acknowledge"
    assert no_python_traceback(err), err
    assert "usager99@" not in err and "rendez-vous" not in err


def test_explain_prints_a_result_for_every_poison_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailbot explain`` on a folder of every poison mail: one result each, no error. Run
    in this process (the command's code, its output captured): a process of its own loaded
    lingua's models again (~3.5 s of CPU) for the few mails not clearly French."""
    root = Path(__file__).resolve().parent.parent
    poison = poison_mails()
    for name, raw in poison.items():
        (tmp_path / f"{name}.eml").write_bytes(raw)
    result = inproc(capsys, root / "rules.yaml", "explain", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(poison)
    assert result.stderr == ""


# -- a storage error of one mail quarantines that mail; the quarantine is recoverable -------


def test_storage_error_quarantines_one_mail_and_retry_recovers_it(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=False)
    imap_user.deliver([citizen(1, "Titre de séjour urgent"), citizen(2, "Horaires")])
    result = cli(config, "poll", "--once", "--acknowledge-existing")
    assert result.returncode == 0, result.stderr
    assert ars_to(smtp_server, "usager2@example.fr") == 1
    assert ars_to(smtp_server, "usager1@example.fr") == 0
    ((pk, decision, reasons),) = query(
        database, "SELECT id, decision, reasons FROM messages WHERE uid = 1"
    )
    assert decision == "quarantine" and "error:" in reasons
    (detail,) = query(
        database, f"SELECT detail FROM events WHERE message_pk = {pk} AND kind = 'quarantined'"
    )
    assert detail[0].startswith("Traceback") and "refused by the test" not in detail[0]
    # the log has the traceback (escaped, one line) and no address or subject
    line = next(line for line in result.stderr.splitlines() if "msg=quarantined" in line)
    assert "uid=1" in line and 'traceback="Traceback (most recent call last):\\n' in line
    assert "usager1@" not in result.stderr and "séjour" not in result.stderr

    listing = inproc(capsys, config, "quarantine", "list")
    assert listing.returncode == 0 and f"#{pk}" in listing.stdout and "quarantine" in listing.stdout
    shown = inproc(capsys, config, "quarantine", "show", str(pk))
    assert shown.returncode == 0 and "quarantined" in shown.stdout and "Traceback" in shown.stdout

    allow_rows(database)
    retried = inproc(capsys, config, "quarantine", "retry", f"#{pk}")
    assert retried.returncode == 0, retried.stderr
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    rows = query(database, "SELECT id, uid, decision, reference FROM messages ORDER BY id")
    assert len(rows) == 2  # updated, never duplicated
    assert (rows[0].id, rows[0].uid, rows[0].decision) == (pk, 1, "acknowledge")
    assert rows[0].reference.startswith("SM-")
    kinds = [
        k
        for (k,) in query(database, f"SELECT kind FROM events WHERE message_pk = {pk} ORDER BY id")
    ]
    assert kinds[:3] == ["quarantined", "retried", "received"] and "ar_sent" in kinds
    assert (
        inproc(capsys, config, "quarantine", "retry", str(pk)).returncode == 1
    )  # no longer quarantined
    assert "0 mail(s)" in inproc(capsys, config, "quarantine", "list").stdout


def test_a_mail_the_server_cannot_read_is_quarantined_and_retried_once_readable(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A maildir file Dovecot cannot open (a disk error, a bad restore) failed every FETCH
    of its batch, so the folder never moved again. Now the mails around it are answered,
    it is quarantined with its location, listed, counted, and a retry answers it once it
    can be read again — one AR each, never two."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    assert inproc(capsys, config, "poll", "--once").returncode == 0  # followed from now on
    for n in (1, 2, 3):
        imap_user.append(citizen(n, f"Demande {n}"))
    with imap_user.unreadable(b"<poison-2@"):
        polls = [inproc(capsys, config, "poll", "--once") for _ in range(3)]
        imap_user.append(citizen(4, "Demande 4"))
        polls.append(inproc(capsys, config, "poll", "--once"))
        assert [p.returncode for p in polls] == [0, 0, 0, 0], polls[0].stderr
        assert "usager2@" not in polls[0].stderr
        for n in (1, 3, 4):
            assert ars_to(smtp_server, f"usager{n}@example.fr") == 1
        assert ars_to(smtp_server, "usager2@example.fr") == 0
        (row,) = query(database, "SELECT * FROM messages WHERE decision = 'quarantine'")
        validity = imap_user.uid_validity()
        assert (row.mailbox, row.folder, row.uidvalidity, row.uid) == (
            "general",
            "INBOX",
            validity,
            2,
        )
        assert "fetch-error:FETCH failed: Internal error occurred" in row.reasons
        (state,) = query(database, "SELECT last_uid FROM folders WHERE mailbox = 'general'")
        assert state.last_uid == 4
        listing = inproc(capsys, config, "quarantine", "list")
        assert f"#{row.id}" in listing.stdout and "fetch-error" in listing.stdout
        shown = inproc(capsys, config, "quarantine", "show", str(row.id)).stdout
        assert f"INBOX UIDVALIDITY {validity} UID 2: FETCH failed" in shown
        calendar = WorkingCalendar()
        day = next_working_day(calendar, datetime.now(calendar.zone).date())
        assert inproc(capsys, config, "alerts", "--date", str(day)).returncode == 0
        raw = smtp_server.messages[-1].raw
        digest = email.message_from_bytes(raw, policy=email.policy.default)
        text = digest.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert text.count("erreur de traitement (quarantaine)") == 1
        still = inproc(capsys, config, "quarantine", "retry", str(row.id))
        assert still.returncode == 1 and "still refuses" in still.stderr
        summary = still.stdout.strip().splitlines()[-1]
        assert "0 not found, 1 failed (see the errors above)" in summary, summary
    retried = inproc(capsys, config, "quarantine", "retry", str(row.id))
    assert retried.returncode == 0, retried.stderr
    assert inproc(capsys, config, "poll", "--once").returncode == 0
    assert inproc(capsys, config, "quarantine", "retry", str(row.id)).returncode == 1
    for n in (1, 2, 3, 4):
        assert ars_to(smtp_server, f"usager{n}@example.fr") == 1
    rows = query(database, "SELECT id, uid, decision FROM messages ORDER BY uid")
    assert [(r.uid, r.decision) for r in rows] == [(n, "acknowledge") for n in (1, 2, 3, 4)]
    assert rows[1].id == row.id  # the same row, updated


def test_failed_insert_logs_no_address_or_subject(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 10.6: a database that refuses even the quarantine row. The mailbox fails
    (exit 1, the mail is read again next time) and the log has the traceback, but neither
    the citizen's address nor the subject (SQL parameters are hidden)."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=True)
    imap_user.deliver([citizen(1, "Titre de séjour urgent")])
    result = cli(config, "poll", "--once", "--acknowledge-existing")
    assert result.returncode == 1
    assert 'msg="mailbox failed"' in result.stderr and "traceback=" in result.stderr
    assert "StoreError" in result.stderr
    assert "usager1@" not in result.stderr and "séjour" not in result.stderr
    assert no_python_traceback(result.stderr), result.stderr
    assert query(database, "SELECT count(*) FROM messages")[0][0] == 0
    allow_rows(database)
    assert (
        inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    )  # read again, not lost
    assert ars_to(smtp_server, "usager1@example.fr") == 1


def test_a_crash_in_a_scheduled_job_logs_job_mailbox_and_traceback(
    tmp_path: Path, imap_user: MailUser, etrangers: MailUser, smtp_server: SmtpServer
) -> None:
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=True)
    imap_user.deliver([citizen(1, "Titre de séjour urgent")])
    log = tmp_path / "worker.log"
    worker = start_worker(config, log)
    try:
        wait_until(lambda: "poll cycle failed" in log.read_text(), what="the failure")
    finally:
        assert stop_worker(worker) == 0
    line = next(line for line in log.read_text().splitlines() if "poll cycle failed" in line)
    assert "job=mailbox:general" in line and "mailbox=general" in line
    assert 'traceback="Traceback (most recent call last):\\n' in line and "StoreError" in line
    assert "usager1@" not in log.read_text() and "séjour" not in log.read_text()


# -- deduplication (issue 10.2) ----------------------------------------------------------------


def test_a_different_mail_reusing_a_message_id_is_answered_a_copy_is_recorded(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    first = citizen(1, "Carte grise", Message_ID="<shared@example.fr>")
    other = citizen(2, "Permis de conduire", Message_ID="<shared@example.fr>")
    imap_user.deliver([first, other])
    assert inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    assert (
        ars_to(smtp_server, "usager1@example.fr") == ars_to(smtp_server, "usager2@example.fr") == 1
    )
    imap_user.deliver([b"Received: from mx2.example.fr\r\n" + first])  # a second copy of it
    assert inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    rows = query(database, "SELECT id, decision, parent_id FROM messages ORDER BY id")
    assert [row.decision for row in rows] == ["acknowledge", "acknowledge", "duplicate"]
    assert rows[2].parent_id == rows[0].id
    events = query(
        database,
        f"SELECT detail FROM events WHERE kind = 'duplicate' AND message_pk = {rows[2].id}",
    )
    assert events == [(f"copy of message {rows[0].id}",)]


# -- unacknowledged mail is counted and shown ----------------------------------------------


def next_working_day(calendar: WorkingCalendar, day: date) -> date:
    while not calendar.is_working_day(day):
        day += timedelta(days=1)
    return day


def test_unacknowledged_mail_is_counted_listed_and_warned_about(
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Quarantined mail and mail without Return-Path count as received, are listed in the
    daily alert and the weekly report; `check` warns when most mail lacks a Return-Path;
    policy.missing_return_path: use_from answers them at From on a retry."""
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    refuse_rows(database, 1, quarantine_too=False)
    no_return_path = [citizen(n, f"Question numéro {n}", Return_Path=None) for n in range(2, 14)]
    imap_user.deliver([citizen(1, "Titre de séjour urgent"), *no_return_path])
    assert inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    assert smtp_server.messages == []
    allow_rows(database)

    calendar = WorkingCalendar()
    today = datetime.now(calendar.zone).date()
    figures = inproc(
        capsys, config, "indicators", "--from", str(today), "--to", str(today), "--format", "json"
    )
    assert '"received": 13' in figures.stdout

    day = next_working_day(calendar, today)
    assert inproc(capsys, config, "alerts", "--date", str(day)).returncode == 0
    (digest,) = smtp_server.messages  # one service has something to act on: general
    message = email.message_from_bytes(digest.raw, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "SANS ACCUSÉ DE RÉCEPTION" in text
    assert text.count("sans adresse de retour (Return-Path)") == 12
    assert text.count("erreur de traitement (quarantaine)") == 1
    assert "usager" not in text  # no addresses in digests

    week = today.isocalendar()
    out = tmp_path / "report"
    report = inproc(
        capsys, config, "report", "weekly", "--week", f"{week[0]}-W{week[1]:02d}", "--out", str(out)
    )
    assert report.returncode == 0, report.stderr
    html = next(out.glob("*.html")).read_text(encoding="utf-8")
    assert "Sans accusé de réception (13)" in html

    check = inproc(capsys, config, "check")
    assert check.returncode == 0
    assert "mailbox general: 12 of its last 12 mails had no Return-Path" in check.stderr

    data = load_rules(config)
    data["policy"] = {"missing_return_path": "use_from"}
    config.write_text(dump_rules(data), encoding="utf-8")
    assert "warning" not in inproc(capsys, config, "check").stderr
    retried = inproc(capsys, config, "quarantine", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert ars_to(smtp_server, "usager2@example.fr") == 1  # at its From address
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert query(database, "SELECT count(*) FROM messages")[0][0] == 13


def test_an_unreadable_sent_mail_is_passed_over_with_an_event(tmp_path: Path) -> None:
    """The Sent-folder reader never blocks its folder either: a mail it cannot record is
    logged, its UID passed, and an event says so (here the database refuses the reply)."""
    from mailbot.app.sent import SentPipeline, signature_check
    from mailbot.config import load_config
    from mailbot.core.incoming import IncomingMail

    root = Path(__file__).resolve().parent.parent
    url = f"sqlite:///{tmp_path / 'mailbot.db'}"
    store = Store(url)
    with store.transaction() as tx:
        tx.insert_message(_acknowledged())
    query(
        url,
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind = 'reply' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    sent = SentPipeline(load_config(root / "rules.yaml"), store, signature_check)
    reply = (
        "From: agent@seine-maritime.gouv.fr\r\nTo: usager1@example.fr\r\n"
        "Subject: Re: votre demande [SM-2026-000001]\r\nIn-Reply-To: <poison-1@example.fr>\r\n"
        "Message-ID: <reply-1@seine-maritime.gouv.fr>\r\n\r\nBonjour, voici la réponse.\r\n"
    ).encode()
    outcome = sent.process("general", "Sent", 7, IncomingMail(3, datetime.now(UTC), reply))
    assert outcome.decision == "error"
    with store.transaction() as tx:
        state = tx.folder_state("general", "Sent")
    assert state is not None and state.last_uid == 3
    (event,) = [e for e in store.events() if e.kind == "sent_unreadable"]
    assert event.detail.startswith("general/Sent UID 3: Traceback")
    store.close()


def test_a_sent_mail_the_server_would_not_read_is_passed_over_with_an_event(
    tmp_path: Path,
) -> None:
    """The Sent-folder reader gets a mail the server refused to read (no bytes): it is
    passed over like any unreadable Sent mail, with an event, never parsed as empty."""
    from mailbot.app.sent import SentPipeline, signature_check
    from mailbot.config import load_config
    from mailbot.core.incoming import IncomingMail

    root = Path(__file__).resolve().parent.parent
    store = Store(f"sqlite:///{tmp_path / 'mailbot.db'}")
    sent = SentPipeline(load_config(root / "rules.yaml"), store, signature_check)
    unread = IncomingMail(4, datetime.now(UTC), b"", refused="FETCH failed: Internal error")
    outcome = sent.process("general", "Sent", 7, unread)
    assert outcome.decision == "error" and "refused to read" in outcome.reasons[0]
    with store.transaction() as tx:
        state = tx.folder_state("general", "Sent")
    assert state is not None and state.last_uid == 4
    (event,) = [e for e in store.events() if e.kind == "sent_unreadable"]
    assert "FETCH failed: Internal error" in event.detail
    store.close()


def _acknowledged() -> Any:
    from mailbot.store import NewMessage

    return NewMessage(
        mailbox="general",
        folder="INBOX",
        uidvalidity=1,
        uid=1,
        message_id="<poison-1@example.fr>",
        content_hash="h",
        received_at=datetime.now(UTC),
        sender="usager1@example.fr",
        subject="Demande",
        in_reply_to=None,
        decision="acknowledge",
        reasons=["citizen-mail"],
        size=1,
        defects=[],
        reference="SM-2026-000001",
    )
