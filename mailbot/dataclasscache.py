"""Dataclasses' generated methods compiled once, not at every start (issue 14, point 9).

Python 3.11's ``dataclasses`` writes the methods of each class it decorates (``__init__``,
``__repr__``, ``__eq__``, a frozen class's ``__hash__``, ``__setattr__`` and
``__delattr__``) as source text and compiles that text with ``exec`` every time the class
is defined: ~0.15 ms a method, most of a dataclass's ~0.7 ms. A ``poll --once`` defines
~130 of them before its first mail (mailbot's ~75, pydantic's, annotated_types',
imapclient's): ~80 ms of its CPU went to compiling the same texts at each start.

``install`` (called by ``cli.console``, before any command imports them) gives the
``dataclasses`` module an ``exec`` of its own, found before the builtin one: the compiled
code of each text is kept in the cache directory (``mailbot.cachedir``, sub-directory
``dataclasses``), in one file per interpreter's bytecode (its magic number) and
optimisation level. The text is the key, so a changed class is a new entry, never a stale
one, and the code is what ``exec`` itself would compile: file name ``<string>``, no
``__future__`` flag (dataclasses.py has none: the annotations of ``__init__`` stay objects).
The directory is trusted with code as it is for the templates' compiled bytecode
(``cachedir.unsafe_reason``); a file missing, damaged or unwritable only means compiling,
as before. New entries are written when the process exits (``atexit``; ``console`` runs
the exit handlers).
"""

from __future__ import annotations

import atexit
import builtins
import dataclasses
import marshal
import os
import sys
import tempfile
import threading
import types
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from typing import Any

from mailbot.cachedir import private_subdirectory

SUBDIRECTORY = "dataclasses"
# Entries kept at most: past it, a process writes only the texts it used itself (what a
# long series of upgrades left behind goes; ~1 KB an entry).
LIMIT = 4096


def file_name() -> str:
    """The cache file of this interpreter: code objects are only valid for its bytecode."""
    return f"{MAGIC_NUMBER.hex()}-O{sys.flags.optimize}.marshal"


class CodeCache:
    """The compiled code of dataclasses' method texts, read from ``path`` on first use."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path  # None: the cache directory's, found on first use
        self._codes: dict[str, types.CodeType] | None = None
        self._used: dict[str, types.CodeType] = {}
        self._added = False
        self._lock = threading.Lock()
        self.compiled = 0  # texts compiled by this process (none once the cache is warm)

    def code(self, text: str) -> types.CodeType:
        """The text's code, compiled as ``exec(text)`` in dataclasses.py would compile it."""
        codes = self._codes if self._codes is not None else self._load()
        code = codes.get(text)
        if code is None:
            code = compile(text, "<string>", "exec", dont_inherit=True)
            codes[text] = code
            self._added = True
            self.compiled += 1
        self._used[text] = code
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

    def entries(self) -> int:
        """How many texts the cache holds (read from its file if not yet)."""
        return len(self._codes if self._codes is not None else self._load())

    def save(self) -> None:
        """Write the entries whole if this process compiled new ones (a reader never sees
        half a file; two writers: the last one's file); a failure only costs time."""
        if not self._added or self._codes is None or self.path is None:
            return
        keep = self._codes if len(self._codes) <= LIMIT else self._used
        try:
            data = marshal.dumps(keep)
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, self.path)
        except (OSError, ValueError):
            return
        self._added = False

    def _load(self) -> dict[str, types.CodeType]:
        with self._lock:
            if self._codes is None:
                if self.path is None:
                    folder = private_subdirectory(SUBDIRECTORY)
                    self.path = folder / file_name() if folder is not None else None
                self._codes = _read(self.path)
            return self._codes


def _read(path: Path | None) -> dict[str, types.CodeType]:
    """The entries of ``path``: nothing when it is missing or not such a file."""
    if path is None:
        return {}
    try:
        value = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if type(k) is str and type(v) is types.CodeType}


def install(cache: CodeCache | None = None) -> CodeCache:
    """Give ``dataclasses`` the cache's ``exec`` (once per process) and save the new
    entries at exit. Nothing is read until the first dataclass is defined."""
    owner = getattr(vars(dataclasses).get("exec"), "__self__", None)
    if isinstance(owner, CodeCache):
        return owner
    cache = cache if cache is not None else CodeCache()
    vars(dataclasses)["exec"] = cache.exec
    atexit.register(cache.save)
    return cache


def uninstall() -> None:
    """The builtin ``exec`` again (tests); entries compiled meanwhile are saved."""
    current = vars(dataclasses).pop("exec", None)
    owner = getattr(current, "__self__", None)
    if isinstance(owner, CodeCache):
        atexit.unregister(owner.save)
        owner.save()
