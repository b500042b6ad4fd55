"""A mail left for a person in both mailboxes counts once: the rows recorded before this
took no key (``message_keys``), and take it here.

A citizen's mail without a Return-Path (no AR: RFC 3834) sent to both mailboxes (To one, Cc
the other) was recorded twice, "skip" (``no-return-path``) in each, neither holding the
mail's key: both were counted in the indicators and listed as awaiting a person. The intake
now records it once (``app/copies.claim_copy``): the first copy left for a person takes the key
and the other is its duplicate; a copy handled elsewhere (acknowledged: its delivery had a
Return-Path) holds the key and the copy left for a person is its duplicate
(``Transaction.take_over_mail``). The rows already recorded are put as the intake would
have recorded them:

* a row left for a person (skipped for lack of a Return-Path alone, neither answered nor
  closed) with a fingerprint and no key: the oldest of its fingerprint (by received time,
  then id) takes the key when nobody holds it. A copy read after the upgrade in the other
  mailbox is then its duplicate, not a second mail counted;
* the others of its fingerprint, and those whose key another row holds, become that row's
  duplicates: decision ``duplicate``, ``parent_id``, and a ``duplicate`` event worded as the
  intake's ("copy of message 12 in mailbox general (no reference, left for a person: no
  Return-Path)"; "(SM-2026-000123)" for an acknowledged holder).

Left as they are: a row an agent answered or closed (``first_reply_at``, ``no_reply``) is
never changed nor made anyone's key holder (an agent who closed one copy as a duplicate of
the other keeps the other in the queue; the copy of an answered one, still waiting, stays
counted and listed until an agent closes it); nor the copies of a mail whose key a copy skipped
for its own mailbox only holds (not addressed to it, over its rate limit: a key given by
0015 or taken by an intake before such skips stopped taking one), which a person must still
see.

The facts' triggers watch ``decision`` and ``reasons``: each row made a duplicate leaves
``indicator_facts``, and the daily buckets with it (on PostgreSQL at the constraint
triggers' firing, made immediate at the end so that no trigger event is left pending for a
later migration's ALTER TABLE in the same transaction). Three statements over the messages,
each one scan with lookups by primary key (``message_keys`` by fingerprint, the holder by
id); the copies of a fingerprint are ranked by a window, with no self-join. On SQLite, 300,000
messages of which 23,714 copies to repair: 6 s (PostgreSQL: 16 s on a loaded test
machine), most of it the triggers of the rows made duplicates. Run again, it finds nothing
to do (every such row holds its key or is a duplicate): 1.6 s (1 s).

Downgrade: nothing. This is a data repair; the rows stay repaired (0022's intake would read
them as it reads any duplicate and key).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from mailbot.core.clock import utcnow
from mailbot.store.schema import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# The values as the database holds them (core/statuses.py), frozen here.
LEFT_FOR_PERSON = (
    "{r}.decision = 'skip' AND {r}.reasons = '[\"no-return-path\"]'"
    " AND {r}.first_reply_at IS NULL AND {r}.no_reply IS NULL"
    " AND {r}.fingerprint IS NOT NULL AND {r}.fingerprint <> ''"
)
# ``schema.left_for_person``: the intake's ``FirstCopy.waiting``, which words the event.
WAITING = (
    "({r}.decision = 'quarantine' OR ({r}.decision = 'skip'"
    " AND {r}.reasons = '[\"no-return-path\"]'))"
    " AND {r}.first_reply_at IS NULL AND {r}.no_reply IS NULL"
)
# A skip for its mailbox's copy only (``copies._THIS_MAILBOX_ONLY``), not left for a
# person: its reasons, JSON text, hold none but those.
SKIPPED_HERE = (
    "{r}.decision = 'skip' AND {r}.reasons <> '[\"no-return-path\"]'"
    " AND REPLACE(REPLACE(REPLACE(REPLACE(REPLACE({r}.reasons, '\"no-return-path\"', ''),"
    " '\"not-addressed\"', ''), '\"rate-limited\"', ''), ',', ''), ' ', '') = '[]'"
)
HOLDER = "SELECT k.message_pk FROM message_keys k WHERE k.fingerprint = {r}.fingerprint"
# Left for a person, no key of its own, and another row holds its mail's key: a copy.
COPY = (
    f"{LEFT_FOR_PERSON} AND EXISTS (SELECT 1 FROM message_keys k JOIN messages h"
    " ON h.id = k.message_pk WHERE k.fingerprint = {r}.fingerprint AND k.message_pk <> {r}.id"
    f" AND NOT ({SKIPPED_HERE.format(r='h')}))"
)

TAKE_KEYS = (
    "INSERT INTO message_keys (fingerprint, message_pk)"
    " SELECT c.fingerprint, c.id FROM (SELECT m.id, m.fingerprint, ROW_NUMBER() OVER"
    " (PARTITION BY m.fingerprint ORDER BY m.received_at, m.id) AS n"
    " FROM messages m{scan} WHERE " + LEFT_FOR_PERSON.format(r="m") + ") c"
    " WHERE c.n = 1"
    " AND NOT EXISTS (SELECT 1 FROM message_keys k WHERE k.fingerprint = c.fingerprint)"
)
EVENTS = (
    "INSERT INTO events (message_pk, kind, detail, at)"
    " SELECT m.id, 'duplicate', 'copy of message ' || CAST(h.id AS VARCHAR)"
    " || ' in mailbox ' || h.mailbox || ' (' || COALESCE(h.reference, 'no reference')"
    f" || CASE WHEN {WAITING.format(r='h')} THEN ', left for a person: no Return-Path'"
    " ELSE '' END || ')', :at"
    " FROM messages m{scan} JOIN message_keys k ON k.fingerprint = m.fingerprint"
    " JOIN messages h ON h.id = k.message_pk"
    f" WHERE {COPY.format(r='m')}"
)
DUPLICATES = (
    "UPDATE messages{scan} SET decision = 'duplicate', reasons = '[\"already-recorded\"]',"
    f" parent_id = ({HOLDER.format(r='messages')})"
    f" WHERE {COPY.format(r='messages')}"
)
DAYS_TRIGGERS = "indicator_days_insert, indicator_days_delete"


def upgrade() -> None:
    conn = op.get_bind()
    # SQLite's planner reads "first_reply_at IS NULL" as a reason to walk the partial index
    # ix_messages_open, one row lookup per unanswered message: 15 times slower than the scan
    # on 300,000 rows (4.8 s against 0.3 s). PostgreSQL's planner weighs it with statistics.
    scan = " NOT INDEXED" if conn.dialect.name == "sqlite" else ""
    conn.execute(sa.text(TAKE_KEYS.format(scan=scan)))
    at = sa.bindparam("at", utcnow(), type_=UTCDateTime)
    conn.execute(sa.text(EVENTS.format(scan=scan)).bindparams(at))
    conn.execute(sa.text(DUPLICATES.format(scan=scan)))
    if conn.dialect.name == "postgresql":
        # The buckets' deferred triggers fire now, not at the commit (see above).
        conn.execute(sa.text(f"SET CONSTRAINTS {DAYS_TRIGGERS} IMMEDIATE"))
        conn.execute(sa.text(f"SET CONSTRAINTS {DAYS_TRIGGERS} DEFERRED"))


def downgrade() -> None:
    """Nothing: a data repair (see above)."""
