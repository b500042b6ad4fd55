"""What the intake looks up among the recorded messages: an earlier copy of a mail, the
row that handles it in any mailbox (``message_keys``: claimed, taken over), a follow-up's
thread, a sender's recent ARs and unanswered mail, and a batch part's lookups at once."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import DUPLICATE_REASON, Decision
from mailbot.errors import SameMailError
from mailbot.store.drivers import (
    KNOWN_COLUMNS,
    bind_param,
    driver_claim_mail,
    driver_claimed,
    driver_known,
    known_condition,
    padded_length,
)
from mailbot.store.records import FirstCopy, KnownRow
from mailbot.store.rows import Rows
from mailbot.store.schema import left_for_person, message_keys, messages, stored_id


@functools.cache
def _duplicate_query(with_id: bool, excluding: bool) -> sa.Select[Any]:
    legacy = messages.c.fingerprint.is_(None)
    if with_id:
        condition = sa.and_(
            messages.c.message_id == bind_param("message_id"),
            sa.or_(messages.c.fingerprint == bind_param("fingerprint"), legacy),
        )
    else:
        condition = sa.or_(
            messages.c.fingerprint == bind_param("fingerprint"),
            sa.and_(legacy, messages.c.content_hash == bind_param("content_hash")),
        )
    query = sa.select(messages.c.id).where(messages.c.mailbox == bind_param("mailbox"), condition)
    if excluding:
        query = query.where(messages.c.id != bind_param("exclude"))
    return query.order_by(messages.c.id).limit(1)


@functools.cache
def _thread_query(by_ids: bool, by_reference: bool, in_mailbox: bool) -> sa.Select[Any]:
    conditions: list[sa.ColumnElement[bool]] = []
    if by_ids:
        ids: sa.BindParameter[Any] = bind_param("ids", expanding=True)
        conditions += [messages.c.message_id.in_(ids), messages.c.ar_message_id.in_(ids)]
    if by_reference:
        conditions.append(messages.c.reference == bind_param("reference"))
    return (
        sa.select(messages.c.id, messages.c.reference)
        .where(sa.or_(*conditions))
        .where(messages.c.reference.is_not(None))
        .where(messages.c.mailbox == bind_param("mailbox") if in_mailbox else sa.true())
        .order_by(messages.c.id)
        .limit(1)
    )


_RECENT_ARS = (
    sa.select(sa.func.count())
    .select_from(messages)
    .where(
        messages.c.mailbox == bind_param("mailbox"),
        messages.c.sender == bind_param("recipient"),
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.received_at >= bind_param("since"),
        messages.c.received_at <= bind_param("until"),
    )
)
_UNANSWERED = (
    sa.select(messages.c.id, messages.c.reference, messages.c.received_at, messages.c.subject)
    .where(
        messages.c.mailbox == bind_param("mailbox"),
        messages.c.sender == bind_param("sender"),
        messages.c.decision == Decision.ACKNOWLEDGE,
        messages.c.received_at >= bind_param("since"),
        messages.c.first_reply_at.is_(None),
    )
    .order_by(messages.c.received_at.desc())
    .limit(20)
)
# Values per statement: far below SQLite's and PostgreSQL's limits on parameters.
_IN_CHUNK = 500
_KEYS = ("message_id", "ar_message_id", "fingerprint", "content_hash", "reference", "sender")


@functools.cache
def known_query(columns: tuple[str, ...]) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """A mailbox's messages matching the values of any of these key columns: one
    statement, a UNION ALL of one SELECT per column, each served by that column's index
    (an OR of them all made SQLite read the whole mailbox). Only columns that have values:
    an empty IN list is an empty subquery to SQLite, which then walked every message of
    the mailbox testing it (the references of a batch without any, at every part: a cost
    that grew with the mailbox; issue 14)."""
    # The AR's Message-ID has an index of its own, without the mailbox: compared as is,
    # the mailbox made SQLite prefer an index holding it and read the whole mailbox.
    unindexed = sa.func.coalesce(messages.c.mailbox, "") == bind_param("mailbox")
    selects = [
        sa.select(*KNOWN_COLUMNS).where(
            unindexed if c == "ar_message_id" else messages.c.mailbox == bind_param("mailbox"),
            known_condition(c, bind_param(c, expanding=True)),
        )
        for c in columns
    ]
    return selects[0] if len(selects) == 1 else sa.union_all(*selects)


class MessageLookups(Rows):
    """The ``Transaction``'s reads of recorded messages for the intake, and the claims
    of one mail across mailboxes."""

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
        query = _duplicate_query(bool(message_id), exclude is not None)
        params = {"mailbox": mailbox, "fingerprint": fingerprint, "exclude": exclude}
        if message_id:
            params["message_id"] = stored_id(message_id)
        else:
            params["content_hash"] = content_hash
        found = self.conn.execute(query, params).scalar()
        return None if found is None else int(found)

    def claimed_mail(self, fingerprint: str) -> FirstCopy | None:
        """The row that handled this very mail first, in any mailbox (``claim_mail``): its
        id, mailbox and reference, and whether it is left for a person; None if none did."""
        row = driver_claimed(self.conn.dialect).run(self.conn, {"fingerprint": fingerprint})
        return None if row is None else FirstCopy(int(row[0]), str(row[1]), row[2], bool(row[3]))

    def claim_mail(self, fingerprint: str, message_pk: int) -> None:
        """Record that ``message_pk`` handles the mail of this fingerprint. SameMailError if
        another row did first, even in a transaction committing at this very moment (the
        insert waits for it): the caller rolls back its savepoint, and this copy is that
        row's duplicate."""
        try:
            values = {"fingerprint": fingerprint, "message_pk": message_pk}
            driver_claim_mail(self.conn.dialect).run(self.conn, [values])
        except sa.exc.IntegrityError:
            raise SameMailError("this mail was recorded first in another mailbox") from None

    def take_over_mail(self, fingerprint: str, waiting_pk: int, message_pk: int) -> None:
        """``message_pk`` handles the mail whose key ``waiting_pk`` holds, a copy left for
        a person in another mailbox (``schema.left_for_person``): that row becomes its
        duplicate and the key passes to it. SameMailError if the row is no longer left for
        a person (a retry or an agent committed first: the guarded UPDATE waits for them
        and reads the row again): the caller rolls back its savepoint and, looking again,
        records this copy as that row's duplicate."""
        taken = self.conn.execute(
            messages.update()
            .where(messages.c.id == waiting_pk, left_for_person())
            .values(
                decision=Decision.DUPLICATE,
                reasons=json.dumps([DUPLICATE_REASON]),
                parent_id=message_pk,
            )
        )
        moved = 0
        if taken.rowcount == 1:
            moved = self.conn.execute(
                message_keys.update()
                .where(
                    message_keys.c.fingerprint == fingerprint,
                    message_keys.c.message_pk == waiting_pk,
                )
                .values(message_pk=message_pk)
            ).rowcount
        if moved != 1:
            raise SameMailError("this mail was handled meanwhile in another mailbox")

    def acknowledged_in_thread(
        self, mailbox: str | None, thread_ids: Sequence[str], reference: str | None
    ) -> tuple[int, str] | None:
        """The acknowledged message a follow-up belongs to: by threading, else by reference."""
        if not thread_ids and not reference:
            return None
        query = _thread_query(bool(thread_ids), bool(reference), bool(mailbox))
        params = {
            "ids": [stored_id(mid) for mid in thread_ids],
            "reference": reference,
            "mailbox": mailbox,
        }
        row = self.conn.execute(query, params).first()
        return (int(row.id), str(row.reference)) if row else None

    def unanswered_from(
        self, mailbox: str, sender: str, since: datetime
    ) -> list[tuple[int, str, datetime, str]]:
        """Acknowledged messages of this sender since ``since`` with no reply yet, newest first."""
        params = {"mailbox": mailbox, "sender": sender, "since": since}
        return [
            (r.id, r.reference, r.received_at, r.subject)
            for r in self.conn.execute(_UNANSWERED, params)
        ]

    def answer_addresses_of(self, message_pk: int) -> frozenset[str]:
        """Where a reply answers this message's citizen: its sender (the AR's address), and
        the From and Reply-To recorded when they differ (``answer_addresses``)."""
        query = sa.select(messages.c.sender, messages.c.answer_addresses)
        row = self.conn.execute(query.where(messages.c.id == message_pk)).first()
        if row is None:
            return frozenset()
        others = json.loads(row.answer_addresses) if row.answer_addresses else []
        return frozenset(a.lower() for a in (row.sender, *others) if a)

    def count_recent_ars(
        self, mailbox: str, recipient: str, since: datetime, until: datetime
    ) -> int:
        """ARs to ``recipient`` for mails received in [since, until]."""
        params = {"mailbox": mailbox, "recipient": recipient, "since": since, "until": until}
        return int(self.conn.execute(_RECENT_ARS, params).scalar_one())

    def known(
        self,
        mailbox: str,
        keys: dict[str, set[str]],
        senders: set[str],
        since: datetime,
    ) -> list[KnownRow]:
        """A mailbox's messages an intake batch may look up, in id order: those whose
        column named in ``keys`` (message_id, ar_message_id, fingerprint, content_hash,
        reference) holds one of its values (Message-IDs as given: stored here), and the
        acknowledged messages of ``senders`` received since ``since``."""
        wanted = {column: set(keys.get(column, ())) for column in _KEYS} | {"sender": senders}
        for column in ("message_id", "ar_message_id"):
            wanted[column] = {stored_id(v) or "" for v in wanted[column]}
        values = {column: sorted(v for v in wanted[column] if v) for column in _KEYS}
        values = {column: listed for column, listed in values.items() if listed}
        if not values:
            return []
        if sum(map(len, values.values())) <= _IN_CHUNK:
            shape = tuple((column, padded_length(len(listed))) for column, listed in values.items())
            params: dict[str, Any] = {"mailbox": mailbox, "since": since}
            for (column, size), listed in zip(shape, values.values(), strict=True):
                padded = [*listed, *[listed[-1]] * (size - len(listed))]
                params.update({f"{column}_{i}": value for i, value in enumerate(padded)})
            return driver_known(self.conn.dialect, shape).run(self.conn, params)
        found = {}
        for column, ordered in values.items():  # a huge batch, or hostile References
            for low in range(0, len(ordered), _IN_CHUNK):
                params = {column: ordered[low : low + _IN_CHUNK], "mailbox": mailbox}
                query = known_query((column,))
                for row in self.conn.execute(query, {**params, "since": since}):
                    found[row.id] = KnownRow(*row)
        return [found[pk] for pk in sorted(found)]
