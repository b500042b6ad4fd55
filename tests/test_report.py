"""The weekly report on the hand-computed scenario: every number, the chart, the CSV, the .eml."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
import yaml
from servers import SmtpServer
from test_indicators import load_scenario

from mailbot.cli import main
from mailbot.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config(tmp_path: Path, smtp_server: SmtpServer) -> Path:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["database"] = f"sqlite:///{tmp_path / 'r.db'}"
    data["templates"] = str(ROOT / "templates")
    data["smtp"] = smtp_server.smtp_config().model_dump(mode="json", exclude_none=True)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    store = Store(data["database"])
    load_scenario(store)
    store.close()
    return path


def test_weekly_report_files_and_figures(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "--config",
        str(config),
        "-q",
        "report",
        "weekly",
        "--week",
        "2026-W47",
        "--as-of",
        "2026-11-25",
        "--out",
        str(out),
    ]
    assert main(args) == 0
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
    base = [
        "--config",
        str(config),
        "-q",
        "report",
        "weekly",
        "--week",
        "2026-W47",
        "--as-of",
        "2026-11-25",
    ]
    assert main([*base, "--send"]) == 0
    received = smtp_server.wait_for(2)
    assert {r.rcpt_tos[0] for r in received} == {
        "secretariat-general@seine-maritime.gouv.fr",
        "mission-performance@seine-maritime.gouv.fr",
    }
    assert main([*base, "--send", "--to", "someone@example.com"]) == 2


def test_weekly_report_once_per_week_across_restarts_with_catch_up(
    config: Path, smtp_server: SmtpServer
) -> None:
    """A controlled clock: Monday 08:00 sends last week's report; again, or after a restart,
    nothing; a worker started on Tuesday catches up a missed week; the next Monday sends."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from mailbot.cli import build_app
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


def test_worker_schedules_the_report_and_a_catch_up(config: Path) -> None:
    from mailbot.cli import build_app, make_worker

    app = build_app(config)
    scheduler = make_worker(app).build_scheduler()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert {"weekly-report", "weekly-report-catch-up", "alerts"} <= set(jobs)
    assert "day_of_week='mon'" in str(jobs["weekly-report"].trigger)
    assert "hour='8'" in str(jobs["weekly-report"].trigger)
