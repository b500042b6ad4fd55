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

# Where a quoted or forwarded block starts, as French and English clients write it.
_QUOTE_HEADERS = re.compile(
    r"^\s*(?:"
    r"le\s.{4,120}\sa\s+[ée]crit\s*:"  # Le jeu. 2 avr. 2026 à 10:14, X a écrit :
    r"|on\s.{4,120}\swrote\s*:"
    r"|el\s.{4,120}\sescribi[óo]\s*:"
    r"|-{2,}\s*(?:original message|message d'origine|forwarded message|message transf[ée]r[ée])"
    r"\s*-{2,}"
    r"|d[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])\s*:"
    r"|_{8,}"
    r"|(?:de|from)\s*:\s*\S.*\n\s*(?:envoy[ée]|sent|date)\s*:"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
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
    start = _QUOTE_HEADERS.search(body)
    head, tail = (body[: start.start()], body[start.start() :]) if start else (body, "")
    own: list[str] = []
    quoted = [tail] if tail else []
    for line in head.splitlines():
        (quoted if line.lstrip().startswith(">") else own).append(line)
    own_text = "\n".join(own).strip()
    if not own_text and quoted:  # a mail that is only a forward: its content is the request
        return RoutingText("\n".join(quoted).replace(">", " ").strip(), "")
    return RoutingText(own_text, "\n".join(quoted).strip())


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
