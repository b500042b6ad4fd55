"""A skeleton's markers and how one mail's values fill them (``mailbot.render.once``).

A skeleton render writes a marker wherever a per-mail value is printed; the text is cut at
its markers (``split``), and filled with each mail's values escaped as many times as the
text around the marker was (``fill_text``). Inlined HTML is filled only with values that
would come out of css_inline's parser and serializer as they went in (``html_value``,
``fill_html``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser

from markupsafe import escape

# The variables that change from one mail to the next (render.variables.message_variables).
PER_MAIL = ("reference", "received_at", "deadline", "original_subject")

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters: a marker's ends
# A marker: "&", the escapes applied since it was written ("amp;" each), its form (s: the
# value as str(), h: as escape()), its occurrence number.
_MARK = re.compile("\ue000&((?:amp;)*)([sh])(\\d+)\ue001")


class Unsupported(Exception):
    """The template does something with a per-mail value that a skeleton cannot replay."""


# A skeleton's text cut at its markers: literal, marker number, literal, ...
Parts = tuple[str | int, ...]


def split(text: str) -> Parts:
    parts: list[str | int] = []
    last = 0
    for match in _MARK.finditer(text):
        parts += [text[last : match.start()], int(match.group(3))]
        last = match.end()
    parts.append(text[last:])
    if sum(part.count(OPEN) + part.count(CLOSE) for part in parts if isinstance(part, str)):
        raise Unsupported("a template or a setting holds a marker character")
    return tuple(parts)


def escapes(text: str) -> dict[int, int]:
    """How many times each marker of ``text`` was escaped since it was written."""
    found: dict[int, int] = {}
    for match in _MARK.finditer(text):
        count = match.group(1).count("amp;")
        if found.setdefault(int(match.group(3)), count) != count:
            raise Unsupported("a per-mail value printed twice, escaped differently")
    return found


def shown(value: object, form: str, times: int) -> str:
    """The value as the template wrote it: str() or escape(), then escaped ``times``."""
    text = str(value) if form == "s" else str(escape(value))
    for _ in range(times):
        text = str(escape(text))
    return text


def fill_text(
    parts: Parts,
    occurrences: Sequence[tuple[int, str]],
    values: Sequence[object],
    times: Mapping[int, int] | None = None,
) -> str:
    """A skeleton filled with one mail's values (text as Jinja wrote it, not serialized)."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            index, form = occurrences[part]
            count = times.get(part, 0) if times is not None else 0
            out.append(shown(values[index], form, count))
    return "".join(out)


# What css_inline's serializer writes for escaped text, and what it would not give back.
_ENTITY = re.compile("&(?:amp|lt|gt|#39|#34);")
_SERIALIZED_TEXT = {"&#39;": "'", "&#34;": '"', "\xa0": "&nbsp;"}
_SERIALIZED_ATTR = {"&#39;": "'", "&#34;": "&quot;", "&lt;": "<", "&gt;": ">", "\xa0": "&nbsp;"}
_REFUSED = re.compile("[<>\"'&\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_KEPT_TAGS = re.compile("</?bdi>")


def html_value(text: str, attribute: bool) -> str | None:
    """Escaped text as css_inline re-serializes it (None: not sure, render in full)."""
    if not _REFUSED.search(text):
        return text.replace("\xa0", "&nbsp;") if "\xa0" in text else text
    if attribute and "<" in text:
        return None
    rest = _ENTITY.sub("", text)
    rest = rest if attribute else _KEPT_TAGS.sub("", rest)
    if _REFUSED.search(rest):
        return None
    table = _SERIALIZED_ATTR if attribute else _SERIALIZED_TEXT
    for before, after in table.items():
        if before in text:
            text = text.replace(before, after)
    return text


class _Contexts(HTMLParser):
    """Where each marker of inlined HTML stands: in an attribute's value, or in text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[int, bool] = {}

    def _note(self, text: str | None, attribute: bool) -> None:
        for match in _MARK.finditer(text or ""):
            if self.found.setdefault(int(match.group(3)), attribute) != attribute:
                raise Unsupported("a per-mail value printed twice, in text and attribute")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if OPEN in name:
                raise Unsupported("a per-mail value as an attribute's name")
            self._note(value, True)

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        if OPEN in data and self.cdata_elem is not None:
            raise Unsupported("a per-mail value in a <style> or <script>")
        self._note(data, False)

    def handle_comment(self, data: str) -> None:
        if OPEN in data:
            raise Unsupported("a per-mail value in a comment")


def html_contexts(text: str) -> dict[int, bool]:
    """Each marker of inlined HTML: True in an attribute's value, False in text."""
    parser = _Contexts()
    parser.feed(text)
    parser.close()
    if set(parser.found) != {part for part in split(text) if isinstance(part, int)}:
        raise Unsupported("a per-mail value neither in text nor in an attribute")
    return parser.found


def fill_html(
    parts: Parts,
    occurrences: Sequence[tuple[int, str]],
    values: Sequence[object],
    times: Mapping[int, int],
    attribute: Mapping[int, bool] | None,
) -> str | None:
    """Inlined HTML filled with one mail's values; None when one of them could come out
    of css_inline otherwise than ``html_value`` says."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        index, form = occurrences[part]
        written = shown(values[index], form, times.get(part, 0))
        text = written if attribute is None else html_value(written, attribute[part])
        if text is None:
            return None
        out.append(text)
    return "".join(out)
