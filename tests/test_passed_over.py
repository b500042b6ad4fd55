"""A mail passed over is seen and handled where an admin looks (`mailbot quarantine`,
`mailbot status`, the metrics), and retried by its location like a quarantined row.

A mail whose quarantine row the database refuses three polls in a row is passed over: no
row, no AR, the folder's mark past it, an event saying where it is. Real parts: Dovecot,
aiosmtpd, SQLite and PostgreSQL; the database's refusal is a real trigger.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from poison import citizen
from refusals import allow_rows, query, refuse_rows
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
from test_poison import ars_to, inproc

from mailbot.app import alerts, quarantine
from mailbot.app.context import build_app
from mailbot.app.report import ReportBuilder
from mailbot.config import load_config
from mailbot.core.incoming import IncomingMail
from mailbot.core.periods import Period, week_period
from mailbot.core.statuses import EventKind
from mailbot.core.workdays import WorkingCalendar
from mailbot.errors import MessageError, RepeatedRequestError, StoreError
from mailbot.mail.smtp import FileTransport
from mailbot.metrics import Shared
from mailbot.store import Store

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
WHERE = ("general", "INBOX", 1)
Run = Any  # a CompletedProcess of `inproc`


@pytest.fixture
def etrangers(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user("etr")


def passed_over(database: str) -> list[Any]:
    return query(database, "SELECT id, message_pk FROM events WHERE kind = 'passed_over'")


def gauge(config: Path, name: str) -> dict[str, float]:
    """A shared metric as the worker's endpoint collects it at a scrape, by mailbox."""
    store = Store(load_config(config).database)
    try:
        families = list(Shared(load_config(config), store, {}).collect())
    finally:
        store.close()
    (family,) = [f for f in families if f.name == name]
    return {s.labels["mailbox"]: s.value for s in family.samples}


def status_check(run: Run) -> str:
    """The figure of `mailbot status`'s check of the mail passed over, in its perfdata
    (``value;warning;critical``)."""
    return str(run.stdout.split("'mail passed over (7 d)'=", 1)[1].split()[0].split(";")[0])


def pass_over_mail_1(
    config: Path, database: str, imap_user: MailUser, capsys: pytest.CaptureFixture[str]
) -> int:
    """Mail 1 raises and its quarantine row is refused at three polls in a row: passed
    over at the third, mail 2 after it answered. Its event's id."""
    refuse_rows(database, 1, quarantine_too=True)
    imap_user.deliver([citizen(1, "Titre de séjour urgent"), citizen(2, "Horaires")])
    polls = [
        inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode
        for _ in range(3)
    ]
    assert polls == [1, 1, 0]
    ((event_id, message_pk),) = passed_over(database)
    assert message_pk is None
    assert query(database, "SELECT uid FROM messages") == [(2,)]
    return int(event_id)


def test_a_mail_passed_over_is_listed_counted_and_recorded_by_a_retry(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event_id = pass_over_mail_1(config, database, imap_user, capsys)
    assert ars_to(smtp_server, "usager2@example.fr") == 1
    assert ars_to(smtp_server, "usager1@example.fr") == 0

    listing = inproc(capsys, config, "quarantine", "list")
    assert listing.returncode == 0
    assert "Passed over: the database refused even their quarantine row" in listing.stdout
    (line,) = [line for line in listing.stdout.splitlines() if f"P{event_id} " in line]
    assert line.split()[:2] == [f"P{event_id}", "general"]
    assert " 1  INBOX: error:" in line  # its UID, folder and reason
    assert "0 mail(s) without an AR, awaiting a person, and 1 passed over" in listing.stdout
    other = inproc(capsys, config, "quarantine", "list", "--mailbox", "etrangers")
    assert "Passed over" not in other.stdout and "passed over" not in other.stdout
    shown = inproc(capsys, config, "quarantine", "show", f"P{event_id}")
    assert shown.returncode == 0 and "Traceback" in shown.stdout
    assert "general/INBOX UIDVALIDITY" in shown.stdout and "usager1" not in shown.stdout
    status = inproc(capsys, config, "status")
    assert status_check(status) == "1"
    assert gauge(config, "mailbot_passed_over") == {"general": 1, "etrangers": 0}

    # The database still refuses it: the retry records nothing and it stays passed over.
    still = inproc(capsys, config, "quarantine", "retry", f"P{event_id}")
    assert still.returncode == 1 and "it stays passed over" in still.stderr
    assert [tuple(row) for row in passed_over(database)] == [(event_id, None)]
    assert query(database, "SELECT uid FROM messages") == [(2,)]

    allow_rows(database)
    retried = inproc(capsys, config, "quarantine", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert "1 retried, 0 still quarantined" in retried.stdout
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    ((row_id, decision),) = query(database, "SELECT id, decision FROM messages WHERE uid = 1")
    assert decision == "acknowledge"
    # Its event went to the row that records it now: off the list, the status, the metrics.
    assert [tuple(row) for row in passed_over(database)] == [(event_id, row_id)]
    listing = inproc(capsys, config, "quarantine", "list")
    assert "Passed over" not in listing.stdout and "0 mail(s)" in listing.stdout
    assert "passed over" not in listing.stdout
    assert status_check(inproc(capsys, config, "status")) == "0"
    assert gauge(config, "mailbot_passed_over") == {"general": 0, "etrangers": 0}
    again = inproc(capsys, config, "quarantine", "retry", f"P{event_id}")
    assert again.returncode == 1 and f"row #{row_id} records it" in again.stderr
    assert ars_to(smtp_server, "usager1@example.fr") == 1  # one AR, never two
    folder = "SELECT last_uid FROM folders WHERE mailbox = 'general' AND folder = 'INBOX'"
    assert query(database, folder) == [(2,)]  # the mark never went back


def test_a_mail_passed_over_that_raises_again_is_quarantined_by_its_retry(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The retry meets the mail's own error again, but the database takes its quarantine
    row now: the mail is recorded, quarantined, and its event goes to that row, listed
    now as any quarantined mail (`#id`), which a later retry answers."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event_id = pass_over_mail_1(config, database, imap_user, capsys)
    allow_rows(database)
    if not database.startswith("sqlite"):
        query(database, "DROP FUNCTION refuse()")  # refuse_rows creates it again
    refuse_rows(database, 1)  # its row refused, not its quarantine row
    retried = inproc(capsys, config, "quarantine", "retry", f"p{event_id}")
    assert retried.returncode == 1 and "1 retried, 1 still quarantined" in retried.stdout
    ((row_id, decision),) = query(database, "SELECT id, decision FROM messages WHERE uid = 1")
    assert decision == "quarantine"
    assert [tuple(row) for row in passed_over(database)] == [(event_id, row_id)]
    kinds = query(database, f"SELECT kind FROM events WHERE message_pk = {row_id} ORDER BY id")
    assert [kind for (kind,) in kinds] == ["passed_over", "quarantined"]
    listing = inproc(capsys, config, "quarantine", "list")
    assert f"#{row_id}" in listing.stdout and "Passed over" not in listing.stdout
    assert gauge(config, "mailbot_passed_over")["general"] == 0
    assert gauge(config, "mailbot_quarantined")["general"] == 1

    allow_rows(database)
    assert inproc(capsys, config, "quarantine", "retry", f"#{row_id}").returncode == 0
    assert ars_to(smtp_server, "usager1@example.fr") == 1


def test_two_retries_of_a_mail_passed_over_at_once_record_it_once(
    database: str, tmp_path: Path
) -> None:
    """Two retries that both found the mail still passed over (two admins, a double run of
    `retry --all`): the second waits for the first's transaction at its claim of the event,
    then finds a row recording the mail and records nothing (RepeatedRequestError)."""
    app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    try:
        refuse_rows(database, 3, quarantine_too=True)
        mails = [IncomingMail(uid, RECEIVED, citizen(uid)) for uid in (1, 2, 3, 4)]
        for _poll in range(3):
            start = app.pipeline.start_folder(*WHERE)
            with contextlib.suppress(StoreError):
                app.pipeline.process_batch(*WHERE, [m for m in mails if m.uid > start])
        allow_rows(database)
        (waiting,) = quarantine.passed_over(app.store)
        assert (waiting.location, waiting.uid) == ("general/INBOX UIDVALIDITY 1 UID 3", 3)
        first = app.pipeline.process_passed_over(waiting, mails[2])
        assert first.decision == "acknowledge" and first.message_pk is not None
        with pytest.raises(RepeatedRequestError, match=f"mail P{waiting.event_id} was already"):
            app.pipeline.process_passed_over(waiting, mails[2])
        assert query(database, "SELECT uid FROM messages ORDER BY uid") == [(1,), (2,), (3,), (4,)]
        ars = "SELECT m.uid FROM outbox o JOIN messages m ON m.id = o.message_pk WHERE m.uid = 3"
        assert query(database, ars) == [(3,)]
        assert quarantine.passed_over(app.store) == []
    finally:
        app.store.close()


def test_a_retry_that_a_concurrent_retry_quarantined_first_says_so(
    database: str, tmp_path: Path
) -> None:
    """Two retries at once (a double click) of a mail that raises again: the first's
    attempt fails, then the second's; the first quarantines it (its event goes to that
    row), and the second's quarantine finds the event taken. That is a repeated request
    (RepeatedRequestError: nothing new), not a database refusing the mail "which stays
    passed over" — it does not: a row records it, quarantined."""
    app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    other = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out2"), database=database)
    try:
        refuse_rows(database, 3, quarantine_too=True)
        mails = [IncomingMail(uid, RECEIVED, citizen(uid)) for uid in (1, 2, 3, 4)]
        for _poll in range(3):
            start = app.pipeline.start_folder(*WHERE)
            with contextlib.suppress(StoreError):
                app.pipeline.process_batch(*WHERE, [m for m in mails if m.uid > start])
        allow_rows(database)
        if not database.startswith("sqlite"):
            query(database, "DROP FUNCTION refuse()")  # refuse_rows creates it again
        refuse_rows(database, 3)  # its row refused again, not its quarantine row
        (waiting,) = quarantine.passed_over(app.store)
        # The second retry's own attempt has failed (rolled back) when the first retry,
        # its attempt failed too, records the mail quarantined: the real interleaving of
        # two retries that take turns at the database.
        quarantine_row = app.pipeline._quarantine

        def first_retry_done_meanwhile(*args: Any, **kwargs: Any) -> Any:
            first = other.pipeline.process_passed_over(waiting, mails[2])
            assert first.decision == "quarantine" and first.message_pk is not None
            return quarantine_row(*args, **kwargs)

        app.pipeline._quarantine = first_retry_done_meanwhile  # type: ignore[method-assign]
        with pytest.raises(RepeatedRequestError, match=f"mail P{waiting.event_id} was already"):
            app.pipeline.process_passed_over(waiting, mails[2])
        ((row_id, decision),) = query(database, "SELECT id, decision FROM messages WHERE uid = 3")
        assert decision == "quarantine"
        assert [tuple(row) for row in passed_over(database)] == [(waiting.event_id, row_id)]
        assert quarantine.passed_over(app.store) == []
    finally:
        app.store.close()
        other.store.close()


# -- dismissed: a case handled outside mailbot -----------------------------------------------


def test_a_mail_passed_over_is_dismissed_off_the_lists_but_keeps_its_story(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server will not give the mail, or a person answered it by hand: `quarantine
    dismiss P7 --reason` closes its case. It leaves the list, the status check and the
    metric, as a retry that records it does; `show` still tells who closed it, when and
    why; the mail is left on the server as it was. A second dismissal, a retry and a
    dismissal of a mail a row records are refused (exit 2, the refusals' code)."""
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event_id = pass_over_mail_1(config, database, imap_user, capsys)
    on_server = (imap_user.uids(), imap_user.flags())
    no_reason = inproc(capsys, config, "quarantine", "dismiss", f"P{event_id}", "--reason", "  ")
    assert no_reason.returncode == 2 and "say how the mail was handled" in no_reason.stderr
    not_passed = inproc(capsys, config, "quarantine", "dismiss", "2", "--reason", "vu")
    assert not_passed.returncode == 2 and "not a mail passed over: '2'" in not_passed.stderr
    unknown = inproc(capsys, config, "quarantine", "dismiss", "P999999", "--reason", "vu")
    assert unknown.returncode == 2 and "no mail passed over P999999" in unknown.stderr
    assert query(database, "SELECT count(*) FROM events WHERE kind LIKE '%dismissed'") == [(0,)]

    reason = "illisible sur le serveur ; répondu à la main le 3 décembre"
    done = inproc(
        capsys,
        config,
        "quarantine",
        "dismiss",
        f"P{event_id}",
        "--reason",
        reason,
        "--agent",
        "tbernard",
    )
    assert done.returncode == 0, done.stderr
    assert f"mail P{event_id} dismissed by tbernard" in done.stdout
    listing = inproc(capsys, config, "quarantine", "list")
    assert "Passed over" not in listing.stdout and "passed over" not in listing.stdout
    assert status_check(inproc(capsys, config, "status")) == "0"
    assert gauge(config, "mailbot_passed_over") == {"general": 0, "etrangers": 0}
    shown = inproc(capsys, config, "quarantine", "show", f"P{event_id}")
    assert shown.returncode == 0
    assert "dismissed: handled outside mailbot" in shown.stdout
    ((line,),) = [[x for x in shown.stdout.splitlines() if x.startswith("dismissed:")]]
    assert line.endswith(" by tbernard") and f"why:          {reason}" in shown.stdout
    assert "general/INBOX UIDVALIDITY" in shown.stdout and "Traceback" in shown.stdout

    again = inproc(capsys, config, "quarantine", "dismiss", f"P{event_id}", "--reason", "x")
    assert again.returncode == 2
    assert f"mail P{event_id} was dismissed on" in again.stderr and "by tbernard" in again.stderr
    allow_rows(database)
    retried = inproc(capsys, config, "quarantine", "retry", f"P{event_id}")
    assert retried.returncode == 1 and f"mail P{event_id} was dismissed on" in retried.stderr
    assert inproc(capsys, config, "quarantine", "retry", "--all").stdout == "nothing to retry\n"
    assert query(database, "SELECT uid FROM messages") == [(2,)]  # no row made of it
    assert ars_to(smtp_server, "usager1@example.fr") == 0
    assert (imap_user.uids(), imap_user.flags()) == on_server  # the server's copy untouched
    dismissals = "SELECT message_pk, detail FROM events WHERE kind = 'passed_over_dismissed'"
    ((pk, detail),) = query(database, dismissals)
    assert pk is None and f'"passed_over": {event_id}' in detail
    assert [tuple(row) for row in passed_over(database)] == [(event_id, None)]


def test_a_mail_a_retry_recorded_cannot_be_dismissed(
    database: str,
    tmp_path: Path,
    imap_user: MailUser,
    etrangers: MailUser,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    event_id = pass_over_mail_1(config, database, imap_user, capsys)
    allow_rows(database)
    assert inproc(capsys, config, "quarantine", "retry", f"P{event_id}").returncode == 0
    ((row_id,),) = query(database, "SELECT id FROM messages WHERE uid = 1")
    refused = inproc(capsys, config, "quarantine", "dismiss", f"P{event_id}", "--reason", "vu")
    assert refused.returncode == 2
    assert f"mail P{event_id} is no longer passed over: row #{row_id} records it" in refused.stderr
    assert query(database, "SELECT count(*) FROM events WHERE kind LIKE '%dismissed'") == [(0,)]


def passed_over_mail_3(
    app: Any, database: str, received: datetime = RECEIVED
) -> tuple[Any, IncomingMail]:
    """Mail 3 of four passed over by the real pipeline (its quarantine row refused at three
    polls in a row), the database taking rows again: its PassedOver and the mail."""
    refuse_rows(database, 3, quarantine_too=True)
    mails = [IncomingMail(uid, received, citizen(uid)) for uid in (1, 2, 3, 4)]
    for _poll in range(3):
        start = app.pipeline.start_folder(*WHERE)
        with contextlib.suppress(StoreError):
            app.pipeline.process_batch(*WHERE, [m for m in mails if m.uid > start])
    allow_rows(database)
    (waiting,) = quarantine.passed_over(app.store)
    return waiting, mails[2]


def test_two_dismissals_at_once_dismiss_once(database: str, tmp_path: Path) -> None:
    """Two admins (or a double click) dismiss the same mail: both found it waiting, the
    other's dismissal commits between that check and this one's transaction, whose claim
    of the event then finds it dismissed: refused, saying by whom — one dismissal."""
    app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    other = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out2"), database=database)
    try:
        waiting, _mail = passed_over_mail_3(app, database)
        check = quarantine.passed_over_details

        def other_dismissed_meanwhile(store: Store, event_id: int) -> Any:
            found = check(store, event_id)
            quarantine.passed_over_details = check  # the other's own check, as it was
            quarantine.dismiss_passed_over(other.store, event_id, "ngarnier", "répondu")
            return found

        quarantine.passed_over_details = other_dismissed_meanwhile
        try:
            with pytest.raises(MessageError, match=f"P{waiting.event_id} was dismissed on .* by"):
                quarantine.dismiss_passed_over(app.store, waiting.event_id, "tbernard", "vu")
        finally:
            quarantine.passed_over_details = check
        dismissals = "SELECT detail FROM events WHERE kind = 'passed_over_dismissed'"
        ((detail,),) = query(database, dismissals)
        assert '"agent": "ngarnier"' in detail
        assert quarantine.passed_over(app.store) == []
    finally:
        app.store.close()
        other.store.close()


def test_a_retry_that_a_dismissal_overtook_records_nothing(database: str, tmp_path: Path) -> None:
    """A retry that found the mail waiting, then a dismissal committed before its
    transaction: its claim of the event finds the dismissal and records nothing (no row,
    no AR) — a mail closed by hand is not acknowledged behind the admin's back."""
    app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    try:
        waiting, mail = passed_over_mail_3(app, database)
        quarantine.dismiss_passed_over(app.store, waiting.event_id, "tbernard", "répondu")
        with pytest.raises(RepeatedRequestError, match=f"P{waiting.event_id} was already dism"):
            app.pipeline.process_passed_over(waiting, mail)
        assert query(database, "SELECT uid FROM messages ORDER BY uid") == [(1,), (2,), (4,)]
        assert query(database, "SELECT count(*) FROM outbox") == [(3,)]  # mails 1, 2, 4's ARs
    finally:
        app.store.close()


# -- the daily alert and the weekly report ---------------------------------------------------

HOSTILE = (
    "etrangers/Dossier <b>x</b> UIDVALIDITY 5 UID 9: error:<script>alert(1)</script> & co;"
    " its quarantine row refused 3 times in a row\nTraceback (most recent call last): secret"
)


def working_day_from(day: date) -> date:
    calendar = WorkingCalendar(timezone="Europe/Paris")
    while not calendar.is_working_day(day):
        day += timedelta(days=1)
    return day


def queued_digests(database: str) -> dict[str, Any]:
    """The digests queued, by recipient: each one's (text, HTML) parts."""
    raws = query(
        database,
        "SELECT o.recipient, b.raw FROM outbox o JOIN outbox_bodies b ON b.outbox_id = o.id"
        " WHERE o.kind = 'digest'",
    )
    found = {}
    for to, raw in raws:
        mail = email.message_from_bytes(bytes(raw), policy=email.policy.default)
        parts = [mail.get_body((kind,)).get_content() for kind in ("plain", "html")]  # type: ignore[union-attr]
        found[to] = tuple(parts)
    return found


def report_parts(app: Any, week: Period, today: date) -> tuple[str, str]:
    report = ReportBuilder(app.config, app.store, app.renderer).build(week, today)
    mail = email.message_from_bytes(report.mail.as_bytes(), policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return text, report.html


def test_the_alert_and_the_report_list_the_mail_passed_over_until_resolved(
    database: str, tmp_path: Path
) -> None:
    """No row records a mail passed over: the daily alert and the weekly report named it
    nowhere. The alert lists it in the digest of its mailbox's service (a mail without a
    service goes there), the report counts and lists it (P7, mailbox, day, why in short;
    no traceback, nothing of the mail); HTML escaped. Recorded by a retry or dismissed,
    it is listed no more."""
    app = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    try:
        now = datetime.now(PARIS)
        waiting, mail = passed_over_mail_3(app, database, now)  # general, the real pipeline
        with app.store.transaction() as tx:  # as Pipeline._unrecordable writes it
            tx.add_event(None, EventKind.PASSED_OVER, HOSTILE)
            tx.add_event(None, EventKind.PASSED_OVER, "general/INBOX UIDVALIDITY 1 UID 12: x")
        hostile, closed = sorted(p.event_id for p in quarantine.passed_over(app.store))[1:]
        quarantine.dismiss_passed_over(app.store, closed, "tbernard", "répondu à la main")
        today = working_day_from(now.date())

        sent = alerts.send_alerts(app.config, app.store, app.renderer, today).sent
        assert sent == {"general": 1, "etrangers": 1}  # mails 1, 2, 4: acknowledged today
        digests = queued_digests(database)
        text, html = digests["pref-contact@seine-maritime.gouv.fr"]
        assert "COURRIELS NON ENREGISTRÉS (laissés de côté par le robot)" in text
        assert f"- [{waiting.id}] boîte general, INBOX, UID 3" in text
        assert f"laissé de côté le {now:%d/%m/%Y}" in text
        assert waiting.why.split(";")[0] in text  # error:IntegrityError, or PostgreSQL's
        assert f"[P{closed}]" not in text and f"[P{hostile}]" not in text
        assert f">{waiting.id}</td>" in html and ">INBOX, UID 3</td>" in html
        assert "Courriels non enregistrés (laissés de côté par le robot)" in html
        text, html = digests["pref-etrangers@seine-maritime.gouv.fr"]
        assert f"[P{hostile}] boîte etrangers, Dossier <b>x</b>, UID 9" in text
        assert "Dossier &lt;b&gt;x&lt;/b&gt;, UID 9" in html
        assert "error:&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
        assert "<script>" not in html and "<b>x</b>" not in html
        assert waiting.id not in text and "Traceback" not in text + html

        text, html = report_parts(app, week_period(today), today)
        assert "COURRIELS NON ENREGISTRÉS (2)" in text
        assert f"- [{waiting.id}] boîte general, laissé de côté le {now:%d/%m/%Y} : error:" in text
        assert f"- [P{hostile}] boîte etrangers, laissé de côté le" in text
        assert ">Courriels non enregistrés (2)</h2>" in html
        assert f">{waiting.id}</td>" in html and f">P{hostile}</td>" in html
        assert "error:&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
        assert "<script>" not in html and f"P{closed}" not in text + html
        assert "Traceback" not in text + html and "usager3" not in text + html
        before = week_period(now.date() - timedelta(days=7))  # ended before they were
        text, html = report_parts(app, before, today)
        assert "NON ENREGISTRÉS" not in text and "non enregistrés" not in html

        outcome = app.pipeline.process_passed_over(waiting, mail)  # recorded now
        assert outcome.decision == "acknowledge"
        quarantine.dismiss_passed_over(app.store, hostile, "tbernard", "illisible, vu")
        queued = query(database, "SELECT count(*) FROM outbox")
        assert alerts.send_alerts(app.config, app.store, app.renderer, today).sent == {}
        assert query(database, "SELECT count(*) FROM outbox") == queued  # no digest
        text, html = report_parts(app, week_period(today), today)
        assert "NON ENREGISTRÉS" not in text and "non enregistrés" not in html
    finally:
        app.store.close()
