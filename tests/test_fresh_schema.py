"""A new database is created from the models (``store/fresh.py``); it is the same schema as
one migrated 0001→head through every migration, on SQLite and on a real PostgreSQL.

"The same": every table with its columns in order (type, nullability, default, primary
key), indexes (unique, partial, their WHERE), constraints and their names, foreign keys
(ON DELETE), table options (WITHOUT ROWID), triggers and PostgreSQL's functions, and the
rows the schema starts with (``indicator_zone``, ``alembic_version``). Column order is
compared too: nothing in mailbot reads a row by position, but a test or an operator's
``SELECT *`` would see a fresh database and a migrated one alike. The triggers also behave
alike: the same writes to the messages leave the same indicator rows in both.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pg import _bin, fresh_database
from test_indicator_facts import insert_random, update_randomly

from mailbot.store import Store, metadata
from mailbot.store.schema import indicator_days, indicator_facts, indicator_zone, messages

Description = dict[str, Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two new, empty databases of one backend: (to create, to migrate)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'created.db'}", f"sqlite:///{tmp_path / 'migrated.db'}"
    server = request.getfixturevalue("postgres")
    return (
        fresh_database(server, "c", request.node.nodeid),
        fresh_database(server, "m", request.node.nodeid),
    )


@pytest.fixture
def created_and_migrated(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, Store]]:
    """A database opened as a first start does (created from the models: the migrations
    are not called), and one migrated through every revision."""
    created_url, migrated_url = two_urls

    def no_migration(*_args: Any) -> None:
        raise AssertionError("a new database was migrated, not created")

    with monkeypatch.context() as patched:
        patched.setattr(Store, "_upgrade", no_migration)
        created = Store(created_url)
    migrated = Store(migrated_url, migrate=False)
    migrated.migrate(replay=True)
    yield created, migrated
    created.close()
    migrated.close()


def normalised(sql: str | None) -> str | None:
    """SQLite keeps a CREATE statement's text as written, then edited: ALTER TABLE ADD COLUMN
    splices the new column into the text with no line break, and the table rebuild of
    Alembic's batch mode renames a table, which quotes its name. Neither whitespace nor
    the quotes of a plain lowercase identifier change what the statement means: they
    are taken out; every other character is compared."""
    if sql is None:
        return None
    sql = re.sub(r'"([a-z_][a-z0-9_]*)"', r"\1", sql)
    sql = re.sub(r"\s+", " ", sql)
    return re.sub(r"\s*([(),])\s*", r"\1", sql).strip()


def sqlite_schema(conn: sa.Connection) -> Description:
    """SQLite's schema twice over: every object's CREATE statement, normalised (names,
    constraint names, WHERE of partial indexes, WITHOUT ROWID, triggers' bodies), and what
    SQLite itself parsed of each table (PRAGMAs: columns in order with type, NOT NULL,
    default and primary key; indexes with their origin, uniqueness, partialness and
    columns; foreign keys with their actions)."""
    objects = conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master")
    described: Description = {
        "objects": sorted((t, n, tb, normalised(sql)) for t, n, tb, sql in objects)
    }
    tables = [n for t, n, _tb, _sql in described["objects"] if t == "table"]
    for table in tables:
        pragma = conn.exec_driver_sql
        indexes = [tuple(row)[1:] for row in pragma(f"PRAGMA index_list('{table}')")]
        described[table] = {
            "columns": [tuple(row) for row in pragma(f"PRAGMA table_xinfo('{table}')")],
            "indexes": sorted(indexes),
            "index columns": {
                name: [tuple(row) for row in pragma(f"PRAGMA index_xinfo('{name}')")]
                for name, *_ in indexes
            },
            "foreign keys": [tuple(row) for row in pragma(f"PRAGMA foreign_key_list('{table}')")],
        }
    return described


def postgresql_schema(url: str) -> list[str]:
    """``pg_dump --schema-only``: tables (columns in order, types, defaults, NOT NULL),
    sequences and their ownership, constraints, indexes, functions, triggers (constraint
    triggers, DEFERRABLE), each object in an order of its own (type, then name), without
    its comment lines, SET lines and the dump's random \\restrict key."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(
        [_bin("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    skipped = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
    return [line for line in dump.splitlines() if line.strip() and not line.startswith(skipped)]


def schema_of(store: Store) -> Description | list[str]:
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            return sqlite_schema(conn)
    return postgresql_schema(store.url)


def first_rows(store: Store) -> list[list[tuple[Any, ...]]]:
    """The rows a schema starts with: the version and the first zone's UTC offsets."""
    with store.engine.connect() as conn:
        return [
            [tuple(r) for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")],
            [tuple(r) for r in conn.execute(sa.select(indicator_zone).order_by("since"))],
        ]


def test_a_new_database_is_the_schema_the_migrations_build(
    created_and_migrated: tuple[Store, Store],
) -> None:
    created, migrated = created_and_migrated
    assert created.schema_version() == migrated.schema_version() == Store.head_version()
    created_schema, migrated_schema = schema_of(created), schema_of(migrated)
    assert created_schema == migrated_schema
    assert "indicator_facts_update" in str(created_schema)  # triggers are in what is compared
    assert "indicator_days_sync" in str(created_schema) or created.url.startswith("sqlite")
    assert first_rows(created) == first_rows(migrated)
    assert len(first_rows(created)[1]) > 10  # Europe/Paris's offsets, from 1970 on
    # The migrations still build the tables of the models (and so does the creation).
    with migrated.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def indicator_rows(store: Store) -> list[list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        return [
            sorted(tuple(row) for row in conn.execute(sa.select(table)))
            for table in (indicator_facts, indicator_days)
        ]


def test_the_triggers_of_a_new_database_keep_the_indicators_as_a_migrated_ones(
    created_and_migrated: tuple[Store, Store],
) -> None:
    """The same inserts, updates (of watched columns and others) and deletes of messages
    on both: the same facts and the same daily buckets, and not none."""
    results = []
    for store in created_and_migrated:
        rng = random.Random(2026)
        insert_random(store, rng, 120)
        update_randomly(store, rng)
        with store.engine.begin() as conn:
            conn.execute(messages.delete().where(messages.c.id % 5 == 0))
        results.append(indicator_rows(store))
    created, migrated = results
    assert created == migrated
    assert len(created[0]) > 20 and len(created[1]) > 10


def test_workers_starting_together_create_a_new_database_once(
    two_urls: tuple[str, str],
) -> None:
    """Two stores opened at the same moment on one empty database: one creates it, the
    other waits for its lock and finds it at the head; neither fails."""
    url = two_urls[0]
    created: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("CREATE TABLE messages"):
            created.append(statement)

    def open_store() -> None:
        try:
            start.wait()
            Store(url).close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        threads = [threading.Thread(target=open_store) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert failures == []
    assert len(created) == 1
    store = Store(url, migrate=False)
    assert store.schema_version() == Store.head_version()
    store.close()


def test_a_database_holding_another_table_is_migrated_not_created(tmp_path: Path) -> None:
    """Not empty (a table that is not mailbot's): the migrations' path, as before; the
    other table is left alone."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.exec_driver_sql("INSERT INTO notes (text) VALUES ('kept')")
    engine.dispose()
    upgrades: list[str] = []
    original = Store._upgrade

    def spy(self: Store, conn: sa.Connection) -> None:
        upgrades.append("upgrade")
        original(self, conn)

    Store._upgrade = spy  # type: ignore[method-assign]
    try:
        store = Store(url)
    finally:
        Store._upgrade = original  # type: ignore[method-assign]
    assert upgrades == ["upgrade"]
    assert store.schema_version() == Store.head_version()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT text FROM notes").scalar_one() == "kept"
    store.close()
