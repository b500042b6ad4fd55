"""What the README tells an operator about the shipped configuration is what ships.

The routing settings quoted in README.md drifted from rules.yaml once (round 9 changed
`default_share` and the complaint bars; the README kept round 5's): an operator tuning
them would have started from the wrong values.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
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


def readme_commands() -> list[str]:
    """Every `mailbot …` line of the README's shell blocks (continuations joined, a
    leading `echo … |` dropped)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().split("| ", 1)[-1] if line.startswith("echo ") else line.strip()
            if line.startswith("mailbot "):
                found.append(line)
    return found


def as_arguments(line: str) -> list[str]:
    """The line's arguments with its optional parts taken: brackets dropped, `...`
    (more of the same) left out, the first of `a|b|c` values, `|` between options gone."""
    arguments = []
    for token in shlex.split(line, comments=True)[1:]:
        token = token.strip("[]")
        if token in ("...", "|", ""):
            continue
        arguments.append(token if token.startswith("--") else token.split("|")[0])
    return arguments


def test_every_command_the_readme_shows_is_one_mailbot_takes() -> None:
    """IT copies the README's commands: each must parse as `mailbot` parses it today
    (options renamed, removed or mistyped fail here), and an agent it names must be one
    of the shipped agents.yaml (`--agent jdupont` was refused: no such agent)."""
    from mailbot.cli import parser

    agents = yaml.safe_load((ROOT / "agents.yaml").read_text(encoding="utf-8"))["agents"]
    lines = readme_commands()
    assert len(lines) > 40
    for line in lines:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parsed = parser().parse_args(as_arguments(line))
        except SystemExit:
            raise AssertionError(f"{line}\n{errors.getvalue()}") from None
        if getattr(parsed, "quarantine_command", None) != "dismiss":  # anyone's login name
            assert getattr(parsed, "agent", None) in (None, *agents), line
