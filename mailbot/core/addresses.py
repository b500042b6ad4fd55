"""Which mailbox addresses an SMTP server accepts: RFC 5321 §4.1.2, extended by RFC 6531.

A citizen's address is answered whenever a server could deliver to it, so the rule here is
the SMTP grammar, not a stricter everyday pattern: quoted local parts (``"jean dupont"@…``),
every ``atext`` character, address literals (``[192.0.2.1]``), and — with SMTPUTF8 — UTF-8
in the local part and the domain. What the grammar refuses (spaces or controls outside
quotes, two "@", CR/LF) never reaches a header or an SMTP command.
"""

from __future__ import annotations

import ipaddress
import re

from mailbot.errors import MessageError

# RFC 5321 §4.5.3.1 sets minimums that servers must accept (64-octet local parts, 256-octet
# paths) and asks them to accept more: the server decides (a 5xx is a clear failure). This
# bound only keeps the address, with a display name, within a 998-octet header line.
MAX_ADDRESS = 800

# atext (RFC 5322 §3.2.3: letters, digits and !#$%&'*+-/=?^_`{|}~) plus, per RFC 6531 §3.3,
# any non-ASCII character: every character but controls, space, DEL and the specials
# "(),.:;<>@[\]. Written as what it excludes: the class up to U+10FFFF took 6 ms to compile
# at every start (issue 14, point 9); tests/test_addresses.py checks both agree everywhere.
_ATOM = r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]+'
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
# qtextSMTP (printable ASCII but " and \) and quoted-pairSMTP (RFC 5321 §4.1.2), UTF-8
# allowed in qtext (RFC 6531): again written as what qtext excludes.
_QUOTED_STRING = re.compile(r'"(?:[^\x00-\x1f"\\\x7f]|\\[\x20-\x7e])*"')
# Let-dig [Ldh-str], or a U-label (letters and digits of any script).
_LABEL = re.compile(r"[^\W_](?:[\w-]*[^\W_])?")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


def _check_domain(domain: str) -> None:
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            raise MessageError(f"{domain!r} is not an address literal") from None
        return
    labels = domain.split(".")
    if not all(len(label) <= 63 and _LABEL.fullmatch(label) for label in labels):
        raise MessageError(f"{domain!r} is not a domain name")


def check_mailbox(address: str) -> str:
    """Return ``address`` ("local@domain") if an SMTP server may accept it, else MessageError.

    The reason names the part at fault, never more than the address itself.
    """
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError("the address is not valid UTF-8") from None
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise MessageError("not an address (local-part@domain)")
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        raise MessageError("the local part is neither a dot-string nor a quoted string")
    if len(address.encode("utf-8")) > MAX_ADDRESS:
        raise MessageError(f"the address is longer than {MAX_ADDRESS} octets")
    _check_domain(domain)
    return address
