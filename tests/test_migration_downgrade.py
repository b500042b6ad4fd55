"""Migration 0018's downgrade: going back to 0017 (a release rolled back) puts every mail's
bytes back in ``outbox.raw`` and the index of the mails still holding them back, and the
upgrade after it moves them again: nothing is lost either way, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from pg import fresh_database

from mailbot.store.schema_upgrade import MIGRATIONS

MESSAGE = (
    "INSERT INTO messages (id, mailbox, folder, uidvalidity, uid, content_hash, received_at,"
    " subject, decision, reasons, ar_status, size, defects, created_at) VALUES (1,"
    " 'general', 'INBOX', 1, 1, 'h', '2026-11-05 10:00:00', 's', 'acknowledge', '[]',"
    " 'pending', 10, '[]', '2026-11-05 10:00:00')"
)
MAIL = (
    "INSERT INTO outbox (id, message_pk, kind, recipient, envelope_from, email_message_id,"
    " status, attempts, next_attempt_at, created_at) VALUES (:id, 1, 'ar', 'a@b.fr', 'm@b.fr',"
    " :mid, :status, 0, '2026-11-05 10:00:00', '2026-11-05 10:00:00')"
)
BODY = "INSERT INTO outbox_bodies (outbox_id, raw) VALUES (:id, :raw)"
PENDING, FAILED = b"AR pending\r\n" * 1000, b"AR failed\r\n" * 10


def _migrate(url: str, target: str, down: bool = False, *rows: tuple[str, dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)
        for statement, parameters in rows:
            conn.execute(sa.text(statement), parameters)
    engine.dispose()


def _read(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = [tuple(row) for row in conn.execute(sa.text(query))]
    engine.dispose()
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0018_downgrade_puts_the_bytes_back_and_the_upgrade_moves_them_again(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailbot.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    rows = [(MESSAGE, {})]
    for n, status in ((7, "pending"), (8, "failed"), (9, "sent")):
        rows.append((MAIL, {"id": n, "mid": f"<{n}@b.fr>", "status": status}))
    rows += [(BODY, {"id": 7, "raw": PENDING}), (BODY, {"id": 8, "raw": FAILED})]  # 9: purged
    _migrate(url, "0018", False, *rows)

    _migrate(url, "0017", True)
    back = _read(url, "SELECT id, status, raw FROM outbox ORDER BY id")
    assert [(i, s, bytes(r) if r is not None else None) for i, s, r in back] == [
        (7, "pending", PENDING),
        (8, "failed", FAILED),
        (9, "sent", None),
    ]
    tables, indexes = _schema(url)
    assert "ix_outbox_unpurged" in indexes and "outbox_bodies" not in tables

    _migrate(url, "0018")
    again = _read(url, "SELECT outbox_id, raw FROM outbox_bodies ORDER BY outbox_id")
    assert [(i, bytes(r)) for i, r in again] == [(7, PENDING), (8, FAILED)]


def _schema(url: str) -> tuple[set[str], set[str]]:
    """The database's tables and the outbox's indexes."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        return tables, {str(i["name"]) for i in inspector.get_indexes("outbox")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0020_downgrade_keeps_the_indicator_triggers(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Going back from 0020 drops ``messages.answer_addresses`` only: on SQLite a table
    rebuild (batch mode) dropped the triggers on ``messages`` with it, and the indicators
    then silently stopped following the messages."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailbot.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"), "t", request.node.nodeid)
    _migrate(url, "0020")
    before = _triggers(url, backend)
    assert {"indicator_facts_insert", "indicator_facts_update"} <= before
    _migrate(url, "0019", True)
    assert _triggers(url, backend) == before
    _migrate(url, "0019", False, (MESSAGE, {}))
    assert _read(url, "SELECT message_pk FROM indicator_facts") == [(1,)]


def _triggers(url: str, backend: str) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        if backend == "sqlite"
        else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    )
    return {str(name) for (name,) in _read(url, query)}
