"""Do the text and HTML parts of a mail say the same thing?

Some readers see only the text part (plain-text mail programs, screen readers, filters that
strip HTML), most see only the HTML part: an editor who changes a sentence in one and forgets
the other sends two different letters. This compares what each part *says*:

* sentences, after normalisation: case, spacing, punctuation, list markers, bidi marks and
  the ``https://`` of URLs do not count; a sentence of one part must appear, word for word,
  in the other (so a sentence cut in two by a heading or a line break still matches); a
  link shown as a bare address ("service-public.fr") counts as its URL;
* links: every link target of the HTML (URL, e-mail address, phone number as shown) appears
  whole in the text, and every URL and address of the text is a link in the HTML.

What is not the letter is left out of the HTML: <head>, the hidden preheader and the blue
band (which repeats the subject). The footer is compared: the text part carries it too.
"""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser

from mailbot.core.plaintext import has_wide

SKIPPED_TAGS = {"head", "title", "style", "script"}
SKIPPED_CLASSES = {"preheader", "band"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
BLOCK_TAGS = {
    "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "table", "tr", "td", "th", "body",
}  # fmt: skip
_CONTROLS = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PUNCTUATION = ".,;:!?()[]{}«»\"'·—–-*•/…"
_TEXT_BLOCK = re.compile(r"\n\s*\n|\n(?=\s*(?:[-•.*] |-- ?\n))")
_MARKER = re.compile(r"^\s*[-•*.]\s+")  # a list item's bullet
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)]")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_GAP = re.compile(r"\s+")


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.links: list[tuple[str, str]] = []  # (href, label)
        self._stack: list[bool] = []  # per open element: skipped?
        self._link: tuple[str, list[str]] | None = None
        self._numbers: list[int] = []  # open <ol>s: the number of their last item

    @property
    def skipping(self) -> bool:
        return any(self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = set((found.get("class") or "").split())
        skip = tag in SKIPPED_TAGS or bool(classes & SKIPPED_CLASSES)
        if tag in BLOCK_TAGS or tag == "br":
            self.chunks.append("\n\n" if tag != "br" else " ")
        if tag == "ol":
            self._numbers.append(0)
        if tag == "li" and self._numbers:  # the text part writes the number: so do we
            self._numbers[-1] += 1
            self.chunks.append(f"{self._numbers[-1]}. ")
        if tag == "a" and not self.skipping and not skip:
            self._link = (found.get("href") or "", [])
        if tag not in VOID_TAGS:
            self._stack.append(skip)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS or not self._stack:
            return
        self._stack.pop()
        if tag == "ol" and self._numbers:
            self._numbers.pop()
        if tag == "a" and self._link is not None:
            href, label = self._link[0], "".join(self._link[1]).strip()
            self.links.append((href, label))
            # A link shown as a bare address reads, in the text part, as the URL itself.
            shown_as_url = href.startswith(("http://", "https://")) and not re.search(r"\s", label)
            self.chunks.append(href if shown_as_url else "".join(self._link[1]))
            self._link = None
        if tag in BLOCK_TAGS:
            self.chunks.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self._link is not None:
            self._link[1].append(data)
        else:
            self.chunks.append(data)


def _join_wide(text: str) -> str:
    """``text`` without the spaces and line breaks next to a wide character: Chinese has
    no spaces, and the text part's lines break between two ideographs where the HTML's
    paragraph runs on (``mailbot.core.plaintext.wrap``); both parts are read so."""
    if not has_wide(text):
        return text

    def gap(found: re.Match[str]) -> str:
        around = (
            text[max(found.start() - 1, 0) : found.start()] + text[found.end() : found.end() + 1]
        )
        return "" if has_wide(around) else found.group(0)

    return _GAP.sub(gap, text)


def _words(text: str) -> list[str]:
    text = _join_wide(_CONTROLS.sub("", unicodedata.normalize("NFC", text)).casefold())
    text = text.replace("\u00a0", " ").replace("\u202f", " ").replace("’", "'")
    text = re.sub(r"https?://", "", text)
    return [word for word in (token.strip(_PUNCTUATION) for token in text.split()) if word]


def _sentences(blocks: list[str]) -> list[tuple[str, ...]]:
    found = []
    for block in blocks:
        for sentence in _SENTENCE_END.split(block):
            words = tuple(_words(sentence))
            if words:
                found.append(words)
    return found


def _contains(stream: tuple[str, ...], sentence: tuple[str, ...]) -> bool:
    joined, needle = "\x1f" + "\x1f".join(stream) + "\x1f", "\x1f" + "\x1f".join(sentence) + "\x1f"
    return needle in joined


def _show(sentence: tuple[str, ...]) -> str:
    text = " ".join(sentence)
    return text if len(text) <= 90 else text[:89] + "…"


def differences(text: str, html: str) -> list[str]:
    """What one part says and the other does not; empty when they agree."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    html_text = "".join(reader.chunks)
    html_sentences = _sentences(re.split(r"\n\s*\n", html_text))
    text_sentences = _sentences([_MARKER.sub("", block) for block in _TEXT_BLOCK.split(text)])
    html_stream = tuple(word for sentence in html_sentences for word in sentence)
    text_stream = tuple(word for sentence in text_sentences for word in sentence)
    problems = [
        f"text part lacks: « {_show(s)} »" for s in html_sentences if not _contains(text_stream, s)
    ]
    problems += [
        f"HTML part lacks: « {_show(s)} »" for s in text_sentences if not _contains(html_stream, s)
    ]
    return list(dict.fromkeys(problems)) + _link_differences(text, reader.links)


def _link_differences(text: str, links: list[tuple[str, str]]) -> list[str]:
    problems = []
    targets: set[str] = set()
    for href, label in links:
        if href.startswith(("http://", "https://")):
            targets.add(href)
            if not re.search(re.escape(href) + r"(?![\w/%-])", text):
                problems.append(f"text part lacks the link {href} (whole, on one line)")
        elif href.startswith("mailto:"):
            targets.add(href[len("mailto:") :])
            if href[len("mailto:") :] not in text:
                problems.append(f"text part lacks the address {href[len('mailto:') :]}")
        elif href.startswith("tel:") and label not in text:
            problems.append(f"text part lacks the phone number {label!r} (whole, on one line)")
    for found in [*_URL.findall(text), *_EMAIL.findall(text)]:
        if found not in targets:
            problems.append(f"HTML part has no link to {found}")
    return list(dict.fromkeys(problems))
