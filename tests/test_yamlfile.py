"""YAML through libyaml gives the values and the errors of yaml.safe_load (issue 14, 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mailbot import yamlfile

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "mailbot" / "demo_data"
SHIPPED = sorted(
    [
        ROOT / "rules.yaml",
        ROOT / "agents.yaml",
        *ROOT.glob("templates/**/*.yaml"),
        *DEMO.glob("**/*.yaml"),
    ]
)


def test_the_fast_parser_is_libyaml_when_pyyaml_has_it() -> None:
    assert yamlfile._FAST is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_same_values_as_safe_load(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert yamlfile.safe_load(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n b: 2\n",
        "key: [unclosed\n",
        "a: b: c\n",
        "- x\ny: 1\n",
        "!!python/object:os.system 'ls'\n",
        "\t- tab\n",
    ],
)
def test_same_error_as_safe_load(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as reference:
        yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError) as fast:
        yamlfile.safe_load(text)
    assert str(fast.value) == str(reference.value)


def test_scalars_resolve_as_with_safe_load() -> None:
    text = "a: 2026-12-01\nb: yes\nc: 0o17\nd: 1_000\ne: .inf\nf: ~\ng: '08:30'\nh: 08:30\n"
    assert yamlfile.safe_load(text) == yaml.safe_load(text)
