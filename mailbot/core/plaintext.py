"""Plain-text layout of outgoing mail: lines of at most 78 characters (RFC 5322 §2.1.1).

A line is only broken at a space, never inside a URL, an e-mail address, a phone number,
a tracking reference or an isolated value (a value between a Unicode isolate initiator and
its PDI): a plain-text reader turns the first two into links and the third into a call,
and half of one is a dead link. A token longer than the line stays whole on its own line.

Why not ``format=flowed`` (RFC 3676): our text parts are laid out by hand (lists, contact
blocks, signature) and must not be reflowed; flowed text depends on trailing spaces, which
mail relays and editors strip; and Outlook ignores it. Fixed lines of at most 78
characters read the same everywhere.

Chinese (and any East Asian wide text) has no spaces between words and each ideograph
takes two columns of a fixed-width font: a paragraph holding one is measured in display
columns (``columns``) and may also break between two ideographs, never before closing
punctuation (，。、：；！？）」…) nor after opening punctuation (（「《“…), nor between an
ideograph and a Latin word or number written against it ("ANEF网站", "5个"). A paragraph
without a wide character is wrapped exactly as before (``textwrap``).
"""

from __future__ import annotations

import functools
import re
import textwrap
import unicodedata
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
# French typography's space before a double punctuation mark or a per cent sign does not
# break: a line never starts with « : 40,0 % ». (Guillemets are left to textwrap for now:
# tests/test_i18n_zh.py holds French wrapped exactly as textwrap does, « » » alone included.)
_FRENCH_SPACE = re.compile(r" (?=[:;!?%])")
_SPACES = re.compile(r"[ \t\r\n]+")
_LIST_MARKER = re.compile(r"^(\s*)([-•.*] |\d+[.)] )")
# Characters str.splitlines() breaks on that single_line() leaves alone.
_UNICODE_BREAKS = re.compile(r"[\x85\u2028\u2029]")
_RUNS_OF_SPACES = re.compile(r" {2,}")
# Every assigned East Asian wide or fullwidth character is in these ranges (Hangul jamo, a
# few pictographs, CJK and fullwidth forms onwards: a test checks it against unicodedata):
# only the characters of a line found here have their width looked up, and a Latin,
# Cyrillic or Arabic text, its ’ … — « and isolates included, has none.
_MAYBE_WIDE = re.compile("[\u1100-\u115f\u231a-\u23f3\u25fd-\u27bf\u2b1b-\u2b55\u2e80-\U0010ffff]")
# No line starts with closing punctuation, none ends with opening punctuation (the rule of
# Chinese typesetting, GB/T 15834); ASCII ones too, against an ideograph.
_CLOSING = frozenset("，。、：；！？）」』】》〉〕〗〙〛｝］”’…‥·・％‰℃～,.:;!?)]}%")
_OPENING = frozenset("（「『【《〈〔〖〘〚｛［“‘([{")


def one_line(value: object) -> str:
    """Text on one line, runs of spaces collapsed: a subject, a display name, the
    templates' ``oneline`` filter."""
    return _RUNS_OF_SPACES.sub(" ", single_line(_UNICODE_BREAKS.sub(" ", str(value))))


def _glue(match: re.Match[str]) -> str:
    return match.group(0).replace(" ", _GLUE)


def _protect(text: str, keep: Iterable[str]) -> str:
    for value in sorted({v for v in keep if " " in v and len(v) <= WIDTH}, key=len, reverse=True):
        text = text.replace(value, value.replace(" ", _GLUE))
    return _FRENCH_SPACE.sub(_GLUE, _ATOMS.sub(_glue, text))


@functools.lru_cache(maxsize=8192)
def _wide(char: str) -> bool:
    """Two columns wide: an ideograph, kana, hangul, ，。 (not an unassigned code point,
    which unicodedata may call fullwidth)."""
    return (
        _MAYBE_WIDE.match(char) is not None
        and unicodedata.east_asian_width(char) in ("W", "F")
        and unicodedata.category(char) != "Cn"
    )


def has_wide(text: str) -> bool:
    """Whether ``text`` holds a character two columns wide (an ideograph, ，。)."""
    return not text.isascii() and any(map(_wide, _MAYBE_WIDE.findall(text)))


def columns(text: str) -> int:
    """The columns ``text`` takes in a fixed-width font: two per East Asian wide or
    fullwidth character, one per other character (invisible marks and isolates included,
    as the line length always counted them: never fewer than they take). For text without
    a wide character, its length."""
    if text.isascii():
        return len(text)
    return len(text) + sum(map(_wide, _MAYBE_WIDE.findall(text)))


def _may_break(before: str, after: str) -> bool:
    """Whether a line may break between two characters with no space between them."""
    if not (_wide(before) or _wide(after)):
        return False  # inside a Latin word or number
    if after in _CLOSING or before in _OPENING:
        return False
    # "ANEF网站", "5个工作日": a Latin word or number stays with the ideograph it touches
    # (not with a punctuation mark: "网站：https://…" may break after the colon).
    return not (before.isalnum() and after.isalnum() and _wide(before) != _wide(after))


_HELD, _OPEN = 1, 2  # marks of ``_held``: no break before this character / a break allowed


def _held(text: str, width: int, keep: Iterable[str]) -> bytearray:
    """At each position, whether a line may break before it whatever ``_may_break`` says:
    never inside a URL, an address, a phone number, a reference, an isolated value or a
    ``keep`` value that fits on a line (``_HELD``); always before such a piece written
    against an ideograph ("请联系pref@…", ``_OPEN``), which would otherwise take it along."""
    held = bytearray(len(text))
    spans = []
    for atom in _ATOMS.finditer(text):
        start, end = atom.span()
        while _wide(text[start]):  # \w took the ideographs before the address
            start += 1
        spans.append((start, end))
    for value in {v for v in keep if v and columns(v) <= width}:
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value)))
            start = text.find(value, start + len(value))
    for start, end in spans:
        held[start + 1 : end] = bytes([_HELD]) * (end - start - 1)
    for start, _end in spans:
        if start and _wide(text[start - 1]) and not held[start]:
            held[start] = _OPEN
    return held


def _chunks(text: str, held: bytearray) -> list[tuple[str, str]]:
    """The pieces no line breaks inside, each with what comes before it (" " or "")."""
    chunks: list[tuple[str, str]] = []
    current: list[str] = []
    separator = ""
    for index, char in enumerate(text):
        if char == " " and not held[index]:
            if current:
                chunks.append((separator, "".join(current)))
                current = []
            separator = " "
            continue
        mark = held[index]
        if current and (mark == _OPEN or (not mark and _may_break(current[-1], char))):
            chunks.append((separator, "".join(current)))
            current, separator = [], ""
        current.append(char)
    if current:
        chunks.append((separator, "".join(current)))
    return chunks


def _wrap_wide(
    text: str, width: int, indent: str, subsequent_indent: str, keep: Iterable[str]
) -> list[str]:
    """``wrap`` for a paragraph holding wide characters: greedy, in display columns; a
    piece wider than the line stays whole on its own line (as ``break_long_words=False``)."""
    lines: list[str] = []
    line, used = "", 0
    for separator, chunk in _chunks(text, _held(text, width, keep)):
        size = columns(chunk)
        if not line:
            line, used = indent + chunk, columns(indent) + size
        elif used + len(separator) + size <= width:
            line, used = line + separator + chunk, used + len(separator) + size
        else:
            lines.append(line)
            line, used = subsequent_indent + chunk, columns(subsequent_indent) + size
    if line:
        lines.append(line)
    return lines


def wrap(
    text: str,
    width: int = WIDTH,
    *,
    indent: str = "",
    subsequent_indent: str | None = None,
    keep: Iterable[str] = (),
) -> list[str]:
    """One paragraph (its line breaks are spaces) as lines of at most ``width`` columns.

    ``keep`` lists values that must not be broken either (e.g. a postal address that was
    substituted into the paragraph).
    """
    if has_wide(text):
        following = indent if subsequent_indent is None else subsequent_indent
        return _wrap_wide(_SPACES.sub(" ", text).strip(" "), width, indent, following, keep)
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
    """Re-wrap every line wider than ``width`` columns; the others are left as they are."""
    out: list[str] = []
    measure = columns if has_wide(text) else len  # one look at the text, not one a line
    for line in text.split("\n"):
        if measure(line) <= width:
            out.append(line)
            continue
        first, rest = hanging_indent(line)
        out.extend(wrap(line[len(first) :], width, indent=first, subsequent_indent=rest))
    return "\n".join(out)


def unbreakable(text: str) -> list[str]:
    """The URLs, addresses, phone numbers and references of a text, as they must stay."""
    return [match.group(0) for match in _ATOMS.finditer(text)]
