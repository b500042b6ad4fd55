"""Audit 2 (after the AR, management's side): the weekly report of a week with a public
holiday, read by a manager — relances counted once, the delay from the first mail, working
days without the holiday, the same figures in the HTML, the text and the CSV, services and
mailboxes named as people know them, French agreed and never a line starting with « : ».

The week is the latest complete ISO week whose Monday–Friday holds a French public holiday
(``holidays.France()``), never a year written here; the mails are read by the real pipeline
(``mailbot demo --maildir``), the answers recorded with ``mailbot answered --at``."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from datetime import date, datetime, time, timedelta
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest
from servers import read_mail

from mailbot.cli import main

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
GENERAL = "pref-contact@seine-maritime.gouv.fr"
ETRANGERS = "pref-etrangers@seine-maritime.gouv.fr"
ETRANGERS_NAME = "Direction des migrations et de l'intégration"


def holiday_week(today: date) -> tuple[date, date]:
    """The Monday of the latest ISO week, finished at least 14 days before ``today`` (its
    answers and its report's day, a week after its end, are past), whose Monday–Friday
    holds a French public holiday; and that holiday."""
    france = holidays.France(years=range(today.year - 2, today.year + 1))
    monday = today - timedelta(days=today.weekday() + 21)
    while True:
        found = [monday + timedelta(d) for d in range(5) if monday + timedelta(d) in france]
        if found:
            return monday, found[0]
        monday -= timedelta(days=7)


def working_days_after(day: date, count: int) -> date:
    """The ``count``-th working day after ``day`` (Monday–Friday, French public holidays
    off): computed here from ``holidays``, not by mailbot's calendar."""
    france = holidays.France(years=range(day.year, day.year + 2))
    while count:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in france:
            count -= 1
    return day


def first_working_day(monday: date) -> date:
    return working_days_after(monday - timedelta(days=1), 1)


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        for box in ("general", "etrangers"):
            for sub in ("cur", "new", "tmp"):
                (root / box / sub).mkdir(parents=True)

    def add(
        self,
        box: str,
        when: datetime,
        sender: str,
        subject: str,
        mid: str,
        *,
        to: str = ETRANGERS,
        cc: str | None = None,
        in_reply_to: str | None = None,
        body: str = "Bonjour,\nOù en est mon dossier de titre de séjour ?\nMerci.\n",
    ) -> None:
        self.n += 1
        head = [f"Return-Path: <{sender}>", f"From: {sender.split('@')[0]} <{sender}>"]
        head += [f"To: {to}", *([f"Cc: {cc}"] if cc else []), f"Subject: {subject}"]
        head += [f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S %z')}"]
        head += [f"Message-ID: <{mid}@example.fr>"]
        if in_reply_to:
            head += [f"In-Reply-To: <{in_reply_to}@example.fr>"]
            head += [f"References: <{in_reply_to}@example.fr>"]
        head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
        head += ["Content-Transfer-Encoding: 8bit"]
        name = f"{int(when.timestamp())}.M{self.n}P{self.n}.audit:2,"
        raw = "\n".join(head) + "\n\n" + body
        (self.root / box / "cur" / name).write_bytes(raw.encode())


def at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), PARIS)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The holiday week's mail read by the pipeline, answered, and its weekly report."""
    tmp = tmp_path_factory.mktemp("audit2")
    monday, holiday = holiday_week(date.today())
    first = first_working_day(monday)
    box = Maildir(tmp / "maildir")
    # Alice writes, then again twice before any answer (threaded, then not): 2 relances;
    # answered on the 5th working day after her FIRST mail (the holiday not counted).
    box.add("etrangers", at(first, 10), "alice@example.fr", "Renouvellement titre", "a1")
    again = working_days_after(first, 2)
    box.add(
        "etrangers",
        at(again, 9),
        "alice@example.fr",
        "Re: Renouvellement titre",
        "a2",
        in_reply_to="a1",
        body="Bonjour,\nToujours rien.\n",
    )
    box.add(
        "etrangers",
        at(again, 15),
        "alice@example.fr",
        "Renouvellement titre",
        "a3",
        body="Bonjour,\nJe relance.\n",
    )
    # Bob writes to both mailboxes, then again to both: one message, one relance.
    for name in ("general", "etrangers"):
        box.add(
            name, at(first, 11), "bob@example.fr", "Carte de séjour", "b1", to=GENERAL, cc=ETRANGERS
        )
    for name in ("general", "etrangers"):
        box.add(
            name,
            at(again, 11),
            "bob@example.fr",
            "Re: Carte de séjour",
            "b2",
            to=GENERAL,
            cc=ETRANGERS,
            in_reply_to="b1",
            body="Bonjour,\nRelance.\n",
        )
    # Carol answered on the 6th working day: late.
    box.add("etrangers", at(first, 12), "carol@example.fr", "Naturalisation", "c1")
    config = ROOT / "rules.yaml"
    out = tmp / "demo"
    assert (
        main(
            [
                "--config",
                str(config),
                "-q",
                "demo",
                "--maildir",
                str(tmp / "maildir"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    demo = out / "rules.yaml"
    answers = {
        "alice@example.fr": working_days_after(first, 5),
        "carol@example.fr": working_days_after(first, 6),
    }
    with sqlite3.connect(out / "demo.db") as db:
        refs = dict(
            db.execute(
                "SELECT sender, reference FROM messages WHERE decision = 'acknowledge'"
            ).fetchall()
        )
    for sender, day in answers.items():
        assert (
            main(
                [
                    "--config",
                    str(demo),
                    "-q",
                    "answered",
                    refs[sender],
                    "--agent",
                    "khaddad",
                    "--how",
                    "phone",
                    "--reason",
                    "réponse donnée",
                    "--at",
                    at(day, 15).isoformat(),
                ]
            )
            == 0
        )
    week = f"{monday.isocalendar().year}-W{monday.isocalendar().week:02d}"
    files = tmp / "report"
    assert (
        main(["--config", str(demo), "-q", "report", "weekly", "--week", week, "--out", str(files)])
        == 0
    )
    raw = (files / f"rapport-{week}.eml").read_bytes()
    mail = read_mail(raw)
    text = mail.get_body(("plain",)).get_content()
    html = (files / f"rapport-{week}.html").read_text(encoding="utf-8")
    table = list(
        csv.reader(
            io.StringIO((files / f"rapport-{week}.csv").read_bytes().decode("utf-8-sig")),
            delimiter=";",
        )
    )
    return {"text": text, "html": html, "csv": table, "refs": refs, "holiday": holiday}


def html_rows(html: str) -> list[list[str]]:
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)
        rows.append([unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return rows


def test_the_csv_counts_working_days_without_the_holiday_and_relances_once(
    report: dict[str, object],
) -> None:
    table = report["csv"]
    refs = report["refs"]
    assert isinstance(table, list) and isinstance(refs, dict)
    by_ref = {row[0]: row for row in table[1:]}
    assert len(by_ref) == 3  # Bob's copy in the second mailbox and every relance: no row
    alice, bob, carol = (by_ref[refs[f"{name}@example.fr"]] for name in ("alice", "bob", "carol"))
    # reference;mailbox;service;category;received;replied;delay;within;relances;signature
    assert (alice[6], alice[7], alice[8]) == ("5", "oui", "2")  # from her first mail
    assert (carol[6], carol[7], carol[8]) == ("6", "non", "0")
    assert (bob[5], bob[8]) == ("", "1")


def test_the_breakdown_names_mailboxes_and_services_and_agrees_in_french(
    report: dict[str, object],
) -> None:
    text, html = str(report["text"]), str(report["html"])
    # One mail in the general mailbox (Bob's first copy), unanswered, one relance.
    assert f"- Boîte {GENERAL} : 1 reçu, 0 répondu," in text
    assert re.search(r"1 en retard, 1 relance\n", text)
    assert f"- Service {ETRANGERS_NAME} : 3 reçus, 2 répondus," in text.replace("\n  ", " ")
    rows = html_rows(html)
    assert [f"Boîte {GENERAL}", "1", "0"] == rows[[r[0] for r in rows].index(f"Boîte {GENERAL}")][
        :3
    ]
    service = next(r for r in rows if r and r[0] == f"Service {ETRANGERS_NAME}")
    assert service[1:3] == ["3", "2"] and service[-1] == "3"  # relances: 2 + 1
    assert "Service etrangers" not in html and "Boîte general" not in html
    late = [r for r in rows if len(r) == 4 and r[0].startswith("SM-")]
    assert late and all(r[1] == ETRANGERS_NAME for r in late)


def test_the_three_parts_give_the_same_figures(report: dict[str, object]) -> None:
    text, html, table = str(report["text"]), str(report["html"]), report["csv"]
    assert isinstance(table, list)
    rows = table[1:]
    within = sum(r[7] == "oui" for r in rows)
    counted = sum(r[7] in ("oui", "non") for r in rows)
    rate = f"{100 * within / counted:.1f} %".replace(".", ",")
    relances = sum(int(r[8]) for r in rows)
    summary = f"{len(rows)} messages reçus, 2 répondus"
    assert summary in text and summary in html
    assert f"Réponses dans les 5 jours ouvrés : {rate}" in text.replace("\n", " ")
    assert f"{rate}" in html
    service = next(r for r in html_rows(html) if r and r[0] == f"Service {ETRANGERS_NAME}")
    assert service[-1] == str(relances)


def test_no_line_of_the_text_part_starts_with_a_double_punctuation_mark(
    report: dict[str, object],
) -> None:
    lines = str(report["text"]).splitlines()
    assert [line for line in lines if re.match(r"\s*[:;!?%]", line)] == []
