"""Persistence: what mailbot saw, decided and sent.

SQLite (WAL) by default, PostgreSQL by URL alone. The schema is versioned by Alembic
migrations in ``mailbot/migrations``; the tables below mirror the latest revision and a
test checks that they agree. Bodies are never stored: only what the indicators need.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from mailbot.errors import StoreError
from mailbot.message import clean_text

MIGRATIONS = Path(__file__).parent / "migrations"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite would silently drop the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StoreError("naive datetime given to the store; use timezone-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()
folders = sa.Table(
    "folders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("folder", sa.String(255), nullable=False),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("last_uid", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("mailbox", "folder", name="uq_folders_mailbox_folder"),
)
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("folder", sa.String(255), nullable=False),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("uid", sa.BigInteger, nullable=False),
    sa.Column("message_id", sa.String(998)),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("reference", sa.String(32), unique=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("sender", sa.String(320)),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("in_reply_to", sa.String(998)),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("messages.id")),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("ar_status", sa.String(16), nullable=False),
    sa.Column("ar_message_id", sa.String(998)),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("defects", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("service", sa.String(64)),
    sa.Column("category", sa.String(64)),
    sa.Column("priority", sa.String(16)),
    sa.Column("reorient", sa.String(64)),
    sa.Column("language", sa.String(8)),
    sa.Column("routing", sa.Text),
    sa.Column("sender_name", sa.String(200)),
    sa.Column("first_reply_at", UTCDateTime),
    sa.Column("first_reply_complete", sa.Integer),
    sa.Column("transferred", sa.Integer, nullable=False, server_default="0"),
    sa.Column("relances", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("to_check", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("mailbox", "folder", "uidvalidity", "uid", name="uq_messages_location"),
    sa.Index("ix_messages_service", "service", "received_at"),
    sa.Index("ix_messages_parent_id", "parent_id"),
    sa.Index("ix_messages_message_id", "mailbox", "message_id"),
    sa.Index("ix_messages_content_hash", "mailbox", "content_hash"),
    sa.Index("ix_messages_ar_message_id", "ar_message_id"),
    sa.Index("ix_messages_received_at", "received_at"),
    sa.Index("ix_messages_sender", "mailbox", "sender"),
    sa.Index("ix_messages_fingerprint", "mailbox", "fingerprint"),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE")),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_events_message_pk", "message_pk"),
    sa.Index("ix_events_kind_at", "kind", "at"),
)
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE")),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("envelope_from", sa.String(320), nullable=False),
    sa.Column("email_message_id", sa.String(998), nullable=False),
    sa.Column("raw", sa.LargeBinary),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
)
# -- routing corrections (issue 13): see mailbot/corrections.py -----------------------------
corrections = sa.Table(
    "corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("agent", sa.String(64)),
    sa.Column("old_service", sa.String(64)),
    sa.Column("old_category", sa.String(64)),
    sa.Column("old_reorient", sa.String(64)),
    sa.Column("service", sa.String(64), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("reorient", sa.String(64)),
    sa.Index("ix_corrections_message_pk", "message_pk"),
)
# -- end of routing corrections --------------------------------------------------------------
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


def _backfill_flag(mailbox: str, folder: str) -> str:
    """A counters row name (64 characters at most) for a folder being backfilled."""
    return "backfill:" + hashlib.sha256(f"{mailbox}/{folder}".encode()).hexdigest()[:40]


def utcnow() -> datetime:
    return datetime.now(UTC)


MAX_STORED_ID = 250  # longer Message-IDs are stored (and looked up) as their hash
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f]")
# Citizens' mail nobody answered although mailbot did not acknowledge it: quarantined (an
# error while processing it), or skipped only for lack of a Return-Path. They count as
# received in the indicators and are listed in the alerts and the report.
UNHANDLED_REASONS = '["no-return-path"]'


def stored_id(value: str | None) -> str | None:
    """A Message-ID as stored: as is, or ``sha256:<hex>`` when too long for a column and
    its index or when it holds control characters. Lookups go through this too, so a long
    Message-ID is found again by its hash."""
    if value is None:
        return None
    if len(value.encode("utf-8", "surrogatepass")) <= MAX_STORED_ID and not _UNSTORABLE.search(
        value
    ):
        return clean_text(value)
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _fit(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """Values any backend accepts: text cut to its column's length, no NUL, no lone
    surrogate. One mail's odd header must not fail the insert (PostgreSQL checks lengths
    and refuses NUL; SQLite refuses surrogates)."""
    fitted = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = clean_text(value.replace("\x00", ""))
            length = getattr(table.c[name].type, "length", None)
            if length is not None and len(value) > length:
                value = value[:length]
        fitted[name] = value
    return fitted


def unhandled() -> sa.ColumnElement[bool]:
    """Rows of citizens' mail left without an AR by an error or a missing Return-Path."""
    return sa.or_(
        messages.c.decision == "quarantine",
        sa.and_(messages.c.decision == "skip", messages.c.reasons == UNHANDLED_REASONS),
    )


def attention() -> sa.ColumnElement[Any]:
    """Why an unhandled row needs a person: 'quarantine', 'no-return-path', else NULL."""
    return sa.case(
        (messages.c.decision == "quarantine", "quarantine"),
        (
            sa.and_(messages.c.decision == "skip", messages.c.reasons == UNHANDLED_REASONS),
            "no-return-path",
        ),
        else_=None,
    )


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class NewMessage:
    """Everything recorded about one incoming mail, in one row."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    content_hash: str
    received_at: datetime
    sender: str | None
    subject: str
    in_reply_to: str | None
    decision: str
    reasons: Sequence[str]
    size: int
    defects: Sequence[str]
    reference: str | None = None
    parent_id: int | None = None
    ar_status: str = "none"
    ar_message_id: str | None = None
    service: str | None = None
    category: str | None = None
    priority: str | None = None
    reorient: str | None = None
    language: str | None = None
    routing: str | None = None
    sender_name: str | None = None
    transferred: int = 0
    fingerprint: str | None = None
    to_check: int = 0  # routing kept it at the mailbox's service: a weak decision


@dataclass(frozen=True)
class OutboxItem:
    id: int
    message_pk: int | None
    kind: str
    recipient: str
    envelope_from: str
    email_message_id: str
    raw: bytes
    attempts: int
    message_sender: str | None = None


class Transaction:
    """Operations that must commit together, e.g. a message, its decision and its AR intent."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- folder sync state --------------------------------------------------------------
    def folder_state(self, mailbox: str, folder: str) -> FolderState | None:
        row = self.conn.execute(
            sa.select(folders.c.uidvalidity, folders.c.last_uid).where(
                folders.c.mailbox == mailbox, folders.c.folder == folder
            )
        ).first()
        return FolderState(int(row.uidvalidity), int(row.last_uid)) if row else None

    def save_folder_state(self, mailbox: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": utcnow()}
        updated = self.conn.execute(
            folders.update()
            .where(folders.c.mailbox == mailbox, folders.c.folder == folder)
            .values(**values)
        )
        if updated.rowcount == 0:
            self.conn.execute(folders.insert().values(mailbox=mailbox, folder=folder, **values))

    # -- messages -----------------------------------------------------------------------
    def find_duplicate(
        self,
        mailbox: str,
        message_id: str | None,
        fingerprint: str,
        content_hash: str,
        exclude: int | None = None,
    ) -> int | None:
        """The row of an earlier copy of this very mail, if any.

        A copy has the same Message-ID *and* the same fingerprint (identity headers and
        body): a different mail that reuses a Message-ID is not one. Rows recorded before
        fingerprints existed are matched as they used to be: by Message-ID, or by content
        hash for a mail without one.
        """
        legacy = messages.c.fingerprint.is_(None)
        if message_id:
            condition = sa.and_(
                messages.c.message_id == stored_id(message_id),
                sa.or_(messages.c.fingerprint == fingerprint, legacy),
            )
        else:
            condition = sa.or_(
                messages.c.fingerprint == fingerprint,
                sa.and_(legacy, messages.c.content_hash == content_hash),
            )
        query = sa.select(messages.c.id).where(messages.c.mailbox == mailbox, condition)
        if exclude is not None:
            query = query.where(messages.c.id != exclude)
        found = self.conn.execute(query.order_by(messages.c.id).limit(1)).scalar()
        return None if found is None else int(found)

    def acknowledged_in_thread(
        self, mailbox: str | None, thread_ids: Sequence[str], reference: str | None
    ) -> tuple[int, str] | None:
        """The acknowledged message a follow-up belongs to: by threading, else by reference."""
        conditions: list[sa.ColumnElement[bool]] = []
        if thread_ids:
            ids = [stored_id(mid) for mid in thread_ids]
            conditions += [messages.c.message_id.in_(ids), messages.c.ar_message_id.in_(ids)]
        if reference:
            conditions.append(messages.c.reference == reference)
        if not conditions:
            return None
        row = self.conn.execute(
            sa.select(messages.c.id, messages.c.reference)
            .where(sa.or_(*conditions))
            .where(messages.c.reference.is_not(None))
            .where(messages.c.mailbox == mailbox if mailbox else sa.true())
            .order_by(messages.c.id)
            .limit(1)
        ).first()
        return (int(row.id), str(row.reference)) if row else None

    def unanswered_from(
        self, mailbox: str, sender: str, since: datetime
    ) -> list[tuple[int, str, datetime, str]]:
        """Acknowledged messages of this sender since ``since`` with no reply yet, newest first."""
        query = (
            sa.select(
                messages.c.id, messages.c.reference, messages.c.received_at, messages.c.subject
            )
            .where(
                messages.c.mailbox == mailbox,
                messages.c.sender == sender,
                messages.c.decision == "acknowledge",
                messages.c.received_at >= since,
                messages.c.first_reply_at.is_(None),
            )
            .order_by(messages.c.received_at.desc())
            .limit(20)
        )
        return [(r.id, r.reference, r.received_at, r.subject) for r in self.conn.execute(query)]

    def sender_of(self, message_pk: int) -> str | None:
        return self.conn.execute(
            sa.select(messages.c.sender).where(messages.c.id == message_pk)
        ).scalar_one_or_none()

    def has_event(self, kind: str, detail_contains: str) -> bool:
        query = sa.select(events.c.id).where(
            events.c.kind == kind, events.c.detail.contains(detail_contains, autoescape=True)
        )
        return self.conn.execute(query.limit(1)).first() is not None

    def count_recent_ars(self, mailbox: str, recipient: str, since: datetime) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(messages)
            .where(
                messages.c.mailbox == mailbox,
                messages.c.sender == recipient,
                messages.c.decision == "acknowledge",
                messages.c.received_at >= since,
            )
        )
        return int(self.conn.execute(query).scalar_one())

    def next_reference(self, prefix: str, year: int) -> str:
        """Allocate ``PREFIX-YYYY-NNNNNN`` atomically, inside the caller's transaction."""
        name = f"reference-{prefix}-{year}"
        bumped = self.conn.execute(
            counters.update()
            .where(counters.c.name == name)
            .values(value=counters.c.value + 1)
            .returning(counters.c.value)
        ).first()
        if bumped is None:
            self.conn.execute(counters.insert().values(name=name, value=1))
            number = 1
        else:
            number = int(bumped.value)
        return f"{prefix}-{year}-{number:06d}"

    def claim_once(self, name: str) -> bool:
        """Mark a one-time action (e.g. a week's report) as done; False if it already was."""
        exists = self.conn.execute(
            sa.select(counters.c.name).where(counters.c.name == name)
        ).first()
        if exists is not None:
            return False
        self.conn.execute(counters.insert().values(name=name, value=1))
        return True

    def backfill_pending(self, mailbox: str, folder: str) -> bool:
        """Whether a backfill of this folder started and has not finished."""
        name = _backfill_flag(mailbox, folder)
        query = sa.select(counters.c.name).where(counters.c.name == name)
        return self.conn.execute(query).first() is not None

    def set_backfill_pending(self, mailbox: str, folder: str, pending: bool) -> None:
        name = _backfill_flag(mailbox, folder)
        self.conn.execute(counters.delete().where(counters.c.name == name))
        if pending:
            self.conn.execute(counters.insert().values(name=name, value=1))

    @staticmethod
    def _message_values(new: NewMessage) -> dict[str, Any]:
        return _fit(
            messages,
            {
                **new.__dict__,
                "message_id": stored_id(new.message_id),
                "in_reply_to": stored_id(new.in_reply_to),
                "ar_message_id": stored_id(new.ar_message_id),
                "reasons": json.dumps(list(new.reasons)),
                "defects": json.dumps(list(new.defects)),
                "created_at": utcnow(),
            },
        )

    def insert_message(self, new: NewMessage) -> int:
        result = self.conn.execute(messages.insert().values(**self._message_values(new)))
        self._count_relance(new)
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def update_message(self, message_pk: int, new: NewMessage) -> None:
        """Record a new decision on an existing row (a quarantined mail processed again):
        the row is replaced, never duplicated; its id and location stay."""
        values = self._message_values(new)
        for kept in ("mailbox", "folder", "uidvalidity", "uid", "created_at"):
            values.pop(kept)
        self.conn.execute(messages.update().where(messages.c.id == message_pk).values(**values))
        self._count_relance(new)

    def _count_relance(self, new: NewMessage) -> None:
        if new.parent_id is not None and new.decision == "follow-up":
            self.conn.execute(
                messages.update()
                .where(messages.c.id == new.parent_id)
                .values(relances=messages.c.relances + 1)
            )

    def record_reply(
        self, message_pk: int, at: datetime, complete: bool, detail: str, kind: str = "reply"
    ) -> None:
        """A reply to a citizen's message: the event, and the first reply kept on the row."""
        self.add_events(message_pk, (kind, detail), at=at)
        self.conn.execute(
            messages.update()
            .where(
                messages.c.id == message_pk,
                sa.or_(messages.c.first_reply_at.is_(None), messages.c.first_reply_at > at),
            )
            .values(first_reply_at=at, first_reply_complete=int(complete))
        )

    def add_event(self, message_pk: int | None, kind: str, detail: str = "") -> None:
        values = {"message_pk": message_pk, "kind": kind, "detail": detail, "at": utcnow()}
        self.conn.execute(events.insert().values(**_fit(events, values)))

    # -- outbox -------------------------------------------------------------------------
    def enqueue(
        self,
        message_pk: int | None,
        kind: str,
        recipient: str,
        envelope_from: str,
        email_message_id: str,
        raw: bytes,
    ) -> int:
        now = utcnow()
        result = self.conn.execute(
            outbox.insert().values(
                message_pk=message_pk,
                kind=kind,
                recipient=recipient,
                envelope_from=envelope_from,
                email_message_id=email_message_id,
                raw=raw,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def claim_outbox(self, item_id: int, attempts: int) -> bool:
        """Move a pending item to 'sending'; False if another worker got it first."""
        claimed = self.conn.execute(
            outbox.update()
            .where(outbox.c.id == item_id, outbox.c.status == "pending")
            .values(status="sending", attempts=attempts)
        )
        return bool(claimed.rowcount == 1)

    def set_outbox_status(self, item_id: int, status: str, **values: Any) -> None:
        """Change an outbox item's status, mirrored on its message's ar_status for ARs."""
        self.conn.execute(
            outbox.update().where(outbox.c.id == item_id).values(status=status, **values)
        )
        self.conn.execute(
            messages.update()
            .where(
                messages.c.id
                == sa.select(outbox.c.message_pk)
                .where(outbox.c.id == item_id, outbox.c.kind == "ar")
                .scalar_subquery()
            )
            .values(ar_status=status)
        )

    def add_events(
        self, message_pk: int | None, *kinds: tuple[str, str], at: datetime | None = None
    ) -> None:
        now = at or utcnow()
        self.conn.execute(
            events.insert(),
            [
                _fit(events, {"message_pk": message_pk, "kind": k, "detail": d, "at": now})
                for k, d in kinds
            ],
        )


class Store:
    """Entry point to the database. Opening it brings the schema to the latest revision."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = self._create_engine(url)
        self.migrate()

    @staticmethod
    def _create_engine(url: str, *, transactional_ddl: bool = False) -> Engine:
        parsed = sa.make_url(url)
        # hide_parameters: a failed statement's error must not carry a citizen's address
        # or subject into a log or a traceback.
        if parsed.get_backend_name() != "sqlite":
            return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of the database {parsed.database}: {exc.strerror}"
                ) from None
        engine = (
            sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True)
            if transactional_ddl
            else sa.create_engine(url, hide_parameters=True)
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()
            if transactional_ddl:
                # pysqlite's legacy mode emits no BEGIN before DDL, so each CREATE TABLE
                # would commit on its own: take over and BEGIN ourselves (SQLAlchemy's
                # documented recipe for transactional DDL on pysqlite).
                dbapi_conn.isolation_level = None

        if transactional_ddl:

            @sa.event.listens_for(engine, "begin")
            def _begin_immediate(conn: Connection) -> None:
                # IMMEDIATE: a second process starting at the same moment waits for the
                # first migration to commit instead of racing it.
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _alembic_config(self, conn: Connection) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the latest revision in ONE transaction, on every backend.

        A process killed in the middle (kill -9, power cut) leaves the database as it was
        before: SQLite and PostgreSQL both roll back DDL with the rest.
        """
        if self._at_head():
            return  # the usual start: no write lock taken, nothing to wait for
        memory = sa.make_url(self.url).database in (None, "", ":memory:")
        sqlite = self.engine.dialect.name == "sqlite"
        engine = (
            self._create_engine(self.url, transactional_ddl=True)
            if sqlite and not memory
            else self.engine
        )
        try:
            with engine.begin() as conn:
                self._refuse_unversioned(conn)
                command.upgrade(self._alembic_config(conn), "head")
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._describe_failure(exc)) from exc
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _at_head(self) -> bool:
        try:
            return self.schema_version() == self.head_version()
        except sa.exc.SQLAlchemyError:
            return False  # unreadable: the migration below says why

    @property
    def where(self) -> str:
        """The database URL as it may be shown: the password hidden."""
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def _refuse_unversioned(self, conn: Connection) -> None:
        """Tables but no schema version: an older mailbot's first migration was interrupted
        (it did not migrate in one transaction). Say so, and what to do, rather than fail
        on "table folders already exists"."""
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

    def _describe_failure(self, exc: sa.exc.SQLAlchemyError) -> str:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        hint = ""
        if "locked" in detail:
            hint = " (another process holds it: is a migration or a long job running?)"
        elif "unable to open" in detail:
            hint = " (check that the path exists and that mailbot may write there)"
        return (
            f"cannot open or migrate the database {self.where}: "
            f"{exc.__class__.__name__}: {detail}{hint}"
        )

    def schema_version(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_version() -> str | None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return ScriptDirectory.from_config(cfg).get_current_head()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.engine.begin() as conn:
            yield Transaction(conn)

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

    def outbox_items(self, status: str | None = None) -> list[sa.Row[Any]]:
        query = sa.select(outbox).order_by(outbox.c.id)
        if status:
            query = query.where(outbox.c.status == status)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def due_outbox(self, now: datetime, limit: int = 500) -> list[OutboxItem]:
        query = (
            sa.select(outbox, messages.c.sender)
            .outerjoin(messages, messages.c.id == outbox.c.message_pk)
            .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                OutboxItem(
                    id=row.id,
                    message_pk=row.message_pk,
                    kind=row.kind,
                    recipient=row.recipient,
                    envelope_from=row.envelope_from,
                    email_message_id=row.email_message_id,
                    raw=row.raw or b"",
                    attempts=row.attempts,
                    message_sender=row.sender,
                )
                for row in conn.execute(query)
            ]

    def outbox_status(self, item_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(outbox.c.status).where(outbox.c.id == item_id)
            ).scalar_one_or_none()

    def _citizens(self, since: datetime, until: datetime, long_period: bool) -> Any:
        received: Any = messages.c.received_at
        if long_period:
            # Over months, reading the table straight through beats a million index lookups.
            received = sa.func.coalesce(received, received)
        citizens = sa.or_(messages.c.decision == "acknowledge", unhandled())
        return sa.and_(citizens, received >= since, received < until)

    def indicator_rows(
        self,
        since: datetime,
        until: datetime,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """Citizens' messages received in [since, until), one dict each (alerts, listings).

        Citizens' messages are those acknowledged, plus those left unhandled (quarantined,
        or without a Return-Path: ``attention`` says which); auto-replies, bounces, lists
        and follow-ups (which count as relances of their parent) are left out.
        """
        query = (
            sa.select(
                messages.c.id,
                attention().label("attention"),
                messages.c.reference,
                messages.c.mailbox,
                messages.c.subject,
                messages.c.service,
                messages.c.category,
                messages.c.received_at,
                messages.c.ar_status,
                messages.c.first_reply_at.label("replied_at"),
                messages.c.transferred,
                messages.c.relances,
                messages.c.first_reply_complete,
                messages.c.reorient,
            )
            .where(self._citizens(since, until, long_period=False))
            .order_by(messages.c.received_at, messages.c.id)
        )
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        if service:
            query = query.where(messages.c.service == service)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _instants(self, column: Any) -> Any:
        """A timestamp as Unix seconds computed by the database: a million datetime objects
        would cost more than the whole computation."""
        if self.engine.dialect.name == "sqlite":
            return sa.cast(sa.func.strftime("%s", column), sa.BigInteger)
        return sa.cast(sa.extract("epoch", column), sa.BigInteger)

    def indicator_arrays(
        self,
        since: datetime,
        until: datetime,
        complaint: str,
        mailbox: str | None = None,
        service: str | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """The indicators' inputs as numpy arrays from one scan of the messages: a year of
        history is a million rows, so no Python object is made per message."""
        query = sa.select(
            self._instants(messages.c.received_at),
            sa.func.coalesce(self._instants(messages.c.first_reply_at), -1),
            sa.case((messages.c.category == complaint, 1), else_=0),
            sa.case((messages.c.ar_status == "sent", 1), else_=0),
            messages.c.transferred,
            messages.c.relances,
            sa.func.coalesce(messages.c.first_reply_complete, -1),
        ).where(self._citizens(since, until, long_period=until - since > timedelta(days=62)))
        if mailbox:
            query = query.where(messages.c.mailbox == mailbox)
        if service:
            query = query.where(messages.c.service == service)
        with self.engine.connect() as conn:
            # The DBAPI cursor's own fetchall: plain tuples, no Row object per message.
            rows = conn.execute(query).cursor.fetchall()
        table = np.array(rows, dtype=np.int64).reshape(-1, 7)
        return {
            "received": table[:, 0],
            "replied": table[:, 1],  # -1: no reply
            "complaint": table[:, 2].astype(bool),
            "ar_sent": table[:, 3].astype(bool),
            "transferred": table[:, 4].astype(bool),
            "relances": table[:, 5],
            "signature": table[:, 6].astype(np.int8),  # -1: no reply checked
        }

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
            .where(messages.c.decision.in_(("acknowledge", "skip", "follow-up")))
            .order_by(messages.c.id.desc())
            .limit(last)
            .subquery()
        )
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((recent.c.reasons.contains('"no-return-path"'), 1), else_=0)),
                0,
            ),
        ).select_from(recent)
        with self.engine.connect() as conn:
            looked, missing = conn.execute(query).one()
        return int(missing), int(looked)

    def recover_interrupted(self) -> list[int]:
        """Outbox items left 'sending' by a crash: we cannot know whether they left.

        mailbot guarantees never two ARs for one message, so an interrupted send is
        marked 'uncertain' and never retried; the event lets an agent check by hand.
        """
        with self.transaction() as tx:
            ids = [
                int(row.id)
                for row in tx.conn.execute(
                    sa.select(outbox.c.id, outbox.c.message_pk).where(outbox.c.status == "sending")
                )
            ]
            for item_id in ids:
                tx.set_outbox_status(item_id, "uncertain", last_error="interrupted while sending")
                pk = tx.conn.execute(
                    sa.select(outbox.c.message_pk).where(outbox.c.id == item_id)
                ).scalar_one()
                tx.add_event(pk, "send_uncertain", f"outbox {item_id} interrupted while sending")
        return ids

    def purge(self, before: datetime) -> int:
        """Delete everything about messages received before ``before`` (retention)."""
        with self.transaction() as tx:
            old = sa.select(messages.c.id).where(messages.c.received_at < before)
            tx.conn.execute(events.delete().where(events.c.message_pk.in_(old)))
            tx.conn.execute(outbox.delete().where(outbox.c.message_pk.in_(old)))
            tx.conn.execute(corrections.delete().where(corrections.c.message_pk.in_(old)))
            tx.conn.execute(
                messages.update().where(messages.c.parent_id.in_(old)).values(parent_id=None)
            )
            deleted = tx.conn.execute(messages.delete().where(messages.c.received_at < before))
            return int(deleted.rowcount)

    def close(self) -> None:
        self.engine.dispose()
