"""Code compiled once (``mailbot.codecache``, issue 14 point 9): a class or a pattern made
from the cache is the one ``dataclasses`` or ``re`` makes without it, and a command's
second start compiles none of the texts its first start compiled."""

from __future__ import annotations

import dataclasses
import inspect
import marshal
import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, etrangers_user, write_config

from mailbot import codecache
from mailbot.codecache import DataclassCode, RegexCode

__all__ = ["etrangers_user"]

ROOT = Path(__file__).resolve().parent.parent

# Classes of every shape dataclasses writes methods for, in a module WITHOUT
# ``from __future__ import annotations`` (its annotations are objects, as pydantic's and
# annotated_types' are) and in one with it (mailbot's modules).
CLASSES = """
import dataclasses
from typing import ClassVar

@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: float = 0.5
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    unit: ClassVar[str] = "m"

@dataclasses.dataclass(order=True, kw_only=True)
class Ordered:
    rank: int
    name: str = "a"

@dataclasses.dataclass(eq=False)
class Plain:
    value: object = None
"""


def _define(cache: DataclassCode | None, future: bool) -> dict[str, Any]:
    """The classes of CLASSES, defined with the cache's ``exec`` (or the builtin one)."""
    source = ("from __future__ import annotations\n" if future else "") + CLASSES
    namespace: dict[str, Any] = {"__name__": "dataclasscache_probe"}
    sys.modules["dataclasscache_probe"] = type(sys)("dataclasscache_probe")
    sys.modules["dataclasscache_probe"].__dict__.update(namespace)
    if cache is not None:
        vars(dataclasses)["exec"] = cache.exec
    try:
        exec(compile(source, "<probe>", "exec", dont_inherit=True), namespace)
    finally:
        vars(dataclasses).pop("exec", None)
        del sys.modules["dataclasscache_probe"]
    return namespace


def _behaviour(ns: dict[str, Any]) -> list[object]:
    """What the generated methods do, in values that compare across two definitions."""
    point, ordered, plain = ns["Point"], ns["Ordered"], ns["Plain"]
    p = point(1, tags=("t",))
    try:
        p.x = 2
        frozen = "assigned"
    except dataclasses.FrozenInstanceError as exc:
        frozen = str(exc)
    try:
        del p.y
        deleted = "deleted"
    except dataclasses.FrozenInstanceError as exc:
        deleted = str(exc)
    return [
        repr(p),
        p == point(1, tags=("t",)),
        p == point(2),
        hash(p) == hash(point(1, tags=("t",))),
        frozen,
        deleted,
        point.__slots__,
        repr(ordered(rank=2)),
        ordered(rank=1) < ordered(rank=2),
        repr(sorted([ordered(rank=3), ordered(rank=1, name="b")])),
        plain(1) == plain(1),
        plain.__hash__ is object.__hash__,
        [(k, v.__qualname__) for k, v in vars(point).items() if callable(v)],
    ]


def _signatures(ns: dict[str, Any]) -> list[object]:
    """Every generated method's signature with its annotations as they are held (objects
    or strings): pydantic and ``typing.get_type_hints`` read these."""
    found: list[object] = []
    for name in ("Point", "Ordered", "Plain"):
        for method in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__lt__"):
            function = vars(ns[name]).get(method)
            if callable(function):
                function = inspect.unwrap(function)
                found.append((name, method, str(inspect.signature(function))))
                found.append((name, method, dict(function.__annotations__)))
                found.append((name, method, function.__code__.co_filename))
    return found


@pytest.mark.parametrize("future", [False, True])
def test_a_class_from_the_cache_is_the_class_dataclasses_makes(
    tmp_path: Path, future: bool
) -> None:
    """Compiled on a first start (the file written), read back on a second (nothing
    compiled, nothing written): both give the methods the builtin ``exec`` gives, their
    annotations objects where dataclasses makes objects (its text has no ``__future__``
    flag, though this module and mailbot's have one)."""
    path = tmp_path / codecache.file_name("dataclasses")
    builtin = _define(None, future)
    first = DataclassCode(path)
    made = _define(first, future)
    assert first.compiled > 0
    first.save()
    assert path.is_file()
    written = path.read_bytes()
    second = DataclassCode(path)
    again = _define(second, future)
    second.save()
    assert second.compiled == 0
    assert path.read_bytes() == written  # nothing new: not written again
    for ns in (made, again):
        assert _behaviour(ns) == _behaviour(builtin)
        assert _signatures(ns) == _signatures(builtin)
    init = vars(again["Point"])["__init__"]
    assert init.__annotations__["x"] == ("int" if future else int)  # as the class says


def test_a_damaged_or_foreign_file_only_means_compiling_again(tmp_path: Path) -> None:
    path = tmp_path / codecache.file_name("dataclasses")
    builtin = _behaviour(_define(None, False))
    for content in (b"", b"\x00garbage", marshal.dumps(["not", "a", "dict"])):
        path.write_bytes(content)
        cache = DataclassCode(path)
        assert _behaviour(_define(cache, False)) == builtin
        assert cache.compiled > 0
        cache.save()
        assert DataclassCode(path).entries() == cache.entries()  # the file is whole again
    path.write_bytes(marshal.dumps({"def f(): pass": "not code", 1: b""}))
    assert DataclassCode(path).entries() == 0


def test_without_a_safe_directory_classes_are_still_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache directory that others may write to is not trusted with code: nothing read
    from it or written to it, the methods compiled as before."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(shared))
    cache = DataclassCode()
    assert _behaviour(_define(cache, False)) == _behaviour(_define(None, False))
    cache.save()
    assert cache.path is None and list(shared.iterdir()) == []


# Patterns of every kind re compiles: named groups and back-references, look-arounds, flags
# given and inline, case-insensitive letters with special case folds, bytes, verbose.
PATTERNS: list[tuple[str | bytes, int]] = [
    (r"(?P<year>\d{4})-(?P<month>\d\d)(?:-(?P=month))?", 0),
    (r"(?<=Réf\. )[A-Z]{2}-\d{4}-\d{6}(?!\d)", 0),
    (r"straße|İstanbul|ﬁ|Σ", re.IGNORECASE),
    (r"(?i)^carte\s+grise$", re.MULTILINE),
    (
        r"""
        (?P<local>[^@\s]+)  # before the at
        @(?P<domain>[^@\s]+)
    """,
        re.VERBOSE,
    ),
    (rb"^(?P<tag>[A-Z]\d+) (OK|NO|BAD)\b", 0),
    (r"[\w.-]+", re.ASCII),
    (r"\A(a|b)*?c{2,5}\Z", re.DOTALL),
]


def test_a_pattern_from_the_cache_is_the_pattern_re_makes(tmp_path: Path) -> None:
    """The engine's code kept on a first start makes, on the next, a pattern equal to re's
    own (``Pattern.__eq__`` compares the code), with its groups, and the same matches."""
    path = tmp_path / codecache.file_name("re")
    first = RegexCode(path)
    made = [first.compile(pattern, flags) for pattern, flags in PATTERNS]
    assert first.compiled == len(PATTERNS)
    first.save()
    second = RegexCode(path)
    again = [second.compile(pattern, flags) for pattern, flags in PATTERNS]
    assert second.compiled == 0  # every one from the file
    samples = ["2026-11-11", "Réf. SM-2026-000123", "STRASSE istanbul FI σ", "x@y.fr", "ab c"]
    for (pattern, flags), one, other in zip(PATTERNS, made, again, strict=True):
        own = codecache._RE_COMPILE(pattern, flags)
        for candidate in (one, other):
            assert candidate == own and candidate is not own
            assert (candidate.pattern, candidate.flags, candidate.groups, candidate.groupindex) == (
                own.pattern,
                own.flags,
                own.groups,
                own.groupindex,
            )
        texts = [t.encode() for t in samples] if isinstance(pattern, bytes) else samples
        for text in texts:
            found, expected = other.search(text), own.search(text)
            assert (found and (found.span(), found.groupdict())) == (
                expected and (expected.span(), expected.groupdict())
            )


def test_a_pattern_re_warns_about_still_warns_at_every_start(tmp_path: Path) -> None:
    """Never kept: its parsing gives the warning (a possible nested set), each time."""
    path = tmp_path / codecache.file_name("re")
    for _start in range(2):
        cache = RegexCode(path)
        with pytest.warns(FutureWarning, match="nested set"):
            cache.compile("[[a]", 0)
        cache.compile("plain", 0)
        cache.save()
    assert RegexCode(path).entries() == 1  # "plain" only


def test_a_damaged_regex_entry_is_compiled_again(tmp_path: Path) -> None:
    """Code the engine refuses (its own check: "invalid SRE code") is no pattern: re
    compiles it as before."""
    path = tmp_path / codecache.file_name("re")
    path.write_bytes(marshal.dumps({("abc", 0): (32, [1, 2, 3], 0, {}, ())}))
    cache = RegexCode(path)
    assert cache.entries() == 1
    assert cache.compile("abc", 0) == codecache._RE_COMPILE("abc", 0)


ANNOTATIONS = ["int", "str | None", "list[dict[str, tuple[int, ...]]]", "Path", "*Ts"]


def test_a_string_annotation_from_the_cache_is_typing_s_own(tmp_path: Path) -> None:
    """typing.ForwardRef with the cache's compile: the same code as typing compiles, the
    same types once evaluated, the same error for a text that is no expression."""
    path = tmp_path / codecache.file_name("typing")
    made: list[list[object]] = []
    for _start in range(2):
        cache = codecache.TypingCode(path)
        vars(typing)["compile"] = cache.compile
        try:
            refs = [typing.ForwardRef(text) for text in ANNOTATIONS]
            with pytest.raises(SyntaxError, match="Forward reference must be an expression"):
                typing.ForwardRef("not an expression")
            exec_code = compile("x = 1", "<string>", "exec")  # not typing's: the builtin
        finally:
            vars(typing).pop("compile")
        cache.save()
        made.append([ref.__forward_code__ for ref in refs])
        assert cache.compiled == (len(ANNOTATIONS) if _start == 0 else 0)
        assert exec_code == compile("x = 1", "<string>", "exec")
    own = [typing.ForwardRef(text).__forward_code__ for text in ANNOTATIONS]
    assert made[0] == own and made[1] == own  # code objects compare their bytecode
    namespace = {"Path": Path, "Ts": typing.TypeVarTuple("Ts")}
    for text in ANNOTATIONS[:-1]:
        assert eval(made[1][ANNOTATIONS.index(text)], namespace) == eval(text, namespace)


@pytest.fixture
def uninstalled() -> Iterator[None]:
    """``install`` changes the process's dataclasses and re: put theirs back."""
    yield
    codecache.uninstall()


def test_install_is_once_per_process_and_undone(tmp_path: Path, uninstalled: None) -> None:
    caches = codecache.Caches(
        DataclassCode(tmp_path / "d"),
        RegexCode(tmp_path / "r"),
        codecache.TypingCode(tmp_path / "t"),
    )
    assert codecache.install(caches) is caches
    assert codecache.install() is caches
    assert vars(dataclasses)["exec"] == caches.dataclass.exec
    assert re.compile("installed? (yes)", re.I).groups == 1
    assert caches.regex.compiled == 1
    assert typing.ForwardRef("installed | None").__forward_arg__ == "installed | None"
    assert caches.typing.compiled == 1
    codecache.uninstall()
    assert "exec" not in vars(dataclasses) and "compile" not in vars(typing)
    assert sys.modules["re._compiler"].compile is codecache._RE_COMPILE
    assert RegexCode(tmp_path / "r").entries() == 1  # saved when undone


def _console(config: Path, cache: Path, *args: str) -> None:
    """``mailbot`` as its console script runs (``console``: exit handlers, then _exit),
    with one string hash seed: the patterns some libraries build from sets are then the
    same text in both processes."""
    code = "import sys\nfrom mailbot.cli import console\nsys.exit(console())"
    argv = ["--config", str(config), "-q", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAILBOT_CACHE_DIR=str(cache))
    subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=True,
        cwd=ROOT,
        env=dict(env, PYTHONHASHSEED="7"),
    )


# imaplib's tagged responses: a pattern per connection, its tag's prefix random.
IMAP_TAG = re.compile(rb"\(\?P<tag>[A-P]{4}\\d\+\) \(\?P<type>")


def test_a_second_poll_compiles_no_dataclass_method_annotation_or_pattern(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Real Dovecot and aiosmtpd, ``mailbot poll --once`` twice in fresh interpreters: the
    first writes the compiled methods of every dataclass its start defines, the code of its
    string annotations and of every pattern it compiles (mailbot's and the libraries'), the
    second answers its mail from them: nothing to add but imaplib's tag patterns, new text
    in every process."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    cache = tmp_path / "cache"
    kinds = ("dataclasses", "re", "typing")
    files = [cache / codecache.SUBDIRECTORY / codecache.file_name(k) for k in kinds]
    imap_user.append(citizen_mail(1))
    _console(config, cache, "poll", "--once", "--acknowledge-existing")
    assert DataclassCode(files[0]).entries() > 300  # ~130 classes' methods
    assert RegexCode(files[1]).entries() > 150  # ~250 patterns
    assert codecache.TypingCode(files[2]).entries() > 100  # pydantic-core's TypedDicts' types
    classes = [(path.stat().st_mtime_ns, path.read_bytes()) for path in (files[0], files[2])]
    patterns = set(marshal.loads(files[1].read_bytes()))
    imap_user.append(citizen_mail(2, sender="paul.martin@example.fr"))
    _console(config, cache, "poll", "--once")
    assert len(smtp_server.wait_for(2, timeout=30)) == 2
    assert [(path.stat().st_mtime_ns, path.read_bytes()) for path in (files[0], files[2])] == (
        classes  # not written again
    )
    added = set(marshal.loads(files[1].read_bytes())) - patterns
    assert all(isinstance(p, bytes) and IMAP_TAG.match(p) for p, _flags in added), added


def test_a_worker_writes_its_start_s_code_once_started(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """``mailbot run`` may run for months and end by a kill: what its start compiled is
    written once it has started (it answers a mail), not only at its exit."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    cache = tmp_path / "cache"
    imap_user.append(citizen_mail(1))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(config),
            "-q",
            "run",
            "--acknowledge-existing",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MAILBOT_CACHE_DIR=str(cache)),
    )
    try:
        assert len(smtp_server.wait_for(1, timeout=60)) == 1  # a start: imports, the model
        assert worker.poll() is None  # still running
        folder = cache / codecache.SUBDIRECTORY
        assert DataclassCode(folder / codecache.file_name("dataclasses")).entries() > 300
        assert RegexCode(folder / codecache.file_name("re")).entries() > 150
    finally:
        worker.kill()
        worker.wait(timeout=30)
