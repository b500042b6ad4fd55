"""Translated sections of the AR, from data files (templates/i18n/<lang>.yaml).

Adding a language is adding a file. Texts are plain strings with ``str.format``
placeholders, filled with values mailbot computed (reference, service contacts): a
citizen's text is never one of them, and translations are never template source.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from mailbot.errors import TemplateError

PLACEHOLDERS = {
    "reference",
    "received_date",
    "service_name",
    "service_phone",
    "service_email",
    "service_website",
    "service_address",
    "target_name",
    "target_website",
}
FALLBACK = "en"  # undetectable or unsupported language: French + English
SECTIONS = {
    "ar": (
        "received",
        "reference",
        "delay",
        "handled_by",
        "transferred",
        "contact",
        "reply_hint",
        "automatic",
        "french_only",
        "help",
    ),
    "etrangers": ("anef", "appointments"),
    "reorientation": ("not_prefecture", "more"),
}


@dataclass(frozen=True)
class Translation:
    language: str
    name: str
    direction: str
    heading: str
    texts: Mapping[str, Mapping[str, str]]


def _check(path: Path, data: object) -> Translation:
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping")
    for key in ("language", "name", "direction", "heading"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise TemplateError(f"{path}: {key}: required text is missing")
    if data["language"] != path.stem:
        raise TemplateError(f"{path}: language: {data['language']!r} differs from the file name")
    if data["direction"] not in {"ltr", "rtl"}:
        raise TemplateError(f"{path}: direction: expected ltr or rtl")
    texts: dict[str, dict[str, str]] = {}
    for section, keys in SECTIONS.items():
        block = data.get(section)
        if not isinstance(block, dict):
            raise TemplateError(f"{path}: {section}: section is missing")
        for key in keys:
            value = block.get(key)
            where = f"{path}: {section}.{key}"
            if not isinstance(value, str) or not value.strip():
                raise TemplateError(f"{where}: text is missing")
            names = {field for _, field, _, _ in string.Formatter().parse(value) if field}
            if names - PLACEHOLDERS:
                raise TemplateError(
                    f"{where}: unknown placeholder(s) {sorted(names - PLACEHOLDERS)}"
                )
        texts[section] = {key: block[key] for key in keys}
    return Translation(data["language"], data["name"], data["direction"], data["heading"], texts)


def load_translations(directory: Path) -> dict[str, Translation]:
    """Every <lang>.yaml in ``directory``, checked once at start."""
    found: dict[str, Translation] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"{path}: cannot read: {exc}") from None
        found[path.stem] = _check(path, data)
    if found and FALLBACK not in found:
        raise TemplateError(f"{directory}: {FALLBACK}.yaml is required (the fallback language)")
    return found


def pick(translations: Mapping[str, Translation], language: str | None) -> Translation | None:
    """None for French; the user's language when we have it; English otherwise."""
    if language == "fr" or not translations:
        return None
    return translations.get(language or "") or translations.get(FALLBACK)


def section(
    translation: Translation, parts: list[tuple[str, str]], values: Mapping[str, str]
) -> dict[str, object]:
    """The ``translation`` template variable: heading, direction and filled paragraphs."""
    return {
        "language": translation.language,
        "name": translation.name,
        "direction": translation.direction,
        "heading": translation.heading,
        "paragraphs": [translation.texts[sec][key].format_map(values) for sec, key in parts],
    }
