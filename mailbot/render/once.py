"""Render a mail once per key, then fill in each mail's own values (issue 14, point 6).

An AR differs from the next one of the same template, service and transfer only by a few
values: the reference, the dates, the citizen's subject (``PER_MAIL``). Rendering the whole
template and applying the stylesheet (css_inline) for every mail costs ~1 ms; rendering it
once with *slots* in place of those values and filling the slots per mail costs a few
string operations. That is only right where the output depends on those values in ways the
fill reproduces exactly, so three safeguards stand between a skeleton and a citizen:

1. **The syntax tree** (``problems``): a per-mail value may only be printed (``{{ }}``),
   possibly through filters whose other arguments are constants, tested in an ``if`` (or
   ``or``/``and``/``not``), or printed inside a ``{% filter %}`` block. Any other use (an
   assignment, a comparison, an attribute, a concatenation, a loop, a macro or a ``set``
   block around it) keeps that template on full rendering.
2. **The trace** (``Trace``): the skeleton render gives the template ``Slot`` objects. A
   filter applied to a slot, or to text holding one, is recorded and replayed on each
   mail's values; printing a slot writes a unique marker; the truth of a slot (an ``if``)
   is recorded as a *guard* that each later mail must meet (another truth value: another
   skeleton). Anything else done to a slot raises ``Unsupported``: full rendering.
3. **Verification**: the first mails of each skeleton are rendered both ways and
   compared; any difference sends its key to full rendering for good, logged once.

Escaping is reproduced exactly: a marker records how many times the text around it was
HTML-escaped, and the value is escaped as many times with markupsafe, as Jinja does. The
stylesheet is applied to the skeleton, so a value in the HTML must also come out of
css_inline's parser and serializer as it went in; ``html_value`` does what they do to
escaped text (``'``, ``"``, ``<`` in attributes, no-break space) and refuses anything
else (tags but ``<bdi>``, control characters, ...): that mail's HTML is then filled
before the stylesheet and inlined (exact, ~0.3 ms more). The same goes for every mail
whose values are not the four names of ``PER_MAIL`` (translated paragraphs: their HTML has
classes the stylesheet styles); those need a template that builds no string it could read
again (``builders``). The filled text is never evaluated again: a ``{{ 7*7 }}`` in a
subject stays seven characters; the text part is cleaned and wrapped as ``render()``
does it (``TextPlan``); filters are assumed pure (the shipped ones are).
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html.parser import HTMLParser
from typing import Any, Protocol, TypeVar

from jinja2 import nodes
from jinja2.utils import _PassArg
from markupsafe import Markup, escape

# The variables that change from one mail to the next (render.variables.message_variables).
PER_MAIL = ("reference", "received_at", "deadline", "original_subject")

OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters: a marker's ends
# A marker: "&", the escapes applied since it was written ("amp;" each), its form (s: the
# value as str(), h: as escape()), its occurrence number.
_MARK = re.compile("\ue000&((?:amp;)*)([sh])(\\d+)\ue001")
_T = TypeVar("_T")
_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("trace", default=None)


class Unsupported(Exception):
    """The template does something with a per-mail value that a skeleton cannot replay."""


# --------------------------------------------------------------------------- syntax tree

_PASS_THROUGH = (nodes.Filter, nodes.Or, nodes.And, nodes.Not, nodes.CondExpr)
_WRITES_TO_VARIABLE = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock)


def _parents(tree: nodes.Node) -> dict[int, nodes.Node]:
    parents: dict[int, nodes.Node] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in node.iter_child_nodes():
            parents[id(child)] = node
            stack.append(child)
    return parents


def _ends_use(parent: nodes.Node, child: nodes.Node) -> bool:
    """Printed, or tested by an ``if``: where a slot's way through a template ends."""
    if isinstance(parent, nodes.If):
        return parent.test is child
    return isinstance(parent, nodes.Output)


def _passes(parent: nodes.Node, child: nodes.Node) -> bool:
    """A node that hands a slot on (filtered, or as it is) without reading it."""
    if isinstance(parent, nodes.Filter):
        return parent.node is child  # a per-mail value as a filter's argument: no
    if isinstance(parent, nodes.Test):
        return parent.node is child and parent.name in {"defined", "undefined"}
    return isinstance(parent, _PASS_THROUGH)


def _allowed_use(node: nodes.Node, parents: Mapping[int, nodes.Node]) -> bool:
    """True when this per-mail name only flows to output or an ``if`` test, through
    filters, and is not printed into a variable or a macro (it could flow anywhere)."""
    child, parent = node, parents.get(id(node))
    while parent is not None and not _ends_use(parent, child):
        if not _passes(parent, child):
            return False
        child, parent = parent, parents.get(id(parent))
    if parent is None:
        return False
    while parent is not None:
        if isinstance(parent, _WRITES_TO_VARIABLE):
            return False
        parent = parents.get(id(parent))
    return True


def problems(tree: nodes.Template, per_mail: Sequence[str] = PER_MAIL) -> list[str]:
    """Why a skeleton of this template could differ from a full render (empty: it cannot,
    given the trace's own checks)."""
    parents = _parents(tree)
    found: list[str] = []
    for name in tree.find_all(nodes.Name):
        if name.name == "self":
            found.append(f"line {name.lineno}: self")
        elif name.name in per_mail and (name.ctx != "load" or not _allowed_use(name, parents)):
            kind = type(parents.get(id(name), name)).__name__
            found.append(f"line {name.lineno}: {name.name} used in {kind}")
    return found


_BUILDERS = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.Concat)


def builders(tree: nodes.Template) -> list[str]:
    """Where a template builds a string it could then read (``{% set %}`` blocks, macros,
    ``~``, ``super()``, ``caller()``). ``problems`` follows PER_MAIL's names through the
    tree; a value reached otherwise (a translated paragraph, an item of a list) is only
    followed by the trace, which sees what is done to a slot but not to a string holding
    its marker: such values need a template that never builds one."""
    found = [f"line {node.lineno}: {type(node).__name__}" for node in tree.find_all(_BUILDERS)]
    for name in tree.find_all(nodes.Name):
        if name.name in {"super", "caller", "self", "varargs", "kwargs"}:
            found.append(f"line {name.lineno}: {name.name}")
    return found


# --------------------------------------------------------------------------- the trace


class Slot:
    """A per-mail value during a skeleton render: it prints as a marker, and refuses
    anything whose result would depend on the value but its truth (recorded as a guard)."""

    __slots__ = ("_index", "_trace")

    def __init__(self, trace: Trace, index: int) -> None:
        self._trace = trace
        self._index = index

    def __str__(self) -> str:
        return self._trace.mark(self._index, "s")

    def __html__(self) -> str:
        return self._trace.mark(self._index, "h")

    def __bool__(self) -> bool:
        return self._trace.guard(self._index)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise Unsupported(f"attribute {name!r} of a per-mail value")

    def _refuse(self, *args: object) -> Any:
        raise Unsupported("a per-mail value used in an expression")

    __len__ = __iter__ = __contains__ = __getitem__ = __call__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __add__ = __radd__ = __mul__ = __rmul__ = __mod__ = __rmod__ = _refuse
    __format__ = __int__ = __float__ = __index__ = _refuse
    __hash__ = object.__hash__


# A skeleton's text cut at its markers: literal, marker number, literal, ...
Parts = tuple[str | int, ...]

# One step of a trace: a root value, a filter call, or a guard on a value's truth.
Op = tuple[Any, ...]


@dataclass(frozen=True, eq=True)
class _Text:
    """A filter's input that is text holding markers: filled before the filter runs."""

    parts: Parts
    times: Mapping[int, int]
    markup: bool


class Trace:
    """What a skeleton render did with the per-mail values, replayable on another mail's.

    ``values`` are the first mail's own values, computed along: guards need them, and the
    skeleton filled with them must equal that mail's full render."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.values: list[object] = []
        self.occurrences: list[tuple[int, str]] = []  # marker number -> (value, form)
        self._calls: dict[object, int] = {}
        self._memo: dict[tuple[object, ...], object] = {}

    def root(self, name: str, value: object) -> Slot:
        self.ops.append(("root", name))
        self.values.append(value)
        return Slot(self, len(self.values) - 1)

    def mark(self, index: int, form: str) -> str:
        self.occurrences.append((index, form))
        return f"{OPEN}&{form}{len(self.occurrences) - 1}{CLOSE}"

    def guard(self, index: int) -> bool:
        expected = bool(self.values[index])
        self.ops.append(("guard", index, expected))
        return expected

    def call(
        self,
        func: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        position: int,
    ) -> Slot:
        value = args[position]
        source: object
        if isinstance(value, Slot):
            source = value._index
        else:
            text = str(value)
            source = _Text(split(text), escapes(text), isinstance(value, Markup))
        op = ("call", func, args[:position], args[position + 1 :], kwargs, source)
        try:  # the same filter on the same value again (filters are pure): the same slot
            seen = (func, args[:position], args[position + 1 :], tuple(kwargs.items()), source)
            if seen in self._calls:
                return Slot(self, self._calls[seen])
            self._calls[seen] = len(self.values)
        except TypeError:  # an unhashable argument: computed again
            pass
        self.values.append(_apply(op, self.values, self.occurrences))
        self.ops.append(op)
        return Slot(self, len(self.values) - 1)

    def involves(self, value: object) -> bool:
        return isinstance(value, Slot) or (isinstance(value, str) and OPEN in value)

    def replay(self, roots: Mapping[str, object]) -> list[object] | None:
        """Another mail's values, step by step; None when a guard fails (another skeleton)."""
        values: list[object] = []
        for op in self.ops:
            if op[0] == "root":
                values.append(roots[op[1]])
            elif op[0] == "guard":
                if bool(values[op[1]]) is not op[2]:
                    return None
            else:
                values.append(self._call(op, values))
        return values

    def _call(self, op: Op, values: Sequence[object]) -> object:
        """A filter's result on this mail's value; the last results of each step are
        kept (a backlog's mails share a deadline, so its paragraph is wrapped once)."""
        value = _input(op, values, self.occurrences)
        key = (id(op), *exact_key(value))
        if key[1] is None:
            return op[1](*op[2], value, *op[3], **op[4])
        found = self._memo.get(key, _MISSING)
        if found is _MISSING:
            found = op[1](*op[2], value, *op[3], **op[4])
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found


_MISSING = object()
MEMO_SIZE = 4096


def exact_key(value: object) -> tuple[object, ...]:
    """A value as a cache key that tells apart what ``==`` does not: ``Markup`` from
    ``str``, and datetimes of one zone at one wall time (``fold``); (None,) when the
    value is of a type not kept."""
    kind = type(value)
    if kind is datetime:
        assert isinstance(value, datetime)
        return kind, value, value.tzinfo, value.fold
    if kind in (str, Markup, date, int, bool):
        return kind, value
    return (None,)


def _input(op: Op, values: Sequence[object], occurrences: Sequence[tuple[int, str]]) -> object:
    source = op[5]
    if isinstance(source, _Text):
        filled = fill_text(source.parts, occurrences, values, source.times)
        return Markup(filled) if source.markup else filled
    return values[source]


def _apply(op: Op, values: Sequence[object], occurrences: Sequence[tuple[int, str]]) -> object:
    return op[1](*op[2], _input(op, values, occurrences), *op[3], **op[4])


def deferring(func: Callable[..., object]) -> Callable[..., object]:
    """A filter that, during a skeleton render, records its calls on per-mail values
    instead of running them; outside one it is the filter itself."""
    pass_arg = _PassArg.from_obj(func)
    position = 1 if pass_arg is not None else 0

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> object:
        trace = _CURRENT.get()
        if trace is None or len(args) <= position:
            return func(*args, **kwargs)
        others = (*args[:position], *args[position + 1 :], *kwargs.values())
        if any(trace.involves(other) for other in others):
            raise Unsupported(f"a per-mail value as an argument of {func.__name__}")
        if not trace.involves(args[position]):
            return func(*args, **kwargs)
        if pass_arg not in (None, _PassArg.environment):
            raise Unsupported(f"filter {func.__name__} reads the template's context")
        slot = trace.call(func, args, kwargs, position)
        # Text holding markers comes from a {% filter %} block, whose result Jinja writes
        # out as it is (no escaping): the value's str(), written where the block was.
        return slot if isinstance(args[position], Slot) else str(slot)

    return wrapper


def traced(trace: Trace, run: Callable[[], _T]) -> _T:
    """``run`` (a skeleton render) with ``trace`` as the one its filters record into."""
    token = _CURRENT.set(trace)
    try:
        return run()
    finally:
        _CURRENT.reset(token)


# --------------------------------------------------------------------------- filling


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


# --------------------------------------------------------------------------- skeletons

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
