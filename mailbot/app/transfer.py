"""An agent transfers a tracked message to another service.

The citizen gets the transfer notice (``notification-transfert``: which service now
handles the request, its contact details, and the same deadline — the clock keeps running
from receipt; a deadline already gone by is said to be, never given as a date in the past).
The agent decided it: the notice says so and is signed by them as their replies are
(CRPA L111-2, ``reply.signature_of``: a transfer whose signature would be incomplete is
refused), never presented as an automatic mail;
the service gets the original, attached unaltered, with a note saying who sent it on and
why (a huge mail, read again only in part: its header, and a note that says so and where
the whole mail is). The message becomes the service's (its queue, its indicators) and the
transfer is recorded with the agent and the reason. Its assignee keeps it only if they
handle that service too.

A message answered, with a reply on its way, or closed without a reply is not transferred
(``message_actions``): the citizen would be told another service will answer, after the
answer, or for a request the prefecture decided needs none. Only a head of the message's
current service transfers it (``requests.permit``, the console's REASSIGN): a plain agent,
a head of another service, a quality agent are refused, whichever face asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mailbot.app.message_actions import Act, refuse
from mailbot.app.message_view import service_of
from mailbot.app.outgoing import Queued, Transfer, enqueue, forwards
from mailbot.app.reply import (
    NOTICE_TEMPLATE,
    Preview,
    Sent,
    preview_of,
    signature_of,
    thread_of,
)
from mailbot.app.requests import (
    TRANSFERRING,
    AgentLookup,
    MessageRef,
    agent_label,
    find_agent,
    once,
    permit,
    permit_again,
    previous,
    tracked_message,
)
from mailbot.config import Config
from mailbot.core.clock import Clock, utcnow
from mailbot.core.statuses import EventKind, OutboxKind
from mailbot.errors import RequestError
from mailbot.mail.compose import Composer, OutgoingMail
from mailbot.mail.originals import Originals
from mailbot.render.templates import Renderer
from mailbot.render.variables import message_variables, working_calendar
from mailbot.store import Store, Transaction
from mailbot.store import console as stored

UNCLASSIFIED = "-"  # the category the note shows for a message the routing never classed


@dataclass(frozen=True)
class TransferPreview:
    """What a transfer would send: the notice to the citizen, and where the forward goes."""

    notice: Preview
    forward_to: tuple[str, ...]


class Transfers:
    """Transfers of tracked messages between services, for the CLI and the web console."""

    def __init__(
        self,
        config: Config,
        store: Store,
        renderer: Renderer,
        agents: AgentLookup,
        originals: Originals,
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self.renderer = renderer
        self.agents = agents
        self.originals = originals
        self.composer = Composer.from_config(config)
        self.clock = clock  # the day the notice is written: is its deadline gone by?

    def preview(
        self, agent_id: str, message: MessageRef, service: str, reason: str
    ) -> TransferPreview:
        """The notice as the citizen would get it; nothing is fetched, queued or recorded."""
        row = tracked_message(self.store, message)
        _label, signature = self._check(agent_id, row, service, reason)
        addresses = tuple(self.config.services[service].addresses)
        notice = self._notice(row, service, signature)
        return TransferPreview(preview_of(notice, (row.sender,)), addresses)

    def transfer(
        self,
        agent_id: str,
        message: MessageRef,
        service: str,
        reason: str,
        key: str | None = None,
        also: Callable[[Transaction], object] | None = None,
    ) -> Sent:
        """Queue the notice and the forwards, make the message the service's, record who
        and why — all in one transaction, once per ``key``. ``also`` records more in that
        transaction (a routing correction that moves the message: ``app/corrections``)."""
        done = previous(self.store, EventKind.TRANSFERRED, key, agent=agent_id)
        if done is not None:
            return Sent((done,) if done else (), repeated=True)
        row = tracked_message(self.store, message)
        label, signature = self._check(agent_id, row, service, reason)
        reason = reason.strip()
        notice = Queued.of(
            OutboxKind.NOTICE,
            self._notice(row, service, signature),
            row.sender,
            self.config.sender.envelope_from,
        )
        original = self.originals.fetch(row)  # of a huge mail, only its start
        transfer = Transfer(
            row.mailbox,
            row.reference,
            row.subject,
            row.received_at,
            row.sender,
            service,
            row.category or UNCLASSIFIED,
            by=label,
            reason=reason,
        )
        forwarded = self._forwards(transfer, original.raw, original.size)
        mails = [notice, *forwarded]

        def record(tx: Transaction) -> int:
            # Again, where it is written: moved to another service, answered meanwhile?
            origin = self._still_allowed(tx, agent_id, row, service)
            refuse(tx, row, Act.TRANSFER)
            detail = {"service": service, "from": origin, "agent": agent_id, "reason": reason}
            if also is not None:
                also(tx)
            ids = enqueue(tx, row.id, mails)
            tx.set_service(row.id, service)
            # The AR said nothing of this transfer: the notice announces it, once sent. It
            # is the message's notice from now on, an earlier transfer's set aside.
            tx.set_latest_notice(row.id, ids[0])
            tx.add_event(row.id, EventKind.TRANSFERRED, json.dumps(detail, ensure_ascii=False))
            self._unassign(tx, row.id, service, agent_id)
            return ids[0]

        outbox_id, repeated = once(self.store, EventKind.TRANSFERRED, key, record, agent=agent_id)
        return Sent((outbox_id,) if outbox_id else (), repeated)

    def _forwards(self, transfer: Transfer, raw: bytes, size: int) -> tuple[Queued, ...]:
        """The forwards to the service, their note told today's date: a deadline gone by
        is said to be, as the citizen's notice says it (B6)."""
        today = working_calendar(self.config.timezone).local_date(self.clock())
        return forwards(self.config, self.composer, transfer, raw, size, today)

    def _check(
        self, agent_id: str, row: sa.Row[Any], service: str, reason: str
    ) -> tuple[str, dict[str, object]]:
        """The agent's name for the note and their signature for the notice; RequestError
        for a transfer that cannot be (an incomplete signature among them, as a reply), or
        that the agent may not make: moving a message out of a service is its heads' (the
        console's REASSIGN on the message's current service, core/permissions), checked
        here for every face — ``mailbot transfer`` has no other guard."""
        agent = find_agent(self.config, self.agents, agent_id)
        permit(self.config, agent_id, agent, TRANSFERRING, self._current_service(row))
        target = self.config.services.get(service)
        if target is None:
            known = ", ".join(self.config.services)
            raise RequestError(
                "service",
                service,
                f"no such service (known: {known})",
                shown=f"le service « {service} » n'existe pas : choisissez-en un dans la liste.",
            )
        if not target.addresses:
            raise RequestError(
                "service",
                service,
                "it has no address to transfer mail to",
                shown=f"le service « {target.name} » n'a pas d'adresse où transférer le courriel :"
                " choisissez un autre service, ou signalez-le à l'administrateur de mailbot.",
            )
        if service == self._current_service(row):
            raise RequestError(
                "service",
                service,
                f"{row.reference} is already this service's",
                shown=f"ce courriel est déjà au service « {target.name} ».",
            )
        if not reason.strip():
            raise RequestError(
                "reason",
                "''",
                "say why the message is transferred",
                shown="indiquez le motif du transfert.",
            )
        with self.store.transaction() as tx:
            refuse(tx, row, Act.TRANSFER)
        meta = self.renderer.meta(NOTICE_TEMPLATE)
        return agent_label(agent_id, agent), signature_of(self.config, agent_id, agent, meta)

    def _still_allowed(self, tx: Transaction, agent_id: str, row: sa.Row[Any], service: str) -> str:
        """The message's service as ``tx`` reads it (its row locked), where the transfer is
        written: the agent must still be a head of it (a head's transfer or correction
        may have moved it since ``_check``), and it must not be ``service`` already."""
        agent = find_agent(self.config, self.agents, agent_id)
        current = service_of(
            self.config, permit_again(tx, self.config, agent_id, agent, TRANSFERRING, row)
        )
        if current == service:
            raise RequestError(
                "service",
                service,
                f"{row.reference} was moved to this service meanwhile",
                shown=f"ce courriel vient d'être confié au service"
                f" « {self.config.services[service].name} ».",
            )
        return current

    def _unassign(self, tx: Transaction, message_pk: int, service: str, agent_id: str) -> None:
        """The assignee keeps the message only if they handle ``service`` too: else the
        new service's queue would show it "attribué à" someone who cannot see it, and miss
        it among its unassigned messages. Read in the transaction that records the
        transfer; recorded as an ``assigned`` event, as an agent's change is."""
        assignee = stored.assignee_of(tx.conn, message_pk)
        if assignee is None:
            return
        profile = self.agents(assignee)
        if profile is not None and service in profile.console_services:
            return
        stored.set_assignee(tx.conn, message_pk, None)
        detail = {"agent": agent_id, "assignee": None, "previous": assignee}
        detail["reason"] = "transfert à un service que l'agent ne traite pas"
        tx.add_event(message_pk, EventKind.ASSIGNED, json.dumps(detail, ensure_ascii=False))

    def _current_service(self, row: sa.Row[Any]) -> str:
        return service_of(self.config, row)

    def _notice(self, row: sa.Row[Any], service: str, signature: dict[str, object]) -> OutgoingMail:
        variables = message_variables(
            self.config,
            row.mailbox,
            reference=row.reference,
            received_at=row.received_at,
            original_subject=row.subject,
            service=service,
        )
        variables["transferred"] = True
        variables["agent"] = signature  # the agent decided it: they sign it (CRPA L111-2)
        # An overdue message: "au plus tard le <a day gone by>" would be a promise broken
        # as it is made; the notice says the deadline has passed instead (B6).
        calendar = working_calendar(self.config.timezone)
        today = calendar.local_date(self.clock())
        variables["deadline_passed"] = calendar.deadline(row.received_at) < today
        rendered = self.renderer.render(NOTICE_TEMPLATE, variables, language=row.language)
        thread = thread_of(row)
        return self.composer.to_citizen(
            rendered,
            mailbox_address=self.config.mailboxes[row.mailbox].address,
            to=row.sender,
            in_reply_to=thread.in_reply_to,
            references=thread.references,
        )
