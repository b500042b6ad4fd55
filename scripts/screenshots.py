"""Render templates' HTML in headless Chromium to PNG, to look at the layout.

    python scripts/screenshots.py OUTDIR [TEMPLATE ...]

Each template is rendered with its meta.yaml examples (standard replies signed by an
agent of agents.yaml) and written as OUTDIR/<name>.html and OUTDIR/<name>.png; the DOM
Chromium built is kept as OUTDIR/<name>.dom.html so tests can check what it displayed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbot.catalogue import agent_variables  # noqa: E402
from mailbot.config import load_agents, load_config  # noqa: E402
from mailbot.render import Renderer  # noqa: E402

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


def render(out: Path, names: list[str]) -> list[Path]:
    config = load_config(ROOT / "rules.yaml")
    renderer = Renderer(ROOT / "templates")
    agent = agent_variables(load_agents(ROOT / "agents.yaml", config)["cdurand"], config)
    written = []
    for name in names:
        variables = dict(renderer.meta(name).examples())
        if "agent" in variables:
            variables["agent"] = agent
        page = out / f"{name}.html"
        page.write_text(renderer.render(name, variables).html, encoding="utf-8")
        written.append(page)
    return written


def shoot(page: Path, width: int = 800, height: int = 1800) -> None:
    browser = chromium()
    with tempfile.TemporaryDirectory() as profile:
        common = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        subprocess.run(
            [*common, f"--screenshot={page.with_suffix('.png')}", page.as_uri()],
            check=True,
            capture_output=True,
            timeout=60,
        )
        dom = subprocess.run(
            [*common, "--dump-dom", page.as_uri()],
            check=True,
            capture_output=True,
            timeout=60,
        )
    page.with_suffix(".dom.html").write_bytes(dom.stdout)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for page in render(out, sys.argv[2:] or DEFAULT):
        shoot(page)
        print(page.with_suffix(".png"))


if __name__ == "__main__":
    main()
