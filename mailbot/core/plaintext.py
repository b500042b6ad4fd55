"""Plain-text layout of outgoing mail: lines of at most 78 characters (RFC 5322 §2.1.1).

A line is only broken at a space, never inside a URL, an e-mail address, a phone number,
a tracking reference or an isolated value (a value between a Unicode isolate initiator and
its PDI): a plain-text reader turns the first two into links and the third into a call,
and half of one is a dead link. A token longer than the line stays whole on its own line.

Why not ``format=flowed`` (RFC 3676): our text parts are laid out by hand (lists, contact
blocks, signature) and must not be reflowed; flowed text depends on trailing spaces, which
mail relays and editors strip; and Outlook ignores it. Fixed lines of at most 78
characters read the same everywhere.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

from mailbot.core.message import single_line

WIDTH = 78

# Isolates (FSI/LRI/RLI … PDI) and marks: invisible, but they count in the line length.
LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"
RLM = "\u200f"

_GLUE = "\ue000"  # private-use character: stands for a space that must not break
_ATOMS = re.compile(
    r"https?://\S+"  # URL
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail address
    r"|(?<![\w+])(?:\+33[ .]?|0)[1-9](?:[ .]?\d{2}){4}(?!\w)"  # French phone number
    r"|\+\d{1,3}(?:[ .]\d{1,4}){2,5}(?!\w)"  # other international number
    r"|[A-Z]{1,10}-\d{4}-\d{3,}"  # tracking reference (SM-2026-000123)
    r"|[\u2066\u2067\u2068][^\u2069\n]*\u2069"  # an isolated value
)
_SPACES = re.compile(r"[ \t\r\n]+")
_LIST_MARKER = re.compile(r"^(\s*)([-•.*] |\d+[.)] )")
# Characters str.splitlines() breaks on that single_line() leaves alone.
_UNICODE_BREAKS = re.compile(r"[\x85\u2028\u2029]")
_RUNS_OF_SPACES = re.compile(r" {2,}")


def one_line(value: object) -> str:
    """Text on one line, runs of spaces collapsed: a subject, a display name, the
    templates' ``oneline`` filter."""
    return _RUNS_OF_SPACES.sub(" ", single_line(_UNICODE_BREAKS.sub(" ", str(value))))


def _glue(match: re.Match[str]) -> str:
    return match.group(0).replace(" ", _GLUE)


def _protect(text: str, keep: Iterable[str]) -> str:
    for value in sorted({v for v in keep if " " in v and len(v) <= WIDTH}, key=len, reverse=True):
        text = text.replace(value, value.replace(" ", _GLUE))
    return _ATOMS.sub(_glue, text)


def wrap(
    text: str,
    width: int = WIDTH,
    *,
    indent: str = "",
    subsequent_indent: str | None = None,
    keep: Iterable[str] = (),
) -> list[str]:
    """One paragraph (its line breaks are spaces) as lines of at most ``width`` characters.

    ``keep`` lists values that must not be broken either (e.g. a postal address that was
    substituted into the paragraph).
    """
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=indent,
        subsequent_indent=indent if subsequent_indent is None else subsequent_indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    lines = wrapper.wrap(_protect(_SPACES.sub(" ", text).strip(" "), keep))
    return [line.replace(_GLUE, " ") for line in lines]


def hanging_indent(line: str) -> tuple[str, str]:
    """The indent of a line and of its continuation: list items hang under their text."""
    marker = _LIST_MARKER.match(line)
    if marker:
        return marker.group(1), " " * len(marker.group(0))
    lead = line[: len(line) - len(line.lstrip(" "))]
    return lead, lead


def wrap_long_lines(text: str, width: int = WIDTH) -> str:
    """Re-wrap every line longer than ``width``; shorter lines are left as they are."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        first, rest = hanging_indent(line)
        out.extend(wrap(line[len(first) :], width, indent=first, subsequent_indent=rest))
    return "\n".join(out)


def unbreakable(text: str) -> list[str]:
    """The URLs, addresses, phone numbers and references of a text, as they must stay."""
    return [match.group(0) for match in _ATOMS.finditer(text)]
