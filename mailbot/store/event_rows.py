"""Events: added one at a time or a batch part's at once; a mail passed over (its event
without a message) claimed, dismissed or given to the row that records it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mailbot.core.clock import utcnow
from mailbot.core.statuses import EventKind
from mailbot.errors import RepeatedRequestError, StoreError
from mailbot.store.drivers import driver_rows
from mailbot.store.records import Dismissal
from mailbot.store.rows import Rows
from mailbot.store.schema import events, fit, messages

# The columns of an INSERT come from the parameters' keys; built once, their cache key is.
_INSERT_EVENT = events.insert()
_EVENT_KEYS = ("message_pk", "kind", "detail", "at")


def dismissals(conn: Connection, event_id: int | None = None) -> dict[int, Dismissal]:
    """The mail passed over that a person dismissed (``Transaction.dismiss_passed_over``),
    by the ``passed_over`` event each dismissal closes (``event_id``: that one only; its
    first dismissal, should there be two). Their events are few — one per mail a person
    closed by hand, purged with the other events tied to no message — so they are read
    whole and matched here, the event they close being named in their detail."""
    query = (
        sa.select(events.c.id, events.c.at, events.c.detail)
        .where(events.c.kind == EventKind.PASSED_OVER_DISMISSED)
        .order_by(events.c.id)
    )
    found: dict[int, Dismissal] = {}
    for row in conn.execute(query):
        try:
            detail = json.loads(row.detail)
            target = int(detail["passed_over"])
        except (ValueError, TypeError, KeyError):
            continue  # not written by dismiss_passed_over: closes nothing
        if target in found or (event_id is not None and target != event_id):
            continue
        agent, reason = str(detail.get("agent") or ""), str(detail.get("reason") or "")
        found[target] = Dismissal(row.id, target, row.at, agent, reason)
    return found


class EventRows(Rows):
    """The ``Transaction``'s writes and reads of the ``events`` rows."""

    def has_event(self, kind: EventKind, detail_contains: str) -> bool:
        query = sa.select(events.c.id).where(
            events.c.kind == kind, events.c.detail.contains(detail_contains, autoescape=True)
        )
        return self.conn.execute(query.limit(1)).first() is not None

    def claim_passed_over(self, event_id: int) -> None:
        """Lock a mail passed over (its ``passed_over`` event, no row) before processing it
        again, or dismissing it; RepeatedRequestError if a row records it now (another
        retry committed first) or a person dismissed it. The guarded UPDATE waits for a
        concurrent retry or dismissal, as ``claim_unhandled``; the dismissals are read
        after it, so that one committed meanwhile is seen (PostgreSQL's read committed
        takes a new snapshot per statement; SQLite's writers take turns)."""
        claimed = self.conn.execute(
            events.update()
            .where(
                events.c.id == event_id,
                events.c.kind == EventKind.PASSED_OVER,
                events.c.message_pk.is_(None),
            )
            .values(message_pk=events.c.message_pk)
        )
        if claimed.rowcount != 1:
            raise RepeatedRequestError(f"mail P{event_id} was already processed again")
        if event_id in dismissals(self.conn, event_id):
            raise RepeatedRequestError(f"mail P{event_id} was already dismissed")

    def dismiss_passed_over(self, event_id: int, agent: str, reason: str) -> None:
        """A person handled a mail passed over outside mailbot: its case is closed by an
        event without a message (``passed_over_dismissed``) naming it, who and why, which
        takes it off the lists, `mailbot status` and the metrics; its ``passed_over`` event
        stays as it was (no row records the mail). Claimed first (``claim_passed_over``):
        a retry or a dismissal committed first makes this one RepeatedRequestError, so a
        double click dismisses once."""
        self.claim_passed_over(event_id)
        detail = {"passed_over": event_id, "agent": agent, "reason": reason}
        self.add_event(
            None, EventKind.PASSED_OVER_DISMISSED, json.dumps(detail, ensure_ascii=False)
        )

    def resolve_passed_over(
        self, event_id: int, mailbox: str, folder: str, uidvalidity: int, uid: int
    ) -> int:
        """The mail passed over is recorded now, in this transaction: its event goes to the
        row at its location (one at most: ``uq_messages_location``), which takes it off
        the lists and `mailbot status`, and shows it in the row's history. The row's id."""
        message_pk = self.conn.execute(
            sa.select(messages.c.id).where(
                messages.c.mailbox == mailbox,
                messages.c.folder == folder,
                messages.c.uidvalidity == uidvalidity,
                messages.c.uid == uid,
            )
        ).scalar_one_or_none()
        if message_pk is None:
            raise StoreError(f"mail P{event_id}: no row records {mailbox}/{folder} UID {uid}")
        self.conn.execute(
            events.update().where(events.c.id == event_id).values(message_pk=message_pk)
        )
        return int(message_pk)

    def add_event(self, message_pk: int | None, kind: EventKind, detail: str = "") -> None:
        values = {"message_pk": message_pk, "kind": kind, "detail": detail, "at": utcnow()}
        self.conn.execute(_INSERT_EVENT, fit(events, values))

    def add_event_rows(self, rows: Sequence[tuple[int | None, EventKind, str, datetime]]) -> None:
        """Events of many messages in one executemany: (message, kind, detail, at)."""
        if rows:
            values = [
                fit(events, {"message_pk": pk, "kind": k, "detail": d, "at": at})
                for pk, k, d, at in rows
            ]
            driver_rows(self.conn.dialect, events, _EVENT_KEYS).run(self.conn, values)

    def add_events(
        self, message_pk: int | None, *kinds: tuple[EventKind, str], at: datetime | None = None
    ) -> None:
        now = at or utcnow()
        self.conn.execute(
            _INSERT_EVENT,
            [
                fit(events, {"message_pk": message_pk, "kind": k, "detail": d, "at": now})
                for k, d in kinds
            ],
        )
