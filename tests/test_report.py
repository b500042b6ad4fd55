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
