"""Is this mail really from the website's contact form? Pure checks, no I/O.

A form relay sends from its own address with the citizen in Reply-To, and only for a
recognised relay does mailbot answer Reply-To. A forger can write any From and Reply-To
(and would then aim our AR, carrying their subject, at a victim), so recognition rests on
what a forger cannot write: the envelope sender the delivering server records, a secret
token, a Received header written by the prefecture's own servers, a DKIM signature. The
token and DKIM results are facts found before the decision (``ParsedMessage.verified``,
filled by ``mailbot.mail.relay_auth``); the envelope and Received checks are made here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from mailbot.config import ContactFormRelay
from mailbot.core.message import ParsedMessage

# "from helo (rdns.example [192.0.2.1])": the parenthesised part is what the receiving
# server saw and resolved; the HELO name before it is whatever the client said.
_RECEIVED_FROM = re.compile(r"^\s*from\s+\S+\s+\(([^)]*)\)", re.IGNORECASE)
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")


def claimed_relays(
    msg: ParsedMessage, relays: Sequence[ContactFormRelay]
) -> list[ContactFormRelay]:
    """The relays this mail says it comes from (by From, or by its envelope sender)."""
    envelope = msg.return_path or ""
    return [
        relay
        for relay in relays
        if msg.from_address == relay.address or envelope in {relay.address, relay.envelope}
    ]


def _received_hosts(value: str) -> tuple[str | None, str | None]:
    """(resolved host name, IP address) of the client a Received header records."""
    found = _RECEIVED_FROM.match(value)
    if not found:
        return None, None
    inside = found.group(1)
    ip = _BRACKETED_IP.search(inside)
    name = inside.split("[", 1)[0].strip().lower() or None
    return (None if name == "unknown" else name), (ip.group(1) if ip else None)


def _matches(entry: str, name: str | None, ip: str | None) -> bool:
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return name is not None and name == entry.lower().rstrip(".")
    try:
        return ip is not None and ipaddress.ip_address(ip) in network
    except ValueError:
        return False


def received_from_relay(msg: ParsedMessage, relay: ContactFormRelay) -> bool:
    """A Received header among the topmost ``received_within`` (the prefecture's own
    servers write those; anything a sender wrote lies below them) records a connection
    from one of ``received_from``."""
    for value in msg.header("received")[: relay.received_within]:
        name, ip = _received_hosts(value)
        if any(_matches(entry, name, ip) for entry in relay.received_from):
            return True
    return False


def relay_checks(msg: ParsedMessage, relay: ContactFormRelay) -> dict[str, bool]:
    """Every required check and whether it passed (for decisions and `mailbot explain`)."""
    results = {
        "envelope": msg.return_path == relay.envelope,
        "token": relay.address in msg.verified.token_relays,
        "received": received_from_relay(msg, relay),
        "dkim": relay.signing_domain in msg.verified.dkim_domains,
    }
    return {check: results[check] for check in relay.require}


def recognised_relay(
    msg: ParsedMessage, relays: Sequence[ContactFormRelay]
) -> ContactFormRelay | None:
    """The relay this mail provably comes from, when it names a citizen in Reply-To."""
    if not msg.reply_to:
        return None
    for relay in claimed_relays(msg, relays):
        if all(relay_checks(msg, relay).values()):
            return relay
    return None


def relay_notes(msg: ParsedMessage, relays: Sequence[ContactFormRelay]) -> tuple[str, ...]:
    """One line per claimed relay: which checks passed, for an agent reading a decision."""
    notes = []
    for relay in claimed_relays(msg, relays):
        checks = relay_checks(msg, relay)
        shown = ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in checks.items())
        notes.append(f"contact-form relay {relay.address}: {shown}")
    return tuple(notes)
