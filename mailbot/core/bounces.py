"""What a delivery report says about a mail we sent: which of our mails, which recipient
failed for good, with which status and diagnostic. Pure parsing, no I/O.

An AR, a transfer notice or an agent's reply the relay accepted may still bounce later
(unknown user, mailbox full, domain gone): the report comes back to the mailbox, where the
policy skips it (``delivery-report``, ``null-return-path``, ``system-sender``). Read here,
it tells the agents that the citizen never received our mail (``app/intake``).

Two kinds of reports, as Mailman reads them:

* an RFC 3464 DSN (``multipart/report; report-type=delivery-status``: Postfix, Exim,
  Exchange, Gmail...): its ``message/delivery-status`` part gives, per recipient, the
  ``Final-Recipient``/``Original-Recipient``, the ``Action`` and ``Status`` and the remote
  server's ``Diagnostic-Code``, read with the standard library;
* a non-standard bounce (qmail, old Exchange, Yahoo...): the failed addresses come from
  flufl.bounce's detectors (Mailman's), the status and diagnostic from the text when it
  gives one.

Our mail is named by its Message-ID, in the returned headers (``text/rfc822-headers`` or
``message/rfc822``), or, for a text bounce, in the copy quoted in its body. Only a
permanent failure counts (``Action: failed``, a 5.x.x status): a delay (4.x.x,
``Action: delayed``) is no bounce, the relay is still trying.
"""

from __future__ import annotations

import email
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from enum import StrEnum

from mailbot.core.message import clean_text, single_line

# flufl.bounce logs each detector it runs at INFO: noise in a worker's log.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

MAX_DIAGNOSTIC = 200  # a remote server's text: shown to agents, kept short
MAX_MESSAGE_IDS = 4  # the Message-IDs looked up per report: one is the rule
MAX_FAILURES = 8  # a report about one of our mails names one recipient; bounded anyway
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_MESSAGE_ID_LINE = re.compile(r"^[ \t>]*message-id:[ \t]*(<[^<>\s]{3,250}>)", re.I | re.M)
_ADDRESS = re.compile(r"<?[^\s<>@;:,]+@[^\s<>@;:,]+>?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# qmail and others quote the mail below a line like this one: the diagnostic is above it.
_COPY_BELOW = re.compile(
    r"^-*\s*(?:below this line is a copy of the message|original message follows"
    r"|this is a copy of the message)",
    re.I | re.M,
)


class DsnAction(StrEnum):
    """A DSN recipient's ``Action`` (RFC 3464 §2.3.3)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True)
class Failure:
    """One recipient the report says failed for good: its address (lower case), the
    enhanced status (``5.1.1``, ``""`` when the report gives none) and the remote server's
    diagnostic (one line, at most ``MAX_DIAGNOSTIC`` characters, addresses masked)."""

    recipient: str
    status: str
    diagnostic: str


@dataclass(frozen=True)
class DeliveryReport:
    """A bounce's facts: the Message-IDs of the returned mail and the permanent failures.
    ``delayed``: the report only says delivery is late (no failure: not a bounce)."""

    message_ids: tuple[str, ...]
    failures: tuple[Failure, ...]
    delayed: bool = False

    @property
    def bounced(self) -> bool:
        return bool(self.failures)


def read_report(raw: bytes) -> DeliveryReport | None:
    """The report in this mail, or None when it says nothing of a failure or a delay.

    Never raises on a malformed report: a bounce is a remote robot's text, and one that
    cannot be read stays a skipped mail as before."""
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
        found = _dsn_failures(msg)
        failures, delayed = found if found is not None else _text_failures(msg)
        ids = _returned_ids(msg)
    except Exception:  # a remote robot's malformed text is no error of ours
        return None
    if not failures and not delayed:
        return None
    return DeliveryReport(ids, tuple(failures[:MAX_FAILURES]), delayed and not failures)


def _dsn_failures(msg: Message) -> tuple[list[Failure], bool] | None:
    """The permanent failures of a ``message/delivery-status`` part, and whether any
    recipient is only delayed; None when the mail has no such part (not a DSN)."""
    status_part = next(
        (p for p in msg.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return None
    blocks = status_part.get_payload()
    if not isinstance(blocks, list):
        return None
    failures: list[Failure] = []
    delayed = False
    # The first block is per message, the others per recipient.
    for block in (b for b in blocks[1:] if isinstance(b, Message)):
        action = _field(block, "action").lower()
        status = _status(_field(block, "status"))
        if action == DsnAction.DELAYED or (not action and status.startswith("4")):
            delayed = True
            continue
        failed = action == DsnAction.FAILED and not status.startswith("4")
        if failed or (not action and status.startswith("5")):
            failures.extend(_recipient_failures(block, status))
    return failures, delayed


def _recipient_failures(block: Message, status: str) -> list[Failure]:
    """A failed recipient's block: one Failure per address it names (the final one, and
    the original when it differs: a forward of the citizen's may have rewritten it)."""
    diagnostic = diagnostic_text(_field(block, "diagnostic-code"))
    addresses = (
        _address(_field(block, name)) for name in ("final-recipient", "original-recipient")
    )
    return [Failure(a, status, diagnostic) for a in dict.fromkeys(addresses) if a]


def _text_failures(msg: Message) -> tuple[list[Failure], bool]:
    """A non-standard bounce: flufl.bounce's detectors find the addresses; the status and
    diagnostic are the text's first line with a 5.x.x code, above the quoted copy.
    flufl.bounce is imported here, not with the module: its detectors are ~16 ms of every
    start (the time to a first mail, issue 14) for the rare bounce that is no DSN."""
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(msg)
    text = _COPY_BELOW.split(_body_text(msg), maxsplit=1)[0]
    status, line = _first_status(text)
    addresses = {_address(a.decode("utf-8", "replace")) for a in permanent}
    addresses.update(_address(a) for a in _header_addresses(msg) if not temporary)
    failures = [Failure(a, status, diagnostic_text(line)) for a in sorted(addresses) if a]
    return failures, bool(temporary)


def _header_addresses(msg: Message) -> list[str]:
    """``X-Failed-Recipients`` (Exim, Gmail): the addresses the server gave up on."""
    return [a for value in msg.get_all("x-failed-recipients", []) for a in str(value).split(",")]


def _first_status(text: str) -> tuple[str, str]:
    """The first permanent enhanced status in a bounce's text, and its line."""
    for line in text.splitlines():
        found = _STATUS.search(line)
        if found and found.group(1) == "5":
            return found.group(0), line
    return "", ""


def _returned_ids(msg: Message) -> tuple[str, ...]:
    """The Message-IDs of the mail the report is about: the returned headers' (a
    ``text/rfc822-headers`` or ``message/rfc822`` part), else those quoted in its text."""
    found: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("text/rfc822-headers", "message/rfc822-headers"):
            headers = HeaderParser(policy=compat32).parsestr(_text(part))
            found.append(str(headers.get("message-id", "")))
        elif kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found.append(str(inner[0].get("message-id", "")))
    if not any(found):
        found = _MESSAGE_ID_LINE.findall(_body_text(msg))
    ids = (single_line(i).strip() for i in found)
    return tuple(dict.fromkeys(i for i in ids if i.startswith("<") and i.endswith(">")))[
        :MAX_MESSAGE_IDS
    ]


def diagnostic_text(value: str) -> str:
    """A remote server's diagnostic as agents may read it: its type (``smtp;``) dropped,
    CR/LF and control characters gone, addresses masked (the citizen's, the server's),
    at most ``MAX_DIAGNOSTIC`` characters."""
    text = _CONTROL.sub(" ", clean_text(value))
    kind, semi, rest = text.partition(";")
    if semi and re.fullmatch(r"\s*[A-Za-z][\w-]{0,15}\s*", kind):
        text = rest
    text = _ADDRESS.sub("<adresse>", " ".join(text.split()))
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 1] + "…"


def _status(value: str) -> str:
    found = _STATUS.search(value)
    return found.group(0) if found else ""


def _field(block: Message, name: str) -> str:
    return single_line(str(block.get(name, "")))


def _address(value: str) -> str:
    """``rfc822; Jean@Example.NET`` → ``jean@example.net`` ("" when none)."""
    _, semi, rest = value.partition(";")
    text = (rest if semi else value).strip().strip("<>").strip()
    return text.lower() if "@" in text and " " not in text else ""


def _text(part: Message) -> str:
    """A text part decoded (its charset, or Latin-1: never an error)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1")


def _body_text(msg: Message) -> str:
    """The report's text parts, one after the other (the notice, a quoted copy)."""
    return "\n".join(
        _text(p)
        for p in msg.walk()
        if p.get_content_maintype() == "text" and p.get_content_type() != "text/html"
    )


# What an agent reads of a status (the console's alert, ``mailbot unanswered``).
_REASONS = (
    ("5.1.1", "adresse inconnue"),
    ("5.1.10", "domaine sans messagerie"),
    ("5.1.2", "domaine inconnu"),
    ("5.4.4", "domaine introuvable"),
    ("5.2.2", "boîte aux lettres pleine"),
    ("5.2.1", "boîte aux lettres désactivée"),
    ("5.1.6", "adresse qui n'existe plus"),
    ("5.2.", "boîte aux lettres indisponible"),
    ("5.1.", "adresse refusée"),
    ("5.7.", "refusé par le serveur du destinataire"),
)


def reason_fr(status: str) -> str:
    """A permanent failure's status in a few French words (« adresse inconnue »)."""
    for prefix, words in _REASONS:
        if status == prefix or (prefix.endswith(".") and status.startswith(prefix)):
            return words
    return "distribution impossible"


def failure_of(report: DeliveryReport, recipient: str) -> Failure | None:
    """The report's permanent failure for the recipient of our mail, if it names it: a
    report about our mail's Message-ID but about someone else is none of this mail's."""
    wanted = recipient.strip().lower()
    return next((f for f in report.failures if f.recipient == wanted), None)
