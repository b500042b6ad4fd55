"""What the README tells an operator about the shipped configuration is what ships.

The routing settings quoted in README.md drifted from rules.yaml once (round 9 changed
`default_share` and the complaint bars; the README kept round 5's): an operator tuning
them would have started from the wrong values.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_quotes_the_shipped_combination_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = readme.split("highest wins (shipped, rules.yaml:", 1)[1].split("round 9 below)")[0]
    quoted = {k: float(v) for k, v in re.findall(r"`(\w+): ([0-9.]+)`", sentence)}
    model = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))["routing"]["model"]
    assert quoted, "the README's sentence on the shipped settings was not found"
    assert {k: float(model[k]) for k in quoted} == quoted
