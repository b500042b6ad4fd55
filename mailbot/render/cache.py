"""What the renderer keeps between runs so that mailbot starts fast (issue 14, point 9).

Two things, in one directory private to mailbot's user:

* Jinja's compiled templates (its bytecode cache): a start loads them instead of parsing
  and compiling every template again. Jinja checks each entry against its template's
  source, so an edited template is compiled afresh;
* a record that a template directory passed the renderer's checks (every template
  test-rendered with its examples): a start skips those trial renders while the directory,
  and the code that renders it, is exactly what passed. ``mailbot check`` and ``mailbot
  templates check`` always run them;
* what the syntax trees of each template say about rendering it from a skeleton
  (``skeletons.Skeletons``): parsing them again is ~25 ms of a first AR. Keyed by the same
  fingerprint as the checks (every template file, the rendering code, Jinja's version);
* the public holidays an AR's deadline counts with, as the ``holidays`` package computed
  them: loading that package is ~40 ms of a start. An entry is keyed by the package's files
  (an upgrade computes them again), the subdivision and the years.

The directory is ``$MAILBOT_CACHE_DIR``, else systemd's ``$CACHE_DIRECTORY``
(``CacheDirectory=mailbot`` in the unit), else ``$XDG_CACHE_HOME/mailbot`` or
``~/.cache/mailbot`` (``mailbot.cachedir``). It is created 0700; one that another user
owns or may write to is refused (loading compiled templates from it would run their code,
outside the sandbox): mailbot then compiles and checks everything at each start, as
without a cache, and says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import jinja2
import jinja2.bccache

import mailbot
from mailbot.cachedir import CACHE_ENV, default_directory, unsafe_reason

__all__ = ["CACHE_ENV", "RenderCache", "default_directory", "fingerprint", "open_cache"]

log = logging.getLogger(__name__)

CHECKS_DIR = "template-checks"
BYTECODE_DIR = "jinja"
HOLIDAYS_DIR = "holidays"
ANALYSES_DIR = "skeletons"
# The files of the `holidays` package whose change may change France's holidays.
_HOLIDAYS_FILES = ("version.py", "holiday_base.py", "countries/france.py")
# Code whose change may change what the checks find: the renderer and the pure helpers its
# filters call. A new mailbot install (new files) means checking again.
_CODE_DIRS = (Path(__file__).parent, Path(mailbot.__file__).parent / "core")


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache, where a file that cannot be read or written (disk full, a
    directory made read-only) only means compiling the template again."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError as exc:
            log.warning("compiled template not read from %s: %s", self.directory, exc)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as exc:
            log.warning("compiled template not kept in %s: %s", self.directory, exc)


class RenderCache:
    """One cache directory, already checked: safe to load compiled templates from."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def bytecode(self, flavour: str) -> jinja2.BytecodeCache:
        """Jinja's bytecode cache for one kind of environment. Jinja keys an entry by the
        template's name and file only, so environments that compile the same file
        differently (autoescaped or not) need their own ``flavour``."""
        digest = hashlib.sha256(f"{flavour}|{jinja2.__version__}".encode()).hexdigest()[:16]
        return _BytecodeCache(str(self.directory / BYTECODE_DIR), f"{digest}-%s.cache")

    def public_holidays(self, subdivision: str | None, years: range) -> frozenset[date]:
        """France's public holidays (``core.workdays.public_holidays``), read from the cache
        when the installed ``holidays`` package computed them before; computed, and kept,
        otherwise. A file that cannot be read or written only means computing them."""
        key = _holidays_key(subdivision, years)
        path = self.directory / HOLIDAYS_DIR / f"{key}.json"
        if key is not None:
            try:
                return frozenset(map(date.fromisoformat, json.loads(path.read_bytes())))
            except (OSError, ValueError, TypeError):
                pass  # not there yet (or damaged): computed below, then kept
        from mailbot.core.workdays import public_holidays

        found = public_holidays(subdivision, years)
        if key is not None:
            self._write(path, json.dumps(sorted(map(date.isoformat, found))).encode())
        return found

    def analyses(self, fingerprint: str) -> TemplateAnalyses:
        """The skeletons' analyses of the templates of a directory with this fingerprint."""
        return TemplateAnalyses(self, fingerprint)

    def _write(self, path: Path, data: bytes) -> None:
        """Write a file whole (a reader never sees half of it); a failure only costs time."""
        try:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        except OSError as exc:
            log.warning("cannot keep %s in the cache: %s", path.name, exc)

    def passed(self, fingerprint: str) -> bool:
        """True when a directory with this fingerprint passed every check before."""
        return (self.directory / CHECKS_DIR / fingerprint).is_file()

    def record_pass(self, fingerprint: str) -> None:
        """Remember that this fingerprint passed; a failure to write only costs a check."""
        folder = self.directory / CHECKS_DIR
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".", delete=False) as tmp:
                tmp.write(b"passed\n")
            os.replace(tmp.name, folder / fingerprint)
        except OSError as exc:
            log.warning("cannot record the template checks in %s: %s", folder, exc)


class TemplateAnalyses:
    """``skeletons.Memo`` in the cache: one JSON file per template and fingerprint. A file that
    cannot be read, or is not two lists of strings, is an analysis to make again."""

    def __init__(self, cache: RenderCache, fingerprint: str) -> None:
        self._cache = cache
        self._fingerprint = fingerprint

    def _path(self, name: str) -> Path:
        return self._cache.directory / ANALYSES_DIR / f"{self._fingerprint}-{name}.json"

    def recall(self, name: str) -> tuple[list[str], list[str]] | None:
        try:
            refusals, builders = json.loads(self._path(name).read_bytes())
        except (OSError, ValueError, TypeError):
            return None
        lists = [refusals, builders]
        if all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in lists):
            return refusals, builders
        return None

    def keep(self, name: str, analysis: tuple[list[str], list[str]]) -> None:
        self._cache._write(self._path(name), json.dumps(analysis).encode())


def open_cache(directory: Path | None = None) -> RenderCache | None:
    """The cache directory (``default_directory()`` unless given), created 0700 if missing;
    None, with a warning, when it cannot be created or is not safe."""
    directory = directory if directory is not None else default_directory()
    if directory is None:
        return None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = unsafe_reason(directory)
        for name in (BYTECODE_DIR, CHECKS_DIR, HOLIDAYS_DIR, ANALYSES_DIR):  # checked anyway
            if reason is None:
                (directory / name).mkdir(mode=0o700, exist_ok=True)
                reason = unsafe_reason(directory / name)
    except OSError as exc:
        log.warning("no template cache: cannot create %s: %s", directory, exc.strerror)
        return None
    if reason is not None:
        log.warning(
            "template cache %s refused: %s; templates are compiled at each start",
            directory,
            reason,
        )
        return None
    return RenderCache(directory)


def fingerprint(template_dir: Path, *settings: str) -> str:
    """Everything the renderer's checks depend on, hashed: every file of the template
    directory (name and content), the settings given (time zone…), the versions of
    mailbot and Jinja, and the files of the rendering code (size and modification time)."""
    digest = hashlib.sha256()
    for part in (mailbot.__version__, jinja2.__version__, *settings):
        digest.update(f"{part}\0".encode())
    for code_dir in _CODE_DIRS:
        for path in sorted(code_dir.glob("*.py")):
            info = path.stat()
            digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    for path in sorted(template_dir.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(template_dir)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _holidays_key(subdivision: str | None, years: range) -> str | None:
    """What France's holidays depend on, hashed: the ``holidays`` package's files (name,
    size, modification time; found without importing it), the subdivision, the years.
    None when the package cannot be found that way (nothing is cached then)."""
    spec = importlib.util.find_spec("holidays")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return _file_digest(
        (package / name for name in _HOLIDAYS_FILES), f"{subdivision}|{years.start}-{years.stop}"
    )


def _file_digest(paths: Iterable[Path], *parts: str) -> str | None:
    digest = hashlib.sha256("\0".join(parts).encode())
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            return None
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:32]
