"""A database that refuses one mail's row on demand, as a constraint would (SQLite and
PostgreSQL): for the tests of what a refused write does to a mail and to its batch."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mailbot.store.database import Store


def query(url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def refuse_rows(url: str, uid: int, *, quarantine_too: bool = False) -> None:
    """Make the database refuse the row of the mail with this UID, as a constraint would."""
    Store(url).close()  # the schema first
    which = "" if quarantine_too else " AND NEW.decision <> 'quarantine'"
    if url.startswith("sqlite"):
        query(
            url,
            f"CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.uid = {uid}{which} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        return
    query(
        url,
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.uid = {uid}{which} THEN RAISE EXCEPTION 'refused by the test'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    query(
        url,
        "CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse()",
    )


def allow_rows(url: str) -> None:
    query(
        url,
        "DROP TRIGGER refuse" if url.startswith("sqlite") else "DROP TRIGGER refuse ON messages",
    )
