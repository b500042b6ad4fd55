"""The AR and a standard reply rendered by headless Chromium: a real PNG, with the reference
and the signature in what the browser displayed (scripts/screenshots.py does the work)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_ar_and_standard_reply_render_in_chromium(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshots.py"),
            str(tmp_path),
            "ar-general",
            "reponse-permis",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    for name in ("ar-general", "reponse-permis"):
        png = tmp_path / f"{name}.png"
        assert png_size(png) == (800, 1800)
        assert png.stat().st_size > 50_000  # a page, not a blank image
        dom = (tmp_path / f"{name}.dom.html").read_text(encoding="utf-8")
        assert "SM-2026-000" in dom
    ar_dom = (tmp_path / "ar-general.dom.html").read_text(encoding="utf-8")
    assert "02 32 76 50 00" in ar_dom and "Préfecture de la Seine-Maritime" in ar_dom
    reply_dom = (tmp_path / "reponse-permis.dom.html").read_text(encoding="utf-8")
    for element in (
        "Camille Durand",
        "Adjointe au chef du bureau des titres",
        "7 place de la Madeleine",
        "02 32 76 50 00",
    ):
        assert element in reply_dom
