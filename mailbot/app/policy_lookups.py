"""What the AR policy (``core/policy``) is told of a mail that only the database knows: the
sender's recent ARs (its rate limit) and the message the mail follows up (its thread, a
reference in its subject, or a relance: same sender, similar subject, within
RELANCE_WORKING_DAYS); and whether it is a probe, which is neither."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from mailbot.app.intake_setup import IntakeSetup
from mailbot.app.recording import Direct
from mailbot.core.facts import policy_context
from mailbot.core.incoming import IncomingMail
from mailbot.core.message import ParsedMessage
from mailbot.core.policy import (
    ArDecision,
    PolicyContext,
    decide_ar,
    find_reference,
    reply_address,
    similar_subjects,
)
from mailbot.core.probe import is_probe

RELANCE_WORKING_DAYS = 10


class Policy(NamedTuple):
    """The policy's verdict on a mail: a probe or not, the AR decision, and the message
    whose follow-up it is (None if none)."""

    probe: bool
    decision: ArDecision
    parent_pk: int | None


class PolicyLookups(IntakeSetup):
    """The policy's verdict on a mail, with what the database knows of it."""

    def _policy(
        self, rec: Direct, mailbox: str, mail: IncomingMail, parsed: ParsedMessage
    ) -> Policy:
        """The AR decision on this mail (and whether it is a probe, and the message it is
        a follow-up of)."""
        probe = self.probe is not None and is_probe(parsed, *self.probe)
        context, parent_pk = self._context(rec, mailbox, parsed, mail.internaldate, probe)
        return Policy(probe, decide_ar(parsed, context), parent_pk)

    def _context(
        self,
        rec: Direct,
        mailbox: str,
        parsed: ParsedMessage,
        received: datetime,
        probe: bool = False,
    ) -> tuple[PolicyContext, int | None]:
        """The policy's facts about this mail that only the database knows. A probe is
        never rate-limited nor a relance: every one of them must get its AR."""
        if probe:
            return policy_context(self.config, mailbox, 0, None), None
        policy = self.config.policy
        recipient = reply_address(parsed, policy.contact_form_relays, policy.answers_from)
        # The window ends at this mail's arrival, not now: a backlog read days later (a
        # stopped poller, a retry) limits a robot's ARs as a live poll would have.
        window = timedelta(hours=policy.rate_limit.window_hours)
        recent = rec.recent_ars(mailbox, recipient, received - window, received) if recipient else 0
        subject_ref = find_reference(parsed.subject, self.config.sender.reference_prefix)
        thread = rec.thread(mailbox, parsed.thread_ids, subject_ref)
        if thread is None and recipient:
            thread = self._same_request(rec, mailbox, recipient, parsed.subject, received)
        context = policy_context(self.config, mailbox, recent, thread[1] if thread else None)
        return context, thread[0] if thread else None

    def _same_request(
        self, rec: Direct, mailbox: str, sender: str, subject: str, received: datetime
    ) -> tuple[int, str] | None:
        """A relance without threading: same sender, similar subject, within 10 working days,
        on a message still unanswered."""
        # Measured between the two mails' arrivals, not to now: a backlog or a backfill read
        # later finds the same relances as a live poll.
        since = self.calendar.window_start(received, RELANCE_WORKING_DAYS)
        for pk, reference, received_at, earlier in rec.unanswered(mailbox, sender, since):
            recent = self.calendar.delay(received_at, received) <= RELANCE_WORKING_DAYS
            if recent and similar_subjects(subject, earlier):
                return pk, reference
        return None
