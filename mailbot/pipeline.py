"""One incoming mail, end to end: parse, deduplicate, decide, record, queue the AR.

Everything about a mail — its row, its events, the AR in the outbox and the folder's
new high-water UID — commits in one transaction, so a crash can neither lose a mail
nor acknowledge it twice.

Whatever goes wrong with one mail (a header no codec reads, a MIME tree too deep, a value
the database refuses, a template error) rolls back that mail's transaction alone: the
mail is then recorded as *quarantined* in a transaction of its own, with the traceback
(code locations and exception types, no content) as an event, and the poll goes on with
the next mail. ``mailbot quarantine retry`` processes it again later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailbot.classifier import load as load_model
from mailbot.config import Config, ContactFormRelay, MailboxConfig
from mailbot.errors import FirstPollError, StoreError
from mailbot.language import detect_language
from mailbot.logs import safe_error, safe_traceback
from mailbot.message import BODY_TEXT_LIMIT, SUBJECT_LIMIT, ParsedMessage, parse_message
from mailbot.policy import (
    ArDecision,
    PolicyContext,
    decide_ar,
    find_reference,
    reply_address,
    similar_subjects,
)
from mailbot.relay_auth import RelayVerifier
from mailbot.relays import recognised_relay
from mailbot.render import TRANSLATIONS_DIR, Renderer
from mailbot.replies import Plan, Replies
from mailbot.routing import (
    CompiledRouting,
    RoutingDecision,
    RoutingInput,
    compile_routing,
    decide,
    form_fields,
)
from mailbot.routing_text import routing_text
from mailbot.store import NewMessage, Store, Transaction, utcnow
from mailbot.translations import load_translations
from mailbot.workdays import WorkingCalendar

log = logging.getLogger(__name__)
RELANCE_WORKING_DAYS = 10
RELANCE_CALENDAR_DAYS = 20  # a superset of 10 working days, narrowed by the calendar
ROUTING_BODY_LIMIT = BODY_TEXT_LIMIT  # characters of body the routing rules read


def _none() -> int:
    return 0


def first_poll_refusal(store: Store, mailbox: str, folder: str, count: int) -> str:
    """What happened and what to do, for an operator reading a cron mail or the journal."""
    return (
        f"mailbox {mailbox}, folder {folder}: the database {store.where} holds no state for "
        f"this folder, which already holds {count} mail(s); nothing was acknowledged. "
        "If this is a first start, record the history without sending anything with "
        "`mailbot backfill --since YYYY-MM-DD`, or acknowledge what is there with "
        "`--acknowledge-existing` (poll/run). If mailbot ran before, this is the wrong "
        "database: check `database:` in rules.yaml (`mailbot check` prints it)."
    )


@dataclass(frozen=True)
class IncomingMail:
    """A mail as any source (IMAP, Maildir) hands it over."""

    uid: int
    internaldate: datetime
    raw: bytes
    size: int = 0  # size on the server, when only the start of a huge mail was read

    @property
    def defects(self) -> tuple[str, ...]:
        return (f"TruncatedHugeMessage:{self.size}",) if self.size > len(self.raw) else ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one mail: the line the demo and the logs print."""

    mailbox: str
    uid: int
    decision: str
    reasons: tuple[str, ...]
    reference: str | None
    subject: str
    message_pk: int | None
    route: str = ""  # "→ service" when transferred, "↪ target" when re-oriented


class Pipeline:
    def __init__(
        self,
        config: Config,
        store: Store,
        renderer: Renderer,
        clock: Callable[[], datetime] = utcnow,
        send: bool = True,
        acknowledge_existing: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.renderer = renderer
        self.clock = clock
        # send=False is the backfill of history: decide and route, record, never send.
        self.send = send
        # A first poll acknowledges the mail already there only when asked (demo, --flag).
        self.acknowledge_existing = acknowledge_existing
        self.routing = compiled_routing(config)
        self.calendar = WorkingCalendar(timezone=config.timezone)
        translations = load_translations(renderer.template_dir / TRANSLATIONS_DIR)
        self.replies = Replies(config, renderer, translations)
        # Token and DKIM proofs of the contact-form relay (secrets, DNS): before deciding.
        self.relay_verifier = RelayVerifier(config.policy.contact_form_relays)

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] = _none
    ) -> int:
        """Return the UID to read after; a new UIDVALIDITY means re-reading from the start.

        ``existing`` counts the mail already in the folder. A folder this database holds no
        state for, with mail in it, is refused (FirstPollError) unless acknowledge_existing:
        it is either a first start that would answer every old mail, or the wrong (empty)
        database. Backfill (send=False) is how history is recorded instead.
        """
        with self.store.transaction() as tx:
            state = tx.folder_state(mailbox, folder)
            if self.send and tx.backfill_pending(mailbox, folder):
                raise FirstPollError(
                    f"mailbox {mailbox}, folder {folder}: a backfill of this folder started and"
                    " did not finish; nothing was acknowledged. Run `mailbot backfill` again"
                    " to finish it."
                )
            if state is not None and state.uidvalidity == uidvalidity:
                return state.last_uid
            if state is not None:
                log.warning(
                    "uidvalidity changed: re-syncing, known mail is deduplicated",
                    extra={"mailbox": mailbox, "old": state.uidvalidity, "new": uidvalidity},
                )
                tx.add_event(None, "uidvalidity_changed", f"{mailbox}/{folder}: {uidvalidity}")
            elif self.send and not self.acknowledge_existing:
                count = existing()
                if count:
                    raise FirstPollError(first_poll_refusal(self.store, mailbox, folder, count))
            tx.save_folder_state(mailbox, folder, uidvalidity, 0)
            return 0

    def process(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        existing: int | None = None,
    ) -> Outcome:
        """Record one mail and queue what it is owed; never raises for a bad mail.

        ``existing`` is the row of a quarantined mail processed again: that row is
        updated (never a second one) and the folder's high-water UID is left alone.
        """
        parsed: ParsedMessage | None = None
        try:
            parsed = self.relay_verifier.verify(mail.raw, parse_message(mail.raw))
            with self.store.transaction() as tx:
                outcome = self._record(
                    tx, mailbox, folder, uidvalidity, mail, parsed, existing=existing
                )
        except Exception as exc:  # quarantine, never lose the mail nor stop the worker
            outcome = self._quarantine(mailbox, folder, uidvalidity, mail, parsed, exc, existing)
        self._log(outcome)
        return outcome

    # -----------------------------------------------------------------------------------
    def _record(
        self,
        tx: Transaction,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        parsed: ParsedMessage,
        existing: int | None = None,
    ) -> Outcome:
        if existing is None:
            tx.save_folder_state(mailbox, folder, uidvalidity, mail.uid)
        else:
            tx.add_event(existing, "retried", "")
        original = tx.find_duplicate(
            mailbox, parsed.message_id, parsed.fingerprint, parsed.content_hash, exclude=existing
        )
        if original is not None:
            return self._duplicate(
                tx, mailbox, folder, uidvalidity, mail, parsed, original, existing
            )
        box = self.config.mailboxes[mailbox]
        context, parent_pk = self._context(tx, mailbox, box, parsed)
        decision = decide_ar(parsed, context)
        reference, plan, routing, language = None, None, None, None
        if decision.send and decision.recipient:
            reference, plan, routing, language = self._acknowledge(
                tx, mailbox, mail, parsed, decision.recipient
            )
        row = self._row(mailbox, folder, uidvalidity, mail, parsed, decision, reference, plan)
        name = sender_name(parsed, self.config.policy.contact_form_relays)
        transferred = int(plan is not None and plan.transferred_to is not None)
        row = replace(
            row, parent_id=parent_pk, language=language, sender_name=name, transferred=transferred
        )
        message_pk = _save(tx, _with_routing(row, routing, box.service), existing)
        kind = {"acknowledge": "ar_queued", "follow-up": "follow_up"}.get(
            _decision_name(decision), "skipped"
        )
        tx.add_events(
            message_pk,
            ("received", parsed.content_type),
            (kind, ",".join(decision.reasons)),
            *_plan_events(plan),
        )
        if plan is not None:
            _queue(tx, message_pk, mail, plan)
        return Outcome(
            mailbox,
            mail.uid,
            _decision_name(decision),
            decision.reasons,
            reference or decision.follow_up_of,
            parsed.subject,
            message_pk,
            _route_label(plan, routing),
        )

    def _acknowledge(
        self,
        tx: Transaction,
        mailbox: str,
        mail: IncomingMail,
        parsed: ParsedMessage,
        recipient: str,
    ) -> tuple[str, Plan | None, RoutingDecision | None, str | None]:
        """A reference, the routing and what to send (nothing when backfilling)."""
        reference = tx.next_reference(self.config.sender.reference_prefix, mail.internaldate.year)
        facts = routing_input(self.config, mailbox, parsed)
        routing = decide(facts, self.routing) if self.routing is not None else None
        if not self.send:
            return reference, None, routing, facts.language
        plan = self.replies.plan(
            mailbox,
            mail.raw,
            parsed,
            mail.internaldate,
            reference,
            recipient,
            routing,
            facts.language,
        )
        return reference, plan, routing, facts.language

    def _duplicate(
        self,
        tx: Transaction,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        parsed: ParsedMessage,
        original: int,
        existing: int | None,
    ) -> Outcome:
        """A second copy of a recorded mail (same Message-ID and same content): recorded
        as such, linked to the first, and never acknowledged again."""
        row = replace(
            self._base_row(mailbox, folder, uidvalidity, mail, parsed),
            decision="duplicate",
            reasons=("already-recorded",),
            parent_id=original,
        )
        message_pk = _save(tx, row, existing)
        tx.add_event(message_pk, "duplicate", f"copy of message {original}")
        return Outcome(
            mailbox,
            mail.uid,
            "duplicate",
            ("already-recorded",),
            None,
            parsed.subject,
            message_pk,
        )

    def _context(
        self, tx: Transaction, mailbox: str, box: MailboxConfig, parsed: ParsedMessage
    ) -> tuple[PolicyContext, int | None]:
        """The policy's facts about this mail that only the database knows."""
        policy = self.config.policy
        recipient = reply_address(
            parsed, policy.contact_form_relays, policy.missing_return_path == "use_from"
        )
        window = timedelta(hours=policy.rate_limit.window_hours)
        recent = tx.count_recent_ars(mailbox, recipient, self.clock() - window) if recipient else 0
        subject_ref = find_reference(parsed.subject, self.config.sender.reference_prefix)
        thread = tx.acknowledged_in_thread(mailbox, parsed.thread_ids, subject_ref)
        if thread is None and recipient:
            thread = self._same_request(tx, mailbox, recipient, parsed.subject)
        context = policy_context(self.config, mailbox, recent, thread[1] if thread else None)
        return context, thread[0] if thread else None

    def _same_request(
        self, tx: Transaction, mailbox: str, sender: str, subject: str
    ) -> tuple[int, str] | None:
        """A relance without threading: same sender, similar subject, within 10 working days,
        on a message still unanswered."""
        since = self.clock() - timedelta(days=RELANCE_CALENDAR_DAYS)
        for pk, reference, received_at, earlier in tx.unanswered_from(mailbox, sender, since):
            recent = self.calendar.delay(received_at, self.clock()) <= RELANCE_WORKING_DAYS
            if recent and similar_subjects(subject, earlier):
                return pk, reference
        return None

    @staticmethod
    def _base_row(
        mailbox: str, folder: str, uidvalidity: int, mail: IncomingMail, parsed: ParsedMessage
    ) -> NewMessage:
        """What is recorded of any mail, whatever is decided about it."""
        return NewMessage(
            mailbox=mailbox,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=mail.uid,
            message_id=parsed.message_id,
            content_hash=parsed.content_hash,
            fingerprint=parsed.fingerprint,
            received_at=mail.internaldate,
            sender=None,
            subject=parsed.subject,
            in_reply_to=parsed.in_reply_to[0] if parsed.in_reply_to else None,
            decision="skip",
            reasons=(),
            size=max(parsed.size, mail.size),
            defects=(*parsed.defects, *mail.defects),
        )

    def _row(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        parsed: ParsedMessage,
        decision: ArDecision,
        reference: str | None,
        plan: Plan | None,
    ) -> NewMessage:
        return replace(
            self._base_row(mailbox, folder, uidvalidity, mail, parsed),
            sender=decision.recipient,
            decision=_decision_name(decision),
            reasons=decision.reasons,
            reference=reference,
            ar_status=_ar_status(plan, decision, self.send),
            ar_message_id=plan.mails[0].message_id if plan is not None else None,
        )

    def _quarantine(
        self,
        mailbox: str,
        folder: str,
        uidvalidity: int,
        mail: IncomingMail,
        parsed: ParsedMessage | None,
        exc: Exception,
        existing: int | None,
    ) -> Outcome:
        """Record the mail as quarantined, in a transaction of its own.

        The first attempt keeps what was parsed (Message-ID, subject) for the listings;
        should the database refuse even that, a row with only the mail's location and
        hash follows. If that fails too the database itself is unusable: StoreError,
        and the folder's high-water mark stays below this mail, which is read again.
        """
        log.error(
            "quarantined",
            exc_info=exc,
            extra={"mailbox": mailbox, "folder": folder, "uid": mail.uid},
        )
        reason = f"error:{safe_error(exc)}"[:300]
        trace = safe_traceback(exc)
        full = _quarantine_row(mailbox, folder, uidvalidity, mail, parsed, reason)
        minimal = _quarantine_row(mailbox, folder, uidvalidity, mail, None, reason)
        for row in (full, minimal) if parsed is not None else (minimal,):
            try:
                with self.store.transaction() as tx:
                    if existing is None:
                        tx.save_folder_state(mailbox, folder, uidvalidity, mail.uid)
                    message_pk = _save(tx, row, existing)
                    tx.add_event(message_pk, "quarantined", trace)
            except Exception as refused:
                log.error(
                    "quarantine row refused",
                    exc_info=refused,
                    extra={"mailbox": mailbox, "folder": folder, "uid": mail.uid},
                )
                continue
            return Outcome(
                mailbox, mail.uid, "quarantine", (reason,), None, row.subject, message_pk
            )
        raise StoreError(f"mailbox {mailbox}: cannot record UID {mail.uid}, even quarantined")

    @staticmethod
    def _log(outcome: Outcome) -> None:
        log.info(
            "message",
            extra={
                "mailbox": outcome.mailbox,
                "uid": outcome.uid,
                "reference": outcome.reference or "-",
                "decision": outcome.decision,
                "reason": ",".join(outcome.reasons),
            },
        )


def _queue(tx: Transaction, message_pk: int, mail: IncomingMail, plan: Plan) -> None:
    if plan.reoriented_to:
        # Answered by mailbot on receipt: a 0-day delay, whenever the mail is processed.
        tx.record_reply(message_pk, mail.internaldate, True, "automatic:reorientation")
    for queued in plan.mails:
        tx.enqueue(
            message_pk,
            queued.kind,
            queued.recipient,
            queued.envelope_from,
            queued.message_id,
            queued.raw,
        )


def _save(tx: Transaction, row: NewMessage, existing: int | None) -> int:
    if existing is None:
        return tx.insert_message(row)
    tx.update_message(existing, row)
    return existing


def _quarantine_row(
    mailbox: str,
    folder: str,
    uidvalidity: int,
    mail: IncomingMail,
    parsed: ParsedMessage | None,
    reason: str,
) -> NewMessage:
    return NewMessage(
        mailbox=mailbox,
        folder=folder,
        uidvalidity=uidvalidity,
        uid=mail.uid,
        message_id=parsed.message_id if parsed else None,
        content_hash=hashlib.sha256(mail.raw).hexdigest(),
        fingerprint=parsed.fingerprint if parsed else None,
        received_at=mail.internaldate,
        sender=None,
        subject=parsed.subject if parsed else "",
        in_reply_to=None,
        decision="quarantine",
        reasons=(reason,),
        size=max(len(mail.raw), mail.size),
        defects=(*(parsed.defects if parsed else ()), *mail.defects),
    )


def compiled_routing(config: Config) -> CompiledRouting | None:
    if config.routing is None:
        return None
    own = {name: box.service for name, box in config.mailboxes.items()}
    model = load_model(config.routing.model.file) if config.routing.model else None
    return compile_routing(config.routing, own, model)


def routing_input(config: Config, mailbox: str, parsed: ParsedMessage) -> RoutingInput:
    """The facts rules test, from a parsed mail (language detected here, once).

    The text is bounded (the subject by the parser, the body here): routing and language
    detection cost in proportion to what they read.
    """
    relays = config.policy.contact_form_relays
    relayed = recognised_relay(parsed, relays) is not None
    fields = form_fields(parsed.body_text) if relayed else {}
    # Routing reads the citizen's own text; the form's Objet only through form_field rules.
    text = routing_text(parsed.body_text[:ROUTING_BODY_LIMIT], relayed_form=relayed)
    subject = "" if text.from_form else parsed.subject[:SUBJECT_LIMIT]
    return RoutingInput(
        mailbox=mailbox,
        subject=subject,
        body=text.own,
        sender=reply_address(parsed, relays) or parsed.from_address,
        language=detect_language(f"{parsed.subject[:SUBJECT_LIMIT]}\n{parsed.body_text[:2000]}"),
        has_attachment=parsed.has_attachments,
        form_fields=fields,
        quoted=text.quoted,
    )


def _with_routing(row: NewMessage, routing: RoutingDecision | None, own: str) -> NewMessage:
    if routing is None:
        return row
    matched = [{"rule": hit.rule, "detail": hit.detail} for hit in routing.rule_hits if hit.matched]
    recorded: dict[str, object] = {"hits": matched, "scores": dict(routing.scores)}
    if routing.model:  # issue 13: the model's view, and a weak decision held "to check"
        recorded |= {"model": routing.model, "confidence": dict(routing.confidence)}
    if routing.to_check:  # kept at the mailbox's own service; the suggestion is recorded
        recorded |= {
            "to_check": True,
            "suggested": {"service": routing.service, "reorient": routing.reorient},
        }
    return replace(
        row,
        service=own if routing.to_check else routing.service,
        category=routing.category,
        priority=routing.priority,
        reorient=None if routing.to_check else routing.reorient,
        routing=json.dumps(recorded, ensure_ascii=False),
        to_check=int(routing.to_check),
    )


def _route_label(plan: Plan | None, routing: RoutingDecision | None) -> str:
    if plan is not None and plan.transferred_to:
        return f"→ {plan.transferred_to}"
    if plan is not None and plan.reoriented_to:
        return f"↪ {plan.reoriented_to}"
    if routing is not None and routing.to_check:
        return f"? {routing.service} (to check)"
    return routing.service if routing else ""


def _plan_events(plan: Plan | None) -> list[tuple[str, str]]:
    if plan is None:
        return []
    found = []
    if plan.transferred_to:
        found.append(("transferred", plan.transferred_to))
    if plan.reoriented_to:
        # Answered at once by mailbot: counted as an automatic reply with a 0-day delay.
        found.append(("reoriented", plan.reoriented_to))
    return found


def sender_name(parsed: ParsedMessage, relays: Sequence[ContactFormRelay]) -> str | None:
    """The citizen's name as their mail client shows it, when it looks like a name."""
    name = parsed.from_name
    relay = recognised_relay(parsed, relays)
    if relay is not None and parsed.from_address == relay.address:
        name = parsed.reply_to_names[0] if parsed.reply_to_names else ""
    name = name.strip().strip("\"'")
    if not name or "@" in name or not any(c.isalpha() for c in name):
        return None
    return name


def policy_context(
    config: Config, mailbox: str, recent_ars: int = 0, thread_reference: str | None = None
) -> PolicyContext:
    """The policy's view of the configuration, plus the facts the database supplied."""
    box = config.mailboxes[mailbox]
    policy = config.policy
    return PolicyContext(
        mailbox_address=box.address,
        mailbox_aliases=frozenset(box.aliases),
        require_addressed=box.require_addressed,
        own_addresses=frozenset(config.own_addresses),
        message_id_domain=config.sender.message_id_domain,
        loop_header_value=config.sender.loop_header_value,
        contact_form_relays=policy.contact_form_relays,
        extra_system_senders=tuple(policy.extra_system_senders),
        recent_ars_to_recipient=recent_ars,
        max_ars_per_window=policy.rate_limit.max_per_sender,
        known_thread_reference=thread_reference,
        from_without_return_path=policy.missing_return_path == "use_from",
    )


def _ar_status(plan: Plan | None, decision: ArDecision, send: bool) -> str:
    if plan is not None:
        return "pending"
    return "backfill" if decision.send and not send else "none"


def _decision_name(decision: ArDecision) -> str:
    if decision.send:
        return "acknowledge"
    if decision.follow_up_of:
        return "follow-up"
    return "skip"
