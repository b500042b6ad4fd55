"""Audit 2: an agent's transfer made after the 5th working day. The citizen's notice says
the deadline has passed (B6); the note to the service must not give it « au plus tard le »
a day already gone by either."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailbot.app.context import App, build_app
from mailbot.app.transfer import Transfers
from mailbot.cli import DEMO_MAILDIR, main
from mailbot.core.workdays import WorkingCalendar
from mailbot.mail.originals import MaildirOriginals
from mailbot.mail.smtp import FileTransport

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "SM-2026-000005"  # the demo's letter to the prefect, the general service's


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[App]:
    out = tmp_path / "demo"
    assert main(["--config", str(ROOT / "rules.yaml"), "-q", "demo", "--out", str(out)]) == 0
    app = build_app(out / "rules.yaml", FileTransport(tmp_path / "sent"))
    yield app
    app.close()


def forward_note(app: App, now: datetime) -> tuple[str, str]:
    """Transfer the message to the cabinet at ``now``: the text of the notice to the
    citizen and of the forward's note to the service."""
    maildirs = {name: DEMO_MAILDIR / name for name in ("general", "etrangers")}
    transfers = Transfers(
        app.config, app.store, app.renderer, app.agent, MaildirOriginals(maildirs), lambda: now
    )
    transfers.transfer("lmoreau", REFERENCE, "cabinet", "Courrier pour le préfet")  # a head
    row = app.store.message(reference=REFERENCE)
    texts = {}
    with app.store.engine.connect() as conn:
        for kind, raw in conn.execute(
            sa.text(
                "SELECT o.kind, b.raw FROM outbox o JOIN outbox_bodies b ON b.outbox_id = o.id"
                " WHERE o.message_pk = :pk AND o.kind IN ('notice', 'forward')"
            ),
            {"pk": row.id},
        ):
            mail = email.message_from_bytes(raw, policy=email.policy.default)
            texts[kind] = mail.get_body(("plain",)).get_content()
    return texts["notice"], texts["forward"]


def test_a_transfer_after_the_deadline_tells_the_service_it_has_passed(demo: App) -> None:
    row = demo.store.message(reference=REFERENCE)
    deadline = WorkingCalendar(timezone=demo.config.timezone).deadline(row.received_at)
    later = datetime.combine(
        deadline + timedelta(days=3), datetime.min.time(), row.received_at.tzinfo
    )
    notice, note = forward_note(demo, later)
    assert "est dépassé" in notice  # the citizen is told (B6)
    flat = " ".join(note.split())
    assert "au plus tard le" not in flat
    assert "a pris fin le" in flat and "répondez-lui dès que possible" in flat


def test_a_transfer_in_time_gives_the_service_the_day_to_answer_by(demo: App) -> None:
    row = demo.store.message(reference=REFERENCE)
    _notice, note = forward_note(demo, row.received_at + timedelta(hours=1))
    flat = " ".join(note.split())
    assert "au plus tard le" in flat and "a pris fin" not in flat
