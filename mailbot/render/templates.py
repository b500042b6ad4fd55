"""Mail templates: load, check and render them, then build the outgoing message.

Layout of a template directory (the prefecture edits it; see ``templates/README.md``)::

    templates/
      _partials/              shared pieces, used with {% include %} / {% extends %}
        layout.html.j2
        service_contact.txt.j2
        service_contact.html.j2
      ar-general/             one directory per template; the directory name is its name
        meta.yaml             name, title, description, scope, language, subject, variables
        body.txt.j2           the text/plain part
        body.html.j2          the text/html part

Safety rules, because the people who edit the templates are not the people who write
the mail they answer:

* templates run in Jinja2's immutable sandbox;
* a missing variable is an error that names it (``StrictUndefined``), never a blank;
* HTML parts are always autoescaped, text parts and the subject never are;
* what a citizen wrote (subject, name...) is only ever passed as *data*: ``{{ 7*7 }}`` in
  a subject comes out as those seven characters, ``<script>`` comes out escaped in HTML;
* the rendered subject is one line, capped in length, and goes into the header through
  ``email.policy.SMTP``, which encodes it (RFC 2047) and refuses any line break.

Everything is read and compiled once, in ``Renderer.__init__``; every template is then
rendered with the examples of its ``meta.yaml`` so that a typo is reported at start-up,
naming the file, instead of at the first citizen's mail.
"""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.charset import BASE64, QP, Charset
from email.errors import NonASCIILocalPartDefect
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import SMTP, compat32, default
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
import jinja2
import yaml
from jinja2 import meta as jinja_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailbot.core.addresses import check_mailbox
from mailbot.core.bidi import html_isolate, tel_target, text_isolate, url_label
from mailbot.core.dates import format_date
from mailbot.core.message import single_line
from mailbot.core.plaintext import wrap, wrap_long_lines
from mailbot.core.workdays import WorkingCalendar
from mailbot.errors import MessageError, TemplateError
from mailbot.render.translations import Paragraphs, load_translations, pick

if TYPE_CHECKING:
    from mailbot.config import Config

TRANSLATIONS_DIR = "i18n"
META_FILE = "meta.yaml"
TEXT_FILE = "body.txt.j2"
HTML_FILE = "body.html.j2"
PARTIALS_DIR = "_partials"
STYLESHEET = "mail.css"  # in PARTIALS_DIR
SUBJECT_MAX_CHARS = 200
LANGUAGE = "fr"

_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_VARIABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Characters str.splitlines() breaks on that single_line() leaves alone.
_UNICODE_BREAKS = re.compile(r"[\x85\u2028\u2029]")
_SPACES = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")
_MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_MAX_DISPLAY_NAME = 100  # characters: an encoded name stays well within a header line
_MAX_MESSAGE_ID = 900  # "In-Reply-To: <id>" within 998 octets
_MAX_WORD = 900  # the longest run without a space an ASCII header value may hold
_MAX_REFERENCES = 20

VarType = Literal["text", "datetime", "date", "mapping", "list", "integer", "boolean"]

# Headers build_email sets itself, or that would add recipients: extra_headers may not set them.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "x-auto-response-suppress",
        "x-mailbot-loop",
        "content-language",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


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
    when the variable ``when`` is true / ``unless`` is false (or absent).
    """

    text: str
    when: str | None = None
    unless: str | None = None

    def shown(self, context: Mapping[str, object]) -> bool:
        if self.when is not None and not context.get(self.when):
            return False
        return not (self.unless is not None and context.get(self.unless))


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

    def examples(self, *, include_optional: bool = True) -> dict[str, object]:
        """The example values of meta.yaml, ready to pass to Renderer.render()."""
        found = {key: spec.example for key, spec in self.required.items()}
        if include_optional:
            found.update({key: spec.example for key, spec in self.optional.items()})
        return found


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    languages: tuple[str, ...] = (LANGUAGE,)  # French, then the translation's language if any


# --------------------------------------------------------------------------- date formatting


def date_fr(value: datetime | date, *, timezone: str = "Europe/Paris", style: str = "full") -> str:
    """Format a date in French, in the given time zone (see ``mailbot.core.dates``).

    Styles: ``full`` "jeudi 26 novembre 2026 à 14 h 05", ``date`` "jeudi 26 novembre 2026",
    ``time`` "14 h 05", ``numeric`` "26/11/2026 à 14 h 05". Whole hours read "14 h".
    A naive datetime is refused: we never guess the zone a mail was received in.
    """
    try:
        return format_date(value, "fr", timezone=timezone, style=style)
    except ValueError as exc:
        raise ValueError(str(exc).replace("dates need", "date_fr needs")) from None


def _oneline(value: object) -> str:
    """Template filter: text on one line, runs of spaces collapsed."""
    return _SPACES.sub(" ", single_line(_UNICODE_BREAKS.sub(" ", str(value))))


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
            if condition is not None and not (
                condition in specs["required"] or condition in specs["optional"]
            ):
                raise TemplateError(
                    f"{path}: translated[{index}]: condition on undeclared variable {condition!r}"
                )
        parts.append(part)
    return tuple(parts)


def _pydantic_problem(exc: ValidationError) -> str:
    # An unknown key is usually a misspelt one: report it before the "missing" it causes.
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key (check its spelling)"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {first['msg']}"


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


def _check_value(name: str, spec: VarSpec, value: object) -> object:
    """Return the value as templates will see it, or raise ValueError saying what is wrong."""
    if spec.type == "text":
        if not isinstance(value, str):
            raise ValueError(f"variable {name!r} must be text, got {type(value).__name__}")
        return value
    if spec.type == "datetime":
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"variable {name!r}: {value!r} is not an ISO 8601 date") from None
        if not isinstance(value, datetime):
            raise ValueError(f"variable {name!r} must be a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"variable {name!r} must be a timezone-aware datetime")
        return value
    if spec.type == "date":
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"variable {name!r}: {value!r} is not an ISO 8601 date") from None
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


# --------------------------------------------------------------------------- text clean-up


def _clean_subject(subject: str) -> str:
    """One line, no control characters, at most SUBJECT_MAX_CHARS, cut between words."""
    subject = _oneline(subject)
    if len(subject) <= SUBJECT_MAX_CHARS:
        return subject
    cut = subject[: SUBJECT_MAX_CHARS - 1]
    space = cut.rfind(" ")
    if space >= SUBJECT_MAX_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—") + "…"


def _clean_text(text: str) -> str:
    """Forgiving whitespace: LF line ends, no trailing spaces, at most one blank line in a row."""
    lines = [
        line if line == "-- " else line.rstrip()  # keep the signature delimiter "-- "
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


# --------------------------------------------------------------------------- renderer


@dataclass(frozen=True)
class _Loaded:
    meta: TemplateMeta
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template
    files: Mapping[str, Path]  # "subject" / "text" / "html" -> file to blame in errors


class Renderer:
    """All templates of one directory, read, compiled and checked once."""

    def __init__(self, template_dir: Path, *, timezone: str = "Europe/Paris") -> None:
        self.template_dir = Path(template_dir)
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"unknown time zone {timezone!r}") from None
        self.timezone = timezone
        if not self.template_dir.is_dir():
            raise TemplateError(f"{self.template_dir}: template directory not found")

        # Every template source, by loader name ("ar-general/body.txt.j2"), read once.
        self._sources: dict[str, tuple[str, Path]] = {}
        self._load_partials()
        metas = self._load_metas()
        self._inliner = self._load_stylesheet()
        i18n = self.template_dir / TRANSLATIONS_DIR
        self.translations = load_translations(i18n) if i18n.is_dir() else {}
        self._paragraphs = Paragraphs(self.translations, timezone)

        loader = jinja2.FunctionLoader(self._load_source)
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
            # An {% include %} on its own line then behaves like pasting the partial's lines.
            "keep_trailing_newline": True,
            "auto_reload": False,
            "cache_size": -1,
        }
        # Two environments rather than select_autoescape: a partial is escaped according
        # to the part that includes it, so a .txt partial pulled into HTML is still escaped.
        self._text_env = ImmutableSandboxedEnvironment(autoescape=False, **common)
        self._html_env = ImmutableSandboxedEnvironment(autoescape=True, **common)
        for env in (self._text_env, self._html_env):
            env.filters["date_fr"] = self._date_filter
            env.filters["oneline"] = _oneline
            env.filters["tel"] = tel_target
            env.filters["url_label"] = url_label
        self._text_env.filters["isolate"] = text_isolate
        self._html_env.filters["isolate"] = html_isolate
        self._text_env.filters["wrap"] = _wrap_filter

        for key, (_, path) in self._sources.items():
            if key.startswith(PARTIALS_DIR + "/"):
                self._compile(key, path)

        self._templates: dict[str, _Loaded] = {}
        for name, meta in metas.items():
            self._templates[name] = self._prepare(name, meta)
            self._check_translated(meta)
        for name in self._templates:
            self._trial_render(name)

    # ---------------------------------------------------------------- public

    def names(self) -> list[str]:
        return sorted(self._templates)

    def meta(self, name: str) -> TemplateMeta:
        return self._get(name).meta

    def render(
        self,
        name: str,
        variables: Mapping[str, object],
        *,
        language: str | None = LANGUAGE,
        inline: bool = True,
    ) -> RenderedMail:
        """Render one mail. ``language`` is the citizen's: when it is not French, the
        paragraphs the template declares under ``translated:`` follow the French text in that
        language (English when mailbot has no translation for it, or None: not detected).
        ``inline=False`` leaves the HTML as the template wrote it (no stylesheet applied,
        nothing re-serialised): for checks of the template itself."""
        loaded = self._get(name)
        context = self._context(loaded.meta, variables)
        text_context, html_context = context, context
        translation = pick(self.translations, language) if loaded.meta.translated else None
        if translation is not None:
            keys = [part.text for part in loaded.meta.translated if part.shown(context)]
            text_section, html_section = self._paragraphs.section(translation, keys, context)
            text_context = {**context, "translation": text_section}
            html_context = {**context, "translation": html_section}
        subject = self._run(loaded, "subject", context)
        text = self._run(loaded, "text", text_context)
        markup = self._run(loaded, "html", html_context)
        return RenderedMail(
            subject=_clean_subject(subject),
            text=wrap_long_lines(_clean_text(text)),
            html=(self._inline(markup) if inline else markup).strip() + "\n",
            languages=(LANGUAGE, translation.language) if translation else (LANGUAGE,),
        )

    def language_of(self, language: str | None) -> str:
        """The language the translated paragraphs of a mail would be in ("fr": none)."""
        translation = pick(self.translations, language)
        return translation.language if translation else LANGUAGE

    def check_config(self, config: Config) -> None:
        """Check rules.yaml against the templates: each mailbox's AR exists and fits its scope."""
        for key, mailbox in config.mailboxes.items():
            if mailbox.ar_template not in self._templates:
                raise TemplateError(
                    f"mailboxes.{key}.ar_template: no template {mailbox.ar_template!r} in "
                    f"{self.template_dir} (known: {', '.join(self.names()) or 'none'})"
                )
            scope = self._templates[mailbox.ar_template].meta.scope
            if not scope.allows(mailbox=key, service=mailbox.service):
                raise TemplateError(
                    f"mailboxes.{key}.ar_template: template {mailbox.ar_template!r} is not "
                    f"meant for mailbox {key!r} / service {mailbox.service!r} (see its scope in "
                    f"{self._templates[mailbox.ar_template].files['subject']})"
                )
        # A template may name a mailbox this deployment does not run; a service it must know.
        for name, loaded in self._templates.items():
            for service_name in loaded.meta.scope.services:
                if service_name not in config.services:
                    raise TemplateError(
                        f"{loaded.files['subject']}: scope.services: unknown service "
                        f"{service_name!r} in template {name!r}"
                    )

    # ---------------------------------------------------------------- loading

    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TemplateError(f"{path}: not valid UTF-8") from None
        except OSError as exc:
            raise TemplateError(f"{path}: cannot read file: {exc.strerror}") from None

    def _load_partials(self) -> None:
        partials = self.template_dir / PARTIALS_DIR
        if not partials.is_dir():
            return
        for path in sorted(partials.iterdir()):
            if path.is_file() and path.name.endswith(".j2"):
                self._sources[f"{PARTIALS_DIR}/{path.name}"] = (self._read(path), path)

    def _load_metas(self) -> dict[str, TemplateMeta]:
        metas: dict[str, TemplateMeta] = {}
        for directory in sorted(self.template_dir.iterdir()):
            if not directory.is_dir() or directory.name.startswith((".", "_")):
                continue
            if directory.name == TRANSLATIONS_DIR:  # data (translations), not a template
                continue
            if not _TEMPLATE_NAME.match(directory.name):
                raise TemplateError(
                    f"{directory}: template directory names use lower-case letters, digits "
                    "and hyphens (e.g. ar-general)"
                )
            for path in sorted(directory.iterdir()):
                expected = path.name in {META_FILE, TEXT_FILE, HTML_FILE}
                if not expected and path.name.endswith((".j2", ".yaml", ".yml")):
                    raise TemplateError(
                        f"{path}: unexpected file; a template directory holds "
                        f"{META_FILE}, {TEXT_FILE} and {HTML_FILE}"
                    )
            for part in (META_FILE, TEXT_FILE, HTML_FILE):
                if not (directory / part).is_file():
                    raise TemplateError(f"{directory / part}: missing (every template needs it)")
            metas[directory.name] = self._parse_meta(directory)
            for part in (TEXT_FILE, HTML_FILE):
                path = directory / part
                self._sources[f"{directory.name}/{part}"] = (self._read(path), path)
        return metas

    def _parse_meta(self, directory: Path) -> TemplateMeta:
        path = directory / META_FILE
        try:
            data = yaml.safe_load(self._read(path))
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
            raise TemplateError(f"{path}: {_pydantic_problem(exc)}") from None
        if model.name != directory.name:
            raise TemplateError(
                f"{path}: name: {model.name!r} must match the directory name {directory.name!r}"
            )
        if model.language != LANGUAGE:
            raise TemplateError(f"{path}: language: only {LANGUAGE!r} is supported for now")
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
                    example = _check_value(var_name, spec, var.example)
                except ValueError as exc:
                    raise TemplateError(
                        f"{path}: variables.{kind}.{var_name}: example: {exc}"
                    ) from None
                specs[kind][var_name] = VarSpec(var.description, example, var.type, spec.fields)
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
        )

    def _load_source(self, name: str) -> tuple[str, str, Callable[[], bool]] | None:
        found = self._sources.get(name)
        if found is None:
            return None
        source, path = found
        return source, str(path), lambda: True

    def _env_for(self, key: str) -> ImmutableSandboxedEnvironment:
        return self._html_env if key.endswith(".html.j2") else self._text_env

    def _compile(self, key: str, path: Path) -> jinja2.Template:
        env = self._env_for(key)
        try:
            template = env.get_template(key)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}: line {exc.lineno}: syntax error: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{path}: {exc.message or exc}") from None
        # Static checks: included/extended templates exist.
        source = self._sources[key][0]
        for referenced in jinja_meta.find_referenced_templates(env.parse(source)):
            if referenced is not None and referenced not in self._sources:
                raise TemplateError(
                    f"{path}: includes {referenced!r}, which is not a template file "
                    f"(partials live in {self.template_dir / PARTIALS_DIR})"
                )
        return template

    def _check_undeclared(self, meta: TemplateMeta, key: str, path: Path, source: str) -> None:
        env = self._env_for(key)
        used = jinja_meta.find_undeclared_variables(env.parse(source))
        unknown = used - set(meta.required) - set(meta.optional) - set(env.globals)
        if meta.translated:
            unknown.discard("translation")  # provided by the renderer
        if unknown:
            raise TemplateError(
                f"{path}: uses undeclared variable(s) {', '.join(sorted(unknown))}; declare "
                f"them under variables in {path.parent / META_FILE}"
            )

    def _prepare(self, name: str, meta: TemplateMeta) -> _Loaded:
        directory = self.template_dir / name
        meta_path = directory / META_FILE
        subject_key = f"{name}/{META_FILE}#subject"
        self._sources[subject_key] = (meta.subject, meta_path)
        files = {"subject": meta_path, "text": directory / TEXT_FILE, "html": directory / HTML_FILE}
        compiled: dict[str, jinja2.Template] = {}
        for part, key in (
            ("subject", subject_key),
            ("text", f"{name}/{TEXT_FILE}"),
            ("html", f"{name}/{HTML_FILE}"),
        ):
            try:
                compiled[part] = self._compile(key, files[part])
            except TemplateError as exc:
                if part == "subject":
                    raise TemplateError(f"{exc} (in the subject)") from None
                raise
            self._check_undeclared(meta, key, files[part], self._sources[key][0])
        return _Loaded(
            meta,
            compiled["subject"],
            compiled["text"],
            compiled["html"],
            MappingProxyType(files),
        )

    def _load_stylesheet(self) -> css_inline.CSSInliner | None:
        """The one stylesheet of every HTML part, inlined into style attributes at render
        time (Outlook and most webmails ignore <style>); @media rules stay in a <style>."""
        path = self.template_dir / PARTIALS_DIR / STYLESHEET
        if not path.is_file():
            return None
        css = self._read(path)
        inliner = css_inline.CSSInliner(
            extra_css=css, keep_at_rules=True, load_remote_stylesheets=False, minify_css=True
        )
        try:
            inliner.inline("<p></p>")
        except (css_inline.InlineError, ValueError) as exc:
            raise TemplateError(f"{path}: invalid stylesheet: {exc}") from None
        return inliner

    def _inline(self, markup: str) -> str:
        if self._inliner is None:
            return markup
        try:
            return self._inliner.inline(markup)
        except (css_inline.InlineError, ValueError) as exc:
            raise TemplateError(f"cannot apply the stylesheet: {exc}") from None

    def _check_translated(self, meta: TemplateMeta) -> None:
        """Every translated paragraph exists and uses only variables this template has."""
        path = self.template_dir / meta.name / META_FILE
        if meta.translated and not self.translations:
            raise TemplateError(f"{path}: translated: no translations in {TRANSLATIONS_DIR}/")
        for index, part in enumerate(meta.translated):
            for translation in self.translations.values():
                if part.text not in translation.texts:
                    raise TemplateError(
                        f"{path}: translated[{index}]: no text {part.text!r} in {translation.path}"
                    )
                for placeholder in translation.placeholders(part.text):
                    problem = _placeholder_problem(meta, part, placeholder)
                    if problem:
                        raise TemplateError(f"{translation.path}: {part.text}: {problem}")

    def _trial_render(self, name: str) -> None:
        meta = self._templates[name].meta
        for include_optional in (True, False):
            try:
                self.render(name, meta.examples(include_optional=include_optional))
            except TemplateError as exc:
                which = "all examples" if include_optional else "only the required examples"
                raise TemplateError(f"{exc} (while test-rendering {name!r} with {which})") from None

    # ---------------------------------------------------------------- rendering

    def _get(self, name: str) -> _Loaded:
        try:
            return self._templates[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise TemplateError(f"unknown template {name!r} (known: {known})") from None

    def _context(self, meta: TemplateMeta, variables: Mapping[str, object]) -> dict[str, object]:
        """Only declared variables reach the template, each checked against its type."""
        context: dict[str, object] = {}
        missing = [key for key in meta.required if variables.get(key) is None]
        if missing:
            raise TemplateError(
                f"template {meta.name!r}: missing required variable(s): {', '.join(missing)}"
            )
        for specs in (meta.required, meta.optional):
            for key, spec in specs.items():
                value = variables.get(key)
                if value is None:
                    continue
                try:
                    context[key] = _check_value(key, spec, value)
                except ValueError as exc:
                    raise TemplateError(f"template {meta.name!r}: {exc}") from None
        return context

    def _run(self, loaded: _Loaded, part: str, context: Mapping[str, object]) -> str:
        template = getattr(loaded, part)
        assert isinstance(template, jinja2.Template)
        try:
            return template.render(context)
        except Exception as exc:
            where = self._where(exc) or str(loaded.files[part])
            if part == "subject":
                where += " (subject)"
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise TemplateError(f"{where}: {message}") from None

    def _where(self, exc: BaseException) -> str | None:
        """The template file and line an exception was raised from, if it was one of ours."""
        paths = {str(path) for _, path in self._sources.values()}
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename in paths:
                return f"{frame.filename}: line {frame.lineno}"
        return None

    def _date_filter(self, value: datetime | date, style: str = "full") -> str:
        return date_fr(value, timezone=self.timezone, style=style)


def _placeholder_problem(meta: TemplateMeta, part: TranslatedPart, placeholder: str) -> str | None:
    """Why ``{{ placeholder }}`` could be missing when ``meta``'s template shows ``part``."""
    root, _, attribute = placeholder.partition(".")
    spec = meta.required.get(root) or (meta.optional.get(root) if root == part.when else None)
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


def _wrap_filter(value: object, width: int = 76, indent: int = 0) -> str:
    """Template filter (text): a paragraph wrapped at ``width``, never inside a URL, an
    address, a phone number or a reference; continuation lines indented by ``indent``."""
    return "\n".join(wrap(str(value), width, subsequent_indent=" " * indent))


@functools.lru_cache(maxsize=4)
def _calendar(timezone: str) -> WorkingCalendar:
    return WorkingCalendar(timezone=timezone)


def answer_deadline(received_at: datetime, timezone: str = "Europe/Paris") -> date:
    """The last day of the 5-working-day answer commitment, holidays included."""
    return _calendar(timezone).deadline(received_at)


def ar_variables(
    config: Config,
    mailbox: str,
    *,
    reference: str,
    received_at: datetime,
    original_subject: str,
) -> dict[str, object]:
    """The variables an acknowledgement template expects, from rules.yaml.

    The service's email falls back to the mailbox address: CRPA L112-11 wants it shown.
    ``deadline`` is the date by which the citizen gets an answer: the 5th working day after
    receipt (README, "Working days").
    """
    box = config.mailboxes[mailbox]
    service = config.services[box.service]
    return {
        "reference": reference,
        "received_at": received_at,
        "deadline": answer_deadline(received_at, config.timezone),
        "original_subject": original_subject,
        "service": {
            "name": service.name,
            "postal_address": service.postal_address,
            "phone": service.phone,
            "hours": service.hours,
            "website": service.website,
            "email": service.email or box.address,
        },
        "prefecture": config.prefecture.model_dump(),
    }


# --------------------------------------------------------------------------- the message


def _has_break(value: str) -> bool:
    return len(value.splitlines()) > 1 or "\r" in value or "\n" in value


def _foldable(value: str) -> bool:
    """One line that folds into lines of at most 998 octets (RFC 5322 §2.1.1).

    ASCII text folds at spaces only; non-ASCII text is RFC 2047-encoded in short words.
    """
    if _has_break(value):
        return False
    return not value.isascii() or all(len(word) <= _MAX_WORD for word in value.split())


class _Mailbox(NamedTuple):
    display_name: str
    addr_spec: str  # what an SMTP server accepts: quoted local parts, UTF-8 (SMTPUTF8)

    def header(self) -> str:
        """The header value; a UTF-8 address goes out as raw UTF-8 (RFC 6532), never encoded.

        compat32 writes a str holding surrogate escapes back as the original bytes.
        """
        if self.addr_spec.isascii():
            return formataddr((self.display_name, self.addr_spec), charset="utf-8")
        name = formataddr((self.display_name, "x@x"), charset="utf-8")[: -len("<x@x>")]
        raw = f"{name}<{self.addr_spec}>" if self.display_name else self.addr_spec
        return raw.encode("utf-8").decode("ascii", "surrogateescape")


# The parser flags a UTF-8 local part; SMTPUTF8 (RFC 6531) makes it legal, the transport
# checks that the server offers it.
_TOLERATED_DEFECTS = (NonASCIILocalPartDefect,)


def _one_address(value: str, what: str) -> _Mailbox:
    """Parse one mailbox ("a@b" or "Name <a@b>"), refusing anything that is not exactly that."""
    if not isinstance(value, str) or not value.strip() or _has_break(value):
        raise MessageError(f"{what}: {value!r} is not a single address on one line")
    header = SMTP.header_factory("to", value.strip())
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    defects = [d for d in header.defects if not isinstance(d, _TOLERATED_DEFECTS)]
    if len(addresses) != 1 or defects:
        raise MessageError(f"{what}: {value!r} is not exactly one valid address")
    address = addresses[0]
    try:
        check_mailbox(address.addr_spec)
    except MessageError as exc:
        raise MessageError(f"{what}: {value!r} is not a valid address: {exc}") from None
    name = _oneline(address.display_name)[:_MAX_DISPLAY_NAME]
    return _Mailbox(display_name=name, addr_spec=address.addr_spec)


def _message_ids(values: Sequence[str]) -> list[str]:
    """Message-IDs found in ``values``, in order, without duplicates or over-long ones.

    An identifier that would not fit on a 998-octet header line is dropped: the mail then
    threads a little less, which beats a line no server has to accept.
    """
    found: dict[str, None] = {}
    for value in values:
        for mid in _MSGID.findall(value or ""):
            if len(mid) <= _MAX_MESSAGE_ID:
                found.setdefault(mid, None)
    ids = list(found)
    if len(ids) > _MAX_REFERENCES:  # keep the thread root and the most recent ones
        ids = [ids[0], *ids[-(_MAX_REFERENCES - 1) :]]
    return ids


_UTF8_QP = Charset("utf-8")  # headers: quoted-printable words, readable in raw sources
_UTF8_QP.header_encoding = QP
_UTF8_QP.body_encoding = QP
_UTF8_B64 = Charset("utf-8")  # bodies: base64 is encoded in C, QP in pure Python (5x slower)
_UTF8_B64.body_encoding = BASE64
_WIRE = compat32.clone(linesep="\r\n", max_line_length=998)  # never fold a Message-ID


class OutgoingMail:
    """A built mail: its headers, and its bytes with CRLF line ends, ready for SMTP."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def __getitem__(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=_WIRE)

    def parsed(self) -> EmailMessage:
        """The mail as a reader sees it (modern API), for previews and tests."""
        parsed = message_from_bytes(self.as_bytes(), policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _encoded(value: str, name: str) -> str:
    """RFC 2047 only when needed, folded here into encoded words of at most 75 characters.

    Left to the generator, Header would fold at 998 octets without counting the field name,
    giving over-long lines and encoded words far beyond RFC 2047's limit.
    """
    if value.isascii():
        return value
    return Header(value, _UTF8_QP, header_name=name, maxlinelen=76).encode(linesep="\r\n")


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, charset=_UTF8_B64)
    return part


def build_email(
    rendered: RenderedMail,
    *,
    from_address: str,
    from_name: str,
    to: str,
    message_id_domain: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: bool = True,
    loop_header_value: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> OutgoingMail:
    """Build the outgoing multipart/alternative message (text/plain, then text/html).

    Raises MessageError for an unusable address or header value: nothing a citizen sent
    can add a header or a recipient. ``date`` defaults to now.
    """
    sender = _one_address(from_address, "from_address")
    if sender.display_name:
        raise MessageError("from_address: give the bare address; the name goes in from_name")
    recipient = _one_address(to, "to")
    if not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", message_id_domain or ""):
        raise MessageError(f"message_id_domain: {message_id_domain!r} is not a domain name")
    if date is None:
        date = datetime.now(UTC)
    elif date.tzinfo is None or date.utcoffset() is None:
        raise MessageError("date must be timezone-aware")

    # Built with the compat32 MIME classes: the modern EmailMessage API parses and refolds
    # every header on the way out, which made it the slowest step of the whole pipeline.
    msg = MIMEMultipart("alternative")
    name = _oneline(from_name)[:_MAX_DISPLAY_NAME]
    msg["From"] = formataddr((name, sender.addr_spec), charset="utf-8")
    msg["To"] = recipient.header()
    msg["Subject"] = _encoded(_clean_subject(rendered.subject), "Subject")
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = make_msgid(domain=message_id_domain)

    if in_reply_to and not _MSGID.search(in_reply_to):
        raise MessageError(f"in_reply_to: {in_reply_to!r} is not a Message-ID")
    parent = _message_ids([in_reply_to]) if in_reply_to else []
    thread = _message_ids([*references, *parent])
    if parent:
        msg["In-Reply-To"] = parent[0]
    if thread:
        msg["References"] = Header(" ".join(thread), header_name="References")  # type: ignore[assignment]

    if auto_submitted:
        msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    if loop_header_value is not None:
        if not _foldable(loop_header_value) or not loop_header_value.strip():
            raise MessageError(f"loop_header_value: {loop_header_value!r} is not one line")
        msg["X-Mailbot-Loop"] = loop_header_value.strip()
    for name, value in (extra_headers or {}).items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise MessageError(f"extra_headers: {name!r} may not be set here")
        if not isinstance(value, str) or not _foldable(value):
            raise MessageError(f"extra_headers: the value of {name} must be one line of text")
        msg[name] = _encoded(value, name)
    msg["Content-Language"] = LANGUAGE
    msg.attach(_text_part(rendered.text, "plain"))
    msg.attach(_text_part(rendered.html, "html"))
    return OutgoingMail(msg)
