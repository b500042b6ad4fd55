"""The database's engines and what each connection is set up with: SQLite (WAL, its
pragmas, BEGIN IMMEDIATE and ``synchronous=FULL`` for the hot writers, a file opened
read-only recovered) or PostgreSQL by URL alone; the transactions, batches and sessions
taken from them; a URL as it may be shown.

``Engines`` is the base of the ``Store``'s parts (``store/schema_upgrade``, ``store/reads``,
``store/listings``, ``store/indicator_reads``, ``store/purge``): each is a mixin of the
methods on one concept over it, so that each type-checks alone and ``Store`` (in
``store/database``) only puts them together and opens the database. The parts read only the
state ``Engines`` declares (set by ``Store.__init__``); ``IndicatorReads`` derives from
``Listings``, whose idea of a citizen's message it counts.

The private methods called across the parts are their contract, kept as they are named:
``Engines._create_engine`` (``Store.__init__``, and ``SchemaUpgrade.migrate``'s own
unpooled engine), ``_writer_engine`` and ``_read_only_met`` (``Store.__init__``), and
``Listings._citizens``, which messages are a citizen's (``IndicatorReads``; the triggers of
``store/triggers`` and ``tests/test_indicator_arrays.py`` follow the same definition)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailbot.core.leases import Fence
from mailbot.errors import StoreError
from mailbot.store.desk import WriteDesk
from mailbot.store.errors import DATABASE_FILE, is_read_only
from mailbot.store.schema import add_postgresql_options
from mailbot.store.transaction import Session, Transaction

# How long a SQLite connection waits for another's lock before "database is locked" (a
# transient error: mailbot.store.errors), read at each connection's opening.
SQLITE_BUSY_TIMEOUT_MS = 10_000


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


class Engines:
    """The engines of one database (``engine`` for reads and short writes, ``writer`` for
    the hot writers: the same on PostgreSQL and in memory), set by ``Store.__init__``."""

    url: str
    engine: Engine
    fence: Fence | None
    writer: Engine
    desk: WriteDesk | None

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
            return Engines._server_engine(url)
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

    @property
    def where(self) -> str:
        """The database URL as it may be shown: the password hidden."""
        return shown_url(self.url)

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

    def close(self) -> None:
        if self.writer is not self.engine:
            self.writer.dispose()
        self.engine.dispose()


# Query parameters that carry a secret (libpq's keywords: ``?password=…`` is a password
# as much as ``user:…@``, which is all ``hide_password`` hides).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def shown_url(url: str) -> str:
    """A database URL as it may be printed or logged: every password hidden."""
    parsed = sa.make_url(url)
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_PARAMETERS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")  # the query's stars, as the password's
