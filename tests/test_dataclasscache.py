"""Dataclasses' methods compiled once (``mailbot.dataclasscache``, issue 14 point 9): a
class made from the cache is the class ``dataclasses`` makes without it, and a command's
second start compiles none of the texts its first start compiled."""

from __future__ import annotations

import dataclasses
import inspect
import marshal
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, etrangers_user, write_config

from mailbot import dataclasscache
from mailbot.dataclasscache import CodeCache

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


def _define(cache: CodeCache | None, future: bool) -> dict[str, Any]:
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
    path = tmp_path / dataclasscache.file_name()
    builtin = _define(None, future)
    first = CodeCache(path)
    made = _define(first, future)
    assert first.compiled > 0
    first.save()
    assert path.is_file()
    written = path.read_bytes()
    second = CodeCache(path)
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
    path = tmp_path / dataclasscache.file_name()
    builtin = _behaviour(_define(None, False))
    for content in (b"", b"\x00garbage", marshal.dumps(["not", "a", "dict"])):
        path.write_bytes(content)
        cache = CodeCache(path)
        assert _behaviour(_define(cache, False)) == builtin
        assert cache.compiled > 0
        cache.save()
        assert CodeCache(path).entries() == cache.entries()  # the file is whole again
    path.write_bytes(marshal.dumps({"def f(): pass": "not code", 1: b""}))
    assert CodeCache(path).entries() == 0


def test_without_a_safe_directory_classes_are_still_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache directory that others may write to is not trusted with code: nothing read
    from it or written to it, the methods compiled as before."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(shared))
    cache = CodeCache()
    assert _behaviour(_define(cache, False)) == _behaviour(_define(None, False))
    cache.save()
    assert cache.path is None and list(shared.iterdir()) == []


@pytest.fixture
def builtin_exec() -> Iterator[None]:
    """``install`` changes the process's dataclasses: put the builtin ``exec`` back."""
    yield
    dataclasscache.uninstall()


def test_install_is_once_per_process(tmp_path: Path, builtin_exec: None) -> None:
    cache = dataclasscache.install(CodeCache(tmp_path / "codes.marshal"))
    assert dataclasscache.install() is cache
    assert vars(dataclasses)["exec"] == cache.exec


def _console(config: Path, cache: Path, *args: str) -> None:
    """``mailbot`` as its console script runs (``console``: exit handlers, then _exit)."""
    code = "import sys\nfrom mailbot.cli import console\nsys.exit(console())"
    argv = ["--config", str(config), "-q", *args]
    subprocess.run(
        [sys.executable, "-c", code, *argv],
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MAILBOT_CACHE_DIR=str(cache)),
    )


def test_a_second_poll_compiles_no_dataclass_method(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Real Dovecot and aiosmtpd, ``mailbot poll --once`` twice in fresh interpreters: the
    first writes the compiled methods of every dataclass its start defines (mailbot's and
    the libraries'), the second answers its mail from them and has nothing to add."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    cache = tmp_path / "cache"
    codes = cache / dataclasscache.SUBDIRECTORY / dataclasscache.file_name()
    imap_user.append(citizen_mail(1))
    _console(config, cache, "poll", "--once", "--acknowledge-existing")
    kept = CodeCache(codes).entries()
    assert kept > 300  # ~130 classes' methods: pydantic's, annotated_types', mailbot's
    written = codes.stat().st_mtime_ns, codes.read_bytes()
    imap_user.append(citizen_mail(2, sender="paul.martin@example.fr"))
    _console(config, cache, "poll", "--once")
    assert len(smtp_server.wait_for(2)) == 2
    assert (codes.stat().st_mtime_ns, codes.read_bytes()) == written
