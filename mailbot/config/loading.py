"""Reading rules.yaml: the YAML parsed (once per version of the file), validated, and the
first problem reported as its key and what was expected, or its line and column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mailbot import yamlcache, yamlfile
from mailbot.config.root import Config
from mailbot.errors import ConfigError

# Validators of the whole configuration name the key they refuse at the start of their message.
PREFIXED = ("mailboxes.", "services.", "routing.", "organisation.", "probe.")


def validation_problem(exc: ValidationError) -> tuple[str, str]:
    """The first problem pydantic found, as (key path, what was expected), for rules.yaml,
    agents.yaml and meta.yaml alike. An unknown key comes first: it is usually a misspelt
    one, and the "missing" it causes would hide it."""
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    return _format_location(tuple(errors[0]["loc"])), _describe(dict(errors[0]))


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (not allowed here; check its spelling)"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] not in {"value_error", "assertion_error"} and not isinstance(got, dict):
        message += f" (got {got!r})"
    return message


def config_from_mapping(data: Any, source: str, base: Path | None = None) -> Config:
    """Validate already-parsed YAML; ``source`` names the file in errors.

    Relative paths are resolved against ``base`` (load_config gives the folder of
    rules.yaml); without one they are left as written.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    try:
        return Config.model_validate(data, context={"base": base})
    except ValidationError as exc:
        key, message = validation_problem(exc)
        if message.startswith(PREFIXED) and ": " in message:
            key, message = message.split(": ", 1)
        raise ConfigError(source, key, message) from None


def read_yaml(path: Path, cached: bool = True) -> Any:
    """A YAML file's value; ``cached``: through ``yamlcache`` (kept in the cache directory
    per version of the file, never deleted: not for a file that names people)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # an editor's Latin-1 or UTF-16: named, not a traceback
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path), f"line {line}", "not valid UTF-8 text; save the file as UTF-8"
        ) from None
    try:
        # parsed once per version of the file
        return yamlcache.safe_load(text) if cached else yamlfile.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None


def load_config(path: str | Path) -> Config:
    """Load and validate rules.yaml. The one entry point to configuration."""
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent  # absolute, '..' folded, symlinks kept
    return config_from_mapping(read_yaml(path), str(path), base=folder)
