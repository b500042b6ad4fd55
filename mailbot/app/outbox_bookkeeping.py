"""What a queued mail's status means beyond the outbox: an AR's status is its message's AR
status (the indicators count ARs sent), an agent's transfer notice's its message's notice
status, and an agent's reply accepted by the server is the reply to the citizen; the
bookkeeping of the mails a delivery sent (their bytes purged, their events)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailbot.core.statuses import ArStatus, EventKind, OutboxKind, OutboxStatus
from mailbot.store import OutboxItem, Transaction


def set_status(tx: Transaction, item: OutboxItem, status: OutboxStatus, **values: object) -> None:
    """Change a queued mail's status, and its message's (``mirror``)."""
    tx.set_outbox_status(item.id, status, **values)
    mirror(tx, item, status)


def mirror(tx: Transaction, item: OutboxItem, status: OutboxStatus) -> None:
    """An AR's status is its message's AR status; an agent's transfer notice's is its
    message's notice status: the indicators count the ARs sent, and the transfers whose
    announcement to the citizen was sent (the AR said nothing of a later transfer).

    A message transferred twice by agents has two notices; only the latest transfer's is
    mirrored. « Transferts annoncés à l'usager » means the citizen was told which service
    handles the request now: a notice of an earlier transfer named a service that no longer
    does, so, sent, it does not announce the transfer that holds, and refused, it does not
    take back the announcement the latest notice made. The message records which notice is
    the latest (``Transaction.set_latest_notice``, with the transfer), so the status does
    not depend on the order deliveries settle the two in (a deferred first notice sent after
    the second was refused wrote "sent" last, and the reverse)."""
    if item.message_pk is None:
        return
    if item.kind == OutboxKind.AR:
        tx.set_ar_status(item.message_pk, ArStatus(status.value))
    elif item.kind == OutboxKind.NOTICE:
        tx.set_notice_status(item.message_pk, item.id, status)


def finish_sent(tx: Transaction, left: Sequence[tuple[OutboxItem, datetime]]) -> None:
    """The bookkeeping of mails the server accepted (and already committed 'sent'), for a
    whole delivery batch in a few statements: the bytes purged (the rendered mail holds the
    citizen's subject: kept only while needed), an AR's status mirrored on its message, the
    events. Only for the items this call purged: never twice for one mail."""
    mine = tx.finish_sent([item.id for item, _ in left])
    done = [(item, at) for item, at in left if item.id in mine]
    tx.set_ar_statuses(_messages_of(done, OutboxKind.AR), ArStatus.SENT)
    notices = [(i.message_pk, i.id) for i, _ in done if i.kind == OutboxKind.NOTICE]
    tx.set_notice_statuses([(pk, n) for pk, n in notices if pk is not None], OutboxStatus.SENT)
    events: list[tuple[int | None, EventKind, str, datetime]] = []
    for item, at in done:
        if item.kind == OutboxKind.REPLY and item.message_pk is not None:
            # An agent's standard reply: signed by construction (rendering refuses otherwise).
            tx.record_reply(item.message_pk, at, True, item.email_message_id, EventKind.REPLY_SENT)
        else:
            events.append((item.message_pk, EventKind.sent(item.kind), item.email_message_id, at))
    tx.add_event_rows(events)


def _messages_of(done: Sequence[tuple[OutboxItem, datetime]], kind: OutboxKind) -> list[int]:
    return [i.message_pk for i, _ in done if i.kind == kind and i.message_pk is not None]
