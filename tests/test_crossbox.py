"""One mail that reaches both mailboxes (To the general one, Cc the foreigners' one) gets one
AR: the first mailbox to record it acknowledges it, the other's copy is recorded as its
duplicate, on SQLite and on a real PostgreSQL, with a database guard (``message_keys``) so
that two workers recording the two copies at the same moment cannot both acknowledge.

Without a Return-Path (no AR: RFC 3834) the same holds for the count: the first copy is left
for a person, the other is its duplicate, and the mail is counted and listed once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from poison import citizen
from refusals import query
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config
from test_poison import ars_to, inproc

from mailbot.app.context import App, build_app
from mailbot.core.incoming import IncomingMail
from mailbot.core.statuses import DUPLICATE_REASON, Decision
from mailbot.errors import SameMailError
from mailbot.mail.smtp import FileTransport
from mailbot.store import Store

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ETRANGERS = "pref-etrangers@seine-maritime.gouv.fr"


@pytest.fixture
def app(database: str, tmp_path: Path) -> Iterator[App]:
    built = build_app(ROOT / "rules.yaml", FileTransport(tmp_path / "out"), database=database)
    yield built
    built.store.close()


def both(n: int = 1, **headers: str) -> bytes:
    """A citizen's mail To the general mailbox, Cc the foreigners' one."""
    return citizen(n, "Titre de séjour et carte grise", Cc=ETRANGERS, **headers)


def rows(url: str) -> list[tuple[Any, ...]]:
    found = query(
        url,
        "SELECT id, mailbox, decision, reference, parent_id, ar_status, reasons"
        " FROM messages ORDER BY id",
    )
    return [tuple(r) for r in found]


def ars(url: str) -> list[tuple[Any, ...]]:
    found = query(
        url,
        "SELECT m.mailbox, o.kind FROM outbox o JOIN messages m ON m.id = o.message_pk"
        " ORDER BY o.id",
    )
    return [tuple(r) for r in found]


def test_the_second_mailbox_records_a_duplicate_of_the_first(app: App, database: str) -> None:
    mail = both()
    first = app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    second = app.pipeline.process_batch("etrangers", "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    assert [o.decision for o in first] == [Decision.ACKNOWLEDGE]
    assert [o.decision for o in second] == [Decision.DUPLICATE]
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [("general", "acknowledge"), ("etrangers", "duplicate")]
    (pk, _, _, reference, _, _, _), (dup_pk, *_rest) = recorded
    assert reference and recorded[1][3] is None and recorded[1][4] == pk
    assert recorded[1][5] == "none"
    assert DUPLICATE_REASON in recorded[1][6]
    assert {mailbox for mailbox, _kind in ars(database)} == {"general"}
    (detail,) = [e.detail for e in app.store.events(dup_pk) if e.kind == "duplicate"]
    assert "general" in detail and reference in detail
    # Not counted twice: a duplicate is no citizen's message in the indicators.
    facts = query(database, "SELECT count(*) FROM indicator_facts")
    assert facts[0][0] == 1


def test_the_same_mail_twice_in_one_mailbox_is_still_a_plain_duplicate(
    app: App, database: str
) -> None:
    mail = both()
    for mailbox, uid in (("general", 1), ("general", 2), ("etrangers", 1)):
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(uid, RECEIVED, mail)])
    recorded = rows(database)
    assert [r[2] for r in recorded] == ["acknowledge", "duplicate", "duplicate"]
    assert recorded[1][4] == recorded[2][4] == recorded[0][0]
    assert len(ars(database)) == 1


def test_a_different_mail_reusing_the_message_id_elsewhere_is_acknowledged(
    app: App, database: str
) -> None:
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, both())])
    other = citizen(2, "Autre demande", To=ETRANGERS, Message_ID="<poison-1@example.fr>")
    (outcome,) = app.pipeline.process_batch(
        "etrangers", "INBOX", 1, [IncomingMail(1, RECEIVED, other)]
    )
    assert outcome.decision == Decision.ACKNOWLEDGE


def test_a_mail_without_message_id_is_matched_by_its_fingerprint(app: App, database: str) -> None:
    mail = both(Message_ID=None)  # type: ignore[arg-type]
    for mailbox in ("etrangers", "general"):
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    assert [r[1:3] for r in rows(database)] == [
        ("etrangers", "acknowledge"),
        ("general", "duplicate"),
    ]


@pytest.mark.parametrize("first", ["general", "etrangers"])
def test_a_copy_not_addressed_to_its_mailbox_leaves_the_addressed_one_its_ar(
    app: App, database: str, first: str
) -> None:
    """To the foreigners' mailbox, Bcc the general one: whichever poller reads it first,
    the citizen gets one AR, from the mailbox written to. A skip as "not addressed" once
    took the mail's fingerprint and made the addressed copy its duplicate: no AR at all."""
    mail = citizen(1, "Titre de séjour : renouvellement", To=ETRANGERS)
    second = "etrangers" if first == "general" else "general"
    for mailbox in (first, second):
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    decided = {r[1]: r[2] for r in rows(database)}
    assert decided["etrangers"] == "acknowledge"
    assert decided["general"] in ("skip", "duplicate")  # skipped if read first
    assert ars(database) == [("etrangers", "ar")]


def test_a_quarantined_first_copy_leaves_the_other_mailbox_to_acknowledge(
    app: App, database: str
) -> None:
    """A quarantine claims nothing: the other copy is answered, and the quarantined one,
    retried, becomes its duplicate (never a second AR)."""
    from refusals import allow_rows, refuse_rows

    mail = both()
    refuse_rows(database, 1)
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    allow_rows(database)
    app.pipeline.process_batch("etrangers", "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [("general", "quarantine"), ("etrangers", "acknowledge")]
    app.pipeline.process("general", "INBOX", 1, IncomingMail(1, RECEIVED, mail), recorded[0][0])
    recorded = rows(database)
    assert recorded[0][2] == "duplicate" and recorded[0][4] == recorded[1][0]
    assert len(ars(database)) == 1


def test_the_key_is_taken_once_even_by_two_transactions_at_once(app: App) -> None:
    """Two intakes inserting the same key: the second waits for the first (PostgreSQL) or
    for the write lock (SQLite), then sees the conflict."""
    store: Store = app.store
    with store.transaction() as tx:
        from test_store import new_message

        first = tx.insert_message(new_message(fingerprint="f1"))
        second = tx.insert_message(
            new_message(
                mailbox="etrangers", fingerprint="f1", reference=f"SM-{RECEIVED.year}-000002"
            )
        )
    started = threading.Event()
    # Keyed by mail, not in order of arrival: the first commit wakes the second thread,
    # which may record its conflict before the first thread records its success.
    outcomes: dict[int, object] = {}

    def claim(pk: int, wait: float) -> None:
        try:
            with store.transaction() as tx:
                tx.claim_mail("f1", pk)
                started.set()
                threading.Event().wait(wait)
            outcomes[pk] = "claimed"
        except SameMailError as exc:
            outcomes[pk] = exc

    one = threading.Thread(target=claim, args=(first, 0.5))
    one.start()
    assert started.wait(5)
    two = threading.Thread(target=claim, args=(second, 0))
    two.start()
    one.join(20)
    two.join(20)
    assert outcomes[first] == "claimed" and isinstance(outcomes[second], SameMailError)
    with store.transaction() as tx:
        assert tx.claimed_mail("f1") is not None
        assert tx.claimed_mail("f1")[0] == first  # type: ignore[index]


def test_a_conflict_at_the_insert_records_the_loser_as_the_duplicate(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other worker committed its copy between this mail's lookup and its insert: the
    mail's savepoint alone is rolled back, and the mail is recorded as the duplicate; the
    batch goes on."""
    from mailbot.store import transaction as store_transaction

    mail = both()
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    real = store_transaction.Transaction.claimed_mail
    calls: list[int] = []

    def unseen(self: Any, fingerprint: str) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else real(self, fingerprint)  # missed once: a race

    monkeypatch.setattr(store_transaction.Transaction, "claimed_mail", unseen)
    batch = [
        IncomingMail(1, RECEIVED, mail),
        IncomingMail(2, RECEIVED, citizen(3, "Autre", To=ETRANGERS)),
    ]
    outcomes = app.pipeline.process_batch("etrangers", "INBOX", 1, batch)
    assert [o.decision for o in outcomes] == [Decision.DUPLICATE, Decision.ACKNOWLEDGE]
    recorded = rows(database)
    assert recorded[1][1:3] == ("etrangers", "duplicate") and recorded[1][4] == recorded[0][0]
    # The loser's reference number went back: the next mail takes it.
    year = RECEIVED.year  # a reference carries the year of the mail's arrival
    assert [r[3] for r in recorded] == [f"SM-{year}-000001", None, f"SM-{year}-000002"]


def test_one_mail_in_both_real_mailboxes_gets_one_ar(
    tmp_path: Path,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reviewer's case, end to end: real Dovecot, aiosmtpd, ``poll --once``."""
    etrangers = dovecot.new_user("etr")
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    mail = both()
    imap_user.deliver([mail])
    etrangers.deliver([mail])
    assert inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    recorded = rows(database)
    assert ars_to(smtp_server, "usager1@example.fr") == 1, recorded
    assert sorted(r[2] for r in recorded) == ["acknowledge", "duplicate"]
    (first,) = [r for r in recorded if r[2] == "acknowledge"]
    (copy,) = [r for r in recorded if r[2] == "duplicate"]
    assert copy[4] == first[0] and copy[1] != first[1]
    (detail,) = query(
        database, f"SELECT detail FROM events WHERE message_pk = {copy[0]} AND kind = 'duplicate'"
    )
    assert first[3] in detail[0] and first[1] in detail[0]
    # Nothing deleted from the server: both copies are still there.
    assert len(imap_user.uids()) == 1 and len(etrangers.uids()) == 1


def counted(app: App, database: str) -> tuple[int, int, int, int]:
    """What the indicators and the console make of the mail of RECEIVED's day: the facts'
    rows, the figures' received count, the unanswered list, the mail awaiting a person."""
    from mailbot.app import indicators, quarantine

    day = RECEIVED.date()
    facts = query(database, "SELECT count(*) FROM indicator_facts")[0][0]
    figures = indicators.figures(app.config, app.store, day, day, day)
    unanswered = indicators.unanswered(app.config, app.store, day)
    return facts, figures.received, len(unanswered), len(quarantine.waiting(app.store))


@pytest.mark.parametrize("first", ["general", "etrangers"])
@pytest.mark.parametrize("message_id", ["<poison-1@example.fr>", None])
def test_a_copy_without_return_path_is_counted_once(
    app: App, database: str, first: str, message_id: str | None
) -> None:
    """No Return-Path (no AR: RFC 3834), To one mailbox and Cc the other: one citizen's mail
    left for a person, listed and counted once; the other mailbox's copy is its duplicate,
    naming where it is (with or without a Message-ID: the fingerprint finds it)."""
    mail = both(Return_Path=None, Message_ID=message_id)  # type: ignore[arg-type]
    second = "etrangers" if first == "general" else "general"
    for mailbox in (first, second):
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [(first, "skip"), (second, "duplicate")]
    assert recorded[1][4] == recorded[0][0] and recorded[1][3] is None
    assert ars(database) == []
    assert counted(app, database) == (1, 1, 1, 1)
    (detail,) = [e.detail for e in app.store.events(recorded[1][0]) if e.kind == "duplicate"]
    assert f"message {recorded[0][0]} in mailbox {first}" in detail


@pytest.mark.parametrize("bare_first", [True, False])
@pytest.mark.parametrize("bare", ["general", "etrangers"])
def test_a_copy_with_return_path_takes_over_one_without(
    app: App, database: str, bare: str, bare_first: bool
) -> None:
    """The copy in one mailbox lacks the Return-Path the other has (two deliveries): the
    citizen gets one AR, from the copy that has it, whichever is read first; the copy left
    for a person becomes (or is recorded as) its duplicate, counted and listed no more."""
    other = "etrangers" if bare == "general" else "general"
    mails = [(bare, both(Return_Path=None)), (other, both())]  # type: ignore[arg-type]
    for mailbox, mail in mails if bare_first else mails[::-1]:
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    decided = {r[1]: r for r in rows(database)}
    assert (decided[other][2], decided[bare][2]) == ("acknowledge", "duplicate")
    assert decided[bare][4] == decided[other][0]
    assert ars(database) == [(other, "ar")]
    assert counted(app, database) == (1, 1, 1, 0)
    (detail,) = [e.detail for e in app.store.events(decided[bare][0]) if e.kind == "duplicate"]
    assert decided[other][3] in detail and other in detail


def test_a_copy_left_for_a_person_and_answered_is_not_taken_over(app: App, database: str) -> None:
    """An agent answered (by phone) the copy left for a person before the other mailbox's
    copy, with a Return-Path, was read: the mail was handled, and that copy is its
    duplicate; no AR after the answer."""
    from mailbot.app.answered import AnsweredHow, mark_answered

    bare = both(Return_Path=None)  # type: ignore[arg-type]
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, bare)])
    pk = rows(database)[0][0]
    how = AnsweredHow.PHONE
    mark_answered(app.config, app.store, app.agent, "aleroux", f"#{pk}", how, "rappelée")
    app.pipeline.process_batch("etrangers", "INBOX", 1, [IncomingMail(1, RECEIVED, both())])
    assert [r[1:3] for r in rows(database)] == [("general", "skip"), ("etrangers", "duplicate")]
    assert rows(database)[1][4] == pk
    assert ars(database) == []
    assert counted(app, database) == (1, 1, 0, 1)  # answered; still listed, as it was


def test_a_take_over_losing_to_an_answer_records_the_duplicate(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy left for a person was answered between this copy's lookup (which saw it
    waiting) and its take-over: the guarded UPDATE finds it answered, the mail's savepoint
    alone is rolled back (its AR and reference number with it), and the copy is recorded
    as the duplicate."""
    from mailbot.app.answered import AnsweredHow, mark_answered
    from mailbot.store import transaction as store_transaction

    bare = both(Return_Path=None)  # type: ignore[arg-type]
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, bare)])
    pk = rows(database)[0][0]
    real = store_transaction.Transaction.claimed_mail
    with app.store.transaction() as tx:
        stale = real(tx, query(database, "SELECT fingerprint FROM message_keys")[0][0])
    assert stale is not None and stale.waiting
    how = AnsweredHow.PHONE
    mark_answered(app.config, app.store, app.agent, "aleroux", f"#{pk}", how, "rappelée")
    calls: list[int] = []

    def seen_before(self: Any, fingerprint: str) -> Any:
        calls.append(1)
        return stale if len(calls) == 1 else real(self, fingerprint)

    monkeypatch.setattr(store_transaction.Transaction, "claimed_mail", seen_before)
    batch = [
        IncomingMail(1, RECEIVED, both()),
        IncomingMail(2, RECEIVED, citizen(3, "Autre", To=ETRANGERS)),
    ]
    outcomes = app.pipeline.process_batch("etrangers", "INBOX", 1, batch)
    assert [o.decision for o in outcomes] == [Decision.DUPLICATE, Decision.ACKNOWLEDGE]
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [
        ("general", "skip"),
        ("etrangers", "duplicate"),
        ("etrangers", "acknowledge"),
    ]
    assert recorded[1][4] == pk and recorded[2][3] == f"SM-{RECEIVED.year}-000001"
    queued = query(database, "SELECT DISTINCT message_pk FROM outbox")
    assert [q[0] for q in queued] == [recorded[2][0]]  # the other mail's only


def test_a_copy_holding_the_key_quarantined_by_a_retry_is_taken_over(
    app: App, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy left for a person holds the key; a retry of it fails (quarantined, the key
    still its own): the other mailbox's copy, with a Return-Path, is still acknowledged,
    and the quarantined row becomes its duplicate."""
    from mailbot.app.intake import Pipeline

    bare = both(Return_Path=None)  # type: ignore[arg-type]
    app.pipeline.process_batch("general", "INBOX", 1, [IncomingMail(1, RECEIVED, bare)])
    pk = rows(database)[0][0]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken by the test")

    with monkeypatch.context() as patched:
        patched.setattr(Pipeline, "_decide", broken)
        outcome = app.pipeline.process("general", "INBOX", 1, IncomingMail(1, RECEIVED, bare), pk)
    assert outcome.decision == Decision.QUARANTINE
    app.pipeline.process_batch("etrangers", "INBOX", 1, [IncomingMail(1, RECEIVED, both())])
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [("general", "duplicate"), ("etrangers", "acknowledge")]
    assert recorded[0][4] == recorded[1][0]
    assert ars(database) == [("etrangers", "ar")]
    assert counted(app, database) == (1, 1, 1, 0)


def test_a_retried_copy_without_return_path_gets_the_one_ar(app: App, database: str) -> None:
    """``missing_return_path: use_from`` then a retry of the mail left for a person: it is
    acknowledged (its own key kept), once; its copy in the other mailbox stays its
    duplicate."""
    mail = both(Return_Path=None)  # type: ignore[arg-type]
    for mailbox in ("general", "etrangers"):
        app.pipeline.process_batch(mailbox, "INBOX", 1, [IncomingMail(1, RECEIVED, mail)])
    policy = app.config.policy.model_copy(update={"missing_return_path": "use_from"})
    app.pipeline.config = app.config.model_copy(update={"policy": policy})
    pk = rows(database)[0][0]
    outcome = app.pipeline.process("general", "INBOX", 1, IncomingMail(1, RECEIVED, mail), pk)
    assert outcome.decision == Decision.ACKNOWLEDGE
    recorded = rows(database)
    assert [r[1:3] for r in recorded] == [("general", "acknowledge"), ("etrangers", "duplicate")]
    assert ars(database) == [("general", "ar")]
    assert counted(app, database) == (1, 1, 1, 0)


def test_one_mail_without_return_path_in_both_real_mailboxes_counts_once(
    tmp_path: Path,
    imap_user: MailUser,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The defect, end to end (real Dovecot, aiosmtpd, ``poll --once``): a mail with no
    Return-Path To one mailbox and Cc the other gets no AR, both copies are recorded (both
    folders' marks move) and stay on the server, and the indicators, the unanswered list and
    the mail awaiting a person count it once. ``use_from`` and a retry of all: one AR."""
    from rulesfile import dump_rules, load_rules

    from mailbot.core.workdays import WorkingCalendar

    etrangers = dovecot.new_user("etr")
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, database=database)
    mail = both(Return_Path=None)  # type: ignore[arg-type]
    imap_user.deliver([mail])
    etrangers.deliver([mail])
    assert inproc(capsys, config, "poll", "--once", "--acknowledge-existing").returncode == 0
    assert smtp_server.messages == []
    recorded = rows(database)
    assert sorted(r[2] for r in recorded) == ["duplicate", "skip"]
    (left,) = [r for r in recorded if r[2] == "skip"]
    (copy,) = [r for r in recorded if r[2] == "duplicate"]
    assert copy[4] == left[0] and copy[1] != left[1]
    marks = query(database, "SELECT mailbox, last_uid FROM folders ORDER BY mailbox")
    assert [tuple(m) for m in marks] == [("etrangers", 1), ("general", 1)]
    assert len(imap_user.uids()) == 1 and len(etrangers.uids()) == 1

    today = datetime.now(WorkingCalendar().zone).date()
    since = today - timedelta(days=1)  # the mail's day, should midnight pass meanwhile
    figures = inproc(
        capsys, config, "indicators", "--from", str(since), "--to", str(today), "--format", "json"
    )
    assert '"received": 1,' in figures.stdout, figures.stdout
    assert "\n1 unanswered" in inproc(capsys, config, "unanswered").stdout
    waiting = inproc(capsys, config, "quarantine", "list").stdout
    assert f"#{left[0]} " in waiting and f"#{copy[0]} " not in waiting
    assert "\n1 mail(s) without an AR" in waiting

    data = load_rules(config)
    data["policy"] = {"missing_return_path": "use_from"}
    config.write_text(dump_rules(data), encoding="utf-8")
    retried = inproc(capsys, config, "quarantine", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert ars_to(smtp_server, "usager1@example.fr") == 1
    assert sorted(r[2] for r in rows(database)) == ["acknowledge", "duplicate"]


def test_the_upgrade_gives_recorded_mails_their_keys(database: str) -> None:
    """Migration 0015: each handled mail already recorded takes its key (the first row of
    its fingerprint), so a copy still unread in the other mailbox is not acknowledged. A
    mail left for a person took none there; it takes its own at 0023, as the intake now
    gives one, so that its copy there is its duplicate."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from mailbot.store import MIGRATIONS

    engine = sa.create_engine(database)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
        for uid, mailbox, decision, fingerprint, reasons in (
            (1, "general", "acknowledge", "f1", '["citizen-mail"]'),
            (2, "general", "duplicate", "f1", '["already-recorded"]'),
            (1, "etrangers", "acknowledge", "f1", '["citizen-mail"]'),  # two ARs, before
            (2, "etrangers", "skip", "f2", '["no-return-path"]'),
            (3, "etrangers", "quarantine", "f3", '["error:x"]'),
            (4, "etrangers", "follow-up", "f4", '["follow-up"]'),
            (5, "etrangers", "skip", None, '["bounce"]'),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO messages (mailbox, folder, uidvalidity, uid, content_hash,"
                    " received_at, subject, decision, reasons, ar_status, size, defects,"
                    " created_at, fingerprint) VALUES (:mailbox, 'INBOX', 1, :uid, 'h',"
                    " '2026-11-05 10:00:00', 's', :decision, :reasons, 'none', 10, '[]',"
                    " '2026-11-05 10:00:00', :fingerprint)"
                ),
                {
                    "mailbox": mailbox,
                    "uid": uid,
                    "decision": decision,
                    "fingerprint": fingerprint,
                    "reasons": reasons,
                },
            )
    engine.dispose()
    store = Store(database)
    assert store.schema_version() == Store.head_version()
    store.close()
    keys = query(database, "SELECT fingerprint, message_pk FROM message_keys ORDER BY 1")
    pks = dict(
        query(
            database,
            "SELECT fingerprint || ':' || decision, min(id) FROM messages"
            " GROUP BY fingerprint, decision",
        )
    )
    assert [tuple(k) for k in keys] == [
        ("f1", pks["f1:acknowledge"]),
        ("f2", pks["f2:skip"]),  # 0023
        ("f4", pks["f4:follow-up"]),
    ]


@pytest.mark.parametrize("return_path", [True, False])
def test_two_workers_recording_the_two_copies_at_once_send_one_ar(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, return_path: bool
) -> None:
    """Two applications (two workers) on one database, each recording its mailbox's copy:
    the first holds its transaction open after taking the key; the second, which found no
    key yet, waits at its insert (PostgreSQL) or for the write lock (SQLite), then records
    its copy as the duplicate: one AR. Without a Return-Path, no AR and one mail left for a
    person, the key guarding it the same way."""
    from mailbot.store import transaction as store_transaction

    apps = [
        build_app(ROOT / "rules.yaml", FileTransport(tmp_path / name), database=database)
        for name in ("one", "two")
    ]
    # The year's reference counter made first, so that what this test exercises is the
    # key's guard (two workers making a year's counter at once: tests/test_store.py).
    other = [IncomingMail(9, RECEIVED, citizen(9, "Autre demande"))]
    apps[0].pipeline.process_batch("general", "INBOX", 1, other)
    real = store_transaction.Transaction.claim_mail
    taken = threading.Event()

    raised: list[str] = []

    def slow(self: Any, fingerprint: str, message_pk: int) -> None:
        try:
            real(self, fingerprint, message_pk)
        except SameMailError:
            raised.append(threading.current_thread().name)
            raise
        if threading.current_thread().name == "general":
            taken.set()
            threading.Event().wait(1.0)  # the batch's transaction still open

    monkeypatch.setattr(store_transaction.Transaction, "claim_mail", slow)
    mail = both() if return_path else both(Return_Path=None)  # type: ignore[arg-type]
    handled = Decision.ACKNOWLEDGE if return_path else Decision.SKIP
    outcomes: dict[str, Any] = {}

    def intake(app: App, mailbox: str) -> None:
        batch = [IncomingMail(1, RECEIVED, mail)]
        outcomes[mailbox] = app.pipeline.process_batch(mailbox, "INBOX", 1, batch)

    first = threading.Thread(target=intake, args=(apps[0], "general"), name="general")
    first.start()
    assert taken.wait(20)
    second = threading.Thread(target=intake, args=(apps[1], "etrangers"), name="etrangers")
    second.start()
    first.join(30)
    second.join(30)
    for app in apps:
        app.store.close()
    assert [o.decision for o in outcomes["general"]] == [handled]
    assert [o.decision for o in outcomes["etrangers"]] == [Decision.DUPLICATE]
    recorded = rows(database)
    assert [r[1:3] for r in recorded[1:]] == [
        ("general", handled.value),
        ("etrangers", "duplicate"),
    ]
    assert recorded[2][4] == recorded[1][0]
    assert len(ars(database)) == (2 if return_path else 1)  # the other mail's (and this one's)
    assert query(database, "SELECT count(*) FROM indicator_facts")[0][0] == 2
    # PostgreSQL: the second found no key, then its insert waited and failed (the guard);
    # SQLite: it waited for the write lock, then found the key.
    assert raised == (["etrangers"] if database.startswith("postgresql") else [])
