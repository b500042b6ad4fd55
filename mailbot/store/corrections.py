"""Routing corrections: what agents changed in a message's service or category.

Kept beside the decision they replace; read back to train the classifier."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mailbot.core.statuses import Decision, NoReplyReason
from mailbot.store.schema import corrections, messages


def message_by_reference(conn: Connection, reference: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(messages).where(messages.c.reference == reference)).first()


def add_correction(
    conn: Connection,
    row: sa.Row[Any],
    routed: tuple[str, str, str | None],
    agent: str | None,
    at: datetime,
) -> None:
    """Record the correction and carry it on the row (the "to check" mark is cleared)."""
    service, category, reorient = routed
    conn.execute(
        corrections.insert().values(
            message_pk=row.id,
            at=at,
            agent=agent,
            old_service=row.service,
            old_category=row.category,
            old_reorient=row.reorient,
            service=service,
            category=category,
            reorient=reorient,
        )
    )
    conn.execute(
        messages.update()
        .where(messages.c.id == row.id)
        .values(service=service, category=category, reorient=reorient, to_check=0)
    )


def corrected_messages(engine: Engine) -> list[sa.Row[Any]]:
    """Each corrected acknowledged mail once, with its latest correction and its location;
    never a probe's test mail (mailbot's own, not a citizen's: never trained on), nor one an
    agent closed as spam after correcting it (no citizen's request to learn from)."""
    latest = (
        sa.select(corrections.c.message_pk, sa.func.max(corrections.c.id).label("last"))
        .group_by(corrections.c.message_pk)
        .subquery()
    )
    query = (
        sa.select(
            messages.c.id,
            messages.c.reference,
            messages.c.mailbox,
            messages.c.folder,
            messages.c.uidvalidity,
            messages.c.uid,
            messages.c.message_id,
            messages.c.content_hash,
            messages.c.received_at,  # the model's header dates what it learned from
            messages.c.created_at,
            corrections.c.service,
            corrections.c.category,
            corrections.c.reorient,
        )
        .join(latest, latest.c.message_pk == messages.c.id)
        .join(corrections, corrections.c.id == latest.c.last)
        .where(
            messages.c.decision == Decision.ACKNOWLEDGE,
            messages.c.probe == 0,
            sa.or_(messages.c.no_reply.is_(None), messages.c.no_reply != NoReplyReason.SPAM),
        )
        .order_by(messages.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def corrections_of(engine: Engine, reference: str) -> list[sa.Row[Any]]:
    """The corrections of one mail, oldest first."""
    query = (
        sa.select(corrections)
        .join(messages, messages.c.id == corrections.c.message_pk)
        .where(messages.c.reference == reference)
        .order_by(corrections.c.id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))
