"""Indicators on a hand-computed scenario: 32 messages over 3 weeks of November 2026
(11 November is a public holiday), complaints, transfers, relances, unanswered mail.

Every expected figure below was computed by hand from the table (delays in working days,
date(received) < d <= date(replied)), then checked against `mailbot indicators --format json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rulesfile import dump_rules, load_rules

from mailbot.core.statuses import EventKind
from mailbot.store import NewMessage, Store

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
N = None
# (n, received day, replied day or None, category, transferred, ar sent, how replied, relances)
# how: "mailbot" = `mailbot reply` (signed), "sent-ok"/"sent-partial" = found in Sent with a
# complete/partial signature, "auto" = re-orientation.
SCENARIO = [
    (1, 2, 2, "information", False, True, "mailbot", 0),  # 0
    (2, 2, 3, "information", False, True, "sent-partial", 0),  # 1
    (3, 3, 6, "information", True, True, "mailbot", 0),  # 3
    (4, 4, 12, "information", False, True, "mailbot", 0),  # 5 (11 Nov off)
    (5, 5, 13, "information", False, True, "sent-partial", 0),  # 5
    (6, 6, 16, "information", False, True, "mailbot", 0),  # 5
    (7, 6, 17, "etat-avancement", True, True, "mailbot", 1),  # 6 late
    (8, 7, 9, "information", False, True, "mailbot", 0),  # 1 (Saturday receipt)
    (9, 8, 10, "information", False, True, "mailbot", 0),  # 2 (Sunday receipt)
    (10, 9, 12, "information", False, True, "sent-ok", 0),  # 2
    (11, 10, 18, "information", False, True, "mailbot", 0),  # 5
    (12, 10, 19, "information", False, True, "sent-partial", 0),  # 6 late
    (13, 11, 12, "information", False, True, "mailbot", 0),  # 1 (received on the holiday)
    (14, 12, 12, "information", False, True, "mailbot", 0),  # 0
    (15, 13, 23, "information", False, True, "mailbot", 0),  # 6 late
    (16, 16, 16, "information", False, True, "mailbot", 0),  # 0
    (17, 16, 20, "information", True, True, "mailbot", 0),  # 4
    (18, 17, 25, "information", False, True, "mailbot", 0),  # 6 late
    (19, 18, 19, "information", False, True, "mailbot", 0),  # 1
    (20, 19, 20, "information", False, True, "mailbot", 0),  # 1
    (21, 20, 23, "information", False, True, "mailbot", 0),  # 1
    (22, 21, 23, "information", False, True, "mailbot", 0),  # 1
    (23, 16, N, "information", False, True, N, 0),  # overdue (7 as of 25 Nov)
    (24, 17, N, "etat-avancement", True, False, N, 2),  # overdue (6)
    (25, 20, N, "information", False, True, N, 0),  # pending (3)
    (26, 22, N, "information", False, True, N, 0),  # pending (3)
    (27, 19, N, "information", False, False, N, 0),  # pending (4)
    (28, 2, 2, "information", False, True, "auto", 0),  # 0 (re-orientation)
    (29, 3, 4, "reclamation", False, True, "mailbot", 0),  # 1
    (30, 5, 16, "reclamation", False, True, "mailbot", 0),  # 6 late
    (31, 9, 10, "reclamation", False, True, "mailbot", 0),  # 1
    (32, 18, N, "reclamation", False, True, N, 0),  # pending (5)
]
EXPECTED = {
    "received": 32,
    "answered": 26,
    "pending": 4,
    "overdue": 2,
    "rate_within_5": 21 / 28,  # 21 within / (26 answered + 2 overdue)
    "mean_delay": 70 / 26,
    "median_delay": 1.5,
    "complaints": 4,
    "complaint_rate_within_5": 2 / 3,
    "complaint_mean_delay": 8 / 3,
    "complaint_median_delay": 1.0,
    "ars_sent": 30,
    "transfers": 4,
    "transfer_notice_share": 3 / 4,
    "relances": 3,
    "signature_completeness": 23 / 26,
}


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=PARIS)


def load_scenario(store: Store) -> None:
    with store.transaction() as tx:
        for n, received, replied, category, transferred, ar_sent, how, relances in SCENARIO:
            pk = tx.insert_message(
                NewMessage(
                    mailbox="general",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=n,
                    message_id=f"<m{n}@example.fr>",
                    content_hash=f"h{n}",
                    received_at=at(received, 10),
                    sender=f"u{n}@example.fr",
                    subject=f"message {n}",
                    in_reply_to=None,
                    decision="acknowledge",
                    reasons=["citizen-mail"],
                    size=100,
                    defects=[],
                    reference=f"SM-2026-{n:06d}",
                    ar_status="sent" if ar_sent else "failed",
                    service="cartes-grises" if transferred else "general",
                    category=category,
                    transferred=int(transferred),
                )
            )
            if how == "mailbot":
                tx.record_reply(pk, at(replied, 15), True, f"<r{n}@x>", "reply_sent")
            elif how == "auto":
                tx.record_reply(pk, at(received, 10), True, "automatic:reorientation")
            elif how in {"sent-ok", "sent-partial"}:
                detail = json.dumps({"signature_complete": how == "sent-ok"})
                tx.record_reply(pk, at(replied, 15), how == "sent-ok", detail)
            for r in range(relances):
                tx.insert_message(
                    NewMessage(
                        mailbox="general",
                        folder="INBOX",
                        uidvalidity=1,
                        uid=1000 + n * 10 + r,
                        message_id=f"<f{n}-{r}@example.fr>",
                        content_hash=f"f{n}{r}",
                        received_at=at(received + 3, 9),
                        sender=f"u{n}@example.fr",
                        subject=f"Re: message {n}",
                        in_reply_to=f"<m{n}@example.fr>",
                        decision="follow-up",
                        reasons=["follow-up"],
                        size=100,
                        defects=[],
                        parent_id=pk,
                    )
                )
                tx.count_relance(pk, at(received + 3, 9))  # as the intake does
        # noise that must not count: a bounce and a message outside the period
        tx.insert_message(
            NewMessage(
                mailbox="general",
                folder="INBOX",
                uidvalidity=1,
                uid=5000,
                message_id="<b@x>",
                content_hash="b",
                received_at=at(10, 8),
                sender=None,
                subject="bounce",
                in_reply_to=None,
                decision="skip",
                reasons=["null-return-path"],
                size=1,
                defects=[],
            )
        )
        tx.insert_message(
            NewMessage(
                mailbox="general",
                folder="INBOX",
                uidvalidity=1,
                uid=5001,
                message_id="<o@x>",
                content_hash="o",
                received_at=at(23, 8),
                sender="late@example.fr",
                subject="outside",
                in_reply_to=None,
                decision="acknowledge",
                reasons=["citizen-mail"],
                size=1,
                defects=[],
                reference="SM-2026-009999",
                ar_status="sent",
                category="information",
            )
        )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'scenario.db'}"
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    store = Store(data["database"])
    load_scenario(store)
    store.close()
    return path


def run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(config),
            "indicators",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-22",
            "--as-of",
            "2026-11-25",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def test_hand_computed_scenario_json(config: Path) -> None:
    figures = json.loads(run(config, "--format", "json").stdout)
    for name, expected in EXPECTED.items():
        assert figures[name] == pytest.approx(expected), name
    targets = figures["targets"]
    assert targets["rate_within_5"] == {"target": "> 75 %", "met": False}  # exactly 75 %
    assert targets["mean_delay"] == {"target": "< 5 j", "met": True}
    assert targets["complaint_rate_within_5"]["met"] is False


def test_table_and_csv_formats(config: Path) -> None:
    table = run(config).stdout
    assert "rate_within_5" in table and "75.00%" in table and "NOT met" in table
    csv_out = run(config, "--format", "csv").stdout.splitlines()
    assert csv_out[0] == "indicator,value,target,met"
    assert "received,32,," in csv_out[1]


def test_filters_by_service(config: Path) -> None:
    figures = json.loads(run(config, "--format", "json", "--service", "cartes-grises").stdout)
    assert figures["received"] == 4 and figures["transfers"] == 4


def test_same_figures_on_postgresql(postgres: str, request: pytest.FixtureRequest) -> None:
    """The vectorised read works on PostgreSQL too (epoch seconds computed by the server)."""
    from datetime import date

    from pg import fresh_database

    from mailbot.core.indicators import arrays_from_store, compute_arrays
    from mailbot.core.workdays import WorkingCalendar

    store = Store(fresh_database(postgres, "i", request.node.nodeid))
    try:
        load_scenario(store)
        calendar = WorkingCalendar()
        columns = store.indicator_arrays(
            datetime(2026, 11, 2, tzinfo=calendar.zone),
            datetime(2026, 11, 23, tzinfo=calendar.zone),
            "reclamation",
        )
        result = compute_arrays(arrays_from_store(columns, calendar), date(2026, 11, 25), calendar)
        for name, expected in EXPECTED.items():
            assert getattr(result, name) == pytest.approx(expected), name
    finally:
        store.close()


def test_figures_as_of_a_date_ignore_the_replies_that_came_after_it(tmp_path: Path) -> None:
    """November: A and B received on Friday 27, A answered on 8 December (7 working days,
    late), B never; C received on 2 November, answered the next day (complete signature;
    A's is partial). As of 30 November, A was still waiting like B: answered 1, pending 2,
    rate 1/1. As of 15 December: A late, B overdue (12 days), rate 1/3. Counting A's late
    reply as of 30 November while B stayed pending gave 1/2. Both ways of computing agree."""
    from datetime import date

    from mailbot.app.indicators import figures, period_bounds
    from mailbot.config import load_config
    from mailbot.core.indicators import arrays_from_store, compute_arrays
    from mailbot.core.workdays import calendar_for

    config = load_config(ROOT / "rules.yaml")
    store = Store(f"sqlite:///{tmp_path / 'as-of.db'}")
    with store.transaction() as tx:
        for n, received, replied, complete in (
            (1, at(27, 10), datetime(2026, 12, 8, 10, tzinfo=PARIS), False),
            (2, at(27, 11), None, None),
            (3, at(2, 10), at(3, 10), True),
        ):
            pk = tx.insert_message(
                NewMessage(
                    mailbox="general",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=n,
                    message_id=f"<as-of-{n}@example.fr>",
                    content_hash=f"as-of-{n}",
                    received_at=received,
                    sender=f"u{n}@example.fr",
                    subject=f"message {n}",
                    in_reply_to=None,
                    decision="acknowledge",
                    reasons=["citizen-mail"],
                    size=100,
                    defects=[],
                    reference=f"SM-2026-{n:06d}",
                    ar_status="sent",
                    service="general",
                    category="information",
                )
            )
            if replied is not None:
                detail = json.dumps({"signature_complete": complete})
                tx.record_reply(pk, replied, complete, detail)
    calendar = calendar_for(config.timezone)
    columns = store.indicator_arrays(
        *period_bounds(calendar, date(2026, 11, 1), date(2026, 11, 30)), "reclamation"
    )
    for as_of, answered, pending, overdue, rate, mean, signatures in (
        (date(2026, 11, 30), 1, 2, 0, 1.0, 1.0, 1.0),
        (date(2026, 12, 15), 2, 0, 1, 1 / 3, 4.0, 0.5),
    ):
        for result in (
            figures(config, store, date(2026, 11, 1), date(2026, 11, 30), as_of),
            compute_arrays(arrays_from_store(columns, calendar), as_of, calendar),
        ):
            assert (result.answered, result.pending, result.overdue) == (answered, pending, overdue)
            assert result.rate_within_5 == pytest.approx(rate)
            assert (result.mean_delay, result.signature_completeness) == (mean, signatures)
    store.close()


def test_figures_as_of_a_date_leave_out_the_mail_received_after_it(config: Path) -> None:
    """The scenario's three weeks as they stood on Friday 13 November: the mail of the 16th
    to the 22nd had not arrived. It was counted as received and pending (aged 0), so
    `received` was 32 where 19 had come, and the pending count and the listings grew with
    mail nobody could have seen that day."""
    as_of_13 = json.loads(run(config, "--format", "json", "--as-of", "2026-11-13").stdout)
    # Received from the 2nd to the 13th: messages 1-15, 28-31 (19), as of the 13th.
    known = [s for s in SCENARIO if s[1] <= 13]
    assert as_of_13["received"] == len(known) == 19
    answered = [s for s in known if s[2] is not None and s[2] <= 13]
    assert as_of_13["answered"] == len(answered)
    assert as_of_13["pending"] + as_of_13["overdue"] == len(known) - len(answered)


def test_figures_as_of_a_date_leave_out_the_relances_received_after_it(database: str) -> None:
    """The scenario's relances: message 7's (received Friday 6 November) on Monday the 9th,
    message 24's two (received the 17th) on Friday the 20th. As of the 19th, message 24 was
    received but not yet relanced: 1 relance, not 3; as of the 8th, message 7 had not been
    either: 0. A follow-up received after the as-of day counted all the same. Every way of
    computing them agrees: the daily buckets, the facts (a configuration in Brussels, whose
    days are Paris's, while the buckets are kept in Paris's: read from the facts), the
    report's weeks from one read; on SQLite and PostgreSQL. Message 1 (answered on the
    2nd) written to again on the 23rd is no relance, counted nor taken away."""
    from datetime import date
    from types import SimpleNamespace
    from typing import cast

    from mailbot.app.indicators import figures, figures_of_periods
    from mailbot.config import Config

    store = Store(database)
    try:
        load_scenario(store)
        answered = store.message(reference="SM-2026-000001")
        assert answered is not None
        with store.transaction() as tx:
            tx.insert_message(
                NewMessage(
                    mailbox="general",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=6000,
                    message_id="<thanks@example.fr>",
                    content_hash="thanks",
                    received_at=at(23, 9),
                    sender="u1@example.fr",
                    subject="Re: message 1",
                    in_reply_to="<m1@example.fr>",
                    decision="follow-up",
                    reasons=["follow-up"],
                    size=100,
                    defects=[],
                    parent_id=answered.id,
                )
            )
            tx.count_relance(answered.id, at(23, 9))  # after the answer: no relance
        configs = [
            cast(Config, SimpleNamespace(timezone=zone, complaint_category="reclamation"))
            for zone in ("Europe/Paris", "Europe/Brussels")
        ]
        weeks = [(date(2026, 11, 2 + 7 * k), date(2026, 11, 8 + 7 * k)) for k in range(3)]
        for day, total, per_week in (
            (8, 0, [0, 0, 0]),
            (19, 1, [1, 0, 0]),
            (20, 3, [1, 0, 2]),  # received that day: a relance as of its end
            (25, 3, [1, 0, 2]),
        ):
            as_of = date(2026, 11, day)
            for config in configs:
                whole = figures(config, store, weeks[0][0], weeks[-1][1], as_of)
                assert whole.relances == total, (config.timezone, day)
                found = figures_of_periods(config, store, weeks, as_of)
                assert [f.relances for f in found] == per_week, (config.timezone, day)
                service = figures(config, store, weeks[0][0], weeks[-1][1], as_of, None, "general")
                assert service.relances == 0, (config.timezone, day)  # 7 and 24: cartes-grises
    finally:
        store.close()


def test_the_command_as_of_a_date_leaves_out_the_relances_received_after_it(config: Path) -> None:
    """``mailbot indicators --as-of``: message 24's two relances came on the 20th."""
    as_of_19 = json.loads(run(config, "--format", "json", "--as-of", "2026-11-19").stdout)
    assert (as_of_19["received"], as_of_19["relances"]) == (28, 1)


def test_an_answer_recorded_later_with_an_earlier_date_leaves_out_the_relances_after_it(
    database: str,
) -> None:
    """Message 24 (received Tuesday 17 November) was relanced twice on Friday the 20th; on
    the 24th an agent records that he answered it by phone on Wednesday the 18th
    (``mark_answered`` with ``at``). The two follow-ups came after that answer: no relance
    ("while unanswered"), neither in the figures as of the 25th nor as of the 19th, when
    neither had come yet — the stored count and the relances taken away as of a day follow
    the same rule. Only message 7's relance (on the 9th) stays. Buckets and facts alike, on
    SQLite and PostgreSQL."""
    from datetime import date
    from types import SimpleNamespace
    from typing import cast

    from mailbot.app.indicators import figures, figures_of_periods
    from mailbot.config import Config

    store = Store(database)
    try:
        load_scenario(store)
        row = store.message(reference="SM-2026-000024")
        assert row is not None and row.relances == 2
        with store.transaction() as tx:
            tx.record_reply(row.id, at(18, 11), None, "{}", EventKind.ANSWERED_ELSEWHERE)
        configs = [
            cast(Config, SimpleNamespace(timezone=zone, complaint_category="reclamation"))
            for zone in ("Europe/Paris", "Europe/Brussels")
        ]
        weeks = [(date(2026, 11, 2 + 7 * k), date(2026, 11, 8 + 7 * k)) for k in range(3)]
        for day in (8, 19, 25):
            as_of = date(2026, 11, day)
            expected = 0 if day == 8 else 1
            for config in configs:
                whole = figures(config, store, weeks[0][0], weeks[-1][1], as_of)
                assert whole.relances == expected, (config.timezone, day)
                found = figures_of_periods(config, store, weeks, as_of)
                assert [f.relances for f in found] == [expected, 0, 0], (config.timezone, day)
        row = store.message(reference="SM-2026-000024")
        assert row is not None and row.relances == 0
    finally:
        store.close()


def test_a_follow_up_committing_while_an_earlier_answer_waits_is_no_relance(
    request: pytest.FixtureRequest,
) -> None:
    """PostgreSQL, two sessions: the intake records a third follow-up of message 24 (the
    citizen writing again on the 23rd) and holds the row until its batch commits; meanwhile
    an agent records an answer given by phone on the 18th, whose UPDATE waits for that row.
    All three follow-ups came after the answer: none is a relance. The UPDATE's subquery
    read its statement's snapshot, from before the intake committed: the new follow-up
    stayed counted (1 relance instead of 0)."""
    import threading
    import time

    import sqlalchemy as sa
    from pg import fresh_database

    url = fresh_database(request.getfixturevalue("postgres"), "r", request.node.nodeid)
    store = Store(url)
    try:
        load_scenario(store)
        row = store.message(reference="SM-2026-000024")
        assert row is not None and row.relances == 2
        errors: list[BaseException] = []

        def answer() -> None:
            try:
                with store.transaction() as tx:
                    tx.record_reply(row.id, at(18, 11), None, "{}", EventKind.ANSWERED_ELSEWHERE)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        agent = threading.Thread(target=answer)
        with store.transaction() as intake:
            intake.insert_message(
                NewMessage(
                    mailbox="general",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=6001,
                    message_id="<again@example.fr>",
                    content_hash="again",
                    received_at=at(23, 9),
                    sender="u24@example.fr",
                    subject="Re: message 24",
                    in_reply_to="<m24@example.fr>",
                    decision="follow-up",
                    reasons=["follow-up"],
                    size=100,
                    defects=[],
                    parent_id=row.id,
                )
            )
            intake.count_relance(row.id, at(23, 9))
            agent.start()
            deadline = time.monotonic() + 60
            query = sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            while True:  # the agent's UPDATE waits for the row the intake holds
                with store.engine.connect() as conn:
                    if conn.execute(query).scalar():
                        break
                assert agent.is_alive() and time.monotonic() < deadline
                time.sleep(0.01)
        agent.join(60)
        assert not errors and not agent.is_alive()
        row = store.message(reference="SM-2026-000024")
        assert row is not None and row.relances == 0
    finally:
        store.close()


def test_mail_after_the_answer_is_back_in_the_queue_and_leaves_the_figures_alone(
    database: str,
) -> None:
    """Message 28 was re-oriented on receipt (answered on the 2nd, « répondez à ce
    message, un agent la lira »); the citizen contests it on the 23rd. As the intake does
    (``_written_again``): no relance, but the message is back in the general service's
    queue, first, as new mail to read, and in the CLI's list of it — not among the overdue
    (it was answered). The indicators and the report's weeks do not move: its answer
    counts once, on the 2nd. A reply dated before the new mail (a phone call recorded
    late) leaves it unread; a reply after it, or an agent marking it read, clears it. On
    SQLite and PostgreSQL."""
    from datetime import date
    from types import SimpleNamespace
    from typing import cast

    from mailbot.app.indicators import figures, figures_of_periods
    from mailbot.config import Config
    from mailbot.core.indicators import Indicators
    from mailbot.store import console

    store = Store(database)
    config = cast(
        Config, SimpleNamespace(timezone="Europe/Paris", complaint_category="reclamation")
    )
    weeks = [(date(2026, 11, 2 + 7 * k), date(2026, 11, 8 + 7 * k)) for k in range(3)]
    as_of = date(2026, 11, 25)
    queue = console.OpenFilter(services=["general"])

    def figures_now() -> tuple[Indicators, list[Indicators]]:
        return (
            figures(config, store, weeks[0][0], weeks[-1][1], as_of),
            figures_of_periods(config, store, weeks, as_of),
        )

    def listed() -> list[str]:
        found, total = console.open_messages(store.engine, queue, 0, 100)
        assert total == len(found)
        return [row.reference for row in found]

    try:
        load_scenario(store)
        before = figures_now()
        open_before = listed()
        reoriented = store.message(reference="SM-2026-000028")
        assert reoriented is not None and reoriented.first_reply_at is not None
        assert "SM-2026-000028" not in open_before
        with store.transaction() as tx:
            for uid in (6100, 6101):  # two mails: the contest, then a document
                follow_up = tx.insert_message(
                    NewMessage(
                        mailbox="general",
                        folder="INBOX",
                        uidvalidity=1,
                        uid=uid,
                        message_id=f"<contest{uid}@example.fr>",
                        content_hash=f"contest{uid}",
                        received_at=at(23, 9),
                        sender="u28@example.fr",
                        subject="Re: message 28",
                        in_reply_to="<m28@example.fr>",
                        decision="follow-up",
                        reasons=["follow-up"],
                        size=100,
                        defects=[],
                        parent_id=reoriented.id,
                    )
                )
                tx.count_relance(reoriented.id, at(23, 9))  # as the intake does
                assert not tx.reopen_closed(reoriented.id)
                assert tx.mark_written_again(reoriented.id, at(23, 9)) is (uid == 6100)
                assert follow_up
        row = store.message(reference="SM-2026-000028")
        assert row is not None and row.relances == 0
        assert row.written_again_at == at(23, 9)
        assert listed() == ["SM-2026-000028", *open_before]  # first: new mail to read
        assert [r["reference"] for r in store.written_again_rows()] == ["SM-2026-000028"]
        assert [r["reference"] for r in store.written_again_rows(service="etrangers")] == []
        overdue = console.OpenFilter(services=["general"], received_before=at(30, 0))
        late, _ = console.open_messages(store.engine, overdue, 0, 100)
        assert "SM-2026-000028" not in [r.reference for r in late]
        assert [r["id"] for r in store.open_rows(at(30, 0))].count(row.id) == 0
        assert figures_now() == before

        with store.transaction() as tx:  # answered by phone on the 20th, recorded late
            tx.record_reply(row.id, at(20, 11), None, "{}", EventKind.ANSWERED_ELSEWHERE)
        assert listed()[0] == "SM-2026-000028"
        with store.transaction() as tx:  # the agent's reply to the contest, on the 24th
            tx.record_reply(row.id, at(24, 11), True, "<r28b@x>", EventKind.REPLY_SENT)
        assert listed() == open_before
        assert store.written_again_rows() == []
        assert figures_now() == before  # its first answer, on the 2nd, still the one counted

        with store.transaction() as tx:  # thanks on the 25th, marked read
            assert tx.mark_written_again(row.id, at(25, 9))
        assert listed()[0] == "SM-2026-000028"
        with store.transaction() as tx:
            assert tx.clear_written_again(row.id)
            assert not tx.clear_written_again(row.id)
        assert listed() == open_before
        assert figures_now() == before
    finally:
        store.close()
