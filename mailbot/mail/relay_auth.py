"""Proofs that a mail comes from the contact-form relay which need secrets or DNS: the
website's token and DKIM signatures. Found once per mail, before the decision, and handed
to the pure policy as ``ParsedMessage.verified``.

Nothing here runs for a mail that does not claim to be a relay (no DNS query per mail).
DKIM keys come from the relay's ``dkim_keys`` files when configured (sites without DNS,
tests), else from DNS through dkimpy; the lookup can also be injected. dkimpy is imported
when a signature is checked (most mail claims no relay; a start need not load it).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from mailbot.config import ContactFormRelay
from mailbot.core.message import ParsedMessage, Verified
from mailbot.core.relays import claimed_relays
from mailbot.errors import SecretError

log = logging.getLogger(__name__)

# "selector._domainkey.example.fr" → the TXT record ("v=DKIM1; k=rsa; p=..."), or None.
KeyLookup = Callable[[str], str | None]
DNS_TIMEOUT_SECONDS = 5


def dns_lookup(name: str) -> str | None:
    import dkim.dnsplug

    found = dkim.dnsplug.get_txt(name.encode(), timeout=DNS_TIMEOUT_SECONDS)
    if found is None:
        return None
    return found.decode() if isinstance(found, bytes) else str(found)


class RelayVerifier:
    def __init__(self, relays: Sequence[ContactFormRelay], lookup: KeyLookup = dns_lookup) -> None:
        self.relays = tuple(relays)
        self.lookup = lookup

    def verify(self, raw: bytes, parsed: ParsedMessage) -> ParsedMessage:
        """``parsed`` with what could be proved about its relay. Never raises: a check that
        cannot be made is a check that failed (the mail is then answered like any other)."""
        claimed = claimed_relays(parsed, self.relays) if parsed.reply_to else []
        if not claimed:
            return parsed
        tokens = frozenset(
            relay.address
            for relay in claimed
            if "token" in relay.require and self._token_ok(parsed, relay)
        )
        signing = [relay for relay in claimed if "dkim" in relay.require]
        domains = self._dkim_domains(raw, parsed, signing) if signing else frozenset()
        return replace(parsed, verified=Verified(dkim_domains=domains, token_relays=tokens))

    @staticmethod
    def _token_ok(parsed: ParsedMessage, relay: ContactFormRelay) -> bool:
        try:
            secret = relay.token().encode()
        except SecretError as exc:
            log.error("contact-form token unreadable", extra={"error": str(exc)})
            return False
        values = parsed.header(relay.token_header)
        return any(hmac.compare_digest(value.strip().encode(), secret) for value in values)

    def _dkim_domains(
        self, raw: bytes, parsed: ParsedMessage, relays: Sequence[ContactFormRelay]
    ) -> frozenset[str]:
        wanted = {relay.signing_domain for relay in relays}
        keys = _configured_keys(relays)
        pinned = {relay.signing_domain for relay in relays if relay.dkim_keys}

        def dnsfunc(name: bytes, timeout: int = DNS_TIMEOUT_SECONDS) -> bytes | None:
            text = name.decode("ascii", "replace").rstrip(".").lower()
            if text in keys:
                return _read_key(keys[text])
            if text.rpartition("._domainkey.")[2] in pinned:
                return None  # a domain with configured keys uses those only
            found = self.lookup(text)
            return found.encode() if found is not None else None

        import dkim

        verified: set[str] = set()
        for index in range(len(parsed.header("dkim-signature"))):
            checker = dkim.DKIM(raw, timeout=DNS_TIMEOUT_SECONDS)
            try:
                valid = checker.verify(idx=index, dnsfunc=dnsfunc)
            except Exception as exc:  # dkimpy raises many kinds on malformed input or DNS
                log.info("dkim signature not verified", extra={"error": type(exc).__name__})
                continue
            domain = (checker.domain or b"").decode("ascii", "replace").lower()
            if valid and domain in wanted:
                verified.add(domain)
        return frozenset(verified)


def _configured_keys(relays: Sequence[ContactFormRelay]) -> dict[str, Path]:
    return {
        f"{selector.lower()}._domainkey.{relay.signing_domain}": path
        for relay in relays
        for selector, path in relay.dkim_keys.items()
    }


def _read_key(path: Path) -> bytes | None:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        log.error("dkim key file unreadable", extra={"file": str(path), "error": exc.strerror})
        return None
