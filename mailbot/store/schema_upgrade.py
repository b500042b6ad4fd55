"""The schema brought to the latest Alembic revision when a ``Store`` opens, in one
transaction: a new database created at it from the models (``store/fresh.py``), an older
one migrated (``mailbot/store/migrations``), refused while a worker of an older version
runs or when a newer mailbot migrated it; the revision read without importing Alembic."""

from __future__ import annotations

import ast
import re
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot import __version__
from mailbot.core.clock import utcnow
from mailbot.errors import ClusterError, StoreError
from mailbot.store.engines import Engines
from mailbot.store.errors import is_read_only, transient_reason
from mailbot.store.schema import leases, metadata, workers

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x6D61696C626F74  # "mailbot": the advisory lock PostgreSQL migrations take
# `revision = "0010"` / `down_revision = "0008"` at the top of a migration file.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)


class SchemaUpgrade(Engines):
    """Opening, migrating and reading the version of the schema."""

    def _alembic_config(self, conn: Connection) -> AlembicConfig:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    def migrate(self, *, replay: bool = False) -> None:
        """Bring the schema to the latest revision in ONE transaction, on every backend.

        An empty database (no table at all) is created at the head from the models
        (``store/fresh.py``: no migration replayed, Alembic not imported); any other is
        upgraded by the migrations. ``replay``: run every migration on an empty database
        too (the tests keep the whole chain exercised). A process killed in the middle
        (kill -9, power cut) leaves the database as it was before: SQLite and PostgreSQL
        both roll back DDL with the rest.
        """
        if self._at_head():
            return  # the usual start: no write lock taken, nothing to wait for, no Alembic
        from mailbot.store import fresh

        memory = sa.make_url(self.url).database in (None, "", ":memory:")
        sqlite = self.engine.dialect.name == "sqlite"
        engine = (
            self._create_engine(self.url, immediate=True, pooled=False)
            if sqlite and not memory
            else self.engine
        )
        try:
            with engine.begin() as conn:
                if not sqlite:
                    # Workers starting together: one migrates, the others wait, then find
                    # the schema at head (SQLite's BEGIN IMMEDIATE does the same).
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                    if _version_in(conn) == self.head_version():
                        return
                if not replay and fresh.is_empty(conn):
                    fresh.create_at_head(conn, str(self.head_version()))
                    return
                self._upgrade(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._describe_failure(exc)) from exc
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _upgrade(self, conn: Connection) -> None:
        """The migrations from the database's revision to the head, in ``conn``'s
        transaction (Alembic does nothing at head: a worker that waited finds it there)."""
        from alembic import command

        newer = self.newer_schema(_version_in(conn))
        if newer is not None:
            raise StoreError(newer)
        self._refuse_unversioned(conn)
        self._refuse_under_older_workers(conn)
        command.upgrade(self._alembic_config(conn), "head")

    def _at_head(self) -> bool:
        try:
            return self.schema_version() == self.head_version()
        except sa.exc.SQLAlchemyError:
            return False  # unreadable: the migration below says why

    def newer_schema(self, version: str | None) -> str | None:
        """What to tell an operator when the database is at a revision this mailbot's
        migrations do not know (None: it knows it, or the database is not versioned):
        a newer mailbot migrated it. An old worker restarted on a host not yet upgraded
        (systemd's Restart=) met Alembic's "Can't locate revision" as an unexpected
        error, a bug's exit 1 and a traceback; nothing is to be migrated here, the
        mailbot of this host is to be upgraded."""
        if version is None or version in _revisions_from_files(MIGRATIONS / "versions"):
            return None
        return (
            f"the database {self.where} is at schema {version}, which this mailbot"
            f" ({__version__}, schema {self.head_version()}) does not know: a newer mailbot"
            " migrated it. Install that version on this host too (docs/deploy.md, Upgrades);"
            " do not run this one on it."
        )

    def _refuse_unversioned(self, conn: Connection) -> None:
        """Tables but no schema version: an older mailbot's first migration was interrupted
        (it did not migrate in one transaction). Say so, and what to do, rather than fail
        on "table folders already exists"."""
        from alembic.runtime.migration import MigrationContext

        present = set(sa.inspect(conn).get_table_names())
        ours = present & set(metadata.tables)
        if not ours or MigrationContext.configure(conn).get_current_revision() is not None:
            return
        rows = sum(
            int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(metadata.tables[name])
                ).scalar_one()
            )
            for name in sorted(ours)
        )
        state = (
            "they are all empty, so nothing is lost: move the database file (and its -wal "
            "and -shm files) aside and start mailbot again, it will create it afresh"
            if rows == 0
            else f"they hold {rows} rows: keep a copy of the file and ask for help before "
            "changing anything (do not delete it)"
        )
        raise StoreError(
            f"the database {self.where} has mailbot's tables ({', '.join(sorted(ours))}) but "
            f"no schema version: a first migration by an older mailbot was interrupted; {state}"
        )

    def _refuse_under_older_workers(self, conn: Connection) -> None:
        """A worker of an older version still running would write with the old schema's
        idea of the tables: the upgrade waits until it stopped (its leases and its row
        are given back at a clean stop, or expire a few seconds after a crash). Holding a
        lease or not: a second worker waiting without one (fewer folders than workers
        times their share) takes the folders once the upgraded worker starts."""
        if "leases" not in sa.inspect(conn).get_table_names():
            return
        head = self.head_version()
        now = utcnow()
        held = conn.execute(
            sa.select(
                leases.c.name, leases.c.version, leases.c.schema, workers.c.host, workers.c.pid
            )
            .outerjoin(workers, workers.c.id == leases.c.holder)
            .where(leases.c.expires_at > now, leases.c.schema != head)
            .order_by(leases.c.name)
            .limit(1)
        ).first()
        alive = conn.execute(
            sa.select(workers.c.version, workers.c.schema, workers.c.host, workers.c.pid)
            .where(workers.c.expires_at > now, workers.c.schema != head)
            .order_by(workers.c.started_at)
            .limit(1)
        ).first()
        row: Any  # either query's row: both have version, schema, host, pid
        if held is not None:
            row, what = held, f"holds the lease {held.name}"
        elif alive is not None:
            row = alive
            what = "is running (without a lease now: it would take one beside the new version)"
        else:
            return
        who = f"{row.host or 'a host'} pid {row.pid or '?'}"
        who += f" (mailbot {row.version}, schema {row.schema})"
        raise ClusterError(
            f"cannot migrate the database {self.where} to schema {head}: a worker of an older"
            f" version, {who}, {what}. Stop the old workers first"
            " (`systemctl stop mailbot` on each host), then run `mailbot migrate` again."
        )

    def _describe_failure(self, exc: sa.exc.SQLAlchemyError) -> str:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        hint = ""
        if "locked" in detail:
            hint = " (another process holds it: is a migration or a long job running?)"
        elif "unable to open" in detail:
            hint = " (check that the path exists and that mailbot may write there)"
        elif is_read_only(exc):
            hint = f" ({transient_reason(exc)})"
        return (
            f"cannot open or migrate the database {self.where}: "
            f"{exc.__class__.__name__}: {detail}{hint}"
        )

    def schema_version(self) -> str | None:
        """The revision the database is at (None: not versioned), read as Alembic stores it
        in ``alembic_version``: a start at head imports no Alembic."""
        with self.engine.connect() as conn:
            return _version_in(conn)

    def readable_version(self) -> str | None:
        """``schema_version``, or a StoreError naming the database and what kept it from
        answering (`mailbot status` printed `cannot tell: OperationalError`)."""
        try:
            return self.schema_version()
        except sa.exc.SQLAlchemyError as exc:
            why = transient_reason(exc) or type(exc).__name__
            raise StoreError(f"cannot read the database {self.where}: {why}") from None

    @staticmethod
    def head_version() -> str | None:
        """The newest revision of ``migrations/versions``: read from the files' revision
        ids without importing Alembic (the revision no other revises), or by Alembic when
        they do not give exactly one."""
        head = _head_from_files(MIGRATIONS / "versions")
        if head is not None:
            return head
        from alembic.config import Config as AlembicConfig
        from alembic.script import ScriptDirectory

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return ScriptDirectory.from_config(cfg).get_current_head()


def _version_in(conn: Connection) -> str | None:
    """The revision of ``conn``'s database (None: not versioned), read from
    ``alembic_version`` without Alembic unless it holds several rows (branches: only
    Alembic knows what that means)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    if len(rows) > 1:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()
    return str(rows[0][0]) if rows else None


def _revisions_from_files(versions: Path) -> set[str]:
    """Every revision id the migration files name (``revision = "0023"``)."""
    found: set[str] = set()
    for path in versions.glob("*.py"):
        for key, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            if key == "revision":
                with suppress(ValueError, SyntaxError):
                    found.add(str(ast.literal_eval(value)))
    return found


def _head_from_files(versions: Path) -> str | None:
    """The one revision id of the migration files that no file revises; None when the
    files do not say it plainly (a merge, several heads, an id that is not a literal)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in versions.glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
            return None
        revisions.add(revision)
        if down is not None:
            revised.add(down)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None
