"""The trace of a skeleton render: what the template did with each per-mail value,
replayable on another mail's (``mailbot.render.once``, safeguard 2). Filters are wrapped
with ``deferring`` so that, during a render under ``traced``, they record their calls on
per-mail values (``Slot``) instead of running them."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from jinja2.utils import _PassArg
from markupsafe import Markup

from mailbot.render.skeleton_fill import (
    CLOSE,
    OPEN,
    Parts,
    Unsupported,
    escapes,
    fill_text,
    split,
)

_T = TypeVar("_T")
_CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("trace", default=None)


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
