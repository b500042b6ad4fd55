"""The weekly report on the hand-computed scenario: every number, the chart, the CSV, the .eml."""

from __future__ import annotations

import email
import email.policy
import re
from html import unescape
from pathlib import Path

import pytest
from rulesfile import dump_rules, load_rules
from servers import SmtpServer
from test_indicators import load_scenario

from mailbot.cli import main
from mailbot.store import Store

ROOT = Path(__file__).resolve().parent.parent
# The services as the report names them (rules.yaml's names, not their keys).
GENERAL = "Préfecture de la Seine-Maritime — accueil général"
CARTES_GRISES = "Bureau des titres — cartes grises (certificats d'immatriculation)"


def week_47(config: Path, out: Path) -> None:
    """`mailbot report weekly` for 16-22 Nov 2026, as of 25 Nov, written to ``out``."""
    args = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    assert main([*args, "--as-of", "2026-11-25", "--out", str(out)]) == 0


@pytest.fixture
def config(tmp_path: Path, smtp_server: SmtpServer) -> Path:
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'r.db'}"
    data["templates"] = str(ROOT / "templates")
    data["smtp"] = smtp_server.smtp_config().model_dump(mode="json", exclude_none=True)
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    store = Store(data["database"])
    load_scenario(store)
    store.close()
    return path


def test_weekly_report_files_and_figures(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    week_47(config, out)
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    # W47 = 16-22 Nov: 13 messages, 7 answered (delays 0,4,6,1,1,1,1), 2 overdue, 4 pending
    assert "13 messages reçus, 7 répondus, 2 en retard" in html
    assert "66,7 %" in html and "✘ non atteint" in html  # 6 / (7 + 2) against > 75 %
    assert "2,00 j" in html and "✔ atteint" in html  # mean delay 14 / 7 against < 5 days
    assert "cid:chart@mailbot" in html
    csv_bytes = (out / "rapport-2026-W47.csv").read_bytes()
    assert csv_bytes.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    lines = csv_bytes.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Référence;Boîte;Service;Catégorie;Reçu le;Répondu le")
    assert len(lines) == 1 + 13
    assert "@" not in csv_bytes.decode("utf-8-sig")  # no addresses
    assert (out / "rapport-2026-W47.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    msg = email.message_from_bytes(
        (out / "rapport-2026-W47.eml").read_bytes(), policy=email.policy.default
    )
    types = [part.get_content_type() for part in msg.walk()]
    assert types[:2] == ["multipart/mixed", "multipart/related"]
    assert {"text/plain", "text/html", "image/png", "text/csv"} <= set(types)
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<chart@mailbot>"
    assert "2026-W47" in str(msg["Subject"]) and "66,7 %" in str(msg["Subject"])


def test_report_is_sent_to_configured_recipients_only(
    config: Path, smtp_server: SmtpServer
) -> None:
    base = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    base += ["--as-of", "2026-11-25"]
    assert main([*base, "--send"]) == 0
    received = smtp_server.wait_for(2)
    assert {r.rcpt_tos[0] for r in received} == {
        "secretariat-general@seine-maritime.gouv.fr",
        "mission-performance@seine-maritime.gouv.fr",
    }
    assert main([*base, "--send", "--to", "someone@example.com"]) == 2


def test_report_send_says_a_report_the_smtp_server_deferred_was_not_sent(
    config: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report weekly --send` while the relay defers (4xx): the line counts the deferred
    mails and the command exits 1, as `alerts` and `reply --send` do; it said "sent: 0,
    failed: 0" and exited 0, as if nothing were wrong."""
    base = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    smtp_server.fail_next(2, 451)
    capsys.readouterr()
    assert main([*base, "--as-of", "2026-11-25", "--send"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "sent: 0, deferred: 2, failed: 0"
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("kind", "option", "label", "problem"),
    [
        ("weekly", "--week", "2026-W99", "expected a week (2026-W47) or a month (2026-11)"),
        ("weekly", "--week", "9999-W52", "expected a year from 2000 to 2027"),
        ("weekly", "--week", "2026-11", "expected a week like 2026-W47"),
        ("monthly", "--month", "9999-12", "expected a year from 2000 to 2027"),
        ("monthly", "--month", "novembre", "expected a week (2026-W47) or a month (2026-11)"),
    ],
)
def test_a_bad_report_period_is_a_clear_error_naming_the_option(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    option: str,
    label: str,
    problem: str,
) -> None:
    """Once a traceback ("unexpected error", ValueError or OverflowError); now the error
    names the option, the value and what is expected, and nothing is built or sent."""
    args = ["--config", str(config), "report", kind, option, label, "--as-of", "2026-11-25"]
    assert main([*args, "--send"]) == 2
    assert f"error: {option}: {label}: {problem}" in capsys.readouterr().err


def test_weekly_report_once_per_week_across_restarts_with_catch_up(
    config: Path, smtp_server: SmtpServer
) -> None:
    """A controlled clock: Monday 08:00 sends last week's report; again, or after a restart,
    nothing; a worker started on Tuesday catches up a missed week; the next Monday sends."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from mailbot.app.context import build_app
    from mailbot.jobs import send_weekly_report

    paris = ZoneInfo("Europe/Paris")

    def run(now: datetime) -> str | None:
        app = build_app(config)  # a fresh process each time: nothing kept in memory
        try:
            return send_weekly_report(app.config, app.store, app.renderer, app.outbox, now)
        finally:
            app.store.close()

    assert run(datetime(2026, 11, 23, 7, 59, tzinfo=paris)) is None  # before Monday 08:00
    assert run(datetime(2026, 11, 23, 8, 0, tzinfo=paris)) == "2026-W47"
    assert run(datetime(2026, 11, 23, 8, 1, tzinfo=paris)) is None  # same week, again
    assert run(datetime(2026, 11, 26, 9, 0, tzinfo=paris)) is None  # restart later that week
    assert len(smtp_server.wait_for(2)) == 2  # one report, two recipients
    # the worker was down on Monday 30 November: started on Tuesday, it catches up W48
    assert run(datetime(2026, 12, 1, 10, 0, tzinfo=paris)) == "2026-W48"
    assert run(datetime(2026, 12, 7, 8, 0, tzinfo=paris)) == "2026-W49"
    subjects = [
        str(email.message_from_bytes(r.raw, policy=email.policy.default)["Subject"])
        for r in smtp_server.wait_for(6)
    ]
    assert len(subjects) == 6
    assert sorted({s.split("semaine ")[1].split(" ")[0] for s in subjects}) == [
        "2026-W47",
        "2026-W48",
        "2026-W49",
    ]


def test_a_worker_down_several_weeks_sends_every_week_missed_at_most_four(
    config: Path, smtp_server: SmtpServer
) -> None:
    """Management's weekly series has no hole: a worker down three Mondays sends the three
    weeks missed at its start, oldest first, each once; down seven, the last four (the
    older ones stay for `mailbot report weekly --week`). A first start sends last week only."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from mailbot.app.context import build_app
    from mailbot.jobs import send_weekly_report

    paris = ZoneInfo("Europe/Paris")

    def run(now: datetime) -> str | None:
        app = build_app(config)
        try:
            return send_weekly_report(app.config, app.store, app.renderer, app.outbox, now)
        finally:
            app.store.close()

    def weeks(count: int) -> list[str]:
        return [
            str(email.message_from_bytes(r.raw, policy=email.policy.default)["Subject"])
            .split("semaine ")[1]
            .split(" ")[0]
            for r in smtp_server.wait_for(count)
        ][::2]  # two recipients: one mail each

    assert run(datetime(2026, 11, 2, 9, 0, tzinfo=paris)) == "2026-W44"  # first start
    assert weeks(2) == ["2026-W44"]
    # down on 9, 16 and 23 November: started on Tuesday 24th, W45, W46 and W47 go out
    assert run(datetime(2026, 11, 24, 10, 0, tzinfo=paris)) == "2026-W47"
    assert weeks(8) == ["2026-W44", "2026-W45", "2026-W46", "2026-W47"]
    assert run(datetime(2026, 11, 25, 10, 0, tzinfo=paris)) is None  # again: nothing
    # down seven Mondays (W48 to W54): the last four only
    assert run(datetime(2027, 1, 12, 10, 0, tzinfo=paris)) == "2027-W01"
    assert weeks(16)[4:] == ["2026-W51", "2026-W52", "2026-W53", "2027-W01"]


def with_listed(config: Path, listed: int) -> None:
    data = load_rules(config)
    data.setdefault("reports", {}).setdefault("weekly", {})["listed"] = listed
    config.write_text(dump_rules(data), encoding="utf-8")


def test_the_body_lists_the_longest_waits_and_the_csv_all(config: Path, tmp_path: Path) -> None:
    """A manager reads a screen, not thousands of rows: ``reports.weekly.listed`` caps the
    rows of the body (the longest waits first) while the heading counts them all."""
    with_listed(config, 3)
    out = tmp_path / "out"
    week_47(config, out)
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    assert "Messages en retard (2) et sans réponse (4)" in html
    assert "Les 3 plus anciens&nbsp;; la liste complète est dans le fichier CSV joint." in html
    listed = [r[0] for r in table_rows(html) if r and r[0].startswith("SM-")]
    assert listed == ["SM-2026-000023", "SM-2026-000024", "SM-2026-000032"]
    lines = (out / "rapport-2026-W47.csv").read_bytes().decode("utf-8-sig").splitlines()
    assert len(lines) == 1 + 13
    msg = email.message_from_bytes(
        (out / "rapport-2026-W47.eml").read_bytes(), policy=email.policy.default
    )
    text = msg.get_body(preferencelist=("plain",)).get_content()
    assert "SANS RÉPONSE, PAS ENCORE EN RETARD (4)" in text
    assert "[SM-2026-000032]" in text and "[SM-2026-000027]" not in text
    assert "Les 3 plus anciens sont listés ; la liste complète est dans le fichier CSV" in text


def test_listed_zero_points_to_the_csv(config: Path, tmp_path: Path) -> None:
    with_listed(config, 0)
    out = tmp_path / "out"
    week_47(config, out)
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    assert "Messages en retard (2) et sans réponse (4)" in html
    assert "La liste complète est dans le fichier CSV joint." in html
    assert not [r for r in table_rows(html) if r and r[0].startswith("SM-")]


def test_worker_schedules_the_report_and_a_catch_up(config: Path) -> None:
    from mailbot.app.context import build_app
    from mailbot.worker import make_worker

    app = build_app(config)
    scheduler = make_worker(app).build_scheduler()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert {"weekly-report", "weekly-report-catch-up", "alerts"} <= set(jobs)
    assert "day_of_week='mon'" in str(jobs["weekly-report"].trigger)
    assert "hour='8'" in str(jobs["weekly-report"].trigger)


def table_rows(html: str) -> list[list[str]]:
    """Cell texts of every table row of the report (tags stripped, spaces folded)."""
    import re
    from html import unescape

    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        rows.append([" ".join(unescape(re.sub(r"<[^>]+>", "", c)).split()) for c in cells])
    return rows


def test_every_number_of_the_week_47_report(config: Path, tmp_path: Path) -> None:
    """Hand-computed from the scenario (see test_indicators): W47 = 16-22 Nov, W46 = 9-15 Nov,
    month so far = 1-22 Nov, as of 25 Nov."""
    out = tmp_path / "out"
    week_47(config, out)
    rows = table_rows((out / "rapport-2026-W47.html").read_text(encoding="utf-8"))
    expected = [
        [
            "Réponses dans les 5 jours ouvrés",
            "> 75 %",
            "66,7 %",
            "71,4 %",
            "75,0 %",
            "✘ non atteint",
        ],
        ["Délai moyen de réponse", "< 5 j", "2,00 j", "3,00 j", "2,69 j", "✔ atteint"],
        [
            "Réclamations répondues dans les 5 jours ouvrés",
            "> 75 %",
            "-",
            "100,0 %",
            "66,7 %",
            "– sans objet",
        ],
        [
            "Délai moyen de réponse aux réclamations",
            "< 5 j",
            "-",
            "1,00 j",
            "2,67 j",
            "– sans objet",
        ],
        ["Boîte pref-contact@seine-maritime.gouv.fr", "13", "7", "66,7 %", "2,00 j", "2", "2"],
        [f"Service {CARTES_GRISES}", "2", "1", "50,0 %", "4,00 j", "1", "2"],
        [f"Service {GENERAL}", "11", "6", "71,4 %", "1,67 j", "1", "0"],
        ["SM-2026-000023", GENERAL, "7 (retard)", "message 23"],
        ["SM-2026-000024", CARTES_GRISES, "6 (retard)", "message 24"],
        ["SM-2026-000032", GENERAL, "5", "message 32"],
        ["SM-2026-000027", GENERAL, "4", "message 27"],
        ["SM-2026-000025", GENERAL, "3", "message 25"],
        ["SM-2026-000026", GENERAL, "3", "message 26"],
    ]
    headers = {"Cible", "Reçus", "Âge (j. ouvrés)"}
    body = [r for r in rows if len(r) >= 4 and not headers & set(r)]
    assert body == expected
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    assert "signature complète&nbsp;: <strong>100,0 %</strong>" in html
    assert ">Du 16/11/2026 au 22/11/2026</p>" in html  # French dates, not ISO
    assert "Accusés de réception envoyés&nbsp;: 11." in html
    assert "Messages transmis à un service&nbsp;: 2 (avec avis à l'usager&nbsp;: 50,0 %)" in html
    lines = (out / "rapport-2026-W47.csv").read_bytes().decode("utf-8-sig").splitlines()
    assert lines[0].split(";") == [
        "Référence",
        "Boîte",
        "Service",
        "Catégorie",
        "Reçu le",
        "Répondu le",
        "Délai (jours ouvrés)",
        "Dans les 5 jours ouvrés",
        "Relances",
        "Signature complète",
    ]
    # reference: (service, category, received, replied, delay, within 5, relances, signature)
    expected_csv = {
        16: ("general", "information", "16", "16", "0", "oui", "0", "oui"),
        17: ("cartes-grises", "information", "16", "20", "4", "oui", "0", "oui"),
        18: ("general", "information", "17", "25", "6", "non", "0", "oui"),
        19: ("general", "information", "18", "19", "1", "oui", "0", "oui"),
        20: ("general", "information", "19", "20", "1", "oui", "0", "oui"),
        21: ("general", "information", "20", "23", "1", "oui", "0", "oui"),
        22: ("general", "information", "21", "23", "1", "oui", "0", "oui"),
        23: ("general", "information", "16", "", "", "non", "0", ""),
        24: ("cartes-grises", "etat-avancement", "17", "", "", "non", "2", ""),
        25: ("general", "information", "20", "", "", "", "0", ""),
        26: ("general", "information", "22", "", "", "", "0", ""),
        27: ("general", "information", "19", "", "", "", "0", ""),
        32: ("general", "reclamation", "18", "", "", "", "0", ""),
    }
    got = {int(line.split(";")[0][-6:]): line.split(";") for line in lines[1:]}
    assert set(got) == set(expected_csv)
    # The CSV gives the report's rate: within 5 / (answered + overdue) = 6 / 9 = 66,7 %.
    within = [line[7] for line in got.values()]
    assert (within.count("oui"), within.count("non")) == (6, 3)
    for n, (
        service,
        category,
        received,
        replied,
        delay,
        within,
        relances,
        sig,
    ) in expected_csv.items():
        day = lambda d: f"2026-11-{d}" if d else ""  # noqa: E731
        assert got[n][1:] == [
            "general",
            service,
            category,
            day(received),
            day(replied),
            delay,
            within,
            relances,
            sig,
        ], n


def test_monthly_report(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert (
        main(
            [
                "--config",
                str(config),
                "-q",
                "report",
                "monthly",
                "--month",
                "2026-11",
                "--as-of",
                "2026-11-25",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    html = (out / "rapport-2026-11.html").read_text(encoding="utf-8")
    # the whole scenario, plus its message of 23 November (outside the weeks, inside the month)
    assert "33 messages reçus, 26 répondus, 2 en retard" in html
    assert "75,0 %" in html and "2,69 j" in html


def test_report_renders_in_chromium_with_its_chart(config: Path, tmp_path: Path) -> None:
    """The HTML as a mail client shows it (cid: resolved to the attached PNG), in Chromium."""
    import importlib.util
    import struct

    out = tmp_path / "shot"
    week_47(config, out)
    page = out / "page.html"
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    page.write_text(html.replace("cid:chart@mailbot", "rapport-2026-W47.png"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(
        "screenshots", ROOT / "scripts" / "screenshots.py"
    )
    assert spec and spec.loader
    screenshots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshots)
    screenshots.shoot(page, height=2200)
    png = page.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (800, 2200)
    dom = page.with_suffix(".dom.html").read_text(encoding="utf-8")
    assert 'src="rapport-2026-W47.png"' in dom and "Indicateurs Qual-e-pref" in dom
    chart = (out / "rapport-2026-W47.png").read_bytes()
    assert struct.unpack(">II", chart[16:24])[0] >= 700  # the chart itself, 7.2 in at 110 dpi


def test_the_chart_has_its_figures_in_words_and_the_tables_are_data_tables(
    config: Path, tmp_path: Path
) -> None:
    """The chart is a picture: a manager whose mail client blocks images, who reads the text
    part or uses a screen reader gets its 12 weeks in words (as the console's « Données du
    graphique »), in both parts. The report's tables are data tables, with headers a screen
    reader reads (a role="presentation" table with <th> breaks RGAA 5.8)."""
    out = tmp_path / "out"
    week_47(config, out)
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    msg = email.message_from_bytes(
        (out / "rapport-2026-W47.eml").read_bytes(), policy=email.policy.default
    )
    text = msg.get_body(preferencelist=("plain",)).get_content()
    # W47 (16-22 Nov): 13 received, 66,7 % within 5 wd, 2,00 j; W46 (9-15 Nov): 71,4 %, 3,00 j
    for part in (html, text):
        flat = " ".join(unescape(part).replace("\xa0", " ").split())
        assert "2026-W36 (du 31/08/2026 au 06/09/2026) : 0 reçu, - dans" in flat  # the first
        assert (
            "2026-W47 (du 16/11/2026 au 22/11/2026) : 13 reçus, 66,7 % dans les 5 j, délai"
            " moyen 2,00 j" in flat
        )
        assert "71,4 % dans les 5 j, délai moyen 3,00 j" in flat
    assert 'aria-describedby="donnees-graphique"' in html and 'id="donnees-graphique"' in html
    assert data_tables(html) >= 3


def data_tables(html: str) -> int:
    """How many tables have headers; each is a data table whose headers name a column."""
    found = 0
    for chunk in html.split("<table")[1:]:  # each table's tag and its rows up to the next
        tag, rows = chunk.split(">", 1)
        rows = rows.split("</table>")[0]
        if "<th" in rows:
            found += 1
            assert 'role="presentation"' not in tag
            assert all("scope=" in th for th in re.findall(r"<th[^>]*>", rows))
            assert "></th>" not in rows  # every header says what its column holds
    return found


def test_the_alerts_tables_are_data_tables() -> None:
    from mailbot.render.templates import Renderer

    renderer = Renderer(ROOT / "templates")
    alert = renderer.render("alertes-delais", renderer.meta("alertes-delais").examples())
    assert data_tables(alert.html) >= 1


def test_a_report_as_of_a_day_within_its_week_lists_only_the_mail_received_by_then(
    config: Path, tmp_path: Path
) -> None:
    """Week 47 as of Wednesday 18 November: the messages of the 16th to the 18th (7 of the
    13), in the summary and in the CSV alike. The CSV listed the whole week's 13, the
    messages of the 19th to the 22nd (not yet received that day) as waiting."""
    out = tmp_path / "out"
    args = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    assert main([*args, "--as-of", "2026-11-18", "--out", str(out)]) == 0
    html = (out / "rapport-2026-W47.html").read_text(encoding="utf-8")
    assert "7 messages reçus" in html
    lines = (out / "rapport-2026-W47.csv").read_bytes().decode("utf-8-sig").splitlines()
    assert len(lines) == 1 + 7
    assert all(line.split(";")[4] <= "2026-11-18" for line in lines[1:])


def test_a_report_as_of_a_day_leaves_out_the_relances_received_after_it(
    config: Path, tmp_path: Path
) -> None:
    """Week 47 as of Thursday 19 November: message 24 (received the 17th, cartes-grises)
    was relanced twice on the 20th, after that day. Its CSV row and the rows per mailbox
    and service said 2 relances all the same; as of the 25th they do."""
    args = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    for day, relances in ((19, "0"), (25, "2")):
        out = tmp_path / f"out-{day}"
        assert main([*args, "--as-of", f"2026-11-{day}", "--out", str(out)]) == 0
        lines = (out / "rapport-2026-W47.csv").read_bytes().decode("utf-8-sig").splitlines()
        row = next(line.split(";") for line in lines if line.startswith("SM-2026-000024;"))
        assert row[8] == relances, day
        rows = table_rows((out / "rapport-2026-W47.html").read_text(encoding="utf-8"))
        per_group = {
            r[0]: r[-1]
            for r in rows
            if r and r[0].startswith(("Boîte ", "Service ")) and r[-1].isdigit()  # no header
        }
        assert per_group == {
            "Boîte pref-contact@seine-maritime.gouv.fr": relances,
            f"Service {CARTES_GRISES}": relances,
            f"Service {GENERAL}": "0",
        }, day


def test_report_files_are_readable_by_their_owner_only(config: Path, tmp_path: Path) -> None:
    """The report's .eml and .html list the late and unanswered mails with their subjects
    (a residence permit, a complaint): written under an operator's usual umask (022), every
    user of the host could read them, as `mailbot backup` copies are protected against; a
    report written again over an older, readable one is made private too."""
    import os
    import stat

    out = tmp_path / "out"
    out.mkdir()
    (out / "rapport-2026-W47.html").write_text("older", encoding="utf-8")
    (out / "rapport-2026-W47.html").chmod(0o644)
    previous = os.umask(0o022)
    try:
        week_47(config, out)
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert modes == {f"rapport-2026-W47.{ext}": 0o600 for ext in ("eml", "html", "png", "csv")}
