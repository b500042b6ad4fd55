"""Render templates' HTML in headless Chromium to PNG, to look at the layout.

    python scripts/screenshots.py OUTDIR [TEMPLATE ...]
    python scripts/screenshots.py OUTDIR ar-general ar-etrangers --lang all --width 375 --width 1024

Each template is rendered with its meta.yaml examples (standard replies signed by an
agent of agents.yaml) and written as OUTDIR/<name>.html and OUTDIR/<name>.png; the DOM
Chromium built is kept as OUTDIR/<name>.dom.html so tests can check what it displayed.

With ``--lang`` (a language code, or ``all``: French and every translation) and ``--width``
(repeatable; 375 is a phone, 1024 a laptop), each mail is shot for each language and width,
the whole page long: OUTDIR/<name>.<lang>.<width>.png.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbot.config import load_agents, load_config  # noqa: E402
from mailbot.render.templates import Renderer  # noqa: E402
from mailbot.render.variables import agent_variables  # noqa: E402

DEFAULT = ["ar-general", "ar-etrangers", "reponse-permis", "reorientation"]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("chromium is not installed: run scripts/setup-tests")


def render(out: Path, names: list[str], languages: list[str] | None = None) -> list[Path]:
    """Write each template's HTML; with ``languages``, once per language (<name>.<lang>.html)."""
    config = load_config(ROOT / "rules.yaml")
    renderer = Renderer(ROOT / "templates")
    agent = agent_variables(load_agents(ROOT / "agents.yaml", config)["cdurand"], config)
    if languages == ["all"]:
        languages = ["fr", *renderer.translations]
    written = []
    for name in names:
        variables = dict(renderer.meta(name).examples())
        if "agent" in variables:
            variables["agent"] = agent
        for language in languages or [None]:
            page = out / (f"{name}.{language}.html" if language else f"{name}.html")
            html = renderer.render(name, variables, language=language or "fr").html
            page.write_text(html, encoding="utf-8")
            written.append(page)
    return written


HEIGHT_PROBE = (
    "<script>document.addEventListener('DOMContentLoaded',function(){var p=document."
    "createElement('pre');p.id='page-height';p.textContent=document.documentElement."
    "scrollHeight;document.body.appendChild(p);});</script>"
)


def page_height(page: Path, width: int) -> int:
    """How tall the page is at this width, measured by Chromium itself."""
    probe = page.with_suffix(f".probe{width}.html")
    probe.write_text(page.read_text(encoding="utf-8") + HEIGHT_PROBE, encoding="utf-8")
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},800",
                "--dump-dom",
                probe.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout.decode("utf-8")
    probe.unlink()
    found = re.search(r'<pre id="page-height">(\d+)</pre>', dom)
    return int(found.group(1)) if found else 1800


def shoot_full(page: Path, width: int) -> Path:
    """The whole page at ``width`` pixels: <page>.<width>.png."""
    png = page.with_suffix(f".{width}.png")
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{page_height(page, width)}",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return png


def shoot(page: Path, width: int = 800, height: int = 1800) -> None:
    """The PNG and the DOM Chromium built (<page>.dom.html), from one start of Chromium:
    with both --screenshot and --dump-dom it writes the one and prints the other."""
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={page.with_suffix('.png')}",
                "--dump-dom",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    page.with_suffix(".dom.html").write_bytes(dom.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "out" / "screenshots")
    parser.add_argument("templates", nargs="*", default=DEFAULT)
    parser.add_argument("--lang", action="append", help="language code, or all (repeatable)")
    parser.add_argument("--width", action="append", type=int, help="page width (repeatable)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.lang and not args.width:
        for page in render(args.out, args.templates):
            shoot(page)
            print(page.with_suffix(".png"))
        return
    for page in render(args.out, args.templates, args.lang or ["fr"]):
        for width in args.width or [1024]:
            print(shoot_full(page, width))


if __name__ == "__main__":
    main()
