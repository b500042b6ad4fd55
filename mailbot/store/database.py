"""Persistence: what mailbot saw, decided and sent.

SQLite (WAL) by default, PostgreSQL by URL alone. Opening a Store brings the schema to the
latest Alembic revision in one transaction: a new database is created at it from the models
(``store/fresh.py``), an older one is migrated (``mailbot/store/migrations``).
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailbot import __version__
from mailbot.core.clock import utcnow
from mailbot.core.leases import Fence
from mailbot.core.statuses import Attention, Decision, EventKind, OutboxStatus
from mailbot.errors import ClusterError, StoreError
from mailbot.store.counter_rows import newest_claim
from mailbot.store.desk import WriteDesk
from mailbot.store.errors import DATABASE_FILE, is_read_only, transient_reason
from mailbot.store.message_rows import relance_counted
from mailbot.store.outbox_recovery import stalled_sends
from mailbot.store.records import OutboxItem, outbox_item
from mailbot.store.schema import (
    add_postgresql_options,
    attention,
    corrections,
    events,
    indicator_facts,
    leases,
    message_keys,
    messages,
    metadata,
    outbox,
    outbox_bodies,
    unhandled,
    workers,
)
from mailbot.store.transaction import Session, Transaction

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)
BOUNCE_CHUNK = 500  # message ids per query of ``Store.bounces``
MIGRATIONS = Path(__file__).parent / "migrations"
NO_RETURN_PATH = f'"{Attention.NO_RETURN_PATH}"'  # as it appears in a row's reasons
MIGRATION_LOCK = 0x6D61696C626F74  # "mailbot": the advisory lock PostgreSQL migrations take
RECORDED_DECISIONS = (Decision.ACKNOWLEDGE, Decision.SKIP, Decision.FOLLOW_UP)
# How long a SQLite connection waits for another's lock before "database is locked" (a
# transient error: mailbot.store.errors), read at each connection's opening.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# `revision = "0010"` / `down_revision = "0008"` at the top of a migration file.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)


def _name_the_file(engine: Engine, path: Path) -> None:
    """The SQLite file's path set on each driver error ``engine`` meets (``DATABASE_FILE``):
    SQLITE_READONLY's reason names the file and what to check (store/errors); the driver's
    exception does not carry it, the engine knows it. (``Store._read_only_met``
    discards the connections that opened it read-only.)"""
    database_file = str(path.resolve())

    @sa.event.listens_for(engine, "handle_error")
    def _named(context: sa.engine.ExceptionContext) -> None:
        with suppress(AttributeError, TypeError):  # an exception that takes no attribute
            setattr(context.original_exception, DATABASE_FILE, database_file)


class Store:
    """Entry point to the database. Opening it brings the schema to the latest revision."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        self.engine = self._create_engine(url)
        # A worker sharing the database sets it: folder writes then check its leases.
        self.fence: Fence | None = None
        self.writer = self._writer_engine()  # batch() and session()
        # SQLite: the process's writers take turns, claims ride on intake parts (store/desk).
        self.desk = WriteDesk() if self.writer.dialect.name == "sqlite" else None
        if self.writer is not self.engine:  # a SQLite file
            for engine in (self.engine, self.writer):
                sa.event.listen(engine, "handle_error", self._read_only_met)
        if migrate:
            self.migrate()

    @staticmethod
    def _server_engine(url: str) -> Engine:
        """PostgreSQL's engine; a driver the URL names but that is not installed (or a
        misspelt one) is a StoreError, not a traceback."""
        if sa.make_url(url).get_backend_name() == "postgresql":
            add_postgresql_options()
        try:
            return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise StoreError(
                f"cannot open the database {shown_url(url)}: its driver is not installed"
                f" ({exc}); use postgresql+psycopg:// with pip install -e '.[postgres]'"
            ) from None

    @staticmethod
    def _create_engine(url: str, *, immediate: bool = False, pooled: bool = True) -> Engine:
        """The engine of ``url``. On SQLite, ``immediate`` is the writers' engine: each
        transaction starts with BEGIN IMMEDIATE (a writer waits for the lock at its start,
        never half-way through) and commits with ``synchronous=FULL`` (see ``batch``);
        ``pooled=False`` gives a fresh connection each time (migrations)."""
        parsed = sa.make_url(url)
        # hide_parameters: a failed statement's error must not carry a citizen's address
        # or subject into a log or a traceback.
        if parsed.get_backend_name() != "sqlite":
            return Store._server_engine(url)
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of the database {parsed.database}: {exc.strerror}"
                ) from None
        engine = (
            sa.create_engine(url, hide_parameters=True)
            if pooled
            else sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
        )

        if parsed.database and parsed.database != ":memory:":
            _name_the_file(engine, Path(parsed.database))

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={'FULL' if immediate else 'NORMAL'}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted rows and the bytes of sent mail (outbox_bodies) erased, not merely freed:
            # purged personal data must not stay in the file and its backups. Debian's and
            # Fedora's builds already default to it; other builds of SQLite do not.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # A statement that fires a trigger (indicator_facts) or runs in a savepoint keeps
            # a statement journal: in a temp FILE by default, opened per statement (+40 µs
            # per message inserted, bench/indicators.py); in memory it holds only the pages a
            # statement changes again within its transaction.
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()
            if immediate:
                # pysqlite's legacy mode emits no BEGIN before a SELECT, a SAVEPOINT or DDL
                # (a savepoint would then be the transaction, and its release a commit):
                # take over and BEGIN ourselves (SQLAlchemy's documented pysqlite recipe).
                dbapi_conn.isolation_level = None

        if immediate:

            @sa.event.listens_for(engine, "begin")
            def _begin_immediate(conn: Connection) -> None:
                # IMMEDIATE: a second writer (a migration, a worker's batch) waits for the
                # first to commit instead of racing it and failing on a lock upgrade.
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

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

    @property
    def where(self) -> str:
        """The database URL as it may be shown: the password hidden."""
        return shown_url(self.url)

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

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.engine.begin() as conn:
            yield Transaction(conn, self.fence)

    def _writer_engine(self) -> Engine:
        """The engine of the hot writers (a FETCH batch, the outbox's claims).

        On SQLite: BEGIN IMMEDIATE, so savepoints work and a batch takes the write lock
        once, at its start; and ``synchronous=FULL``, so each commit is on disk before it
        returns (with NORMAL a power failure can undo a claim whose mail then left: a
        second AR). The WAL is written and synced in order, so a FULL commit also makes
        every commit before it durable. PostgreSQL's commits are durable by default: its
        engine serves. An in-memory SQLite database is one connection's: the same engine.
        """
        memory = sa.make_url(self.url).database in (None, "", ":memory:")
        if self.engine.dialect.name == "sqlite" and not memory:
            return self._create_engine(self.url, immediate=True)
        return self.engine

    def _read_only_met(self, context: sa.engine.ExceptionContext) -> None:
        """SQLITE_READONLY met: every connection of this store to the file is closed (the
        one that met it invalidated, the pools emptied), so that the next opens it anew.
        SQLite fell back to opening the file read-only and keeps it so; and one process's
        connections share one mapping of the ``-shm``, kept while any is open: the
        worker, its files mended, went on failing until restarted."""
        if not is_read_only(context.original_exception):
            return
        # The failed statement's cursor (SQLAlchemy 2.1 leaves ``context.cursor`` unset),
        # kept alive by the traceback's frames until a garbage collection, would keep the
        # closed connection's files open (sqlite3_close_v2 waits for its statements), and
        # with them the read-only ``-shm``.
        cursor = getattr(context.execution_context, "cursor", None)
        if cursor is not None:
            with suppress(Exception):
                cursor.close()
        context.is_disconnect = True  # this one closed at once
        for engine in (self.engine, self.writer):
            engine.dispose()  # the others: a pool only marked stale keeps them open

    @contextmanager
    def batch(self) -> Iterator[Transaction]:
        """One transaction for many mails (a FETCH batch): ``Transaction.savepoint`` keeps
        each mail's writes undoable alone. Commits on leaving, rolls back on an exception."""
        if self.desk is None:
            with self.writer.begin() as conn:
                yield Transaction(conn, self.fence)
            return
        # On SQLite, the part holds the process's turn; the writes that wait for it (the
        # outbox's claims) commit with it: ``Transaction.writes_waiting`` ends it early.
        with self.desk.part() as part, self.writer.begin() as conn:
            tx = Transaction(conn, self.fence, part)
            yield tx
            part.serve(tx)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One connection kept for a run of short transactions (the outbox's claims, one
        per mail): no pool checkout, no PRAGMAs, no reconnection between them."""
        with self.writer.connect() as conn:
            yield Session(conn, self.fence, self.desk)

    # -- reads that need no transaction of their own ------------------------------------
    def message(self, **where: Any) -> sa.Row[Any] | None:
        query = sa.select(messages)
        for column, value in where.items():
            query = query.where(messages.c[column] == value)
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(messages.c.id).limit(1)).first()

    def messages(self, mailbox: str | None = None) -> list[sa.Row[Any]]:
        query = sa.select(messages).order_by(messages.c.id)
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def events(self, message_pk: int | None = None) -> list[sa.Row[Any]]:
        query = sa.select(events).order_by(events.c.id)
        if message_pk is not None:
            query = query.where(events.c.message_pk == message_pk)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def outbox_items(self, status: OutboxStatus | None = None) -> list[sa.Row[Any]]:
        """The outbox rows, each with its bytes as ``raw`` (None once purged)."""
        query = (
            sa.select(outbox, outbox_bodies.c.raw)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .order_by(outbox.c.id)
        )
        if status:
            query = query.where(outbox.c.status == status)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def due_outbox(self, now: datetime, limit: int = 500) -> list[OutboxItem]:
        query = (
            sa.select(outbox, outbox_bodies.c.raw, messages.c.sender)
            .outerjoin(messages, messages.c.id == outbox.c.message_pk)
            .outerjoin(outbox_bodies, outbox_bodies.c.outbox_id == outbox.c.id)
            .where(outbox.c.status == OutboxStatus.PENDING, outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [outbox_item(row, message_sender=row.sender) for row in conn.execute(query)]

    def last_claim(self, prefix: str, before: str | None = None) -> str | None:
        """The greatest one-time action claimed under ``prefix``, below ``prefix + before``
        if given, without the prefix: e.g. the day of the last digest sent before today
        (``app/alerts``). A read: no write transaction (on SQLite, no write lock) taken."""
        with self.engine.connect() as conn:
            return newest_claim(conn, prefix, before)

    def any_stalled_send(self, now: datetime, stale: timedelta) -> bool:
        """Whether ``Transaction.requeue_stalled`` would queue any mail again: read first,
        so that a keeper's tick takes no write lock (SQLite's is the intake's too) when
        nothing is stalled, which is nearly always."""
        query = sa.select(outbox.c.id).where(stalled_sends(now, stale)).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def outbox_status(self, item_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(outbox.c.status).where(outbox.c.id == item_id)
            ).scalar_one_or_none()

    def _citizens(self, since: datetime | None, until: datetime, long_period: bool) -> Any:
        received: Any = messages.c.received_at
        if long_period:
            # Over months, reading the table straight through beats a million index lookups.
            received = sa.func.coalesce(received, received)
        citizens = sa.or_(messages.c.decision == Decision.ACKNOWLEDGE, unhandled())
        # A message closed without a reply (spam, a duplicate...) is not the service's to
        # answer: it leaves the indicators (the report lists it apart). The probe's test
        # mails are no citizen's: never counted (issue 16).
        answerable = sa.and_(messages.c.no_reply.is_(None), messages.c.probe == 0)
        period = received < until if since is None else sa.and_(received >= since, received < until)
        return sa.and_(citizens, answerable, period)

    def indicator_rows(
        self,
        since: datetime,
        until: datetime,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """Citizens' messages received in [since, until), one dict each (alerts, listings).

        Citizens' messages are those acknowledged, plus those left unhandled (quarantined,
        or without a Return-Path: ``attention`` says which); auto-replies, bounces, lists,
        follow-ups (which count as relances of their parent) and messages an agent closed
        as needing no reply are left out.
        """
        return self._citizen_rows(self._citizens(since, until, long_period=False), mailbox, service)

    def bounces(self, message_pks: list[int]) -> dict[int, str]:
        """The last ``bounced`` event's detail of each of these messages that has one: our
        mail to the citizen bounced (app/bounces). Read by ``ix_events_message_pk``, in
        chunks of ``BOUNCE_CHUNK`` ids (a listing may hold thousands)."""
        found: dict[int, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(message_pks), BOUNCE_CHUNK):
                chunk = message_pks[start : start + BOUNCE_CHUNK]
                query = (
                    sa.select(events.c.message_pk, events.c.detail)
                    .where(events.c.message_pk.in_(chunk), events.c.kind == EventKind.BOUNCED)
                    .order_by(events.c.id)
                )
                found.update((int(pk), str(detail)) for pk, detail in conn.execute(query))
        return found

    def bounced_rows(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The ``bounced`` events recorded in [since, until), each with its message's
        listing columns, its ``detail`` and ``at``, the first first (the daily digest: our
        mail to the citizen bounced since the previous one). Read by ``ix_events_kind_at``."""
        query = (
            sa.select(*_listed(), events.c.detail, events.c.at)
            .join(events, events.c.message_pk == messages.c.id)
            .where(
                events.c.kind == EventKind.BOUNCED,
                events.c.at >= since,
                events.c.at < until,
                messages.c.probe == 0,
            )
            .order_by(events.c.at, events.c.id)
        )
        return self._listing(query, None, None)

    def open_rows(
        self, until: datetime, mailbox: str | None = None, service: str | None = None
    ) -> list[dict[str, Any]]:
        """The citizens' messages received before ``until`` still without a reply, whatever
        their age (the alerts, the unanswered list): mail forgotten for months is what they
        are for. The partial index of open messages reads them, not the whole table."""
        citizens = self._citizens(None, until, long_period=False)
        return self._citizen_rows(
            sa.and_(citizens, messages.c.first_reply_at.is_(None)), mailbox, service
        )

    def written_again_rows(
        self,
        mailbox: str | None = None,
        service: str | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The answered messages the citizen wrote again about since, that no agent has
        read yet (``written_again_at``), the earliest new mail first: out of the unanswered
        list (they are answered: the figures count them so), not forgotten. ``until``: only
        those whose new mail came before it (the alerts of a day)."""
        query = (
            sa.select(*_listed(), messages.c.received_at, messages.c.written_again_at)
            .where(messages.c.written_again_at.is_not(None), messages.c.probe == 0)
            .order_by(messages.c.written_again_at, messages.c.id)
        )
        if until is not None:
            query = query.where(messages.c.written_again_at < until)
        return self._listing(query, mailbox, service)

    def _citizen_rows(
        self, where: Any, mailbox: str | None, service: str | None
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(
                *_listed(),
                messages.c.received_at,
                messages.c.ar_status,
                messages.c.first_reply_at.label("replied_at"),
                messages.c.transferred,
            )
            .where(where)
            .order_by(messages.c.received_at, messages.c.id)
        )
        return self._listing(query, mailbox, service)

    def _listing(
        self, query: sa.Select[Any], mailbox: str | None, service: str | None
    ) -> list[dict[str, Any]]:
        """A listing of citizens' messages, narrowed to a mailbox and a service if given."""
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        if service:
            query = query.where(messages.c.service == service)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def indicator_arrays(
        self,
        since: datetime,
        until: datetime,
        complaint: str,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """The indicators' inputs as numpy arrays, from ``indicator_facts`` (kept by triggers
        on the messages, migration 0011): a year is a million rows, so each column comes
        back as ONE string the database joins (``group_concat``/``string_agg``), which numpy
        parses, rather than a million Python tuples. [since, until) to the second."""
        facts = indicator_facts.c
        # Two numbers per message, the fewer the faster: the received time in the low 32
        # bits (Unix seconds fit until 2106) and above it the stored flags shifted by one,
        # bit 0 saying a complaint (the category the configuration names).
        complaint_bit = sa.case((facts.category == complaint, 1), else_=0)
        flags = sa.cast(facts.flags, sa.BigInteger) * 2 + complaint_bit
        columns = [
            facts.received + flags * sa.literal(2**32, sa.BigInteger),
            sa.func.coalesce(facts.replied, -1),
        ]
        query = sa.select(*(self._joined(c) for c in columns)).where(
            facts.received >= int(since.timestamp()), facts.received < int(until.timestamp())
        )
        if mailbox:
            query = query.where(facts.mailbox == mailbox)
        if service:
            query = query.where(facts.service == service)
        with self.engine.connect() as conn:
            joined = conn.execute(query).one()
        packed, replied = (np.fromstring(text or "", dtype=np.int64, sep=",") for text in joined)
        bits = packed >> 32
        return {
            "received": packed & 0xFFFFFFFF,
            "replied": replied,  # -1: no reply
            "complaint": (bits & 1).astype(bool),
            "ar_sent": (bits & 2).astype(bool),
            "transferred": (bits & 4).astype(bool),
            "announced": (bits & 32).astype(bool),
            "relances": bits >> 6,
            "signature": ((bits >> 3 & 3) - 1).astype(np.int8),  # -1: no reply checked
        }

    def relances_after(
        self,
        after: datetime,
        since: datetime,
        until: datetime,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> dict[str, npt.NDArray[np.int64]]:
        """The relances received from ``after`` on, of the citizens' messages received in
        [since, until) (those ``indicator_arrays`` reads, filtered alike): one row per
        follow-up its message counted (``relance_counted``, the rule ``count_relance``
        applied when it came), with the message's row id, the message's and the
        follow-up's Unix seconds (floored, as ``indicator_facts``'). The counts on the
        messages include them; figures as of a day before ``after`` take them away. Read
        from the follow-ups' time of receipt (its index), their message by its id: as of
        today, there is nothing to read."""
        relance = messages.alias("relance")
        # The follow-ups first, by their time of receipt, then their message by its id:
        # the message's columns are wrapped (``coalesce``) so that SQLite uses no index of
        # theirs, which would read every message of the period for the few relanced since.
        query = (
            sa.select(messages.c.id, messages.c.received_at, relance.c.received_at)
            .select_from(relance)
            .join(messages, messages.c.id == relance.c.parent_id)
            .where(
                # Written out, not bound: the planner uses ix_messages_follow_ups only
                # for a condition that it can see implies the index's.
                relance.c.decision == sa.literal_column(f"'{Decision.FOLLOW_UP.value}'"),
                relance.c.received_at >= after,
                relance_counted(messages.c.first_reply_at, relance.c.received_at),
                self._citizens(since, until, long_period=True),
            )
        )
        for column, value in ((messages.c.mailbox, mailbox), (messages.c.service, service)):
            if value:
                query = query.where(sa.func.coalesce(column, column) == value)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            "message": np.array([r[0] for r in rows], dtype=np.int64),
            "received": np.array([math.floor(r[1].timestamp()) for r in rows], dtype=np.int64),
            "relanced": np.array([math.floor(r[2].timestamp()) for r in rows], dtype=np.int64),
        }

    def indicator_listing(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """``indicator_rows`` for the report's listing of a period: the same messages, with
        ``received`` and ``replied`` (None: no reply) as Unix seconds from
        ``indicator_facts``, so that twenty thousand rows cost no datetime each."""
        facts = indicator_facts.c
        query = (
            sa.select(*_listed(), facts.received, facts.replied)
            .join(messages, messages.c.id == facts.message_pk)
            .where(
                facts.received >= int(since.timestamp()), facts.received < int(until.timestamp())
            )
            .order_by(facts.received, facts.message_pk)
        )
        with self.engine.connect() as conn:
            result = conn.execute(query)
            keys = list(result.keys())
            return [dict(zip(keys, row, strict=True)) for row in result.cursor.fetchall()]

    def _joined(self, column: Any) -> Any:
        """A column's values as one comma-separated string (in the same row order for every
        column of one query, on both backends)."""
        if self.engine.dialect.name == "sqlite":
            return sa.func.group_concat(column)
        return sa.func.string_agg(sa.cast(column, sa.Text), ",")

    def unhandled_rows(self, mailbox: str | None = None, limit: int = 1000) -> list[sa.Row[Any]]:
        """Quarantined mail and mail skipped for lack of a Return-Path, newest first."""
        query = (
            sa.select(messages, attention().label("attention"))
            .where(unhandled())
            .order_by(messages.c.id.desc())
            .limit(limit)
        )
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def missing_return_path_share(self, mailbox: str, last: int = 100) -> tuple[int, int]:
        """Of the mailbox's ``last`` recorded mails, how many had no Return-Path header:
        (missing, looked at). A site delivering without it gets no AR at all by default."""
        recent = (
            sa.select(messages.c.reasons)
            .where(messages.c.mailbox == mailbox)
            .where(messages.c.decision.in_(RECORDED_DECISIONS))
            .order_by(messages.c.id.desc())
            .limit(last)
            .subquery()
        )
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((recent.c.reasons.contains(NO_RETURN_PATH), 1), else_=0)),
                0,
            ),
        ).select_from(recent)
        with self.engine.connect() as conn:
            looked, missing = conn.execute(query).one()
        return int(missing), int(looked)

    def purge(self, before: datetime, now: datetime | None = None) -> int:
        """Delete everything about messages received before ``before`` (retention), or
        recorded before it but dated by the server after ``now`` (default: the clock's):
        such an INTERNALDATE (a wrong clock, a date a client gave a mail it copied in) kept
        them until that date. And the
        mail and events tied to no message made before it: digests and reports carry
        citizens' subjects, and one that failed or stayed pending kept them for ever. The
        bytes of an uncertain mail (never sent again) go whatever their age: a version
        before ``Transaction._give_up_bytes`` kept them until the retention. A mail failed
        for lack of time keeps its bytes for an operator's requeue (``app/requeue``) until
        its row goes here (its message's, or its own creation, before ``before``); schema
        0024 deleted those of the mails failed before it, refusals included."""
        with self.transaction() as tx:
            uncertain = sa.select(outbox.c.id).where(outbox.c.status == OutboxStatus.UNCERTAIN)
            tx.conn.execute(outbox_bodies.delete().where(outbox_bodies.c.outbox_id.in_(uncertain)))
            expired = _expired(before, datetime.now(UTC) if now is None else now)
            old = sa.select(messages.c.id).where(expired)
            tx.conn.execute(events.delete().where(events.c.message_pk.in_(old)))
            tx.conn.execute(outbox.delete().where(outbox.c.message_pk.in_(old)))
            unattached = outbox.c.message_pk.is_(None) & (outbox.c.created_at < before)
            tx.conn.execute(outbox.delete().where(unattached))
            tx.conn.execute(
                events.delete().where(events.c.message_pk.is_(None) & (events.c.at < before))
            )
            tx.conn.execute(corrections.delete().where(corrections.c.message_pk.in_(old)))
            tx.conn.execute(message_keys.delete().where(message_keys.c.message_pk.in_(old)))
            tx.conn.execute(
                messages.update().where(messages.c.parent_id.in_(old)).values(parent_id=None)
            )
            deleted = tx.conn.execute(messages.delete().where(expired))
        self._truncate_wal()
        return int(deleted.rowcount)

    def _truncate_wal(self) -> None:
        """On SQLite, the purged rows' pages also sit in the write-ahead log until it is
        overwritten: a worker keeps the database open for days, so the log is written back
        and emptied now (best effort: a reader of another process may hold it a while)."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection  # no transaction around it
            busy, *_pages = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("purge: the write-ahead log is in use, emptied at a later checkpoint")

    def close(self) -> None:
        if self.writer is not self.engine:
            self.writer.dispose()
        self.engine.dispose()


def _expired(before: datetime, now: datetime) -> sa.ColumnElement[bool]:
    """The messages past their retention: received before ``before``, or dated by the
    server after ``now`` (still to come) but recorded before ``before``. Both read the
    index on ``received_at`` (the second, a range of the few rows dated in the future)."""
    c = messages.c
    return sa.or_(c.received_at < before, sa.and_(c.received_at > now, c.created_at < before))


# Query parameters that carry a secret (libpq's keywords: ``?password=…`` is a password
# as much as ``user:…@``, which is all ``hide_password`` hides).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def shown_url(url: str) -> str:
    """A database URL as it may be printed or logged: every password hidden."""
    parsed = sa.make_url(url)
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_PARAMETERS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")  # the query's stars, as the password's


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


def _listed() -> tuple[Any, ...]:
    """The columns every listing of citizens' messages shows (alerts, the unanswered list,
    the report), whichever table its times come from."""
    c = messages.c
    return (
        c.id,
        attention().label("attention"),
        c.reference,
        c.mailbox,
        c.subject,
        c.service,
        c.category,
        c.relances,
        c.first_reply_complete,
        c.reorient,
    )
