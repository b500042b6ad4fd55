"""scripts/web_screenshots.py works: the console's pages rendered by Chromium to PNG."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def script_pages() -> list[str]:
    """The console pages the script shoots (its PAGES: one line per page)."""
    spec = importlib.util.spec_from_file_location(
        "web_screenshots", ROOT / "scripts" / "web_screenshots.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [name for name, _agent, _path in module.PAGES]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_console_screenshots(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "web_screenshots.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert {"queue", "message", "answer-form", "indicators", "indicators-head"} <= set(
        script_pages()
    )
    assert {"quarantine", "templates-check"} <= set(script_pages())
    for name, width in (
        ("login", 1280),
        ("login-error", 1280),
        ("login-proconnect", 1280),
        ("home", 1280),
        ("not-found", 1280),
        ("login-mobile", 390),
        ("home-mobile", 390),
        *((name, 1280) for name in script_pages()),
    ):
        png = tmp_path / f"{name}.png"
        size = png_size(png)
        assert size[0] == width and size[1] >= 800, (name, size)
        assert png.stat().st_size > 30_000, name  # a page, not a blank image
