"""The vendored front-end assets are complete and traceable: version, licence, and every
file the stylesheets and templates point at is present (no broken icon or font)."""

from __future__ import annotations

import re

from mailbot.web.pages import STATIC, TEMPLATES

URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def test_vendored_packages_have_version_and_licence() -> None:
    for folder, licence, name in (
        ("dsfr", "LICENSE.md", "@gouvfr/dsfr"),
        ("htmx", "LICENSE", "htmx.org"),
    ):
        root = STATIC / "vendor" / folder
        version = (root / "VERSION").read_text(encoding="utf-8")
        assert version.startswith(f"{name} ") and "integrity: sha512-" in version
        assert "update: python scripts/update_web_assets.py" in version
        assert (root / licence).stat().st_size > 500


def test_every_file_a_vendored_stylesheet_uses_is_there() -> None:
    sheets = list((STATIC / "vendor").rglob("*.css")) + list((STATIC / "css").rglob("*.css"))
    assert len(sheets) >= 4
    checked = 0
    for sheet in sheets:
        for ref in URL.findall(sheet.read_text(encoding="utf-8")):
            if ref.startswith("data:"):
                continue
            assert not ref.startswith(("http:", "https:", "//")), (sheet, ref)
            target = (sheet.parent / ref.split("?")[0].split("#")[0]).resolve()
            assert target.is_file(), (sheet.name, ref)
            checked += 1
    assert checked > 50  # icons and Marianne fonts


def test_templates_only_load_local_files_that_exist() -> None:
    for template in TEMPLATES.glob("*.j2"):
        text = template.read_text(encoding="utf-8")
        for path in re.findall(r"static\('([^']+)'\)", text):
            assert (STATIC / path).is_file(), (template.name, path)
        assert not re.search(r"(src|href)=\"(https?:)?//[^\"]*\.(js|css)", text), template.name
