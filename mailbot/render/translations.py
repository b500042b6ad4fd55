"""Translated paragraphs of the citizens' mails, from data files (templates/i18n/<lang>.yaml).

Adding a language is adding a file; adding a paragraph is adding it to every file and naming
it in the ``translated:`` list of the templates that carry it (their meta.yaml). No code.

A text may hold placeholders in the templates' own syntax, ``{{ reference }}`` or
``{{ service.phone }}``, naming variables of the template; nothing else (no tags, no
filters): the files are trusted, and the values substituted stay data. The renderer
compiles the texts in its sandbox, formats dates in the language (``mailbot.core.dates``) and
isolates each value from the surrounding text (``mailbot.render.templates``).

Each file says whether a native speaker has reviewed it (``reviewed``, ``reviewer``).

A file may also name rules.yaml's re-orientation targets in its language (section
``targets:``, keyed by the target's id: ``mairie: "your town hall"``). ``{{ target.name }}``
then shows "your town hall (votre mairie)": the reader's words first, and the French name,
which stays in rules.yaml alone, that the citizen will see on the sign and the website.
The names live here rather than in rules.yaml because they are texts of this language:
written, reviewed (``reviewed``) and added with its file, like the rest of it, while
rules.yaml keeps the one French name every file refers to. A target a file does not name
keeps the French name alone; ``mailbot check`` and ``templates check`` warn of it
(``target_warnings``), they do not fail: a new target is routed before it is translated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from mailbot import yamlcache
from mailbot.core.bidi import (
    Direction,
    html_literal,
    html_named,
    html_value,
    text_literal,
    text_named,
    text_value,
)
from mailbot.core.dates import check_language, format_date, format_number
from mailbot.core.language import LANGUAGES, RIGHT_TO_LEFT
from mailbot.core.plaintext import RLM, WIDTH, wrap
from mailbot.errors import TemplateError

FALLBACK = "en"  # undetectable or unsupported language: French + English
HEADER_KEYS = ("language", "name", "direction", "heading", "reviewed", "reviewer")
TARGETS = "targets"  # the section naming rules.yaml's re-orientation targets
TARGET_NAME = "target.name"  # the placeholder shown translated where the file names the target
_TARGET_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # as rules.yaml's ids are written
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)\s*\}\}")
_JINJA_MARKUP = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_LANGUAGE_CODE = re.compile(r"^[a-z]{2}$")  # ISO 639-1, as the detection names languages
# The language tag (BCP 47) of a file's text where its two-letter code does not say enough.
# Chinese is written in two scripts and Unicode gives an ideograph of both one code point,
# drawn the Simplified, Traditional or Japanese way by the font the reader's program picks
# from the tag: lang="zh-Hans" asks for a Simplified Chinese one, as zh.yaml is written.
LANGUAGE_TAGS = {"zh": "zh-Hans"}


@dataclass(frozen=True)
class Translation:
    language: str
    name: str
    direction: str  # "ltr" or "rtl"
    heading: str
    reviewed: bool
    reviewer: str
    texts: Mapping[str, str]  # "ar.received" -> text with {{ placeholders }}
    path: Path
    targets: Mapping[str, str] = field(default_factory=dict)  # target id -> name here

    @property
    def tag(self) -> str:
        """The language as lang="" and Content-Language name it (``LANGUAGE_TAGS``)."""
        return LANGUAGE_TAGS.get(self.language, self.language)

    def placeholders(self, key: str) -> list[str]:
        return PLACEHOLDER.findall(self.texts[key])

    def target_name(self, target: object) -> str | None:
        """The name of a re-orientation target (the ``target`` variable, its ``id``) in this
        language, if this file gives one."""
        found = target.get("id") if isinstance(target, Mapping) else None
        return self.targets.get(found) if isinstance(found, str) else None


def _check_text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(f"{where}: text is missing")
    leftover = _JINJA_MARKUP.search(PLACEHOLDER.sub("", value))
    if leftover:
        raise TemplateError(
            f"{where}: only placeholders such as {{{{ reference }}}} are allowed here, "
            f"found {leftover.group(0)!r}"
        )
    return value.strip()


def _header(path: Path, data: dict[str, object]) -> tuple[str, str, str, str, bool, str]:
    texts = {}
    for key in ("language", "name", "direction", "heading"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise TemplateError(f"{path}: {key}: required text is missing")
        texts[key] = value.strip()
    if texts["language"] != path.stem:
        raise TemplateError(f"{path}: language: {texts['language']!r} differs from the file name")
    if not _LANGUAGE_CODE.match(path.stem):
        # pt_BR would be written into Content-Language and lang="" (BCP 47 says pt-BR), and
        # never picked: the detection names a language, never a region (core/language).
        raise TemplateError(
            f"{path}: name the file by its language's two-letter ISO 639-1 code in lower"
            f" case (pt.yaml, not {path.name}): one file per language, no regional variant"
        )
    try:
        check_language(texts["language"])
    except ValueError as exc:
        raise TemplateError(f"{path}: language: {exc}") from None
    if texts["language"] not in LANGUAGES:
        # A file for a language the detection never names would load and never be used.
        raise TemplateError(
            f"{path}: language: {texts['language']!r} is not among the languages detected"
            f" ({', '.join(LANGUAGES)}): this translation would never be used"
        )
    if texts["direction"] not in {"ltr", "rtl"}:
        raise TemplateError(f"{path}: direction: expected ltr or rtl")
    expected = "rtl" if texts["language"] in RIGHT_TO_LEFT else "ltr"
    if texts["direction"] != expected:
        raise TemplateError(
            f"{path}: direction: {texts['language']!r} is written {expected}, not"
            f" {texts['direction']}"
        )
    reviewed, reviewer = data.get("reviewed"), data.get("reviewer") or ""
    if not isinstance(reviewed, bool):
        raise TemplateError(
            f"{path}: reviewed: say true or false (has a native speaker reviewed this file?)"
        )
    if not isinstance(reviewer, str) or (reviewed and not reviewer.strip()):
        raise TemplateError(f"{path}: reviewer: name who reviewed the translation")
    return (
        texts["language"],
        texts["name"],
        texts["direction"],
        texts["heading"],
        reviewed,
        reviewer.strip(),
    )


def _targets(path: Path, block: object) -> dict[str, str]:
    """The ``targets:`` section: names, one line each, no placeholder."""
    if not isinstance(block, dict):
        raise TemplateError(f"{path}: {TARGETS}: expected target ids and their names")
    names: dict[str, str] = {}
    for key, value in block.items():
        where = f"{path}: {TARGETS}.{key}"
        if not isinstance(key, str) or not _TARGET_ID.match(key):
            raise TemplateError(f"{where}: a target id of rules.yaml (a-z, 0-9 and -)")
        text = _check_text(where, value)
        if PLACEHOLDER.search(text) or len(text.splitlines()) > 1:
            raise TemplateError(f"{where}: a name, on one line, without {{{{ … }}}}")
        names[key] = " ".join(text.split())
    return names


def _check(path: Path, data: object) -> Translation:
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping")
    language, name, direction, heading, reviewed, reviewer = _header(path, data)
    texts: dict[str, str] = {}
    targets = _targets(path, data[TARGETS]) if TARGETS in data else {}
    for section, block in data.items():
        if section in HEADER_KEYS or section == TARGETS:
            continue
        if not isinstance(block, dict) or not _KEY.match(str(section)):
            raise TemplateError(f"{path}: {section}: expected a section of texts (key: text)")
        for key, value in block.items():
            if not _KEY.match(str(key)):
                raise TemplateError(f"{path}: {section}.{key}: keys use a-z, 0-9 and _")
            texts[f"{section}.{key}"] = _check_text(f"{path}: {section}.{key}", value)
    return Translation(language, name, direction, heading, reviewed, reviewer, texts, path, targets)


def load_translations(directory: Path) -> dict[str, Translation]:
    """Every <lang>.yaml in ``directory``, checked once at start: all have the same texts."""
    found: dict[str, Translation] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yamlcache.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateError(f"{path}: cannot read: {exc}") from None
        found[path.stem] = _check(path, data)
    if not found:
        return found
    if FALLBACK not in found:
        raise TemplateError(f"{directory}: {FALLBACK}.yaml is required (the fallback language)")
    expected = set(found[FALLBACK].texts)
    for translation in found.values():
        missing = sorted(expected - set(translation.texts))
        extra = sorted(set(translation.texts) - expected)
        if missing:
            raise TemplateError(f"{translation.path}: {missing[0]}: text is missing")
        if extra:
            raise TemplateError(
                f"{translation.path}: {extra[0]}: not in {FALLBACK}.yaml (misspelt key?)"
            )
    return found


@dataclass(frozen=True)
class TargetGap:
    """One translation file against rules.yaml's re-orientation targets: the targets it
    does not name (its readers get the French name alone) and the names it gives to ids
    rules.yaml does not have (a misspelt id, or a target removed: never shown)."""

    path: Path
    language: str
    missing: tuple[str, ...]
    unknown: tuple[str, ...]

    def warnings(self) -> list[str]:
        """The lines ``mailbot check`` and ``templates check`` print (English, as the CLI)."""
        lines = []
        if self.missing:
            lines.append(
                f"{self.path}: {TARGETS}: no name in this language for"
                f" {', '.join(self.missing)} (the French name alone is shown)"
            )
        if self.unknown:
            lines.append(
                f"{self.path}: {TARGETS}: {', '.join(self.unknown)}: not a re-orientation"
                " target of rules.yaml (routing.reorientation): never shown"
            )
        return lines


def target_gaps(translations: Mapping[str, Translation], targets: Iterable[str]) -> list[TargetGap]:
    """Each translation file that misses a target or names an unknown one."""
    known = list(targets)
    gaps = []
    for translation in translations.values():
        missing = tuple(target for target in known if target not in translation.targets)
        unknown = tuple(sorted(set(translation.targets) - set(known)))
        if missing or unknown:
            gaps.append(TargetGap(translation.path, translation.language, missing, unknown))
    return gaps


def target_warnings(translations: Mapping[str, Translation], targets: Iterable[str]) -> list[str]:
    """What ``mailbot check`` and ``templates check`` warn of (``TargetGap.warnings``)."""
    return [line for gap in target_gaps(translations, targets) for line in gap.warnings()]


def pick(translations: Mapping[str, Translation], language: str | None) -> Translation | None:
    """None for French; the user's language when we have it; English otherwise."""
    if language == "fr" or not translations:
        return None
    return translations.get(language or "") or translations.get(FALLBACK)


# --------------------------------------------------------------------------- rendering


def _lookup(context: Mapping[str, object], path: str) -> object:
    root, _, attribute = path.partition(".")
    value = context.get(root)
    if attribute:
        value = value.get(attribute) if isinstance(value, Mapping) else None
    if value is None or value == "":
        raise TemplateError(f"placeholder {{{{ {path} }}}} has no value")
    return value


def _shown(value: object, language: str, timezone: str) -> str:
    """A value as the reader of ``language`` expects it: dates and numbers in their format."""
    if isinstance(value, datetime):
        return format_date(value, language, timezone=timezone, style="full")
    if isinstance(value, date):
        return format_date(value, language, timezone=timezone, style="date")
    if isinstance(value, int) and not isinstance(value, bool):
        return format_number(value, language)
    return " ".join(str(value).split())


def _nest(flat: Mapping[str, object]) -> dict[str, object]:
    """{"service.phone": v} → {"service": {"phone": v}}: what the compiled text looks up."""
    nested: dict[str, object] = {}
    for path, value in flat.items():
        root, _, attribute = path.partition(".")
        if attribute:
            branch = nested.setdefault(root, {})
            assert isinstance(branch, dict)
            branch[attribute] = value
        else:
            nested[root] = value
    return nested


def _source(text: str, literal: Callable[[str], str]) -> str:
    """The text as a template: ``literal`` applied between placeholders, placeholders kept."""
    out, last = [], 0
    for match in PLACEHOLDER.finditer(text):
        out.append(literal(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(literal(text[last:]))
    return "".join(out)


# A placeholder's value: text, or (a name in the reader's language, the French name).
Value = str | tuple[str, str]


class Paragraphs:
    """Translated paragraphs, compiled on first use in the sandbox, rendered for one mail.

    The text is wrapped at 78 columns (an ideograph takes two), never inside a value; a
    right-to-left paragraph starts each line with a RIGHT-TO-LEFT MARK so that plain-text
    readers, which choose a direction per line, show every line right to left.
    """

    def __init__(self, translations: Mapping[str, Translation], timezone: str) -> None:
        self.translations = translations
        self.timezone = timezone
        options: dict[str, object] = {"undefined": jinja2.StrictUndefined, "cache_size": -1}
        self._text_env = ImmutableSandboxedEnvironment(autoescape=False, **options)
        self._html_env = ImmutableSandboxedEnvironment(autoescape=True, **options)
        self._compiled: dict[tuple[str, str, str], jinja2.Template] = {}

    def _template(self, translation: Translation, key: str, part: str) -> jinja2.Template:
        cache_key = (translation.language, key, part)
        if cache_key not in self._compiled:
            text = translation.texts[key]
            context: Direction = "rtl" if translation.direction == "rtl" else "ltr"
            try:
                self._compiled[cache_key] = (
                    self._html_env.from_string(
                        _source(text, lambda piece: str(html_literal(piece, context)))
                    )
                    if part == "html"
                    else self._text_env.from_string(
                        _source(text, lambda piece: text_literal(piece, context))
                    )
                )
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{translation.path}: {key}: {exc.message}") from None
        return self._compiled[cache_key]

    def _text(self, translation: Translation, key: str, values: Mapping[str, Value]) -> str:
        rtl = translation.direction == "rtl"
        context: Direction = "rtl" if rtl else "ltr"
        shown = {
            path: text_named(*value, context)
            if isinstance(value, tuple)
            else text_value(value, context)
            for path, value in values.items()
        }
        rendered = self._template(translation, key, "text").render(_nest(shown))
        lines: list[str] = []
        for line in rendered.split("\n"):
            wrapped = wrap(line, WIDTH - 1 if rtl else WIDTH, keep=shown.values())
            lines += [RLM + item if rtl else item for item in wrapped]
        return "\n".join(lines)

    def _html(self, translation: Translation, key: str, values: Mapping[str, Value]) -> Markup:
        context: Direction = "rtl" if translation.direction == "rtl" else "ltr"
        shown = {
            path: html_named(*value, context) if isinstance(value, tuple) else html_value(value)
            for path, value in values.items()
        }
        rendered = self._template(translation, key, "html").render(_nest(shown))
        return Markup("<br>\n").join(Markup(line) for line in rendered.split("\n"))

    def _value(self, translation: Translation, context: Mapping[str, object], path: str) -> Value:
        """A placeholder's value as shown: (the target's name in this language, its French
        name) where the file names the target, else the value as text."""
        shown = _shown(_lookup(context, path), translation.language, self.timezone)
        local = translation.target_name(context.get("target")) if path == TARGET_NAME else None
        return (local, shown) if local else shown

    def section(
        self, translation: Translation, keys: Sequence[str], context: Mapping[str, object]
    ) -> tuple[dict[str, object], dict[str, object]]:
        """The ``translation`` variable of the text part and of the HTML part."""
        texts: list[str] = []
        markup: list[Markup] = []
        for key in keys:
            values = {
                path: self._value(translation, context, path)
                for path in translation.placeholders(key)
            }
            try:
                texts.append(self._text(translation, key, values))
                markup.append(self._html(translation, key, values))
            except jinja2.TemplateError as exc:
                raise TemplateError(f"{translation.path}: {key}: {exc}") from None
        common: dict[str, object] = {
            "language": translation.tag,
            "name": translation.name,
            "direction": translation.direction,
        }
        mark = RLM if translation.direction == "rtl" else ""
        text: dict[str, object] = {**common, "heading": mark + translation.heading}
        html: dict[str, object] = {**common, "heading": translation.heading}
        text["paragraphs"], html["paragraphs"] = texts, markup
        return text, html
