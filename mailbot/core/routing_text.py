"""The text routing reads: what the citizen wrote in this mail, apart from what it quotes.

The labelling guide (docs/routing-guide.md, R25, R26) decides on what the citizen asks *in
this mail*: a quoted earlier answer, a forwarded mairie letter or a service's signature in
the quoted part must not decide, and on the website form only the « Message » field does
(its « Objet » is the citizen's often wrong guess, kept for the form-field rules). The
quoted part is still returned: a relance's service is often only named there (R19).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Where a quoted or forwarded block starts, as French and English clients write it: at
# the start of a line (``_quote_start``).
_QUOTE_HEADER = (
    r"\s*(?:"
    r"le\s.{4,120}\sa\s+[ée]crit\s*:"  # Le jeu. 2 avr. 2026 à 10:14, X a écrit :
    r"|on\s.{4,120}\swrote\s*:"
    r"|el\s.{4,120}\sescribi[óo]\s*:"
    r"|-{2,}\s*(?:original message|message d'origine|forwarded message|message transf[ée]r[ée])"
    r"\s*-{2,}"
    r"|d[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])\s*:"
    r"|_{8,}"
    r"|(?:de|from)\s*:\s*\S.*\n\s*(?:envoy[ée]|sent|date)\s*:"
    r")"
)
# One pattern for the body's first line, one for the lines after a line end: "^" with
# re.MULTILINE is tried at every position of the body, "\n" first only where a line ends
# (the search on a 3 KB body: 20-23 µs down to 7 µs, in the intake's process, issue 14).
_QUOTE_AT_START = re.compile(_QUOTE_HEADER, re.IGNORECASE)
_QUOTE_AFTER_LINE_END = re.compile("\n" + _QUOTE_HEADER, re.IGNORECASE)
_FORM_MESSAGE = re.compile(r"^\s*Message\s*:\s*(.*)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_FORM_FOOTER = re.compile(r"^--\s*$", re.MULTILINE)


@dataclass(frozen=True)
class RoutingText:
    own: str  # what the citizen wrote in this mail
    quoted: str  # quoted replies and forwarded mail below it
    from_form: bool = False  # own is the website form's « Message » field


def split_quoted(body: str) -> RoutingText:
    """The citizen's own text, and what it quotes or forwards ("> " lines, "Le … a écrit :",
    Outlook "De : … Envoyé :" blocks, "-------- Message transféré --------")."""
    start = _quote_start(body)
    head, tail = (body[:start], body[start:]) if start is not None else (body, "")
    own: list[str] = []
    quoted = [tail] if tail else []
    for line in head.splitlines():
        (quoted if line.lstrip().startswith(">") else own).append(line)
    own_text = "\n".join(own).strip()
    if not own_text and quoted:  # a mail that is only a forward: its content is the request
        return RoutingText("\n".join(quoted).replace(">", " ").strip(), "")
    return RoutingText(own_text, "\n".join(quoted).strip())


def _quote_start(body: str) -> int | None:
    """Where the first quoted or forwarded block starts: a line's start (that of the body,
    or just after a line end, as "^" matches in re.MULTILINE)."""
    if _QUOTE_AT_START.match(body):
        return 0
    found = _QUOTE_AFTER_LINE_END.search(body)
    return found.start() + 1 if found else None


def form_message(body: str) -> str | None:
    """The « Message » field of a website contact-form mail, without the relay's footer."""
    found = _FORM_MESSAGE.search(body)
    if found is None:
        return None
    message = found.group(1)
    footer = _FORM_FOOTER.search(message)
    return (message[: footer.start()] if footer else message).strip()


def routing_text(body: str, relayed_form: bool) -> RoutingText:
    """What routing reads of a body: the form's Message field for the website form (R25),
    else the citizen's own text apart from what it quotes (R26)."""
    if relayed_form:
        message = form_message(body)
        if message is not None:
            text = split_quoted(message)
            return RoutingText(text.own, text.quoted, from_form=True)
    return split_quoted(body)
