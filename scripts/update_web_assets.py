"""Vendor the web console's front-end assets from npm: DSFR and htmx, no build step.

    python scripts/update_web_assets.py [--dsfr 1.15.3] [--htmx 2.0.11]

Each package is fetched with ``npm pack`` into a temporary directory (nothing is installed,
no node_modules is left behind) and only the files the console uses are copied into
``mailbot/web/static/vendor/<package>/``, with the package's licence and a VERSION file
(version, npm integrity, date). Files referenced by the copied CSS (icons, fonts) are copied
too, so the stylesheet never points at a missing file. Run it, look at the console's
screenshots (scripts/web_screenshots.py), run the tests, and commit the result.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "mailbot" / "web" / "static" / "vendor"

DSFR_VERSION = "1.15.3"
HTMX_VERSION = "2.0.11"

# Paths inside the package's dist/ folder.
DSFR_FILES = [
    "dsfr.min.css",
    "dsfr.module.min.js",
    "dsfr.nomodule.min.js",
    "utility/icons/icons-system/icons-system.min.css",
    "utility/icons/icons-user/icons-user.min.css",
    "favicon/favicon.svg",
    "favicon/favicon.ico",
    "favicon/apple-touch-icon.png",
]
HTMX_FILES = ["htmx.min.js"]
URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def pack(spec: str, workdir: Path) -> tuple[Path, dict[str, str]]:
    """npm pack one package into workdir and unpack it; return its folder and npm's facts."""
    out = subprocess.run(
        ["npm", "pack", "--json", "--silent", spec],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(out.stdout)[0]
    target = workdir / info["name"].replace("/", "+")
    with tarfile.open(workdir / info["filename"]) as archive:
        archive.extractall(target, filter="data")
    return target / "package", {k: str(info[k]) for k in ("name", "version", "integrity")}


def referenced(css: Path, dist: Path) -> set[str]:
    """Local files a stylesheet points at, as paths relative to dist/."""
    found = set()
    for ref in URL.findall(css.read_text(encoding="utf-8")):
        if ref.startswith(("data:", "http:", "https:", "#")):
            continue
        relative = css.parent.relative_to(dist) / ref.split("?")[0].split("#")[0]
        found.add(str(PurePosixPath(*_normalise(relative.parts))))
    return found


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            out.pop()
        elif part not in ("", "."):
            out.append(part)
    return out


def copy(dist: Path, names: list[str], target: Path) -> int:
    wanted = set(names)
    for name in names:
        if name.endswith(".css"):
            wanted |= referenced(dist / name, dist)
    for name in sorted(wanted):
        source = dist / name
        if not source.is_file():
            raise SystemExit(f"{source} is referenced but missing from the package")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return len(wanted)


def vendor(spec: str, files: list[str], folder: str, licence: str, workdir: Path) -> None:
    package, info = pack(spec, workdir)
    target = VENDOR / folder
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    count = copy(package / "dist", files, target)
    shutil.copy2(package / licence, target / licence)
    declared = json.loads((package / "package.json").read_text(encoding="utf-8"))["license"]
    (target / "VERSION").write_text(
        f"{info['name']} {info['version']}\n"
        f"licence: {declared} (see {licence})\n"
        f"integrity: {info['integrity']}\n"
        f"vendored: {datetime.now(UTC).date().isoformat()}, {count} files from dist/\n"
        "update: python scripts/update_web_assets.py\n",
        encoding="utf-8",
    )
    print(f"{info['name']} {info['version']}: {count} files in {target.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsfr", default=DSFR_VERSION, help="@gouvfr/dsfr version")
    parser.add_argument("--htmx", default=HTMX_VERSION, help="htmx.org version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vendor(f"@gouvfr/dsfr@{args.dsfr}", DSFR_FILES, "dsfr", "LICENSE.md", work)
        vendor(f"htmx.org@{args.htmx}", HTMX_FILES, "htmx", "LICENSE", work)


if __name__ == "__main__":
    main()
