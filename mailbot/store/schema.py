"""The database schema: tables as the latest migration leaves them, and how values fit them.

The schema is versioned by Alembic migrations in ``mailbot/store/migrations``; the tables
below mirror the latest revision, columns in the order the migrations added them. A new
database is created from these tables (``store/fresh.py``), an older one is migrated:
``tests/test_fresh_schema.py`` checks that both give the same schema. Bodies are never
stored: only what the indicators need.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.message import clean_text, threading_id
from mailbot.core.statuses import Attention, Decision
from mailbot.errors import StoreError


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
# Partial indexes (a WHERE), the same on SQLite and PostgreSQL. PostgreSQL's option is set
# when a PostgreSQL engine is made (``add_postgresql_options``): named in the tables, it
# imports SQLAlchemy's PostgreSQL dialect at every start on SQLite too (~40 ms).
_PARTIAL: list[tuple[sa.Index, sa.ColumnElement[bool] | sa.TextClause]] = []


def _partial(
    name: str, *columns: str | sa.Column[Any], where: str | sa.ColumnElement[bool]
) -> sa.Index:
    """An index over the rows where ``where`` holds."""
    condition = sa.text(where) if isinstance(where, str) else where
    index = sa.Index(name, *columns, sqlite_where=condition)
    _PARTIAL.append((index, condition))
    return index


def add_postgresql_options() -> None:
    """The partial indexes' WHERE for PostgreSQL, before its first DDL or comparison."""
    for index, condition in _PARTIAL:
        index.dialect_options["postgresql"]["where"] = condition


folders = sa.Table(
    "folders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("folder", sa.String(255), nullable=False),
    sa.Column("uidvalidity", sa.BigInteger, nullable=False),
    sa.Column("last_uid", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Every mail that arrived before this moment was read under this UIDVALIDITY (a poll
    # that read it all, or a backfill); and, after a UIDVALIDITY change, that moment under
    # the old one, until the folder is read whole again: older mail is never acknowledged.
    sa.Column("read_until", UTCDateTime),
    sa.Column("resync_before", UTCDateTime),
    # The mail (UID, under this UIDVALIDITY) whose recording met a transient database error
    # at the last poll(s), and how many times in a row: kept here, not in a process, so that
    # a cron of `poll --once` quarantines it at the third as `run` does (app/mail_failures).
    sa.Column("transient_uid", sa.BigInteger),
    sa.Column("transient_count", sa.Integer, nullable=False, server_default="0"),
    # After a restore (`mailbot restored --acknowledged-until`): the lost database worked
    # until this moment, so mail that arrived before it and that this database does not
    # hold was presumably acknowledged; recorded without AR until the folder is read whole.
    sa.Column("restored_before", UTCDateTime),
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
    sa.Column("probe", sa.Integer, nullable=False, server_default="0"),  # a verified probe mail
    sa.Column("assignee", sa.String(64)),  # the agent handling it (console)
    sa.Column("no_reply", sa.String(16)),  # NoReplyReason: closed without a reply
    # The subject folded to case and accents (core.fold), for the console's search.
    sa.Column("subject_search", sa.Text),
    # The citizen's From and Reply-To when not `sender` (a JSON list; core.policy's
    # answer_addresses): an agent's reply written to them is an answer too (app/sent).
    sa.Column("answer_addresses", sa.Text),
    # The status of the transfer notice of the message's latest transfer by an agent (its
    # outbox status; NULL: none, a transfer at receipt is announced by the AR): migration 0021.
    sa.Column("notice_status", sa.String(16)),
    # That notice's outbox id: the latest transfer's, the one that made the message the
    # service's it is now. Only its status is mirrored on ``notice_status``: an earlier
    # notice settled after it wrote over it before (migration 0022). No foreign key: the
    # outbox refers to messages, and retention deletes both.
    sa.Column("notice_outbox", sa.Integer),
    # When the citizen first wrote again after the answer, while no agent has replied
    # again or marked it read: the message is back in its service's queue as new mail
    # to read (no relance, the indicators unchanged): migration 0026.
    sa.Column("written_again_at", UTCDateTime),
    # The citizen's mail's References (or its In-Reply-To), Message-IDs separated by spaces,
    # the first and the latest 19 at most (core.message.parent_thread): a reply's
    # References are these and the mail's Message-ID (RFC 5322 §3.6.4). Migration 0027.
    sa.Column("thread_references", sa.Text),
    # The citizen's Message-ID as written when ``message_id`` holds its hash (longer than
    # MAX_STORED_ID: ``stored_id``), up to the longest a reply's In-Reply-To carries
    # (``core.message.threading_id``); NULL otherwise. ``message_id`` stays the key of the
    # lookups and duplicates, this the thread of a reply (``app.reply.thread_of``). Migration 0028.
    sa.Column("full_message_id", sa.String(998)),
    sa.UniqueConstraint("mailbox", "folder", "uidvalidity", "uid", name="uq_messages_location"),
    sa.Index("ix_messages_service", "service", "received_at"),
    sa.Index("ix_messages_parent_id", "parent_id"),
    sa.Index("ix_messages_message_id", "mailbox", "message_id"),
    sa.Index("ix_messages_content_hash", "mailbox", "content_hash"),
    sa.Index("ix_messages_ar_message_id", "ar_message_id"),
    sa.Index("ix_messages_received_at", "received_at"),
    sa.Index("ix_messages_sender", "mailbox", "sender"),
    sa.Index("ix_messages_fingerprint", "mailbox", "fingerprint"),
    # The console's queue: a service's unanswered messages, oldest first.
    _partial("ix_messages_open", "service", "received_at", where="first_reply_at IS NULL"),
    # The follow-ups received after a day (the relances the figures as of that day take
    # away): a few per cent of the rows. Migration 0029.
    _partial("ix_messages_follow_ups", "received_at", where="decision = 'follow-up'"),
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
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    # Who took it to send it (a worker's id): recovered as uncertain only once it is dead.
    sa.Column("claimed_by", sa.String(128)),
    sa.Column("claimed_at", UTCDateTime),
    # When it failed for good (schema 0024): `mailbot status` counts the last 24 hours' by
    # it, and `mailbot outbox retry --failed --since` selects by it. A mail may fail days
    # after it was queued (``outbox.max_queue_hours``), so ``created_at`` cannot say.
    sa.Column("failed_at", UTCDateTime),
    # When an operator last put it back in the queue after it failed (schema 0024): its
    # time in the queue (``outbox.max_queue_hours``) counts from then, not from its creation.
    sa.Column("requeued_at", UTCDateTime),
    sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
    sa.Index("ix_outbox_message_pk", "message_pk"),
    # A bounce names the mail it is about by its Message-ID (schema 0030, core/bounces).
    sa.Index("ix_outbox_email_message_id", "email_message_id"),
)
# An outbox mail's bytes (~14 KB for an AR), apart from its row (issue 14, migration 0018):
# the row's status updates (taken, claimed, sent) rewrite a small record, not the mail, and
# the purge after sending deletes the body. A row here is a mail still holding its bytes
# (pending, sending, and sent items whose delivery batch's bookkeeping is not done yet, see
# Transaction.finish_sent; a failed or uncertain one's go when it is settled so, but for a
# mail failed for lack of time, kept for an operator's retry until the retention): the few
# rows each delivery looks through first, without reading the many sent ones.
outbox_bodies = sa.Table(
    "outbox_bodies",
    metadata,
    sa.Column(
        "outbox_id",
        sa.Integer,
        sa.ForeignKey("outbox.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("raw", sa.LargeBinary, nullable=False),
)
# An agent's correction of a message's routing (issue 13): the original decision stays on
# the row's history, the classifier learns from these.
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
# Who has a message open in the console, until when (a lightweight, expiring record: the
# page shows colleagues working on the same mail).
viewings = sa.Table(
    "viewings",
    metadata,
    sa.Column(
        "message_pk",
        sa.Integer,
        sa.ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)
# The console's sessions ended before their expiry (logout, a new login in the browser): a
# request carrying one of these ids is logged out; rows past expires_at are purged (0014).
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_ended_sessions_expires_at", "expires_at"),
)
# Several workers on one database (issue 16): mailbot.core.leases, mailbot.store.cluster.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(340), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("schema", sa.String(16), nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("schema", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)
heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("name", sa.String(340), primary_key=True),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("folder", sa.String(255), nullable=False),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("success_at", UTCDateTime),
    sa.Column("error_at", UTCDateTime),
    sa.Column("error", sa.Text),
    sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
probes = sa.Table(
    "probes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run", sa.String(64), nullable=False),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(998), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=False),
    sa.Column("deadline_at", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime),
    sa.Column("ar_at", UTCDateTime),
    sa.Column("latency_seconds", sa.Float),
    sa.Column("problems", sa.Text, nullable=False, server_default=""),
    sa.Column("checked_at", UTCDateTime),
    sa.UniqueConstraint("run", "mailbox", name="uq_probes_run_mailbox"),
    sa.Index("ix_probes_mailbox_sent", "mailbox", "sent_at"),
)
# The indicators' inputs, one row per citizen's message (issue 14): maintained by triggers on
# messages (migration 0011, which says what the columns hold); only Store reads it.
indicator_facts = sa.Table(
    "indicator_facts",
    metadata,
    sa.Column("received", sa.BigInteger, primary_key=True, autoincrement=False),  # Unix s
    sa.Column("message_pk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("replied", sa.BigInteger),  # Unix seconds of the first reply, NULL: none
    # AR sent, transferred, signature, transfer announced, relances (store/triggers.py)
    sa.Column("flags", sa.Integer, nullable=False),
    sa.Column("mailbox", sa.String(64), nullable=False),
    sa.Column("service", sa.String(64)),
    sa.Column("category", sa.String(64)),
    sqlite_with_rowid=False,
)
# The indicators' daily buckets (issue 14): per local day of receipt and of first reply (-1:
# none), mailbox, service and category ('': none), the messages and the sums the figures need;
# kept by triggers on indicator_facts, in the zone of indicator_zone (migration 0013).
indicator_days = sa.Table(
    "indicator_days",
    metadata,
    sa.Column("received_day", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("replied_day", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("mailbox", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("mails", sa.BigInteger, nullable=False),
    sa.Column("ars_sent", sa.BigInteger, nullable=False),
    sa.Column("transfers", sa.BigInteger, nullable=False),
    sa.Column("notices", sa.BigInteger, nullable=False),
    sa.Column("relances", sa.BigInteger, nullable=False),
    sa.Column("complete", sa.BigInteger, nullable=False),
    sa.Column("checked", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
# The UTC offsets of the zone the buckets' days are in, from each instant on.
indicator_zone = sa.Table(
    "indicator_zone",
    metadata,
    sa.Column("since", sa.BigInteger, primary_key=True, autoincrement=False),  # Unix s
    sa.Column("utc_offset", sa.Integer, nullable=False),  # seconds
    sa.Column("zone", sa.String(64), nullable=False),
)
# One mail reaching several of our mailboxes (To one, Cc another): the row that handled it
# first, by the mail's fingerprint (its Message-ID, identity headers and body; the same SMTP
# copy in each mailbox). Written in the transaction of that row: a second mailbox's copy,
# even recorded by another worker at the same moment, finds the key taken (its insert
# fails, or waits for the first transaction and then fails) and is that row's duplicate.
message_keys = sa.Table(
    "message_keys",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column(
        "message_pk", sa.Integer, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    ),
)
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


REFERENCE_COUNTERS = "reference-"  # what every reference counter's name starts with


def reference_counter(prefix: str, year: int) -> str:
    """The counters row numbering the references ``PREFIX-YEAR-NNNNNN`` (one per prefix
    and year: a year's first reference is number 1)."""
    return f"{REFERENCE_COUNTERS}{prefix}-{year}"


def request_flag(key: str) -> str:
    """A counters row name (64 characters at most) for an agent's request done once."""
    return "request:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:48]


def backfill_flag(mailbox: str, folder: str) -> str:
    """A counters row name (64 characters at most) for a folder being backfilled."""
    return "backfill:" + hashlib.sha256(f"{mailbox}/{folder}".encode()).hexdigest()[:40]


MAX_STORED_ID = 250  # longer Message-IDs are stored (and looked up) as their hash
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f]")
# Citizens' mail nobody answered although mailbot did not acknowledge it: quarantined (an
# error while processing it), or skipped only for lack of a Return-Path. They count as
# received in the indicators and are listed in the alerts and the report.
UNHANDLED_REASONS = json.dumps([Attention.NO_RETURN_PATH.value])


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


def full_id(value: str | None) -> str | None:
    """What ``messages.full_message_id`` keeps of a Message-ID: the identifier when
    ``stored_id`` hashes it and a reply can still carry it, else None (nothing to keep, or
    nothing a reply could thread on)."""
    if value is None or stored_id(value) == value:
        return None
    return threading_id(value)


def fit(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """Values any backend accepts: text cut to its column's length, no NUL, no lone
    surrogate. One mail's odd header must not fail the insert (PostgreSQL checks lengths
    and refuses NUL; SQLite refuses surrogates)."""
    lengths = _lengths(table)
    fitted = {}
    for name, value in values.items():
        if isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "")
            if not value.isascii():  # an ASCII text holds no surrogate: no copy to check
                value = clean_text(value)
            length = lengths[name]
            if length is not None and len(value) > length:
                value = value[:length]
        fitted[name] = value
    return fitted


@functools.cache
def _lengths(table: sa.Table) -> dict[str, int | None]:
    """The longest text each column of ``table`` takes (None: no limit), looked up once:
    ``fit`` runs on every row the intake writes."""
    return {column.name: getattr(column.type, "length", None) for column in table.c}


def unhandled() -> sa.ColumnElement[bool]:
    """Rows of citizens' mail left without an AR by an error or a missing Return-Path."""
    return sa.or_(
        messages.c.decision == Decision.QUARANTINE,
        sa.and_(messages.c.decision == Decision.SKIP, messages.c.reasons == UNHANDLED_REASONS),
    )


def left_for_person() -> sa.ColumnElement[bool]:
    """An unhandled row (``unhandled``) nobody answered nor closed yet. A mail skipped for
    lack of a Return-Path holds its mail's key (``message_keys``) so that the other
    mailbox's copy left for a person too is its duplicate (one mail counted once), but a
    copy there that is handled (acknowledged: its delivery had a Return-Path) takes the key
    over, and this row becomes that copy's duplicate. So does a row that held the key and
    was quarantined by a retry that failed."""
    return sa.and_(
        unhandled(),
        messages.c.first_reply_at.is_(None),
        messages.c.no_reply.is_(None),
    )


def attention() -> sa.ColumnElement[Any]:
    """Why an unhandled row needs a person: 'quarantine', 'no-return-path', else NULL."""
    return sa.case(
        (messages.c.decision == Decision.QUARANTINE, Attention.QUARANTINE.value),
        (
            sa.and_(messages.c.decision == Decision.SKIP, messages.c.reasons == UNHANDLED_REASONS),
            Attention.NO_RETURN_PATH.value,
        ),
        else_=None,
    )
