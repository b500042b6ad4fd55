"""What Python compiles again at every start, compiled once (issue 14, point 9).

Three things are compiled from text each time a process defines them, the same text giving
the same result, and a ``poll --once`` spent ~120 ms of its CPU on them before its first
mail (mailbot's modules and its libraries: pydantic, annotated_types, SQLAlchemy, YAML,
Jinja, imapclient, the standard library):

* **dataclasses' methods**: Python 3.11's ``dataclasses`` writes each class's
  ``__init__``, ``__repr__``, ``__eq__`` (a frozen class's ``__hash__``, ``__setattr__``
  and ``__delattr__`` too) as source text and compiles it with ``exec``: ~0.15 ms a
  method, ~130 classes. ``install`` gives the ``dataclasses`` module an ``exec`` of its own,
  found before the builtin one, that takes the code of a text seen before from the cache.
  The code is what ``exec`` itself compiles: file name ``<string>``, no ``__future__``
  flag (dataclasses.py has none: the annotations of ``__init__`` stay objects).
* **string annotations**: ``typing.ForwardRef`` compiles each one it is given (pydantic-core's
  ~100 TypedDicts alone hold ~1,000 of them): ``install`` gives the ``typing`` module a
  ``compile`` of its own that takes a text's code from the cache, compiled as ``typing``
  compiles it (mode ``eval``, file name ``<string>``, no ``__future__`` flag: typing.py has
  none); any other call is the builtin's.
* **regular expressions**: ``re`` parses a pattern and compiles it to the SRE engine's code
  in Python (~0.2 ms a pattern, ~250 patterns). ``install`` wraps ``re._compiler.compile``:
  a pattern seen before is made by the engine (``_sre.compile``) from its kept code. An
  entry is kept only once the pattern it makes equals the one ``re`` made (``Pattern.__eq__``
  compares the engine's code), its groups and their names too; a pattern whose parsing
  may warn (a possible nested set, a set operation, a non-ASCII group name: FutureWarning,
  DeprecationWarning) is never kept, so every warning ``re`` gives is still given.

The entries live in the cache directory (``mailbot.cachedir``, sub-directory ``code``),
one file per kind and interpreter (its bytecode's magic number, the SRE engine's version,
the optimisation level): code is only valid for the interpreter that made it. The key is
the whole text (pattern and flags), so an edited class or pattern is a new entry, never a
stale one. The directory is trusted with code as it is for the templates' compiled
bytecode (``cachedir.unsafe_reason``). Nothing is read before the first class or pattern
is made (``mailbot --help`` reads nothing); a file missing, damaged or unwritable only
means compiling, as before. New entries are written when the process exits (``atexit``;
``cli.console`` runs the exit handlers), and by ``run`` once it has started (``save``).
"""

from __future__ import annotations

import atexit
import builtins
import dataclasses
import marshal
import os
import re
import sys
import tempfile
import threading
import types
import typing
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from typing import Any

from mailbot.cachedir import private_subdirectory

# re's compiler and the SRE engine, private modules that ``import re`` has loaded (untyped).
_compiler: Any = sys.modules["re._compiler"]
_parser: Any = sys.modules["re._parser"]
_sre: Any = sys.modules["_sre"]
_RE_COMPILE = _compiler.compile  # re's own, whatever is installed later

SUBDIRECTORY = "code"


def file_name(kind: str) -> str:
    """The cache file of a kind of code for this interpreter."""
    return f"{kind}-{MAGIC_NUMBER.hex()}-{_sre.MAGIC}-O{sys.flags.optimize}.marshal"


class _Kept:
    """A dictionary kept in a marshal file, read on first use, written at exit if grown."""

    kind = ""
    # Entries kept at most in a file: past it, a process writes only those it used itself
    # (what upgrades left behind goes, and the texts made anew by every process).
    limit = 4096

    def __init__(self, path: Path | None = None) -> None:
        self.path = path  # None: the cache directory's, found on first use
        self._entries: dict[Any, Any] | None = None
        self._used: dict[Any, Any] = {}
        self._added = False
        self._lock = threading.Lock()
        self.compiled = 0  # entries this process had to compile (none once warm)

    def get(self, key: Any) -> Any:
        entries = self._entries if self._entries is not None else self._load()
        value = entries.get(key)
        if value is not None:
            self._used[key] = value
        return value

    def put(self, key: Any, value: Any) -> None:
        entries = self._entries if self._entries is not None else self._load()
        entries[key] = self._used[key] = value
        self._added = True
        self.compiled += 1

    def entries(self) -> int:
        """How many entries the cache holds (read from its file if not yet)."""
        return len(self._entries if self._entries is not None else self._load())

    def save(self) -> None:
        """Write the entries whole if this process added some (a reader never sees half a
        file; of two writers, the last one's file stays); a failure only costs time."""
        if not self._added or self._entries is None or self.path is None:
            return
        keep = self._entries if len(self._entries) <= self.limit else self._used
        try:
            data = marshal.dumps(keep)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, self.path)
        except (OSError, ValueError):
            return
        self._added = False

    def valid(self, key: Any, value: Any) -> bool:
        """Whether a read entry has this kind's shape (else it is dropped)."""
        raise NotImplementedError

    def _load(self) -> dict[Any, Any]:
        with self._lock:
            if self._entries is None:
                if self.path is None:
                    folder = private_subdirectory(SUBDIRECTORY)
                    self.path = folder / file_name(self.kind) if folder is not None else None
                self._entries = self._read()
            return self._entries

    def _read(self) -> dict[Any, Any]:
        if self.path is None:
            return {}
        try:
            value = marshal.loads(self.path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if not isinstance(value, dict):
            return {}
        return {k: v for k, v in value.items() if self.valid(k, v)}


class DataclassCode(_Kept):
    """The compiled code of dataclasses' method texts."""

    kind = "dataclasses"

    def valid(self, key: Any, value: Any) -> bool:
        return type(key) is str and type(value) is types.CodeType

    def code(self, text: str) -> types.CodeType:
        """The text's code, compiled as ``exec(text)`` in dataclasses.py compiles it."""
        code: types.CodeType | None = self.get(text)
        if code is None:
            code = compile(text, "<string>", "exec", dont_inherit=True)
            self.put(text, code)
        return code

    def exec(
        self,
        source: Any,
        globals: dict[str, Any] | None = None,
        locals: Any = None,
        /,
        **options: Any,
    ) -> None:
        """``exec`` for the dataclasses module: a text's code from the cache, the rest as
        the builtin does (with the caller's namespaces when none is given, as it would)."""
        if globals is None:
            caller = sys._getframe(1)
            globals = caller.f_globals
            locals = caller.f_locals if locals is None else locals
        if type(source) is str and not options:
            source = self.code(source)
        builtins.exec(source, globals, locals, **options)


class TypingCode(_Kept):
    """The compiled code of string annotations (``typing.ForwardRef``), by text."""

    kind = "typing"

    def valid(self, key: Any, value: Any) -> bool:
        return type(key) is str and type(value) is types.CodeType

    def compile(
        self,
        source: Any,
        filename: Any,
        mode: str,
        flags: int = 0,
        dont_inherit: bool = False,
        optimize: int = -1,
        **options: Any,
    ) -> Any:
        """``compile`` for the typing module: a ForwardRef's text from the cache; else the
        builtin, with typing.py's own flags (none) as it would have inherited them."""
        if (
            type(source) is str
            and filename == "<string>"
            and mode == "eval"
            and not flags
            and optimize == -1
            and not options
        ):
            code: types.CodeType | None = self.get(source)
            if code is None:
                code = compile(source, "<string>", "eval", dont_inherit=True)
                self.put(source, code)
            return code
        return compile(source, filename, mode, flags, True, optimize, **options)


# Texts whose parsing may warn (re/_parser.py: a possible nested set "[[", set operations
# "--", "&&", "~~", "||", a conditional group's name "(?("); a non-ASCII group name).
_MAY_WARN = ("[[", "--", "&&", "~~", "||", "(?(")
_Args = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]


class RegexCode(_Kept):
    """The SRE engine's code of regular expressions, by pattern and flags."""

    kind = "re"
    # A few patterns are new text in every process (imaplib's tags start with a random
    # prefix; the email package and Jinja build some from sets, whose order follows the
    # process's string hashes): ~10 entries a start, dropped once past the limit.
    limit = 1024

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path)
        self.original = _RE_COMPILE

    def valid(self, key: Any, value: Any) -> bool:
        return (
            type(key) is tuple
            and len(key) == 2
            and type(key[0]) in (str, bytes)
            and type(key[1]) is int
            and type(value) is tuple
            and len(value) == 5
            and type(value[1]) is list
        )

    def compile(self, pattern: Any, flags: int = 0) -> Any:
        """``re._compiler.compile``: from the kept code when this pattern was seen before."""
        kind = type(pattern)
        if (kind is not str and kind is not bytes) or flags & re.DEBUG or _may_warn(pattern):
            return self.original(pattern, flags)
        flags = int(flags)  # re passes an int; a RegexFlag is not marshalled
        kept: _Args | None = self.get((pattern, flags))
        if kept is not None:
            try:
                return _sre.compile(pattern, *kept)
            except (TypeError, ValueError, RuntimeError):  # not code this engine takes
                pass
        made = self.original(pattern, flags)  # as before, warnings and errors included
        try:
            args = _engine_args(pattern, flags)
            again = _sre.compile(pattern, *args)
        except Exception:  # another interpreter's re: made as before, nothing kept
            return made
        if again == made and again.groupindex == made.groupindex and again.groups == made.groups:
            self.put((pattern, flags), args)
        return made


def _may_warn(pattern: str | bytes) -> bool:
    text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
    return any(s in text for s in _MAY_WARN) or ("(?P" in text and not text.isascii())


def _engine_args(pattern: str | bytes, flags: int) -> _Args:
    """What ``re._compiler.compile`` hands the engine for this pattern, in plain types."""
    parsed = _parser.parse(pattern, flags)
    code = [int(op) for op in _compiler._code(parsed, flags)]
    groupindex = {str(k): int(v) for k, v in parsed.state.groupdict.items()}
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return (
        flags | parsed.state.flags,
        code,
        parsed.state.groups - 1,
        groupindex,
        tuple(indexgroup),
    )


class Caches:
    """The caches of a process."""

    def __init__(
        self,
        dataclass: DataclassCode | None = None,
        regex: RegexCode | None = None,
        typing: TypingCode | None = None,
    ) -> None:
        self.dataclass = dataclass if dataclass is not None else DataclassCode()
        self.regex = regex if regex is not None else RegexCode()
        self.typing = typing if typing is not None else TypingCode()

    def save(self) -> None:
        self.dataclass.save()
        self.regex.save()
        self.typing.save()


_installed: Caches | None = None


def install(caches: Caches | None = None) -> Caches:
    """Give ``dataclasses``, ``typing`` and ``re`` the caches (once per process) and save the new
    entries at exit. Nothing is read until the first dataclass or pattern is made."""
    global _installed
    if _installed is not None:
        return _installed
    caches = caches if caches is not None else Caches()
    vars(dataclasses)["exec"] = caches.dataclass.exec
    vars(typing)["compile"] = caches.typing.compile
    _compiler.compile = caches.regex.compile
    atexit.register(caches.save)
    _installed = caches
    return caches


def save() -> None:
    """Write what this process compiled so far (``run``, once started: a worker may never
    reach its exit handlers), if the caches are installed."""
    if _installed is not None:
        _installed.save()


def uninstall() -> None:
    """The builtin ``exec`` and ``compile`` and re's own compile again (tests); the new
    entries saved."""
    global _installed
    if _installed is None:
        return
    vars(dataclasses).pop("exec", None)
    vars(typing).pop("compile", None)
    _compiler.compile = _installed.regex.original
    atexit.unregister(_installed.save)
    _installed.save()
    _installed = None
