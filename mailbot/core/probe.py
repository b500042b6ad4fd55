"""The mystery e-mail (issue 16): how a probe mail is marked, and what its AR must show.

A probe mail carries ``X-Mailbot-Probe: <HMAC of its Message-ID>``: intake recognises
mailbot's own probes by it (and by the probe address as envelope sender), so that nobody
else can have a mail left out of the indicators by imitating one. The AR that comes back
must carry, as the law and the audit expect: the tracking reference, the date of receipt,
the answer deadline, the handling service's contacts, and complete headers (threaded on
the probe, marked automatic). Pure: the mails are sent and read by ``mailbot.app.probe``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailbot.core.message import ParsedMessage
from mailbot.core.statuses import ProbeStatus

PROBE_HEADER = "X-Mailbot-Probe"
SUBJECT = "Sonde mailbot : message de test, merci de ne pas en tenir compte"


def mark(secret: str, message_id: str) -> str:
    return hmac.new(secret.encode(), message_id.encode(), hashlib.sha256).hexdigest()


def is_probe(parsed: ParsedMessage, probe_address: str | None, secret: str | None) -> bool:
    """mailbot's own probe: from the probe address, with a valid mark of its Message-ID."""
    if not probe_address or not secret or not parsed.message_id:
        return False
    if (parsed.return_path or "").lower() != probe_address.lower():
        return False
    values = parsed.header(PROBE_HEADER)
    expected = mark(secret, parsed.message_id)
    return bool(values) and hmac.compare_digest(values[0].strip(), expected)


@dataclass(frozen=True)
class Expected:
    """What the AR to one probe must show."""

    message_id: str  # the probe's
    mailbox_address: str
    reference_prefix: str
    contacts: Sequence[str]  # the handling service's name, phone, e-mail


REQUIRED_HEADERS = ("Message-ID", "Date", "From", "To", "Subject", "Auto-Submitted")


def problems(ar: ParsedMessage, expected: Expected) -> list[str]:
    """Everything the AR lacks, in French for the operators' alert (empty: it is right)."""
    found: list[str] = []
    text = " ".join(ar.body_text.split())
    reference = re.compile(rf"\b{re.escape(expected.reference_prefix)}-\d{{4}}-\d{{6}}\b")
    if not reference.search(ar.subject) or not reference.search(text):
        found.append("référence de suivi absente (objet ou corps)")
    if not re.search(r"reçu le \S+", text, re.IGNORECASE):
        found.append("date de réception absente")
    if not re.search(r"au plus tard le \S+", text, re.IGNORECASE):
        found.append("délai de réponse absent")
    missing = [c for c in expected.contacts if " ".join(c.split()) not in text]
    if missing:
        found.append("coordonnées du service absentes : " + ", ".join(missing))
    absent = [h for h in REQUIRED_HEADERS if not ar.header(h)]
    if absent:
        found.append("en-têtes absents : " + ", ".join(absent))
    if expected.message_id not in ar.in_reply_to or expected.message_id not in ar.references:
        found.append("In-Reply-To/References ne citent pas le message de test")
    if ar.header("Auto-Submitted") and not ar.header("Auto-Submitted")[0].startswith("auto-"):
        found.append("Auto-Submitted n'indique pas une réponse automatique")
    return found


def verdict(latency: float | None, found: Sequence[str], late_seconds: float) -> ProbeStatus:
    """No AR: missing; an AR lacking something: wrong; a right one after the bound: late."""
    if latency is None:
        return ProbeStatus.MISSING
    if found:
        return ProbeStatus.WRONG
    if latency > late_seconds:
        return ProbeStatus.LATE
    return ProbeStatus.PASSED


class News(StrEnum):
    """What a probe round tells the operators about one mailbox."""

    FAILING = "failing"  # it failed, after a round that passed (or none): a new incident
    STILL_FAILING = "still-failing"  # it has failed for another whole day
    RECOVERED = "recovered"  # it passed, after rounds that failed


REMIND_EVERY = timedelta(days=1)


def news(failed: bool, failing: tuple[datetime, datetime] | None, now: datetime) -> News | None:
    """One alert per incident, not one per round: an hourly probe failing all night sent
    the operators a mail an hour. ``failing``: when the run of failed rounds just before
    this one began and when its last round was sent (None: the previous round passed).
    A reminder once a day while it lasts; a word when it ends."""
    if failing is None:
        return News.FAILING if failed else None
    if not failed:
        return News.RECOVERED
    first, last = failing
    days_now, days_before = (now - first) // REMIND_EVERY, (last - first) // REMIND_EVERY
    return News.STILL_FAILING if days_now > days_before else None
