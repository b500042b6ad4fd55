"""The code stays ruff- and mypy-clean: CI fails otherwise."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_check_and_format() -> None:
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


# A reference cut off right after its year ("SM-2026-", "[ETR-2027-"): the shape of "whatever
# number mailbot allocated this year", i.e. a test assuming the current year.
REFERENCE_AT_YEAR = re.compile(r"\b[A-Z]{1,6}-20\d\d-(?!\d)")


def year_prefixes(source: str) -> list[tuple[int, str]]:
    """String literals ending a reference at a literal year. Parts of f-strings are left
    out: f"SM-<year>-{n:06d}" builds fixture data with the test's own fixed dates."""
    tree = ast.parse(source)
    in_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in in_fstrings
        and REFERENCE_AT_YEAR.search(node.value)
    ]


def test_no_test_assumes_the_current_year() -> None:
    """Tests must not break on 1 January: a reference mailbot allocated is matched with the
    year of the date the test controls (f"SM-{received.year}-") or of the mail's
    INTERNALDATE (test_e2e.received_year), never with this year written down. Full
    references ("SM-2026-000123") stay allowed: they are data the test wrote itself."""
    offenders = [
        f"{path.name}:{line}: {text!r}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, text in year_prefixes(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "a literal year in a reference prefix:\n" + "\n".join(offenders)


def test_the_year_check_catches_what_it_should() -> None:
    year = "2026"  # interpolated, so that this test's own source passes the check above
    assert year_prefixes(f'assert subject.startswith("Accusé de réception [SM-{year}-")')
    assert year_prefixes(f'prefix = "reference=SM-{year}-"')
    assert not year_prefixes(f'assert ref == "SM-{year}-000123"')
    assert not year_prefixes(f'rows = [f"SM-{year}-{{n:06d}}" for n in range(3)]')
    assert not year_prefixes('assert subject.startswith(f"[SM-{received.year}-")')
