"""`mailbot templates check` passes on the shipped catalogue and fails on each kind of fault.

The whole catalogue is checked once, by the command (``test_shipped_catalogue_passes_check``:
every template clean, in every language); each fault put in a copy is checked in the
template it is put in (``check_all(renderer, names)``: the whole catalogue in every language
took ~1 s of CPU per test), with a sibling reply that includes the same partials where the
fault must stay in its own template's report."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.errors import TemplateError
from mailbot.render.catalogue import PARTIALS_DIR
from mailbot.render.checks import check_all, html_problems
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent
SIBLING = "reponse-cartes-grises"  # a reply with reponse-permis's partials and no fault


def test_shipped_catalogue_passes_check() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "templates",
            "check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 with problems" in result.stdout
    assert (
        result.stdout.count("ok  ") >= 10
    )  # 7 standard emails + transfer/re-orientation/precisions


def copy_catalogue(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_undefined_variable_fails_at_load(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(
        root / "reponse-permis" / "body.txt.j2",
        "Cordialement,",
        "{{ numero_inconnu }} Cordialement,",
    )
    with pytest.raises(TemplateError, match="numero_inconnu"):
        Renderer(root)


@pytest.mark.parametrize("part", ["body.txt.j2", "body.html.j2"])
def test_missing_part_fails(tmp_path: Path, part: str) -> None:
    root = copy_catalogue(tmp_path)
    (root / "reponse-permis" / part).unlink()
    with pytest.raises(TemplateError, match=part.replace(".", r"\.")):
        Renderer(root)


def test_missing_signature_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.txt.j2", '{% include "_partials/signature.txt.j2" %}', "")
    report = check_all(Renderer(root), ["reponse-permis", SIBLING])
    assert any("signature lacks agent.function" in p for p in report["reponse-permis"])
    assert report[SIBLING] == []  # the fault is its template's, not the partials'
    assert set(report) == {"reponse-permis", SIBLING}


def test_broken_link_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.html.j2", 'href="https://', 'href="htps:/')
    report = check_all(Renderer(root), ["reponse-permis"])
    assert any("broken link" in p for p in report["reponse-permis"])


def test_malformed_html_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.html.j2", "</p>", "</div>")
    report = check_all(Renderer(root), ["reponse-permis"])
    assert any(p.startswith("HTML: unexpected </div>") for p in report["reponse-permis"])


def test_check_all_checks_the_named_templates_only(tmp_path: Path) -> None:
    """``names`` restricts the report to those templates (the partials' styles are checked
    whatever the names); an unknown name is refused, not reported clean."""
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.html.j2", "</p>", "</div>")
    renderer = Renderer(root)
    assert check_all(renderer, ["ar-general"]) == {"ar-general": []}
    report = check_all(renderer, ["reponse-permis", "ar-general", "reponse-permis"])
    assert list(report) == ["reponse-permis", "ar-general"] and report["reponse-permis"]
    edit(root / "_partials" / "signature.html.j2", 'class="signature"', 'style="color:red"')
    assert PARTIALS_DIR in check_all(Renderer(root), ["ar-general"])
    with pytest.raises(TemplateError, match="no such template: reponse-inconnue"):
        check_all(renderer, ["ar-general", "reponse-inconnue"])


def test_html_checker_itself() -> None:
    assert html_problems('<table><tr><td><a href="https://x.fr">x</a><br></td></tr></table>') == []
    assert html_problems("<p><b>x</p>") == ["unexpected </p> (open: p/b)"]
    assert html_problems('<a href="javascript:alert(1)">x</a>') == [
        "broken link 'javascript:alert(1)'"
    ]
    assert html_problems("<div>") == ["unclosed <div>"]


# --------------------------------------------------------------------------- text = HTML


def test_text_and_html_saying_different_things_fail(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(
        root / "reponse-permis" / "body.txt.j2",
        "votre permis vous est envoyé à votre\ndomicile, par courrier.",
        "votre permis vous est remis au guichet.",
    )
    report = check_all(Renderer(root), ["reponse-permis", SIBLING])
    problems = report["reponse-permis"]
    assert any(
        p.startswith("text part lacks: « quand votre demande est acceptée") for p in problems
    ), problems
    assert any(
        p.startswith("HTML part lacks: « quand votre demande est acceptée") for p in problems
    )
    assert report[SIBLING] == []


def test_link_missing_from_the_text_part_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(
        root / "ar-general" / "body.txt.j2",
        "- Permis de conduire : https://permisdeconduire.ants.gouv.fr",
        "- Permis de conduire : sur le site officiel",
    )
    problems = check_all(Renderer(root), ["ar-general"])["ar-general"]
    assert (
        "text part lacks the link https://permisdeconduire.ants.gouv.fr (whole, on one line)"
        in problems
    )


def test_reference_missing_from_a_part_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(
        root / "_partials" / "reference.html.j2",
        '<strong class="ref">{{ reference }}</strong>',
        '<strong class="ref">votre numéro</strong>',
    )
    problems = check_all(Renderer(root), ["reponse-permis"])["reponse-permis"]
    assert any(
        p.startswith("HTML part lacks: « votre référence sm-2026-000245") for p in problems
    ), problems


def test_templates_use_the_stylesheet_not_inline_styles() -> None:
    sources = [*ROOT.glob("templates/*/*.html.j2"), *ROOT.glob("templates/_partials/*.j2")]
    assert len(sources) > 15
    for path in sources:
        assert "style=" not in path.read_text(encoding="utf-8"), path
    # The stylesheet is applied at render time: every heading carries the same rules.
    renderer = Renderer(ROOT / "templates")
    html = renderer.render("ar-etrangers", renderer.meta("ar-etrangers").examples()).html
    h2 = re.findall(r"<h2 style=\"([^\"]*)\"", html)
    assert len(h2) >= 5 and len(set(h2)) == 1 and "color:#000091" in h2[0]
    assert "@media (max-width: 480px)" in html  # small screens: kept in a <style>


def test_inline_style_is_reported(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(
        root / "reponse-permis" / "body.html.j2",
        "<h2>Votre démarche</h2>",
        '<h2 style="color:red">Votre démarche</h2>',
    )
    problems = check_all(Renderer(root), ["reponse-permis"])["reponse-permis"]
    assert any("style=" in p and "mail.css" in p for p in problems), problems


def test_templates_list_shows_the_translations_and_their_review() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "templates",
            "list",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    ar_row = next(line for line in lines if line.startswith("ar-general "))
    assert "fr+ar+en+es+pt+ro+ru+tr+uk" in ar_row
    assert "  ar  العربية (rtl): NOT reviewed by a native speaker" in lines


def test_a_declared_attachment_is_loaded_with_its_type(tmp_path: Path) -> None:
    meta = Renderer(copy_catalogue(tmp_path)).meta("reponse-dossier-etranger")
    (attached,) = meta.attachments
    file = ROOT / "templates" / "reponse-dossier-etranger" / "pièces-à-préparer.txt"
    assert attached.filename == "pièces-à-préparer.txt" and attached.content_type == "text/plain"
    assert attached.data == file.read_bytes()


@pytest.mark.parametrize("name", ["formulaire-absent.pdf", "../reponse-permis/meta.yaml"])
def test_a_missing_or_outside_attachment_fails_naming_the_template_and_the_key(
    tmp_path: Path, name: str
) -> None:
    root = copy_catalogue(tmp_path)
    meta = root / "reponse-dossier-etranger" / "meta.yaml"
    edit(meta, "  - pièces-à-préparer.txt", f"  - pièces-à-préparer.txt\n  - {name}")
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    message = str(caught.value)
    assert str(meta) in message and "attachments[1]" in message and name in message
