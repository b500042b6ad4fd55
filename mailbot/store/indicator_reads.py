"""The indicators' inputs read from ``indicator_facts`` (kept by triggers on the messages):
a period's messages as numpy arrays, the relances received since a day, the report's
listing with Unix seconds."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mailbot.core.statuses import Decision
from mailbot.store.listings import Listings, listed_columns
from mailbot.store.message_rows import relance_counted
from mailbot.store.schema import indicator_facts, messages

# numpy when the indicators are read, not with the store: a mail's intake never reads them
# (no numpy in a first mail's process, issue 14 point 9).
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class IndicatorReads(Listings):
    """The indicators' reads, over the listings' idea of a citizen's message."""

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
        import numpy as np

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
        import numpy as np

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
            sa.select(*listed_columns(), facts.received, facts.replied)
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
