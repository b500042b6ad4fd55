"""The render cache (issue 14, point 9): compiled templates and passed checks kept between
starts, never trusted from a directory others can write, never hiding an edited template."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import jinja2
import pytest

from mailbot.errors import TemplateError
from mailbot.render.cache import RenderCache, default_directory, open_cache
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path: Path) -> RenderCache:
    opened = open_cache(tmp_path / "cache")
    assert opened is not None
    return opened


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", target)
    return target


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """One template whose text and HTML parts include the same text partial."""
    root = tmp_path / "small"
    (root / "_partials").mkdir(parents=True)
    (root / "_partials" / "name.txt.j2").write_text("Nom : {{ name }}\n", encoding="utf-8")
    directory = root / "demo"
    directory.mkdir()
    (directory / "meta.yaml").write_text(
        "name: demo\ntitle: Démo\ndescription: Modèle de test.\n"
        "scope: {mailboxes: [], services: []}\nlanguage: fr\nsubject: 'Bonjour'\n"
        "variables:\n  required:\n    name: {description: Nom, example: Jeanne Martin}\n",
        encoding="utf-8",
    )
    include = '{% include "_partials/name.txt.j2" %}'
    (directory / "body.txt.j2").write_text(f"{include}\n", encoding="utf-8")
    (directory / "body.html.j2").write_text(f"<p>{include}</p>\n", encoding="utf-8")
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def every_rendering(renderer: Renderer) -> list[tuple[str, str, str]]:
    """Each template with all its examples, in French and with an English translation."""
    found = []
    for name in renderer.names():
        examples = renderer.meta(name).examples(include_optional=True)
        for language in ("fr", "en"):
            mail = renderer.render(name, examples, language=language)
            found.append((mail.subject, mail.text, mail.html))
    return found


def test_a_second_start_skips_the_checks_and_renders_the_same(
    catalogue: Path, cache: RenderCache
) -> None:
    first = Renderer(catalogue, cache=cache)
    assert first.checks_run
    assert any((cache.directory / "jinja").iterdir())  # compiled templates kept
    second = Renderer(catalogue, cache=cache)
    assert not second.checks_run  # a hit: nothing parsed, nothing test-rendered
    assert every_rendering(second) == every_rendering(Renderer(catalogue, cache=False))


def test_full_check_runs_the_checks_even_on_a_hit(small: Path, cache: RenderCache) -> None:
    Renderer(small, cache=cache)
    assert Renderer(small, cache=cache, full_check=True).checks_run


def test_an_edited_template_is_checked_again(catalogue: Path, cache: RenderCache) -> None:
    Renderer(catalogue, cache=cache)
    body = catalogue / "reponse-permis" / "body.txt.j2"
    edit(body, "Cordialement,", "{{ numero_inconnu }} Cordialement,")
    with pytest.raises(TemplateError, match="numero_inconnu"):
        Renderer(catalogue, cache=cache)
    edit(body, "{{ numero_inconnu }} Cordialement,", "Bien cordialement,")
    fixed = Renderer(catalogue, cache=cache)
    assert fixed.checks_run
    examples = fixed.meta("reponse-permis").examples(include_optional=True)
    assert "Bien cordialement," in fixed.render("reponse-permis", examples).text


def test_an_edited_translation_or_partial_is_checked_again(
    catalogue: Path, cache: RenderCache
) -> None:
    Renderer(catalogue, cache=cache)
    partial = next((catalogue / "_partials").glob("*.txt.j2"))
    partial.write_text(partial.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert Renderer(catalogue, cache=cache).checks_run
    assert not Renderer(catalogue, cache=cache).checks_run
    translation = next((catalogue / "i18n").iterdir())
    translation.write_text(translation.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert Renderer(catalogue, cache=cache).checks_run


def test_another_time_zone_is_checked_again(small: Path, cache: RenderCache) -> None:
    Renderer(small, cache=cache)
    assert Renderer(small, cache=cache, timezone="America/Cayenne").checks_run


def test_a_partial_compiled_for_text_is_not_reused_unescaped_in_html(
    small: Path, cache: RenderCache
) -> None:
    """Jinja keys its cache by file only: the text and HTML environments need their own
    entries, or a partial compiled without autoescaping would print raw HTML."""
    Renderer(small, cache=cache)
    again = Renderer(small, cache=cache)
    assert not again.checks_run
    mail = again.render("demo", {"name": "<b>Jeanne</b>"})
    assert "Nom : <b>Jeanne</b>" in mail.text
    assert "&lt;b&gt;Jeanne&lt;/b&gt;" in mail.html
    assert "<b>Jeanne" not in mail.html


def test_the_cache_directory_is_created_private(tmp_path: Path) -> None:
    opened = open_cache(tmp_path / "a" / "cache")
    assert opened is not None
    assert (opened.directory.stat().st_mode & 0o777) == 0o700


def test_a_directory_others_can_write_is_refused(
    tmp_path: Path,
    small: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="mailbot.render.cache"):
        assert open_cache(shared) is None
    assert "other users may write to it" in caplog.text
    # The default cache pointing there: mailbot still starts, checking everything, and
    # writes nothing into it.
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(shared))
    for _ in range(2):
        assert Renderer(small).checks_run
    assert list(shared.iterdir()) == []


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # mailbot runs as someone else
    assert open_cache(theirs) is None


def test_where_the_cache_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MAILBOT_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".cache" / "mailbot"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "mailbot"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'systemd'}:{tmp_path / 'second'}")
    assert default_directory() == tmp_path / "systemd"
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_directory() == tmp_path / "explicit"


def test_a_cache_that_cannot_be_written_costs_only_time(
    small: Path, cache: RenderCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk or a read-only directory: the templates compile and render as without
    a cache, and the next start checks them again."""

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jinja2.FileSystemBytecodeCache, "dump_bytecode", refuse)
    monkeypatch.setattr(os, "replace", refuse)
    renderer = Renderer(small, cache=cache)
    assert "Nom : Jeanne" in renderer.render("demo", {"name": "Jeanne"}).text
    assert Renderer(small, cache=cache).checks_run


def test_the_deadlines_holidays_are_kept_and_read_back(
    cache: RenderCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start computes France's holidays with the library and keeps them; the next
    one reads the same dates without asking the library; a damaged file is computed again."""
    from mailbot.core import workdays

    years = range(2024, 2028)
    expected = workdays.public_holidays(None, years)
    assert cache.public_holidays(None, years) == expected
    (kept,) = (cache.directory / "holidays").glob("*.json")

    def library(*_args: object) -> frozenset[object]:
        raise AssertionError("computed again")

    monkeypatch.setattr(workdays, "public_holidays", library)
    assert cache.public_holidays(None, years) == expected
    with pytest.raises(AssertionError, match="computed again"):
        cache.public_holidays("57", years)  # Alsace-Moselle: another entry
    kept.write_text("[not json", encoding="utf-8")
    monkeypatch.undo()
    assert cache.public_holidays(None, years) == expected
    assert cache.public_holidays(None, years) == expected  # kept again, read back


def test_a_second_start_reads_what_the_syntax_trees_said(
    small: Path, cache: RenderCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The skeletons' analysis of a template (parsing every file it uses) is kept with the
    directory's fingerprint: the next start renders the same mail without parsing; an
    edited partial, or a damaged entry, is analysed again."""
    variables = {"name": "Jeanne"}
    first = Renderer(small, cache=cache)
    expected = first.render_once("demo", variables)
    assert expected == first.render("demo", variables)

    def parse(*_args: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(Renderer, "_trees", parse)
    assert Renderer(small, cache=cache).render_once("demo", variables) == expected
    (entry,) = (cache.directory / "skeletons").glob("*-demo.json")
    entry.write_text('[["a", 1], []]', encoding="utf-8")
    with pytest.raises(AssertionError, match="parsed again"):
        Renderer(small, cache=cache).render_once("demo", variables)
    monkeypatch.undo()
    Renderer(small, cache=cache).render_once("demo", variables)  # kept again
    edit(small / "_partials" / "name.txt.j2", "Nom :", "Nom complet :")
    monkeypatch.setattr(Renderer, "_trees", parse)
    with pytest.raises(AssertionError, match="parsed again"):
        Renderer(small, cache=cache).render_once("demo", variables)


def test_the_checks_leave_what_a_first_ar_needs_in_the_cache(
    catalogue: Path, cache: RenderCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mailbot check` (a start whose checks run) keeps every template's analysis and the
    deadline's holidays: the first poll after it parses no template tree and does not
    compute holidays."""
    from mailbot.core import workdays
    from mailbot.core.workdays import YEARS

    Renderer(catalogue, cache=cache, full_check=True)
    names = Renderer(catalogue, cache=cache).names()
    assert {p.name.split("-", 1)[1] for p in (cache.directory / "skeletons").glob("*.json")} == {
        f"{name}.json" for name in names
    }

    def refuse(*_args: object) -> None:
        raise AssertionError("worked out again")

    monkeypatch.setattr(Renderer, "_trees", refuse)
    monkeypatch.setattr(workdays, "public_holidays", refuse)
    assert cache.public_holidays(None, YEARS)
    second = Renderer(catalogue, cache=cache)
    examples = second.meta("ar-general").examples(include_optional=True)
    assert second.render_once("ar-general", examples).text
