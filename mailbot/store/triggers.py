"""The database's code the models (``schema.py``) do not hold: the triggers that keep the
indicators' tables, PostgreSQL's trigger functions, and the rows a schema starts with.

ONE place for both ways a schema reaches the head revision: the migrations that created
them (0011, 0013) and a new database created from the models (``store/fresh.py``) take
their SQL from here, so a change made here is made for both. ``tests/test_fresh_schema.py``
compares a database created each way, triggers and functions included.

``indicator_facts`` (migration 0011): one row per citizen's message, kept by triggers on
``messages`` (insert, update, delete). A citizen's message is what ``Store._citizens`` says:
acknowledged, quarantined, or skipped only for lack of a Return-Path; not closed as needing
no reply; not a probe. The status values are frozen here as the database holds them
(``core/statuses.py``). ``flags``: bit 0 the AR was sent, bit 1 transferred, bits 2-3 the
first reply's signature (0 unchecked or no reply, 1 incomplete, 2 complete), bit 4 the
transfer announced to the citizen (migration 0021), bits 5 and up the relances. A transfer
is announced when the mail that told the citizen was sent: the notice of an agent's
transfer (``messages.notice_status``), else the AR of a transfer at receipt, which says so.
Before 0021, bits 4 and up were the relances, and an agent's transfer counted as announced
when the first AR (which said nothing of it) was sent: 0011 and 0013 keep that text.

``indicator_days`` (migration 0013): daily buckets kept by triggers on ``indicator_facts``;
on PostgreSQL deferred to the commit (constraint triggers), so that a bucket's row is locked
during a commit only, never while a transaction waits for a message's row.
"""

from __future__ import annotations

from mailbot.store.indicator_days import CONTRIBUTION, KEY, SUMS, bucket_key

# The zone ``indicator_zone`` starts in (the configuration's default; ``mailbot
# rebuild-indicators`` fills the buckets again for another).
FIRST_ZONE = "Europe/Paris"

# The columns whose change can change a message's facts: an update of any other column
# (assignee, to_check, ar_message_id...) fires no trigger.
WATCHED = (
    "received_at",
    "decision",
    "reasons",
    "no_reply",
    "probe",
    "ar_status",
    "transferred",
    "first_reply_at",
    "first_reply_complete",
    "relances",
    "mailbox",
    "service",
    "category",
    "notice_status",
)
CITIZEN = (
    "({r}.decision IN ('acknowledge', 'quarantine')"
    " OR ({r}.decision = 'skip' AND {r}.reasons = '[\"no-return-path\"]'))"
    " AND {r}.no_reply IS NULL AND {r}.probe = 0"
)
FLAGS = (
    "(CASE WHEN {r}.ar_status = 'sent' THEN 1 ELSE 0 END)"
    " + (CASE WHEN {r}.transferred <> 0 THEN 2 ELSE 0 END)"
    " + (COALESCE({r}.first_reply_complete, -1) + 1) * 4"
    " + (CASE WHEN {r}.transferred <> 0 AND COALESCE({r}.notice_status, {r}.ar_status) = 'sent'"
    " THEN 16 ELSE 0 END)"
    " + {r}.relances * 32"
)
COLUMNS = "received, message_pk, replied, flags, mailbox, service, category"
# Unix seconds, floored (a reply at 23:59:59.9997 stays on its day): SQLite's date functions
# round to the millisecond, so the fraction is cut from the stored text first.
SQLITE_EPOCH = "CAST(strftime('%s', substr({}, 1, 19)) AS INTEGER)"
PG_EPOCH = "floor(extract(epoch FROM {}))::bigint"


def epoch(dialect: str) -> str:
    """The Unix-seconds expression of ``dialect`` ('sqlite' or 'postgresql'), ``{}`` the time."""
    return SQLITE_EPOCH if dialect == "sqlite" else PG_EPOCH


def fact_values(row: str, epoch: str, flags: str = FLAGS) -> str:
    """The ``COLUMNS`` of the message ``row`` (NEW, OLD, or a table's name); ``flags`` as a
    migration before the head wrote them."""
    return ", ".join(
        [
            epoch.format(f"{row}.received_at"),
            f"{row}.id",
            epoch.format(f"{row}.first_reply_at"),
            flags.format(r=row),
            f"{row}.mailbox",
            f"{row}.service",
            f"{row}.category",
        ]
    )


def _insert_fact(row: str, epoch: str, flags: str) -> str:
    return (
        f"INSERT INTO indicator_facts ({COLUMNS}) SELECT {fact_values(row, epoch, flags)}"
        f" WHERE {CITIZEN.format(r=row)}"
    )


def _delete_fact(row: str, epoch: str) -> str:
    return (
        f"DELETE FROM indicator_facts WHERE received = {epoch.format(f'{row}.received_at')}"
        f" AND message_pk = {row}.id"
    )


def _changed(distinct: str, watched: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in watched)


def facts_triggers(
    dialect: str, flags: str = FLAGS, watched: tuple[str, ...] = WATCHED
) -> list[str]:
    """The statements creating the triggers (and PostgreSQL's function) of
    ``indicator_facts`` on ``messages``; ``flags`` and ``watched`` as a migration before
    the head created them (its tables may not have today's columns)."""
    if dialect == "sqlite":
        e = SQLITE_EPOCH
        return [
            f"CREATE TRIGGER indicator_facts_insert AFTER INSERT ON messages"
            f" WHEN {CITIZEN.format(r='NEW')} BEGIN {_insert_fact('NEW', e, flags)}; END",
            f"CREATE TRIGGER indicator_facts_update AFTER UPDATE OF {', '.join(watched)}"
            f" ON messages WHEN {_changed('IS NOT', watched)}"
            f" BEGIN {_delete_fact('OLD', e)}; {_insert_fact('NEW', e, flags)}; END",
            f"CREATE TRIGGER indicator_facts_delete AFTER DELETE ON messages"
            f" BEGIN {_delete_fact('OLD', e)}; END",
        ]
    e = PG_EPOCH
    function = f"""
CREATE FUNCTION indicator_facts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        {_delete_fact("OLD", e)};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        {_insert_fact("NEW", e, flags)};
    END IF;
    RETURN NULL;
END
$$"""
    run = "FOR EACH ROW EXECUTE PROCEDURE indicator_facts_sync()"
    return [
        function,
        f"CREATE TRIGGER indicator_facts_insert AFTER INSERT ON messages {run}",
        f"CREATE TRIGGER indicator_facts_update AFTER UPDATE OF {', '.join(watched)}"
        f" ON messages FOR EACH ROW WHEN ({_changed('IS DISTINCT FROM', watched)})"
        " EXECUTE PROCEDURE indicator_facts_sync()",
        f"CREATE TRIGGER indicator_facts_delete AFTER DELETE ON messages {run}",
    ]


def drop_facts_triggers(dialect: str) -> list[str]:
    """The statements dropping what ``facts_triggers`` created."""
    return _drops(dialect, "indicator_facts", "messages", ("insert", "update", "delete"))


def _add_to_bucket(row: str, sign: str, contribution: tuple[str, ...]) -> str:
    """Add (``sign`` '') or take away ('-') the fact ``row``'s contribution."""
    values = [*bucket_key(row), *(f"{sign}({e.format(r=row)})" for e in contribution)]
    update = ", ".join(f"{n} = indicator_days.{n} + excluded.{n}" for n in SUMS)
    return (
        f"INSERT INTO indicator_days ({KEY}, {', '.join(SUMS)}) VALUES ({', '.join(values)})"
        f" ON CONFLICT ({KEY}) DO UPDATE SET {update}"
    )


def _drop_empty_bucket(row: str) -> str:
    names = KEY.split(", ")
    where = " AND ".join(f"{n} = {e}" for n, e in zip(names, bucket_key(row), strict=True))
    return f"DELETE FROM indicator_days WHERE {where} AND mails = 0"


def days_triggers(dialect: str, contribution: tuple[str, ...] = CONTRIBUTION) -> list[str]:
    """The statements creating the triggers (and PostgreSQL's function) of
    ``indicator_days`` on ``indicator_facts``; ``contribution`` as a migration before the
    head created them (its facts' flags were laid out otherwise)."""
    add, take = _add_to_bucket("NEW", "", contribution), _add_to_bucket("OLD", "-", contribution)
    if dialect == "sqlite":
        return [
            "CREATE TRIGGER indicator_days_insert AFTER INSERT ON indicator_facts"
            f" BEGIN {add}; END",
            "CREATE TRIGGER indicator_days_delete AFTER DELETE ON indicator_facts"
            f" BEGIN {take}; {_drop_empty_bucket('OLD')}; END",
        ]
    function = f"""
CREATE FUNCTION indicator_days_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {add};
    ELSE
        {take};
        {_drop_empty_bucket("OLD")};
    END IF;
    RETURN NULL;
END
$$"""
    # Deferred to the commit: a bucket's row is locked for the commit only, not for the
    # rest of a worker's batch.
    run = "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE PROCEDURE indicator_days_sync()"
    return [
        function,
        f"CREATE CONSTRAINT TRIGGER indicator_days_insert AFTER INSERT ON indicator_facts {run}",
        f"CREATE CONSTRAINT TRIGGER indicator_days_delete AFTER DELETE ON indicator_facts {run}",
    ]


def drop_days_triggers(dialect: str) -> list[str]:
    """The statements dropping what ``days_triggers`` created."""
    return _drops(dialect, "indicator_days", "indicator_facts", ("insert", "delete"))


def _drops(dialect: str, prefix: str, table: str, events: tuple[str, ...]) -> list[str]:
    """Drop the triggers ``{prefix}_{event}`` on ``table``, and PostgreSQL's function."""
    on = "" if dialect == "sqlite" else f" ON {table}"
    drops = [f"DROP TRIGGER IF EXISTS {prefix}_{event}{on}" for event in events]
    if dialect == "sqlite":
        return drops
    return [*drops, f"DROP FUNCTION IF EXISTS {prefix}_sync()"]
