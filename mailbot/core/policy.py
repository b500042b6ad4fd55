"""Whether an incoming mail gets an acknowledgement of receipt (AR): pure rules, no I/O.

The rules are the union of what RFC 3834, Dovecot Pigeonhole's vacation extension and
helpdesk software check before auto-replying. Every rule is evaluated and every hit is
returned, in a fixed order, so that an agent (and ``mailbot explain``) can see exactly why
mailbot stayed silent. Rules look at header *names and keywords*, never at free text that a
citizen could write ("je n'ai pas de réponse", "alistair@..."), to keep false positives out:
a missed AR to a citizen costs more than a rare extra AR to a robot, which the rate limit
and our own Auto-Submitted header already contain.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mailbot.config import ContactFormRelay
from mailbot.core.message import ParsedMessage, single_line
from mailbot.core.relays import claimed_relays, recognised_relay, relay_notes

LOOP_HEADER = "X-Mailbot-Loop"

LIST_HEADERS = (
    "list-id",
    "list-owner",
    "list-subscribe",
    "list-post",
    "list-unsubscribe",
    "list-help",
    "list-archive",
    "mailing-list",
    "x-mailing-list",
    "x-ml-name",
    # List servers that announce themselves without List-*: fml and other MLServers,
    # Mailman's own markers, Ecartis.
    "x-mlserver",
    "x-ml-count",
    "x-mailman-version",
    "x-beenthere",
    "x-ecartis-version",
)
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
SUPPRESS_TOKENS = frozenset({"all", "oof", "autoreply"})
# Present with any value: these headers exist only on automatic replies or loops.
VENDOR_MARKERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-ms-exchange-inbox-rules-loop",
    "x-loop",
    "x-fc-machinegenerated",
)
# Subjects of auto replies sent without any header. The colon is required so that a citizen's
# "Absence du bureau des étrangers ?" is not taken for one; "Auto:" is matched only as
# clients write it (exact case, no space) because "Auto : vente de mon véhicule" is a
# plausible citizen subject at a prefecture.
AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:(?i:automatic reply|auto[- ]?reply|auto[- ]?response|r[ée]ponse automatique"
    r"|out of (?:the )?office|absence du bureau|absent(?:\(e\))? du bureau"
    r"|abwesenheitsnotiz|automatische antwort|respuesta autom[áa]tica|risposta automatica)"
    r"\s*:|Auto:)"
)
_SYSTEM_LOCAL = re.compile(
    r"^(?:mailer-?daemon|postmaster|listserv|majordomo|owner-.+|.+-request|.+-owner)$", re.I
)
_NO_REPLY = re.compile(
    r"(?:^|[-_.+])(?:no|do[-_.]?not|ne[-_.]?pas)[-_.]?(?:reply|r[ée]pondre)(?:$|[-_.+0-9])", re.I
)
# Bounce handlers (VERP, Mailman "list-bounces+user=host", ESP "bounce-123-..."). SRS0/SRS1
# addresses are deliberately absent: they are a citizen's address rewritten by a forwarder.
_BOUNCE = re.compile(r"^bounce|\+bounce|bounces\+|bounce-|[-_.]bounces?$", re.I)
_SYSTEM_DISPLAY_NAME = re.compile(
    r"\b(?:mailer[- ]daemon|mail delivery (?:system|subsystem))\b", re.I
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: longer is no mailbox we can write to
MAX_ANSWER_ADDRESSES = 4  # the AR's address, From and two of Reply-To: a citizen's own
# Abuse and feedback-loop reports that are not multipart/report (ARF): a provider's report
# with the reported mail attached. Markers are headers only such reports carry, an ARF
# Feedback-Type field, or an abuse desk's own address; a citizen forwarding a suspicious
# mail as an attachment has none of these.
ATTACHED_MAIL = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})
FEEDBACK_HEADERS = ("x-feedback-type", "feedback-type", "x-hmxmroriginalrecipient", "x-arf")
_ABUSE_DESK = re.compile(
    r"^(?:abuse|fbl|feedback-?loop|arf|spam-?reports?|scomp)(?:[-_.+][^@]*)?$", re.IGNORECASE
)
_KEYWORD = re.compile(r"\s*([^\s;,(]*)")

# Hits that say nothing about the mail being automatic: with only these, a mail in an
# acknowledged thread is a citizen writing again (a follow-up), not a robot answering our AR.
HUMAN_HITS = frozenset({"follow-up", "rate-limited", "not-addressed"})


@dataclass(frozen=True)
class PolicyContext:
    """What the caller knows beyond the message itself (configuration and database facts)."""

    mailbox_address: str
    mailbox_aliases: frozenset[str]
    require_addressed: bool
    own_addresses: frozenset[str]
    message_id_domain: str
    loop_header_value: str
    contact_form_relays: tuple[ContactFormRelay, ...]
    extra_system_senders: tuple[str, ...] = ()
    recent_ars_to_recipient: int = 0
    max_ars_per_window: int = 3
    known_thread_reference: str | None = None
    # policy.missing_return_path: use_from — mail with no Return-Path header is answered
    # at its From address (sites whose delivery drops the header), robot rules still apply.
    from_without_return_path: bool = False


@dataclass(frozen=True)
class ArDecision:
    """The decision and every rule that led to it (``("citizen-mail",)`` when sending)."""

    send: bool
    reasons: tuple[str, ...]
    recipient: str | None
    follow_up_of: str | None = None
    notes: tuple[str, ...] = ()  # facts explaining a hit that are not rule ids


def find_reference(subject: str, prefix: str) -> str | None:
    """Our tracking reference (``SM-2026-000123``) in a subject, if the citizen kept it.

    Bounded on both sides so ``XSM-2026-000123`` or a longer number is not mistaken for
    ours; case-insensitive because people retype it, returned in canonical form.
    """
    found = re.search(
        rf"(?<![^\W_]){re.escape(prefix)}-(\d{{4}})-(\d{{6,}})(?!\d)", subject, re.IGNORECASE
    )
    return f"{prefix}-{found.group(1)}-{found.group(2)}" if found else None


def _usable(address: str | None) -> bool:
    """local@domain, no control characters; blanks only inside a quoted local part."""
    local, _, domain = (address or "").rpartition("@")
    if len(address or "") > MAX_ADDRESS:
        return False
    if not (local and domain) or _CONTROL.search(local + domain) or " " in domain:
        return False
    return " " not in local or (len(local) > 1 and local[0] == local[-1] == '"')


def reply_address(
    msg: ParsedMessage, relays: Sequence[ContactFormRelay], use_from: bool = False
) -> str | None:
    """RFC 3834 §4: the return path; Reply-To only for a recognised contact-form relay.

    Reply-To is otherwise ignored: anyone can set it, and answering it would let a sender
    aim our ARs at a third party. A mail merely claiming to be the relay (a forged From)
    is answered like any other, at its return path. ``use_from``
    (policy.missing_return_path: use_from) answers the From address of mail delivered
    with no Return-Path header at all.
    """
    found = msg.reply_to[0] if recognised_relay(msg, relays) else msg.return_path
    if found is None and use_from:
        found = msg.from_address
    return found if _usable(found) else None


def answer_addresses(
    msg: ParsedMessage, relays: Sequence[ContactFormRelay], use_from: bool = False
) -> tuple[str, ...]:
    """Where an agent's answer to this mail may be written: ``reply_address`` (where the AR
    goes), and the From and Reply-To an agent's mail client answers, which differ from it
    when the citizen's provider rewrites the envelope (SRS, BATV). Reply-To is trusted here
    as it is not for the AR: this only recognises an answer an agent chose to send.

    A recognised contact-form relay's mail is answered at the citizen it names alone: its
    From is the relay. A relay's address in From or Reply-To is no answer either, even in a
    mail merely claiming to be the relay. At most ``MAX_ANSWER_ADDRESSES``, the first kept.
    """
    first = reply_address(msg, relays, use_from)
    if first is None or recognised_relay(msg, relays) is not None:
        return (first,) if first else ()
    relay_addresses = {a.lower() for r in relays for a in (r.address, r.envelope)}
    others = (a for a in (msg.from_address, *msg.reply_to) if a not in relay_addresses)
    return tuple(dict.fromkeys((first, *filter(_usable, others))))[:MAX_ANSWER_ADDRESSES]


def _senders(msg: ParsedMessage, ctx: PolicyContext) -> set[str]:
    """Addresses that speak for the sender; a relay's own address is replaced by the citizen's."""
    found = {msg.from_address, msg.return_path or ""}
    relay = recognised_relay(msg, ctx.contact_form_relays)
    if relay is not None:
        found = (found - {relay.address, relay.envelope}) | {msg.reply_to[0]}
    return found - {""}


def _keyword(value: str) -> str:
    """The leading keyword of a structured value: ``"auto-replied; owner=x"`` → ``auto-replied``."""
    match = _KEYWORD.match(value)
    return match.group(1).lower() if match else ""


def _auto_submitted(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return any(_keyword(v) != "no" for v in msg.header("auto-submitted"))


def _mailing_list(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return any(msg.has_header(name) for name in LIST_HEADERS)


def _precedence(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    values = (*msg.header("precedence"), *msg.header("x-precedence"))
    return any(_keyword(v) in BULK_PRECEDENCE for v in values)


def _auto_response_suppress(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    tokens = {
        token.lower()
        for value in msg.header("x-auto-response-suppress")
        for token in re.split(r"[\s,;]+", value)  # "OOF, AutoReply" or "OOF;AutoReply"
    }
    return bool(tokens & SUPPRESS_TOKENS)


def _vendor_autoreply(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return (
        any(msg.has_header(name) for name in VENDOR_MARKERS)
        or any(_keyword(v) == "reply" for v in msg.header("x-autogenerated"))
        or any(_keyword(v) == "vacation" for v in msg.header("x-apple-action"))
    )


def _autoreply_subject(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    # NFC: "Réponse automatique" written with a combining accent (NFD) reads the same.
    return bool(AUTOREPLY_SUBJECT.match(unicodedata.normalize("NFC", msg.subject)))


def _delivery_report(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return msg.content_type == "multipart/report" or msg.has_header("x-failed-recipients")


def _feedback_report(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    """An abuse or feedback-loop report sent as multipart/mixed with the mail attached."""
    if not ATTACHED_MAIL.intersection(msg.parts[1:]):
        return False
    if msg.feedback_type is not None or any(msg.has_header(h) for h in FEEDBACK_HEADERS):
        return True
    return any(_ABUSE_DESK.match(a.rpartition("@")[0]) for a in _senders(msg, ctx))


def is_system_address(address: str, extra_patterns: tuple[str, ...] = ()) -> bool:
    """MAILER-DAEMON, list robots, no-reply and bounce handlers: nobody reads what we send."""
    local = address.rpartition("@")[0] or address  # "MAILER-DAEMON" may come without a domain
    if _SYSTEM_LOCAL.match(local) or _NO_REPLY.search(local) or _BOUNCE.search(local):
        return True
    return any(fnmatchcase(address.lower(), pattern.lower()) for pattern in extra_patterns)


def _system_sender(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    if any(is_system_address(a, ctx.extra_system_senders) for a in _senders(msg, ctx)):
        return True
    relay = recognised_relay(msg, ctx.contact_form_relays)
    if relay is not None and msg.from_address == relay.address:
        return False  # the relay's display name ("Site internet") is not the sender's
    # Bounces often come as "From: MAILER-DAEMON <>": only the display name is left.
    name = msg.from_name.strip()
    single_word = bool(name) and not re.search(r"\s", name)
    return bool(_SYSTEM_DISPLAY_NAME.search(name)) or (single_word and is_system_address(name))


def _own_address(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    ours = {a.lower() for a in (*ctx.own_addresses, *ctx.mailbox_aliases, ctx.mailbox_address)}
    return bool(_senders(msg, ctx) & ours)


def _own_loop_header(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return msg.has_header(LOOP_HEADER)


def _own_message_id(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    _, at, domain = (msg.message_id or "").strip("<>").rpartition("@")
    return bool(at) and domain.lower() == ctx.message_id_domain.lower()


def _not_addressed(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    if not ctx.require_addressed:
        return False
    mailbox = {a.lower() for a in (*ctx.mailbox_aliases, ctx.mailbox_address)}
    return not mailbox & {*msg.to, *msg.cc, *msg.resent_to}


def _unverified_relay(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    """Claims to be the form relay, names someone in Reply-To, fails the relay's checks and
    would be answered at the relay itself: a forgery (or a misconfigured check), never a
    citizen to answer. (With any other return path it is answered there, as usual.)"""
    if not msg.reply_to or recognised_relay(msg, ctx.contact_form_relays):
        return False
    envelope = msg.return_path or ""
    return any(
        envelope in {relay.address, relay.envelope}
        for relay in claimed_relays(msg, ctx.contact_form_relays)
    )


def _rate_limited(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return ctx.recent_ars_to_recipient >= ctx.max_ars_per_window


def _follow_up(msg: ParsedMessage, ctx: PolicyContext) -> bool:
    return ctx.known_thread_reference is not None


Rule = Callable[[ParsedMessage, PolicyContext], bool]

RULES: tuple[tuple[str, Rule], ...] = (
    ("auto-submitted", _auto_submitted),
    ("mailing-list", _mailing_list),
    ("precedence", _precedence),
    ("auto-response-suppress", _auto_response_suppress),
    ("vendor-autoreply", _vendor_autoreply),
    ("autoreply-subject", _autoreply_subject),
    ("delivery-report", _delivery_report),
    ("feedback-report", _feedback_report),
    ("system-sender", _system_sender),
    ("own-address", _own_address),
    ("own-loop-header", _own_loop_header),
    ("own-message-id", _own_message_id),
    ("not-addressed", _not_addressed),
    ("unverified-relay", _unverified_relay),
    ("rate-limited", _rate_limited),
    ("follow-up", _follow_up),
)
RULE_IDS = ("null-return-path", "no-return-path", *(rid for rid, _ in RULES), "no-recipient")


def _loop_note(msg: ParsedMessage, ctx: PolicyContext) -> tuple[str, ...]:
    """Whose loop header it is: ours, or another mailbot's (worth telling an agent)."""
    values = msg.header(LOOP_HEADER)
    if not values:
        return ()
    value = single_line(values[0])[:200]
    whose = "ours" if value.lower() == ctx.loop_header_value.lower() else "foreign"
    return (f"{LOOP_HEADER}: {value} ({whose})",)


def decide_ar(msg: ParsedMessage, ctx: PolicyContext) -> ArDecision:
    """Evaluate every rule; an AR goes out only when none fires.

    ``follow_up_of`` is set only when the mail in an acknowledged thread looks human: an
    out-of-office answering our AR is in the thread too, but it is not the citizen writing
    again and must not be recorded as a follow-up.
    """
    hits: list[str] = []
    if msg.return_path == "":
        hits.append("null-return-path")  # a bounce or notification (RFC 3834 §2, RFC 5321)
    elif msg.return_path is None and not ctx.from_without_return_path:
        hits.append("no-return-path")
    hits += [rule_id for rule_id, rule in RULES if rule(msg, ctx)]
    recipient = reply_address(msg, ctx.contact_form_relays, ctx.from_without_return_path)
    if not hits and recipient is None:
        hits.append("no-recipient")
    if not hits:
        notes = relay_notes(msg, ctx.contact_form_relays)
        return ArDecision(True, ("citizen-mail",), recipient, notes=notes)
    human = set(hits) <= HUMAN_HITS
    follow_up_of = ctx.known_thread_reference if human else None
    notes = (*_loop_note(msg, ctx), *relay_notes(msg, ctx.contact_form_relays))
    return ArDecision(False, tuple(hits), recipient, follow_up_of, notes)


_SUBJECT_PREFIX = re.compile(r"^\s*((re|tr|fw|fwd|rep|ref|relance|rappel)\s*:\s*)+", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def _subject_words(subject: str) -> set[str]:
    stripped = _SUBJECT_PREFIX.sub("", subject.casefold())
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", stripped) if not unicodedata.combining(c)
    )
    return set(_WORD.findall(plain))


def similar_subjects(a: str, b: str, threshold: float = 0.5) -> bool:
    """Two subjects about the same request: most of their words shared (Jaccard ≥ 0.5),
    prefixes like "Re:" or "Relance :" ignored; too-short subjects never match."""
    words_a, words_b = _subject_words(a), _subject_words(b)
    if len(words_a) < 2 or len(words_b) < 2:
        return False
    return len(words_a & words_b) / len(words_a | words_b) >= threshold
