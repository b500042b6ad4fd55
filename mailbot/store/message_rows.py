"""A citizen's message's row: inserted, decided again, claimed for a retry, its relances
and its mail after the answer, its reply, its service; the relance rule
(``relance_counted``) the reads share."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.clock import utcnow
from mailbot.core.fold import search_fold
from mailbot.core.statuses import Decision, EventKind
from mailbot.errors import RepeatedRequestError
from mailbot.store.drivers import KNOWN_COLUMNS, driver_insert
from mailbot.store.event_rows import EventRows
from mailbot.store.records import KnownRow, NewMessage
from mailbot.store.schema import fit, full_id, messages, stored_id, unhandled

# The columns of an INSERT come from the parameters' keys; built once, their cache key is.
_INSERT_MESSAGE = messages.insert()


def relance_counted(replied: Any, received: Any) -> sa.ColumnElement[bool]:
    """Whether a follow-up received at ``received`` counts as a relance of a message first
    answered at ``replied`` (None: not yet): while it was unanswered. ``count_relance``
    counts them so; ``Store.relances_after`` finds them again by the same rule."""
    return sa.or_(replied.is_(None), replied > received)


class MessageRows(EventRows):
    """The ``Transaction``'s writes of the ``messages`` rows (a reply's event with them)."""

    @staticmethod
    def _message_values(new: NewMessage) -> dict[str, Any]:
        """The row's values as stored, and its subject folded for the console's search
        (``core.fold``: the same on SQLite and PostgreSQL), from the subject as kept."""
        values = fit(
            messages,
            {
                **new.__dict__,
                "message_id": stored_id(new.message_id),
                "full_message_id": full_id(new.message_id),
                "in_reply_to": stored_id(new.in_reply_to),
                "ar_message_id": stored_id(new.ar_message_id),
                "reasons": json.dumps(list(new.reasons)),
                "defects": json.dumps(list(new.defects)),
                "answer_addresses": json.dumps(list(new.answer_addresses))
                if new.answer_addresses
                else None,
                "created_at": utcnow(),
            },
        )
        values["subject_search"] = search_fold(values["subject"])
        return values

    def insert_message(self, new: NewMessage) -> int:
        result = self.conn.execute(_INSERT_MESSAGE, self._message_values(new))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def record_message(self, new: NewMessage) -> KnownRow:
        """``insert_message``, returning the row as the intake's lookups see it (the values
        as written: a batch finds it again without reading it back)."""
        values = self._message_values(new)
        known = [values.get(c.name) for c in KNOWN_COLUMNS[1:]]
        pk = driver_insert(self.conn.dialect, tuple(values)).run(self.conn, values)
        return KnownRow(pk, *known)  # type: ignore[arg-type]

    def update_message(self, message_pk: int, new: NewMessage) -> None:
        """Record a new decision on an existing row (a quarantined mail processed again):
        the row is replaced, never duplicated; its id and location stay."""
        values = self._message_values(new)
        for kept in ("mailbox", "folder", "uidvalidity", "uid", "created_at"):
            values.pop(kept)
        self.conn.execute(messages.update().where(messages.c.id == message_pk).values(**values))

    def claim_unhandled(self, message_pk: int) -> None:
        """Lock a mail left without an AR before processing it again; RepeatedRequestError
        if it no longer is one (another retry committed first). The guarded UPDATE waits
        for a concurrent retry's transaction and re-reads the row once it commits."""
        claimed = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, unhandled())
            .values(decision=messages.c.decision)
        )
        if claimed.rowcount != 1:
            raise RepeatedRequestError(f"mail #{message_pk} was already processed again")

    def count_relance(self, message_pk: int, received_at: datetime) -> None:
        """One more relance of a message: the citizen writing again (a follow-up received at
        ``received_at``) while it was still unanswered. Writing after the answer (thanks, a
        new question in the thread) is no relance: the indicators count reminders of mail
        left waiting."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .where(relance_counted(messages.c.first_reply_at, received_at))
            .values(relances=messages.c.relances + 1)
        )

    def reopen_closed(self, message_pk: int) -> bool:
        """Undo an agent's closing without a reply of a message still unanswered (the
        citizen wrote again about it: they still expect an answer, and a closed message is
        in no queue, alert or figure, so their relance would go unseen). True when it was
        closed. The guarded UPDATE waits for an agent closing it at this very moment."""
        reopened = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .where(messages.c.no_reply.is_not(None), messages.c.first_reply_at.is_(None))
            .values(no_reply=None)
        )
        return reopened.rowcount == 1

    def mark_written_again(self, message_pk: int, received_at: datetime) -> bool:
        """The citizen wrote again (a follow-up received at ``received_at``) after the
        message's answer: no relance (``relance_counted``), but mail nobody would read,
        so the message is back in its service's queue until an agent replies again or
        marks it read. True when it was not so already (the first unread follow-up)."""
        flagged = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at.is_(None))
            .where(sa.not_(relance_counted(messages.c.first_reply_at, received_at)))
            .values(written_again_at=received_at)
        )
        return flagged.rowcount == 1

    def clear_written_again(self, message_pk: int) -> bool:
        """An agent read the citizen's mail after the answer, with nothing to answer: out
        of the queue again. False when there was nothing to clear (done meanwhile)."""
        cleared = self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at.is_not(None))
            .values(written_again_at=None)
        )
        return cleared.rowcount == 1

    def record_reply(
        self,
        message_pk: int,
        at: datetime,
        complete: bool | None,
        detail: str,
        kind: EventKind = EventKind.REPLY,
    ) -> None:
        """A reply to a citizen's message: the event, and the first reply kept on the row
        (``complete``: its signature; None when there was none to check, e.g. a phone call).
        A message closed as needing no reply is answered after all: no longer closed, so
        that it counts once, as answered (not also apart, in the report's closed list).

        A first reply earlier than the one known (a phone answer recorded days later, a
        reply found in Sent after the citizen wrote again) takes back the relances counted
        since it: the follow-ups received from ``at`` on came after the answer, no reminder
        of mail left waiting (``relance_counted``). The stored count then keeps following
        the rule by which ``Store.relances_after`` finds them again for figures as of a day
        (which would otherwise take away none of them, and show relances before they came).
        Those received before the known first reply were counted when they came (a first
        reply only ever moves earlier); in an UPDATE, ``first_reply_at`` is still that one.
        """
        self.add_events(message_pk, (kind, detail), at=at)
        # The row first, in a statement of its own: a follow-up being recorded holds it
        # (its relance) until the intake commits, and the UPDATE below then reads that
        # follow-up — on PostgreSQL a statement's subquery sees only what had committed
        # when the statement began, however long it waited for the row (SQLite: no-op,
        # the transaction already excludes other writers).
        self.conn.execute(
            sa.select(messages.c.id).where(messages.c.id == message_pk).with_for_update()
        )
        self._answered_at(message_pk, at)
        follow_up = messages.alias("written_again")
        after_answer = (
            sa.select(sa.func.count())
            .select_from(follow_up)
            .where(
                follow_up.c.parent_id == messages.c.id,
                follow_up.c.decision == Decision.FOLLOW_UP,
                follow_up.c.received_at >= at,
                relance_counted(messages.c.first_reply_at, follow_up.c.received_at),
            )
            .scalar_subquery()
        )
        self.conn.execute(
            messages.update()
            .where(
                messages.c.id == message_pk,
                sa.or_(messages.c.first_reply_at.is_(None), messages.c.first_reply_at > at),
            )
            .values(
                first_reply_at=at,
                first_reply_complete=None if complete is None else int(complete),
                relances=messages.c.relances - after_answer,
            )
        )

    def _answered_at(self, message_pk: int, at: datetime) -> None:
        """What a reply at ``at`` settles besides the first reply: a closing without reply,
        and the citizen's mail after the answer if it came before ``at`` (not one that came
        after a reply dated earlier, e.g. a phone call recorded late)."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.no_reply.is_not(None))
            .values(no_reply=None)
        )
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk, messages.c.written_again_at <= at)
            .values(written_again_at=None)
        )

    def set_service(self, message_pk: int, service: str) -> None:
        """A message transferred to ``service``: it is that service's from now on."""
        self.conn.execute(
            messages.update()
            .where(messages.c.id == message_pk)
            .values(service=service, transferred=1)
        )
