"""Mixed-direction text: values isolated from the sentence around them, links made links.

An Arabic sentence holding "7 place de la Madeleine, 76036 Rouen Cedex" or "02 32 76 50 00"
is displayed wrong by the Unicode bidirectional algorithm unless the value is *isolated*:
the street number ends up after "Cedex", the phone number's groups in reverse order.
In HTML each value gets its own element with an explicit ``dir`` (browsers isolate such
elements); in plain text it goes between a Unicode isolate initiator (LRI/RLI) and PDI.
URLs and e-mail addresses are links in HTML; in plain text they are left bare, because a
reader that turns them into links would take an invisible PDI as part of the link.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from markupsafe import Markup, escape

from mailbot.core.plaintext import LRI, PDI, RLI, has_wide

Kind = Literal["url", "email", "phone", "text"]
Direction = Literal["ltr", "rtl"]

URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)]")
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 .()-]{5,}$")


def direction(text: str) -> Direction | None:
    """The direction of the first strong character (the rule of dir="auto"), if any."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind == "L":
            return "ltr"
        if kind in {"R", "AL"}:
            return "rtl"
    return None


def has_rtl(text: str) -> bool:
    return any(unicodedata.bidirectional(char) in {"R", "AL"} for char in text)


def kind(value: str) -> Kind:
    if URL.fullmatch(value):
        return "url"
    if _EMAIL.match(value):
        return "email"
    if _PHONE.match(value) and sum(char.isdigit() for char in value) >= 6:
        return "phone"
    return "text"


def tel_target(value: str) -> str:
    """A French phone number as a tel: URI target (02 32 76 50 00 → +33232765000)."""
    digits = re.sub(r"[^\d+]", "", value)
    if re.fullmatch(r"0\d{9}", digits):
        return "+33" + digits[1:]
    return digits


def url_label(url: str) -> str:
    """A URL as people read it (no scheme, no trailing slash)."""
    return re.sub(r"^https?://", "", url).rstrip("/")


def html_value(value: str) -> Markup:
    """A substituted value as HTML: a link, or a span with its own direction."""
    found = kind(value)
    if found == "url":
        return Markup('<a href="{0}" dir="ltr">{1}</a>').format(value, url_label(value))
    if found == "email":
        return Markup('<a href="mailto:{0}" dir="ltr">{0}</a>').format(value)
    if found == "phone":
        return Markup('<a href="tel:{0}" dir="ltr" class="nowrap">{1}</a>').format(
            tel_target(value), value
        )
    # A short value (reference, date, name) is not broken across lines: "SM-2026-" / "000123".
    nowrap = Markup(' class="nowrap"') if len(value) <= 30 else Markup("")
    return Markup('<span dir="{0}"{1}>{2}</span>').format(direction(value) or "ltr", nowrap, value)


def text_value(value: str, context: Direction) -> str:
    """A substituted value in plain text: isolated when it could be reordered."""
    if kind(value) in {"url", "email"}:
        return value
    own = direction(value) or "ltr"
    if context == "ltr" and own == "ltr":
        return value
    return f"{RLI if own == 'rtl' else LRI}{value}{PDI}"


# A run of left-to-right words in right-to-left text: "titre de séjour", "point d'accueil".
_LATIN = "A-Za-zÀ-ÖØ-öø-ɏ"
_WORD = f"[{_LATIN}](?:[{_LATIN}0-9'’.-]*[{_LATIN}0-9])?"
LTR_RUN = re.compile(f"{_WORD}(?: {_WORD})*")


def _ltr_runs(text: str) -> list[tuple[bool, str]]:
    """Split right-to-left text into (is a left-to-right run, piece)."""
    pieces: list[tuple[bool, str]] = []
    last = 0
    for match in LTR_RUN.finditer(text):
        if direction(match.group(0)) != "ltr":
            continue
        pieces.append((False, text[last : match.start()]))
        pieces.append((True, match.group(0)))
        last = match.end()
    pieces.append((False, text[last:]))
    return [piece for piece in pieces if piece[1]]


def _isolated_words(piece: str) -> Markup:
    # Kept on one line when short: a break inside "rendez-vous" splits the isolate in two,
    # and the parentheses around it then pair up wrongly on each line.
    nowrap = Markup(' class="nowrap"') if len(piece) <= 30 else Markup("")
    return Markup('<span dir="ltr"{0}>{1}</span>').format(nowrap, piece)


def html_literal(text: str, context: Direction = "ltr") -> Markup:
    """Trusted text (a translation) as HTML: escaped, its URLs made links and, in
    right-to-left text, its left-to-right words isolated (French names in Arabic)."""
    out: list[Markup] = []
    last = 0
    for match in [*URL.finditer(text), None]:
        end = match.start() if match else len(text)
        for isolated, piece in (
            _ltr_runs(text[last:end]) if context == "rtl" else [(False, text[last:end])]
        ):
            out.append(_isolated_words(piece) if isolated else escape(piece))
        if match:
            out.append(html_value(match.group(0)))
            last = match.end()
    return Markup("").join(out)


def text_literal(text: str, context: Direction = "ltr") -> str:
    """Trusted text in plain text: in right-to-left text, left-to-right words isolated
    (URLs left bare, see the module's docstring)."""
    if context != "rtl":
        return text
    out: list[str] = []
    last = 0
    for match in [*URL.finditer(text), None]:
        end = match.start() if match else len(text)
        for isolated, piece in _ltr_runs(text[last:end]):
            out.append(f"{LRI}{piece}{PDI}" if isolated else piece)
        if match:
            out.append(match.group(0))
            last = match.end()
    return "".join(out)


# "your town hall (votre mairie)": a name in the reader's language, then the French name
# the citizen will see on the sign and the website. Chinese writes the brackets full width
# against ideographs, as zh.yaml does around its French words ("省政府（préfecture）").
def _brackets(local: str) -> tuple[str, str]:
    return ("（", "）") if has_wide(local) else (" (", ")")


def text_named(local: str, french: str, context: Direction) -> str:
    """A translated name and its French name, as one value of a plain-text sentence.

    In right-to-left text each is isolated on its own, as ``text_value`` isolates a value
    there (RLI…PDI) and ``text_literal`` a French run (LRI…PDI): the French name whole, so
    that "la Caisse d'allocations familiales (CAF)" keeps its own brackets in order, and
    the brackets around it between the two isolates, where the sentence's direction
    places them. A line may then break between the two names, never inside an isolate
    (``plaintext.wrap``): one isolate over two lines would leave each line unbalanced."""
    opening, closing = _brackets(local)
    if context != "rtl":
        return text_value(f"{local}{opening}{french}{closing}", context)
    return f"{RLI}{text_literal(local, 'rtl')}{PDI}{opening}{LRI}{french}{PDI}{closing}"


def html_named(local: str, french: str, context: Direction) -> Markup:
    """``text_named`` in HTML: the value in its own element (``html_value``); in
    right-to-left text, the French name in an element of its own with ``dir="ltr"``, as
    ``html_literal`` sets a translation's French words apart."""
    opening, closing = _brackets(local)
    if context != "rtl":
        return html_value(f"{local}{opening}{french}{closing}")
    nowrap = Markup(' class="nowrap"') if len(local) + len(french) + 3 <= 30 else Markup("")
    return Markup('<span dir="rtl"{0}>{1}{2}{3}{4}</span>').format(
        nowrap, html_literal(local, "rtl"), opening, _isolated_words(french), closing
    )


def html_isolate(value: object) -> Markup:
    """Template filter (HTML): user text such as a subject, isolated with <bdi>."""
    return Markup("<bdi>{0}</bdi>").format(value)


def text_isolate(value: object) -> str:
    """Template filter (text): right-to-left user text between FSI and PDI, else unchanged."""
    text = str(value)
    return f"\u2068{text}{PDI}" if has_rtl(text) else text
