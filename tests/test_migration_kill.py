"""A first start killed at any point leaves a database that opens at the latest schema.

A first start creates the schema from the models (``store/fresh.py``); the migrations
replayed from 0001 are what an upgrade runs. Each runs in a forked child that is killed
with SIGKILL (nothing is flushed or cleaned up, as with ``kill -9`` or a power cut). The
creation, the path every first start takes, is killed once before every SQL statement,
once after every one, and at random instants. The replayed chain (``migrate(replay=True)``)
no first start takes any more: it is killed at every eighth statement boundary, spread
evenly from its first statement to its last (both included), and at random instants. What
each proves is that one transaction holds it all: a kill that lands anywhere leaves the
database as it was before; the parent then opens the database as mailbot does and checks
it reaches the latest schema.

Opening a database is deterministic in the bytes its files hold: a kill that left the
files exactly as an earlier kill did (the migration is one transaction, so most kills
leave the same untouched database) is checked once, by the first kill that left them.
The kills all run; what the test opens is every distinct state they left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mailbot.errors import StoreError
from mailbot.store import Store, metadata


def _first_start(url: str, replay: bool) -> None:
    """Open a new database as a first start does, or replaying every migration."""
    store = Store(url, migrate=False)
    try:
        store.migrate(replay=replay)
    finally:
        store.close()


def _statement_count(url: str, replay: bool) -> int:
    """How many SQL statements a first start runs (the points where a kill can land)."""
    seen: list[str] = []

    def count(*_args: Any) -> None:
        seen.append("x")

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        _first_start(url, replay)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    return len(seen)


def _child(url: str, hook: Callable[[int], None] | None, replay: bool) -> None:
    """In the forked child: migrate, SIGKILLing ourselves from ``hook`` if it says so."""
    try:
        if hook is not None:
            calls = [0]

            def on_statement(*_args: Any) -> None:
                calls[0] += 1
                hook(calls[0])

            sa.event.listen(sa.engine.Engine, "before_cursor_execute", on_statement)
            sa.event.listen(sa.engine.Engine, "after_cursor_execute", on_statement)
        _first_start(url, replay)
    except BaseException:
        os._exit(3)
    os._exit(0)


def _fork_migration(
    url: str, hook: Callable[[int], None] | None, kill_after: float | None, replay: bool
) -> str:
    """Run a first start in a child; returns how it ended: 'killed' or 'finished'."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        _child(url, hook, replay)
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return "finished"


def _kill_at(target: int) -> Callable[[int], None]:
    def hook(call: int) -> None:
        if call == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


Schema = list[tuple[str, str, str, str | None]]
SQLITE_FILES = ("", "-wal", "-shm", "-journal")  # what SQLite reads when it opens a database


def _left_on_disk(database: Path) -> str:
    """A digest of every file SQLite reads when it opens ``database`` (absent ones too):
    two kills with the same digest left the same database behind."""
    digest = hashlib.sha256()
    for suffix in SQLITE_FILES:
        path = Path(f"{database}{suffix}")
        digest.update(suffix.encode() + (path.read_bytes() if path.exists() else b"\0absent"))
    return digest.hexdigest()


def _schema(store: Store) -> Schema:
    """What SQLite holds of the schema: every table's and index's CREATE statement."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        return sorted(tuple(row) for row in rows)


def _opens_at_head(url: str, reference: Schema | None = None) -> bool:
    """Whether the database opens (migrating what is left) to the latest version with the
    schema of the models. A schema whose CREATE statements are those of ``reference`` (a
    database this function passed) is the same schema: its comparison with the models,
    the slow part, would find the same nothing."""
    try:
        store = Store(url)
    except StoreError:
        return False
    try:
        if store.schema_version() != Store.head_version():
            return False
        if reference is not None and _schema(store) == reference:
            return True
        with store.engine.connect() as conn:
            diffs: list[Any] = compare_metadata(MigrationContext.configure(conn), metadata)
        return diffs == []
    finally:
        store.close()


# Kills at statement boundaries: every one for the creation (a first start's path), every
# eighth for the replayed chain; and random instants.
PLANS = {"created": (1, 20), "replayed": (8, 8)}


@pytest.mark.parametrize("path", sorted(PLANS))
def test_kill_during_first_start_always_leaves_an_openable_database(
    tmp_path: Path, path: str
) -> None:
    replay = path == "replayed"
    stride, instants = PLANS[path]
    statements = _statement_count(f"sqlite:///{tmp_path / 'probe.db'}", replay)
    assert statements > 10
    # Each statement boundary: the hook runs before and after each statement (2 calls each).
    boundaries = 2 * statements
    calls = sorted({*range(1, boundaries + 1, stride), boundaries})
    plans: list[tuple[Callable[[int], None] | None, float | None]] = [
        (_kill_at(call), None) for call in calls
    ]
    started = time.perf_counter()
    _fork_migration(f"sqlite:///{tmp_path / 'timing.db'}", None, None, replay)
    duration = time.perf_counter() - started
    assert _opens_at_head(f"sqlite:///{tmp_path / 'timing.db'}")  # compared with the models
    reference_store = Store(f"sqlite:///{tmp_path / 'timing.db'}")
    reference = _schema(reference_store)
    reference_store.close()
    chance = random.Random(20261127)
    plans += [(None, chance.uniform(0, duration)) for _ in range(instants)]

    outcomes = {"killed": 0, "finished": 0}
    opens: dict[str, bool] = {}  # digest of what a kill left -> whether it opened at head
    failed: list[int] = []
    for index, (hook, delay) in enumerate(plans):
        database = tmp_path / f"kill-{index}.db"
        outcomes[_fork_migration(f"sqlite:///{database}", hook, delay, replay)] += 1
        left = _left_on_disk(database)
        if left not in opens:
            opens[left] = _opens_at_head(f"sqlite:///{database}", reference)
        if not opens[left]:
            failed.append(index)
    print(
        f"\n{path}: {len(plans)} runs, {outcomes}, {len(opens)} distinct states, unopenable: {failed}"
    )
    assert outcomes["killed"] >= len(calls)  # every statement-boundary kill landed
    assert failed == [], f"{len(failed)} of {len(plans)} killed migrations left a broken database"


def test_an_interrupted_legacy_migration_is_explained(tmp_path: Path) -> None:
    """A database left by an older mailbot (tables, no version) gets a message saying what
    happened and what to do, not a bare OperationalError."""
    path = tmp_path / "broken.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
    engine.dispose()
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message
    assert "no schema version" in message
    assert "interrupted" in message
    assert "empty" in message  # it says the tables hold no data, so nothing is lost
    assert "move" in message  # and what to do


def test_unopenable_database_error_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(StoreError) as info:
        Store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mailbot.db'}")
    assert "mailbot.db" in str(info.value)
