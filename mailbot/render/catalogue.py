"""The template catalogue: how a template directory is laid out, what a meta.yaml declares,
and the checks on the variables a template is given.

Layout of a template directory (the prefecture edits it; see ``templates/README.md``)::

    templates/
      _partials/              shared pieces, used with {% include %} / {% extends %}
        layout.html.j2
        mail.css              the one stylesheet, inlined into every HTML part
      i18n/                   translated paragraphs, one file per language
      ar-general/             one directory per template; the directory name is its name
        meta.yaml             name, title, description, scope, language, subject, variables
        body.txt.j2           the text/plain part
        body.html.j2          the text/html part
        liste-des-pièces.txt  files meta.yaml lists under ``attachments:`` (sent with it)
"""

from __future__ import annotations

import functools
import mimetypes
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailbot import yamlcache
from mailbot.config import validation_problem
from mailbot.errors import TemplateError

TRANSLATIONS_DIR = "i18n"
META_FILE = "meta.yaml"
TEXT_FILE = "body.txt.j2"
HTML_FILE = "body.html.j2"
PARTIALS_DIR = "_partials"
STYLESHEET = "mail.css"  # in PARTIALS_DIR
LANGUAGE = "fr"

MAX_ATTACHMENT = 2 * 1024 * 1024  # octets: a form or a list of documents, not a dossier
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VARIABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

VarType = Literal["text", "datetime", "date", "mapping", "list", "integer", "boolean"]


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True)
class VarSpec:
    """One variable a template expects, as declared in its meta.yaml.

    ``type`` is checked when rendering: ``text`` (str), ``datetime`` (timezone-aware),
    ``date``, ``mapping`` (a mapping or a pydantic model; ``fields`` lists keys that must be present
    and non-empty), ``list``, ``integer``, ``boolean``.
    """

    description: str
    example: object
    type: VarType = "text"
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class TemplateScope:
    """Where a template may be used: mailbox and service names from rules.yaml.

    An empty tuple means "any".
    """

    mailboxes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()

    def allows(self, *, mailbox: str | None = None, service: str | None = None) -> bool:
        if mailbox is not None and self.mailboxes and mailbox not in self.mailboxes:
            return False
        return not (service is not None and self.services and service not in self.services)


@dataclass(frozen=True)
class TranslatedPart:
    """One translated paragraph of a template (meta.yaml ``translated:``), with its condition.

    ``text`` is a key of templates/i18n/<lang>.yaml ("ar.received"); the paragraph is shown
    when the variable ``when`` is true / ``unless`` is false (or absent). A condition may
    name a field of a mapping variable, ``implicit_decision.rejected``: one variable then
    says which of two paragraphs is shown, a translation holding no ``{% if %}``.
    """

    text: str
    when: str | None = None
    unless: str | None = None

    def shown(self, context: Mapping[str, object]) -> bool:
        if self.when is not None and not _condition(context, self.when):
            return False
        return not (self.unless is not None and _condition(context, self.unless))


def _condition(context: Mapping[str, object], name: str) -> bool:
    """The truth of a variable, or of ``variable.field`` (false when either is absent)."""
    root, _, field = name.partition(".")
    value = context.get(root)
    if field:
        mapping = _as_mapping(value) if value is not None else None
        value = mapping.get(field) if mapping is not None else None
    return bool(value)


@dataclass(frozen=True)
class TemplateAttachment:
    """A file a template declares (meta.yaml ``attachments:``), read once at start-up: it
    goes with every mail of the template."""

    filename: str
    data: bytes

    @functools.cached_property
    def content_type(self) -> str:
        """Guessed from the file name when first sent: guessing reads the system's MIME
        tables (/etc/mime.types: ~5 ms), which a start that sends no attachment skips."""
        return mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


@dataclass(frozen=True)
class TemplateMeta:
    name: str
    title: str
    description: str
    scope: TemplateScope
    language: str
    subject: str
    required: Mapping[str, VarSpec]
    optional: Mapping[str, VarSpec]
    translated: tuple[TranslatedPart, ...] = ()
    text_matches_html: bool = True
    attachments: tuple[TemplateAttachment, ...] = ()

    def examples(self, *, include_optional: bool = True) -> dict[str, object]:
        """The example values of meta.yaml, ready to pass to Renderer.render()."""
        found = {key: spec.example for key, spec in self.required.items()}
        if include_optional:
            found.update({key: spec.example for key, spec in self.optional.items()})
        return found


# --------------------------------------------------------------------------- meta.yaml model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _VarModel(_Strict):
    description: str = Field(min_length=1)
    example: Any
    type: VarType = "text"
    fields: list[str] = Field(default_factory=list)


class _VariablesModel(_Strict):
    required: dict[str, _VarModel] = Field(default_factory=dict)
    optional: dict[str, _VarModel] = Field(default_factory=dict)


class _ScopeModel(_Strict):
    mailboxes: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)


class _TranslatedModel(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    text: str
    when: str | None = Field(default=None, alias="if")
    unless: str | None = None


class _MetaModel(_Strict):
    name: str
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    scope: _ScopeModel
    language: str = Field(pattern=r"^[a-z]{2}$")
    subject: str = Field(min_length=1)
    variables: _VariablesModel
    translated: list[str | _TranslatedModel] = Field(default_factory=list)
    text_matches_html: bool = True
    attachments: list[str] = Field(default_factory=list)


def _translated_parts(
    path: Path, model: _MetaModel, specs: Mapping[str, Mapping[str, VarSpec]]
) -> tuple[TranslatedPart, ...]:
    """The ``translated:`` list of a meta.yaml; its conditions name declared variables."""
    if "translation" in specs["required"] or "translation" in specs["optional"]:
        raise TemplateError(
            f"{path}: variables: 'translation' is provided by mailbot; list the translated "
            "paragraphs under 'translated:' instead"
        )
    parts = []
    for index, item in enumerate(model.translated):
        part = (
            TranslatedPart(item)
            if isinstance(item, str)
            else TranslatedPart(item.text, item.when, item.unless)
        )
        for condition in (part.when, part.unless):
            if condition is None:
                continue
            root, dot, field = condition.partition(".")
            spec = specs["required"].get(root) or specs["optional"].get(root)
            if spec is None:
                raise TemplateError(
                    f"{path}: translated[{index}]: condition on undeclared variable {condition!r}"
                )
            if dot and (spec.type != "mapping" or not _VARIABLE_NAME.match(field)):
                raise TemplateError(
                    f"{path}: translated[{index}]: condition {condition!r}: {root!r} is not"
                    " a mapping (a condition names a variable, or a field of a mapping)"
                )
        parts.append(part)
    return tuple(parts)


# --------------------------------------------------------------------------- meta.yaml


def parse_meta(path: Path, text: str, directory_name: str) -> TemplateMeta:
    """A template's meta.yaml, validated: TemplateError naming the file and the key."""
    try:
        data = yamlcache.safe_load(text)  # parsed once per version of the file
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"{path}:{where} invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping at the top level")
    try:
        model = _MetaModel.model_validate(data)
    except ValidationError as exc:
        key, problem = validation_problem(exc)
        raise TemplateError(f"{path}: {key}: {problem}") from None
    if model.name != directory_name:
        raise TemplateError(
            f"{path}: name: {model.name!r} must match the directory name {directory_name!r}"
        )
    if model.language != LANGUAGE:
        raise TemplateError(f"{path}: language: only {LANGUAGE!r} is supported for now")
    specs = _variable_specs(path, model)
    return TemplateMeta(
        name=model.name,
        title=model.title,
        description=model.description,
        scope=TemplateScope(tuple(model.scope.mailboxes), tuple(model.scope.services)),
        language=model.language,
        subject=model.subject,
        required=MappingProxyType(specs["required"]),
        optional=MappingProxyType(specs["optional"]),
        translated=_translated_parts(path, model, specs),
        text_matches_html=model.text_matches_html,
        attachments=tuple(
            _attachment(path, f"attachments[{i}]", name) for i, name in enumerate(model.attachments)
        ),
    )


def _attachment(meta_path: Path, key: str, name: str) -> TemplateAttachment:
    """One declared file, inside the template's folder: TemplateError naming the template's
    meta.yaml and the key when it is missing, outside, empty or too big."""
    folder = meta_path.parent
    file = folder / name
    where = f"{meta_path}: {key}: {name!r}"
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
        raise TemplateError(f"{where}: give a file name relative to the template's folder")
    if not file.is_file():
        raise TemplateError(f"{where}: no such file in {folder}")
    data = file.read_bytes()
    if not data or len(data) > MAX_ATTACHMENT:
        raise TemplateError(f"{where}: {len(data)} octets (1 to {MAX_ATTACHMENT} allowed)")
    return TemplateAttachment(file.name, data)


def _variable_specs(path: Path, model: _MetaModel) -> dict[str, dict[str, VarSpec]]:
    """The declared variables, names checked and examples checked against their types."""
    both = set(model.variables.required) & set(model.variables.optional)
    if both:
        raise TemplateError(
            f"{path}: variables: {', '.join(sorted(both))} both required and optional"
        )
    specs: dict[str, dict[str, VarSpec]] = {"required": {}, "optional": {}}
    for kind, declared in (
        ("required", model.variables.required),
        ("optional", model.variables.optional),
    ):
        for var_name, var in declared.items():
            if not _VARIABLE_NAME.match(var_name):
                raise TemplateError(
                    f"{path}: variables.{kind}.{var_name}: variable names use lower-case "
                    "letters, digits and underscores"
                )
            if var.fields and var.type != "mapping":
                raise TemplateError(
                    f"{path}: variables.{kind}.{var_name}: 'fields' only applies to mappings"
                )
            spec = VarSpec(var.description, var.example, var.type, tuple(var.fields))
            try:
                example = check_value(var_name, spec, var.example)
            except ValueError as exc:
                raise TemplateError(
                    f"{path}: variables.{kind}.{var_name}: example: {exc}"
                ) from None
            specs[kind][var_name] = VarSpec(var.description, example, var.type, spec.fields)
    return specs


# --------------------------------------------------------------------------- variable checks


def _as_mapping(value: object) -> Mapping[str, object] | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, BaseModel):
        dumped: dict[str, object] = value.model_dump()
        return dumped
    return None


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _from_iso(name: str, value: object, parse: Callable[[str], object]) -> object:
    """A date or datetime written in ISO 8601 (meta.yaml examples, ``--var``), parsed."""
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"variable {name!r}: {value!r} is not an ISO 8601 date") from None


def check_value(name: str, spec: VarSpec, value: object) -> object:
    """Return the value as templates will see it, or raise ValueError saying what is wrong."""
    if spec.type == "text":
        if not isinstance(value, str):
            raise ValueError(f"variable {name!r} must be text, got {type(value).__name__}")
        return value
    if spec.type == "datetime":
        value = _from_iso(name, value, datetime.fromisoformat)
        if not isinstance(value, datetime):
            raise ValueError(f"variable {name!r} must be a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"variable {name!r} must be a timezone-aware datetime")
        return value
    if spec.type == "date":
        value = _from_iso(name, value, date.fromisoformat)
        if not isinstance(value, date) or isinstance(value, datetime):
            raise ValueError(f"variable {name!r} must be a date, got {type(value).__name__}")
        return value
    if spec.type == "mapping":
        mapping = _as_mapping(value)
        if mapping is None:
            raise ValueError(f"variable {name!r} must be a mapping, got {type(value).__name__}")
        for field_name in spec.fields:
            if _is_empty(mapping.get(field_name)):
                raise ValueError(f"variable {name!r}: {name}.{field_name} is missing or empty")
        return mapping
    if spec.type == "list":
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ValueError(f"variable {name!r} must be a list, got {type(value).__name__}")
        return value
    if spec.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"variable {name!r} must be an integer, got {type(value).__name__}")
        return value
    if not isinstance(value, bool):
        raise ValueError(f"variable {name!r} must be true or false, got {type(value).__name__}")
    return value


def placeholder_problem(meta: TemplateMeta, part: TranslatedPart, placeholder: str) -> str | None:
    """Why ``{{ placeholder }}`` could be missing when ``meta``'s template shows ``part``."""
    root, _, attribute = placeholder.partition(".")
    shown_with = part.when.partition(".")[0] if part.when else None  # its condition's variable
    spec = meta.required.get(root) or (meta.optional.get(root) if root == shown_with else None)
    if spec is None:
        return f"{{{{ {placeholder} }}}}: template {meta.name!r} has no required variable {root!r}"
    if attribute and spec.type != "mapping":
        return f"{{{{ {placeholder} }}}}: {root!r} is not a mapping"
    if attribute and spec.fields and attribute not in spec.fields:
        return (
            f"{{{{ {placeholder} }}}}: {root}.{attribute} may be empty in template "
            f"{meta.name!r} (always there: {', '.join(spec.fields)})"
        )
    return None
