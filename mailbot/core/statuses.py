"""Every status mailbot stores or reports, as enums: the one place where their words are
written. The database holds the values (plain text columns), so a value here is never
renamed without a migration; a test (tests/test_quality.py) refuses these words as bare
string literals anywhere else in ``mailbot/``.
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    """What was decided about an incoming mail (``messages.decision``)."""

    ACKNOWLEDGE = "acknowledge"  # a citizen's mail: an AR (or a re-orientation) is owed
    FOLLOW_UP = "follow-up"  # the citizen writing again in an acknowledged thread: no AR
    SKIP = "skip"  # a robot, a list, a bounce, our own mail...: nothing sent
    DUPLICATE = "duplicate"  # a second copy of a recorded mail
    QUARANTINE = "quarantine"  # processing it raised: a person must look at it


class Unrecorded(StrEnum):
    """An incoming mail's outcome when no row records it (never in ``messages.decision``)."""

    # The database refused even its quarantine row, attempt after attempt: passed over, an
    # event says where it is (``EventKind.PASSED_OVER``).
    PASSED_OVER = "passed-over"


class SentVerdict(StrEnum):
    """What the reader of Sent folders (and of the tracking mailbox) made of a mail."""

    REPLY = "reply"  # a reply to a tracked message, recorded
    IGNORED = "ignored"  # not a reply to a citizen's tracked message
    DUPLICATE = "duplicate"  # a reply already recorded
    ERROR = "error"  # unreadable, passed over


class OutboxStatus(StrEnum):
    """Where a queued mail is (``outbox.status``); see the delivery guarantees."""

    PENDING = "pending"  # waiting for its (next) attempt
    SENDING = "sending"  # committed as leaving: after a crash, it becomes UNCERTAIN
    SENT = "sent"
    UNCERTAIN = "uncertain"  # may have left: never sent again
    # refused for good (5xx, forbidden recipient), or deferred by temporary errors for longer
    # than ``outbox.max_queue_hours`` (then its bytes are kept: an operator may queue it
    # again after an outage, ``app/requeue``)
    FAILED = "failed"


# The statuses a queued mail ends in without mailbot sending it (again): its bytes are
# deleted then, as a sent mail's are (README, "Data kept (privacy)") — except those of a
# mail failed only for lack of time (``Transaction.settle_outbox(keep_bytes=True)``): they
# stay, with the row, until the retention purge, so that an operator can queue it again
# after an outage. An uncertain mail's always go: it may have left, and is never sent again.
GIVEN_UP = frozenset({OutboxStatus.FAILED, OutboxStatus.UNCERTAIN})


class ArStatus(StrEnum):
    """Where a message's AR is (``messages.ar_status``): its outbox status, or why none."""

    NONE = "none"  # no AR is owed
    BACKFILL = "backfill"  # owed once, but recorded by a backfill of history: never sent
    # Owed, but the mail arrived before the failure a restored database was brought back
    # from (``mailbot restored --acknowledged-until``): the lost database presumably sent
    # its AR, so it is never sent again (app/restore).
    RESTORED = "restored"
    PENDING = OutboxStatus.PENDING.value
    SENDING = OutboxStatus.SENDING.value
    SENT = OutboxStatus.SENT.value
    UNCERTAIN = OutboxStatus.UNCERTAIN.value
    FAILED = OutboxStatus.FAILED.value


class OutboxKind(StrEnum):
    """What a queued mail is (``outbox.kind``)."""

    AR = "ar"  # the AR (or AR + transfer notice, or re-orientation): its status is the AR's
    FORWARD = "forward"  # a citizen's mail transferred to a service
    NOTICE = "notice"  # the transfer notice to the citizen after an agent's transfer
    REPLY = "reply"  # an agent's reply (standard or free)
    DIGEST = "digest"  # the daily deadline alerts to a service
    REPORT = "report"  # the weekly or monthly report to management
    PROBE_ALERT = "probe_alert"  # the probe found an AR missing, late or wrong: to operators

    @property
    def at_most_once(self) -> bool:
        """Whether this mail goes to a citizen (AR, notice, reply): sent at most once — one
        whose send a crash interrupted is 'uncertain', never sent again, as two ARs are
        worse than one lost and flagged. The others (forward, digest, report, probe alert)
        go to configured service or operator addresses and are sent at least once: one a
        crash interrupted goes back to the queue once no live delivery can be sending it.
        A second copy in a service's mailbox is harmless; a forward lost is a citizen's mail
        the service never sees (app/delivery). A kind added later is at most once unless
        listed in ``_INTERNAL``: a second copy is the one mistake that cannot be taken back."""
        return self not in _INTERNAL


# The kinds sent to configured service or operator addresses only, at least once. Listed,
# rather than the citizens' kinds: a new kind forgotten here is at most once, the safe side.
_INTERNAL = frozenset(
    {OutboxKind.FORWARD, OutboxKind.DIGEST, OutboxKind.REPORT, OutboxKind.PROBE_ALERT}
)
# The kinds sent at most once, and the others (``OutboxKind.at_most_once``).
AT_MOST_ONCE = tuple(kind for kind in OutboxKind if kind.at_most_once)
AT_LEAST_ONCE = tuple(kind for kind in OutboxKind if not kind.at_most_once)


class EventKind(StrEnum):
    """What an event records (``events.kind``)."""

    RECEIVED = "received"
    AR_QUEUED = "ar_queued"
    FOLLOW_UP = "follow_up"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    RETRIED = "retried"
    TRANSFERRED = "transferred"  # to a service: by the routing at receipt, or by an agent
    REORIENTED = "reoriented"
    REPLY = "reply"  # the first substantive answer to the citizen (Sent, tracking, mailbot)
    REPLY_QUEUED = "reply_queued"  # an agent's reply, queued
    REPLY_SENT = "reply_sent"  # ... and accepted by the SMTP server: it counts as the reply
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # by phone, at the counter, by letter
    AR_SENT = "ar_sent"
    FORWARD_SENT = "forward_sent"
    NOTICE_SENT = "notice_sent"
    DIGEST_SENT = "digest_sent"
    REPORT_SENT = "report_sent"
    SEND_DEFERRED = "send_deferred"
    SEND_FAILED = "send_failed"
    SEND_UNCERTAIN = "send_uncertain"
    # A mail failed for lack of time (an SMTP outage longer than ``outbox.max_queue_hours``)
    # put back in the queue by an operator (``mailbot outbox retry --failed``).
    SEND_REQUEUED = "send_requeued"
    ROUTING_CORRECTED = "routing_corrected"  # an agent changed the service or category
    UIDVALIDITY_CHANGED = "uidvalidity_changed"
    # A database restored from a backup (``mailbot restored``): without a message, per
    # folder, the bound set and how many mails the polls then recorded without AR; and per
    # message recorded so, the AR the lost database presumably sent (``AR_PRESUMED_SENT``,
    # in place of ``ar_queued``).
    RESTORED = "restored"
    AR_PRESUMED_SENT = "ar_presumed_sent"
    SENT_UNREADABLE = "sent_unreadable"
    # An incoming mail the database would not record even quarantined, attempt after
    # attempt: passed over (no message; the detail says where it is), for a person.
    PASSED_OVER = "passed_over"
    # A mail passed over that a person handled outside mailbot (the server will not read
    # it, it was answered by hand): no message either; the detail names the passed_over
    # event it closes, who closed it and why. That mail leaves the lists and the status.
    PASSED_OVER_DISMISSED = "passed_over_dismissed"
    ASSIGNED = "assigned"  # an agent took a message, or was given it (console)
    NO_REPLY_NEEDED = "no_reply_needed"  # closed without a reply: spam, a duplicate...
    # Closed without a reply, then the citizen wrote again about it; or answered, then the
    # citizen wrote again: back in the queue as new mail to read (``written_again_at``).
    REOPENED = "reopened"
    # An agent read the citizen's mail after the answer and found nothing to answer: the
    # message leaves the queue again (``written_again_at`` cleared), its answer still counts.
    FOLLOW_UP_READ = "follow_up_read"
    PROBE_ALERT_SENT = "probe_alert_sent"
    # A mail of ours to the citizen (AR, transfer notice, reply) bounced for good: a
    # delivery report that names it came back (core/bounces, app/intake). On the citizen's
    # message; the detail (JSON) says which mail, when it left, the status and diagnostic.
    BOUNCED = "bounced"

    @classmethod
    def sent(cls, kind: OutboxKind) -> EventKind:
        """The event recorded when a mail of this kind was accepted (``ar`` → ``ar_sent``)."""
        return cls(f"{kind.value}_sent")


# The events that answer a message (an agent's reply, mailbot's sending of it, a reply
# found in Sent, answered otherwise, closed without a reply): a form shown before one of
# them must not send (collision), and only they move the answer form's state.
ANSWERS = frozenset(
    {
        EventKind.REPLY_QUEUED,
        EventKind.REPLY_SENT,
        EventKind.REPLY,
        EventKind.ANSWERED_ELSEWHERE,
        EventKind.NO_REPLY_NEEDED,
    }
)


class Attention(StrEnum):
    """Why a citizen's mail left without an AR needs a person (quarantine list, alerts)."""

    QUARANTINE = Decision.QUARANTINE.value  # processing it raised
    NO_RETURN_PATH = "no-return-path"  # no Return-Path header, under missing_return_path: skip


class NoReplyReason(StrEnum):
    """Why a citizen's message needs no reply (``messages.no_reply``): it then leaves the
    queue and the indicators, and the weekly report lists it."""

    SPAM = "spam"  # unsolicited or abusive mail
    DUPLICATE = "duplicate"  # the same request sent again, answered in the other thread
    NO_QUESTION = "no-question"  # thanks, information only: nothing is asked
    OTHER = "other"  # said in the reason


class WorkerRole(StrEnum):
    """What kind of process a ``workers`` row is (issue 16: several workers, one database)."""

    WORKER = "worker"  # `mailbot run` or `poll --once`: takes mailbox leases


class ProbeStatus(StrEnum):
    """The outcome of one probe mail (``probes.status``): did its AR come, on time, right?"""

    AWAITING = "awaiting"  # sent, the AR not checked yet
    PASSED = "passed"  # the AR came within the deadline and says what it must
    LATE = "ar-late"  # the AR came after the deadline
    MISSING = "ar-missing"  # no AR by the time the probe stopped waiting
    WRONG = "ar-wrong"  # an AR came, but lacks the reference, a date, a contact, a header
    NOT_SENT = "not-sent"  # the probe mail itself could not be sent

    @property
    def failed(self) -> bool:
        return self not in (ProbeStatus.AWAITING, ProbeStatus.PASSED)


class Health(StrEnum):
    """A supervision state, as Nagios/Centreon plugins name them (exit codes 0 to 3)."""

    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        return list(Health).index(self)

    @classmethod
    def worst(cls, *states: Health) -> Health:
        """CRITICAL beats WARNING beats UNKNOWN beats OK (a known problem is reported first)."""
        order = (cls.OK, cls.UNKNOWN, cls.WARNING, cls.CRITICAL)
        return max(states, key=order.index, default=cls.OK)


DUPLICATE_REASON = "already-recorded"  # the reason recorded with a DUPLICATE decision
