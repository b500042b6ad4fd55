"""`mailbot templates check` passes on the shipped catalogue and fails on each kind of fault."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.catalogue import check_all, html_problems
from mailbot.errors import TemplateError
from mailbot.render import Renderer

ROOT = Path(__file__).resolve().parent.parent


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
    report = check_all(Renderer(root))
    assert any("signature lacks agent.function" in p for p in report["reponse-permis"])
    assert not any(p for name, p in report.items() if name != "reponse-permis")


def test_broken_link_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.html.j2", 'href="https://', 'href="htps:/')
    report = check_all(Renderer(root))
    assert any("broken link" in p for p in report["reponse-permis"])


def test_malformed_html_fails(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path)
    edit(root / "reponse-permis" / "body.html.j2", "</p>", "</div>")
    report = check_all(Renderer(root))
    assert any(p.startswith("HTML: unexpected </div>") for p in report["reponse-permis"])


def test_html_checker_itself() -> None:
    assert html_problems('<table><tr><td><a href="https://x.fr">x</a><br></td></tr></table>') == []
    assert html_problems("<p><b>x</p>") == ["unexpected </p> (open: p/b)"]
    assert html_problems('<a href="javascript:alert(1)">x</a>') == [
        "broken link 'javascript:alert(1)'"
    ]
    assert html_problems("<div>") == ["unclosed <div>"]
