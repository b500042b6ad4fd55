"""The citizens' messages listed: which messages are a citizen's (``Store._citizens``, what
the indicators count too), those of a period, still open, written about again, bounced
(the alerts, the unanswered list, the daily digest, the report), the unhandled ones, and
how many of a mailbox's mails had no Return-Path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mailbot.core.statuses import Attention, Decision, EventKind
from mailbot.store.engines import Engines
from mailbot.store.schema import attention, events, messages, unhandled

BOUNCE_CHUNK = 500  # message ids per query of ``Store.bounces``
NO_RETURN_PATH = f'"{Attention.NO_RETURN_PATH}"'  # as it appears in a row's reasons
RECORDED_DECISIONS = (Decision.ACKNOWLEDGE, Decision.SKIP, Decision.FOLLOW_UP)


class Listings(Engines):
    """Listings of citizens' messages, read outside any transaction."""

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
            sa.select(*listed_columns(), events.c.detail, events.c.at)
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
            sa.select(*listed_columns(), messages.c.received_at, messages.c.written_again_at)
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
                *listed_columns(),
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


def listed_columns() -> tuple[Any, ...]:
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
