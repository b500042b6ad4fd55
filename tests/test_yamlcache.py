"""Parsed YAML kept between starts (issue 14, point 9): the same values as parsing, never a
stale one, and nothing but data read back from the cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml

from mailbot import yamlcache, yamlfile
from mailbot.cachedir import private_subdirectory

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [
    ROOT / "rules.yaml",
    *sorted((ROOT / "templates").glob("*/meta.yaml")),
    *sorted((ROOT / "templates" / "i18n").glob("*.yaml")),
]
TRICKY = """
when: 2026-11-26 14:05:00+01:00
day: 2026-11-26
naive: 2026-11-26 14:05:00
set: !!set {a: null, b: null}
binary: !!binary aGVsbG8=
pairs: !!omap [{x: 1}, {y: 2}]
anchored: &shared [1, 2]
again: *shared
numbers: [1, 1.5, .inf, -.inf, 0x1f, true, null, ~]
1: an integer key
"""


def parse_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str) -> object:
        raise AssertionError("parsed again: the cache was not used")

    monkeypatch.setattr(yamlfile, "safe_load", refuse)


def test_shipped_files_and_tricky_values_come_back_equal_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [path.read_text(encoding="utf-8") for path in SHIPPED] + [TRICKY]
    parsed = [yamlfile.safe_load(text) for text in texts]
    assert [yamlcache.safe_load(text, tmp_path) for text in texts] == parsed
    assert len(list(tmp_path.glob("*.pickle"))) == len(set(texts))
    parse_forbidden(monkeypatch)
    again = [yamlcache.safe_load(text, tmp_path) for text in texts]
    assert again == parsed
    tricky = again[-1]
    assert tricky["anchored"] is tricky["again"]  # an alias is still one object
    assert type(tricky["set"]) is set and tricky["binary"] == b"hello"
    assert tricky["when"].utcoffset().total_seconds() == 3600


def test_an_edited_text_is_parsed_afresh(tmp_path: Path) -> None:
    assert yamlcache.safe_load("a: 1\n", tmp_path) == {"a": 1}
    assert yamlcache.safe_load("a: 2\n", tmp_path) == {"a": 2}
    assert yamlcache.safe_load("a: 1\n", tmp_path) == {"a": 1}


def test_each_load_gives_fresh_values(tmp_path: Path) -> None:
    first = yamlcache.safe_load("a: [1]\n", tmp_path)
    first["a"].append(2)
    assert yamlcache.safe_load("a: [1]\n", tmp_path) == {"a": [1]}


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_forged_entry_runs_no_code_and_the_text_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "a: 1\n"
    yamlcache.safe_load(text, tmp_path)
    (entry,) = tmp_path.glob("*.pickle")
    entry.write_bytes(pickle.dumps({"a": _Payload()}))
    monkeypatch.chdir(tmp_path)
    assert yamlcache.safe_load(text, tmp_path) == {"a": 1}
    assert not (tmp_path / "pwned").exists()
    entry.write_bytes(b"\x80\x05garbage")
    assert yamlcache.safe_load(text, tmp_path) == {"a": 1}


def test_bad_yaml_raises_as_before_and_is_not_kept(tmp_path: Path) -> None:
    with pytest.raises(yaml.YAMLError):
        yamlcache.safe_load("a: [1\n", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_or_unsafe_cache_only_costs_a_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert yamlcache.safe_load("a: 1\n", tmp_path / "missing") == {"a": 1}
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(shared))
    assert private_subdirectory(yamlcache.SUBDIRECTORY) is None
    assert yamlcache.safe_load("a: 1\n") == {"a": 1}
    assert not (shared / yamlcache.SUBDIRECTORY).exists()


def test_the_default_cache_is_a_private_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(tmp_path / "cache"))
    assert yamlcache.safe_load("b: 2\n") == {"b": 2}
    folder = tmp_path / "cache" / yamlcache.SUBDIRECTORY
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert len(list(folder.glob("*.pickle"))) == 1


def test_agents_yaml_leaves_no_copy_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """agents.yaml names people (first and last name, function, e-mail address), and the
    cache keeps an entry per version of a file, never deleted: an agent who left and was
    removed from agents.yaml stayed in every copy parsed before. It is read afresh at each
    start (a few agents, a millisecond); rules.yaml, which names no one, is cached."""
    from mailbot.config import load_agents, load_config

    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(ROOT / "rules.yaml")
    agents = load_agents(ROOT / "agents.yaml", config)
    assert agents  # read
    kept = tmp_path / "cache" / yamlcache.SUBDIRECTORY
    entries = [path.read_bytes() for path in kept.glob("*.pickle")]
    assert entries  # rules.yaml is kept
    names = {agent.last_name.encode() for agent in agents.values() if agent.last_name}
    assert [name for name in names if any(name in entry for entry in entries)] == []
