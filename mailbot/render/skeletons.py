"""Skeletons by key: built on a key's first mail, filled for the next ones, the first
mails of each checked against a full render (``mailbot.render.once``, safeguard 3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jinja2 import nodes

from mailbot.render.skeleton_fill import (
    OPEN,
    Parts,
    Unsupported,
    escapes,
    fill_html,
    fill_text,
    html_contexts,
    split,
)
from mailbot.render.skeleton_trace import Slot, Trace, traced
from mailbot.render.skeleton_tree import builders, problems

CHECKED_MAILS = 3  # the first mails of each skeleton are also rendered in full, compared
MAX_KEYS = 512  # beyond (settings that change per mail?), new keys render in full
MAX_VARIANTS = 8  # skeletons per key (one per combination of guards met)
# A skeleton render's raw parts: subject, text, HTML (before the stylesheet).
Draft = tuple[str, str, str]


@dataclass(frozen=True)
class TextPlan:
    """The text part of a skeleton: raw, and cleaned and wrapped once where only the lines
    that hold a value are finished per mail. ``finish`` is the renderer's clean-up of a
    whole text (line ends, trailing spaces, blank lines, then long lines re-wrapped),
    ``wrap`` the re-wrapping alone: both work line by line, so the lines without a value
    come out the same whatever the values, provided no value leaves a line blank
    (``_clean_lines``); otherwise the whole text is finished again."""

    raw: Parts
    times: Mapping[int, int]
    chunks: tuple[str | Parts, ...]  # finished lines without values, or one line's parts
    finish: Callable[[str], str]
    wrap: Callable[[str], str]

    @classmethod
    def of(
        cls,
        raw: str,
        finish: Callable[[str], str],
        clean: Callable[[str], str],
        wrap: Callable[[str], str],
    ) -> TextPlan:
        chunks: list[str | Parts] = []
        static: list[str] = []
        for line in clean(raw).split("\n"):
            if OPEN not in line:
                static.append(line)
                continue
            if static:
                chunks.append(wrap("\n".join(static)))
                static = []
            chunks.append(split(line))
        chunks.append(wrap("\n".join(static)))
        return cls(split(raw), escapes(raw), tuple(chunks), finish, wrap)

    def fill(self, occurrences: Sequence[tuple[int, str]], values: Sequence[object]) -> str:
        out: list[str] = []
        for chunk in self.chunks:
            if isinstance(chunk, str):
                out.append(chunk)
                continue
            line = fill_text(chunk, occurrences, values, self.times)
            lines = _clean_lines(line)
            if lines is None:
                return self.finish(fill_text(self.raw, occurrences, values, self.times))
            out.append(self.wrap(lines))
        return "\n".join(out)


def _clean_lines(text: str) -> str | None:
    """A skeleton's line once filled, as the clean-up of the whole text leaves it (line
    ends, trailing spaces); None when it is not sure to: a line left blank (blank lines
    are collapsed across lines) or a signature delimiter ("-- ") that the skeleton's own
    clean-up could have cut."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    for number, line in enumerate(lines):
        if line != "-- ":
            line = lines[number] = line.rstrip()
            if not line or line == "--":
                return None
    return "\n".join(lines)


@dataclass(frozen=True)
class Skeleton:
    """One key's render with markers, and how to fill it for a mail whose guards agree."""

    trace: Trace
    subject: Parts
    subject_times: Mapping[int, int]
    text: TextPlan
    markup: Parts  # the HTML before the stylesheet
    html_times: Mapping[int, int]
    html: Parts | None  # after the stylesheet; None: filled before it, then inlined
    html_attribute: Mapping[int, bool] | None  # None: no stylesheet, the HTML as written
    inline: Callable[[str], str] | None
    counts: Counter[str]  # the Skeletons' own: how many mails' HTML was inlined each

    def fill(self, roots: Mapping[str, object]) -> Draft | None:
        """This mail's raw subject, finished text and inlined HTML; None when a guard
        differs (another skeleton)."""
        values = self.trace.replay(roots)
        if values is None:
            return None
        occurrences = self.trace.occurrences
        html = None
        if self.html is not None:
            html = fill_html(self.html, occurrences, values, self.html_times, self.html_attribute)
        if html is None:  # the stylesheet applied to this mail's HTML: exact, but slower
            self.counts["inlined"] += 1
            html = fill_text(self.markup, occurrences, values, self.html_times)
            html = self.inline(html) if self.inline else html
        subject = fill_text(self.subject, occurrences, values, self.subject_times)
        return subject, self.text.fill(occurrences, values), html


@dataclass(frozen=True)
class Request:
    """One mail to draft from a skeleton."""

    name: str  # the template
    settings: str  # everything but the per-mail values, as a key
    roots: Mapping[str, object]  # the per-mail values, by name
    render: Callable[[Mapping[str, Slot]], Draft]  # the three parts, slots for the roots
    inline_each: bool = False  # the HTML's values need the stylesheet: filled, then inlined
    beyond_names: bool = False  # values that are not PER_MAIL's names: see ``builders``


# What the syntax trees of a template say: why it always renders in full (``problems``),
# where it builds text it could read again (``builders``).
Analysis = tuple[list[str], list[str]]


class Memo(Protocol):
    """Analyses kept between starts, for the very sources and code that gave them."""

    def recall(self, name: str) -> Analysis | None: ...

    def keep(self, name: str, analysis: Analysis) -> None: ...


@dataclass
class _Key:
    variants: list[Skeleton]
    checks_left: list[int]  # per variant: its first mails are checked
    full: bool = False  # skeletons refused for this key: always a full render


class Skeletons:
    """Skeletons by key, built on first use, checked against full renders.

    A ``Request`` renders a template's three parts in the skeleton environments (filters
    wrapped with ``deferring``); ``inline`` applies the stylesheet
    (None: there is none, the HTML stays as Jinja wrote it);
    ``trees(name)`` gives the syntax trees of every file the template uses; ``text`` is
    the renderer's clean-up of a text part and its re-wrapping of long lines; ``memo``
    keeps what the trees said between starts (parsing them is ~25 ms of a first AR)."""

    def __init__(
        self,
        inline: Callable[[str], str] | None,
        trees: Callable[[str], Sequence[tuple[str, nodes.Template]]],
        text: tuple[Callable[[str], str], Callable[[str], str]],
        log: Callable[[str], None],
        memo: Memo | None = None,
    ) -> None:
        self._clean, self._wrap = text
        self._inline = inline
        self._trees = trees
        self._log = log
        self._memo = memo
        self._keys: dict[tuple[str, str], _Key] = {}
        self._refused: dict[str, list[str]] = {}
        self._builders: dict[str, list[str]] = {}
        # Mails from a skeleton, in full, checked against a full render, their HTML inlined.
        self.counts: Counter[str] = Counter()

    def _finish(self, text: str) -> str:
        return self._wrap(self._clean(text))

    def builders(self, name: str) -> list[str]:
        """Where this template builds text it could read again (see ``builders``)."""
        if name not in self._builders:
            self._analyse(name)
        return self._builders[name]

    def refusals(self, name: str) -> list[str]:
        """Why this template always renders in full (empty: it may use skeletons)."""
        if name not in self._refused:
            self._analyse(name)
        return self._refused[name]

    def _analyse(self, name: str) -> None:
        """Both analyses of a template, from one parse of its files, or as kept by an
        earlier start for the same sources (``memo``)."""
        found = self._memo.recall(name) if self._memo is not None else None
        if found is None:
            trees = self._trees(name)
            found = (
                [f"{where}: {problem}" for where, tree in trees for problem in problems(tree)],
                [f"{where}: {problem}" for where, tree in trees for problem in builders(tree)],
            )
            if self._memo is not None:
                self._memo.keep(name, found)
        self._refused[name], self._builders[name] = found
        if found[0]:
            self._log(f"template {name!r} renders in full: {found[0][0]}")

    def draft(self, request: Request) -> tuple[Draft | None, bool]:
        """This mail's raw subject, finished text and inlined HTML from a skeleton (None:
        render it in full), and whether the caller must compare them with a full render."""
        found, check = self._find(request)
        self.counts["skeleton" if found else "full"] += 1
        self.counts["checked"] += check
        return found, check

    def _find(self, request: Request) -> tuple[Draft | None, bool]:
        if self.refusals(request.name) or (request.beyond_names and self.builders(request.name)):
            return None, False
        key = (request.name, request.settings)
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                return None, False
            entry = self._keys[key] = _Key([], [])
        if entry.full:
            return None, False
        for number, skeleton in enumerate(entry.variants):
            filled = skeleton.fill(request.roots)
            if filled is not None:
                return self._checked(entry, number, filled)
        if len(entry.variants) >= MAX_VARIANTS:
            return None, False
        try:
            skeleton = self._build(request)
        except Unsupported as exc:
            entry.full = True
            self._log(f"template {request.name!r} renders in full for these settings: {exc}")
            return None, False
        entry.variants.append(skeleton)
        entry.checks_left.append(CHECKED_MAILS)
        filled = skeleton.fill(request.roots)
        if filled is None:
            return None, False
        return self._checked(entry, len(entry.variants) - 1, filled)

    def mismatch(self, request: Request) -> None:
        """A skeleton's result differed from the full render: never again for this key."""
        entry = self._keys.get((request.name, request.settings))
        if entry is not None and not entry.full:
            entry.full = True
            self._log(
                f"template {request.name!r}: a skeleton differed from the full render; "
                "these settings now render in full"
            )

    def _checked(self, entry: _Key, variant: int, filled: Draft) -> tuple[Draft, bool]:
        if entry.checks_left[variant] > 0:
            entry.checks_left[variant] -= 1
            return filled, True
        return filled, False

    def _build(self, request: Request) -> Skeleton:
        trace = Trace()
        slots = {key: trace.root(key, value) for key, value in request.roots.items()}
        try:
            subject, text, markup = traced(trace, lambda: request.render(slots))
        except Unsupported:
            raise
        except Exception as exc:  # an error about a slot, not about the template
            raise Unsupported(f"{type(exc).__name__}: {exc}") from None
        html, attribute = None, None
        if not request.inline_each:
            inlined = self._inline(markup) if self._inline else markup
            html = split(inlined)
            if sorted(part for part in html if isinstance(part, int)) != sorted(
                part for part in split(markup) if isinstance(part, int)
            ):
                raise Unsupported("the stylesheet moved or dropped a per-mail value")
            attribute = html_contexts(inlined) if self._inline else None
        return Skeleton(
            trace,
            split(subject),
            escapes(subject),
            TextPlan.of(text, self._finish, self._clean, self._wrap),
            split(markup),
            escapes(markup),
            html,
            attribute,
            self._inline,
            self.counts,
        )
