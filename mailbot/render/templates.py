"""Rendering mail templates: the Jinja environment, and one rendered mail from variables.

Safety rules, because the people who edit the templates are not the people who write
the mail they answer:

* templates run in Jinja2's immutable sandbox;
* a missing variable is an error that names it (``StrictUndefined``), never a blank;
* HTML parts are always autoescaped, text parts and the subject never are;
* what a citizen wrote (subject, name...) is only ever passed as *data*: ``{{ 7*7 }}`` in
  a subject comes out as those seven characters, ``<script>`` comes out escaped in HTML;
* the rendered subject is one line, capped in length, and goes into the header through
  ``mailbot.mail.compose``, which encodes it (RFC 2047) and refuses any line break.

Everything is read and compiled once, in ``Renderer.__init__``; every template is then
rendered with the examples of its ``meta.yaml`` so that a typo is reported at start-up,
naming the file, instead of at the first citizen's mail. Those checks run again only when
the directory changed since they last passed (``mailbot.render.cache`` keeps that record,
and Jinja's compiled templates), or when asked (``full_check``: ``mailbot check``). The
directory's layout and the meta.yaml model are ``mailbot.render.catalogue``'s.

``Renderer.render_once`` gives ``render``'s very result for the mails of a backlog from a
skeleton per template and settings, filled with each mail's values (``mailbot.render.once``).
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
import jinja2
from jinja2 import meta as jinja_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailbot.core.articles import of_named, to_named
from mailbot.core.bidi import html_isolate, tel_target, text_isolate, url_label
from mailbot.core.dates import date_fr
from mailbot.core.plaintext import one_line, wrap, wrap_long_lines
from mailbot.errors import TemplateError
from mailbot.render.cache import RenderCache, fingerprint, open_cache
from mailbot.render.catalogue import (
    HTML_FILE,
    LANGUAGE,
    META_FILE,
    PARTIALS_DIR,
    STYLESHEET,
    TEMPLATE_NAME,
    TEXT_FILE,
    TRANSLATIONS_DIR,
    TemplateMeta,
    check_value,
    parse_meta,
    placeholder_problem,
)
from mailbot.render.once import (
    PER_MAIL,
    Draft,
    Request,
    Skeletons,
    Slot,
    deferring,
    exact_key,
)
from mailbot.render.translations import (
    TARGET_NAME,
    Paragraphs,
    Translation,
    load_translations,
    pick,
)

if TYPE_CHECKING:
    from mailbot.config import Config

__all__ = ["LANGUAGE", "TRANSLATIONS_DIR", "RenderedMail", "Renderer"]

log = logging.getLogger(__name__)

SUBJECT_MAX_CHARS = 200
_BLANK_LINES = re.compile(r"\n{3,}")
_DATES_KEPT = 4096
_MINUTE_STYLES = frozenset({"full", "date", "time", "numeric"})  # date_fr's, to the minute


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    languages: tuple[str, ...] = (LANGUAGE,)  # French, then the translation's language if any


# --------------------------------------------------------------------------- text clean-up


def clean_subject(subject: str) -> str:
    """One line, no control characters, at most SUBJECT_MAX_CHARS, cut between words."""
    subject = one_line(subject)
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


@dataclass(frozen=True)
class _Loaded:
    meta: TemplateMeta
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template
    files: Mapping[str, Path]  # "subject" / "text" / "html" -> file to blame in errors


class Renderer:
    """All templates of one directory, read, compiled and checked once."""

    def __init__(
        self,
        template_dir: Path,
        *,
        timezone: str = "Europe/Paris",
        full_check: bool = False,
        cache: RenderCache | bool = True,
    ) -> None:
        """``cache``: True for the default cache directory (``mailbot.render.cache``), False
        for none. ``full_check``: check every template even if this directory passed before."""
        self.template_dir = Path(template_dir)
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"unknown time zone {timezone!r}") from None
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        if not self.template_dir.is_dir():
            raise TemplateError(f"{self.template_dir}: template directory not found")

        self._cache = open_cache() if cache is True else cache or None
        # Static checks and trial renders: skipped when this very directory passed them.
        self._fingerprint = fingerprint(self.template_dir, timezone) if self._cache else None
        self.checks_run = full_check or not self._passed_before()

        # Every template source, by loader name ("ar-general/body.txt.j2"), read once.
        self._sources: dict[str, tuple[str, Path]] = {}
        self._load_partials()
        metas = self._load_metas()
        self._inliner = self._load_stylesheet()
        i18n = self.template_dir / TRANSLATIONS_DIR
        self.translations = load_translations(i18n) if i18n.is_dir() else {}
        self._paragraphs = Paragraphs(self.translations, timezone)

        self._text_env, self._html_env = self._environments()
        self._skeleton_envs: dict[bool, ImmutableSandboxedEnvironment] = {}
        self._dates: dict[tuple[object, ...], str] = {}
        self._paragraph_memo: dict[tuple[object, ...], tuple[object, object]] = {}
        self._skeletons = Skeletons(
            self._inline if self._inliner is not None else None,
            self._trees,
            (_clean_text, wrap_long_lines),
            log.warning,
            self._cache.analyses(self._fingerprint) if self._cache and self._fingerprint else None,
        )

        for key, (_, path) in self._sources.items():
            if key.startswith(PARTIALS_DIR + "/"):
                self._compile(key, path)

        # A template is compiled when first used (from the bytecode cache): a start that
        # sends one AR loads one template, not all of them. Checks compile them all now.
        self._metas = metas
        self._templates: dict[str, _Loaded] = {}
        for meta in metas.values():
            self._check_translated(meta)
        if self.checks_run:
            self._check_all()

    # ---------------------------------------------------------------- public

    def names(self) -> list[str]:
        return sorted(self._metas)

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
            subject=clean_subject(subject),
            text=wrap_long_lines(_clean_text(text)),
            html=(self._inline(markup) if inline else markup).strip() + "\n",
            languages=(LANGUAGE, translation.tag) if translation else (LANGUAGE,),
        )

    def render_once(
        self, name: str, variables: Mapping[str, object], *, language: str | None = LANGUAGE
    ) -> RenderedMail:
        """``render()``'s very result, from a skeleton rendered once per template and
        settings and filled with this mail's reference, dates and subject
        (``mailbot.render.once``): for the many ARs of a backlog. A template or settings
        the skeleton cannot reproduce: ``render()``."""
        loaded = self._get(name)
        context = self._context(loaded.meta, variables)
        translation = pick(self.translations, language) if loaded.meta.translated else None
        request = self._request(loaded.meta, context, translation)
        draft, check = self._skeletons.draft(request) if request else (None, False)
        if draft is None:
            return self.render(name, variables, language=language)
        subject, text, html = draft
        mail = RenderedMail(
            subject=clean_subject(subject),
            text=text,
            html=html.strip() + "\n",
            languages=(LANGUAGE, translation.tag) if translation else (LANGUAGE,),
        )
        if check and request and mail != self.render(name, variables, language=language):
            self._skeletons.mismatch(request)
            return self.render(name, variables, language=language)
        return mail

    def language_of(self, language: str | None) -> str:
        """The language the translated paragraphs of a mail would be in ("fr": none)."""
        translation = pick(self.translations, language)
        return translation.language if translation else LANGUAGE

    def check_config(self, config: Config) -> None:
        """Check rules.yaml against the templates: each mailbox's AR exists and fits its scope."""
        for key, mailbox in config.mailboxes.items():
            if mailbox.ar_template not in self._metas:
                raise TemplateError(
                    f"mailboxes.{key}.ar_template: no template {mailbox.ar_template!r} in "
                    f"{self.template_dir} (known: {', '.join(self.names()) or 'none'})"
                )
            scope = self._metas[mailbox.ar_template].scope
            if not scope.allows(mailbox=key, service=mailbox.service):
                raise TemplateError(
                    f"mailboxes.{key}.ar_template: template {mailbox.ar_template!r} is not "
                    f"meant for mailbox {key!r} / service {mailbox.service!r} (see its scope in "
                    f"{self.template_dir / mailbox.ar_template / META_FILE})"
                )
            meta = self._metas[mailbox.ar_template]
            declared = config.routing.implicit_decisions if config.routing else {}
            if declared and "implicit_decision" not in {*meta.required, *meta.optional}:
                # CRPA L112-11: an AR that would drop the declared sentence without a word.
                raise TemplateError(
                    f"mailboxes.{key}.ar_template: template {mailbox.ar_template!r} does not "
                    "take the variable 'implicit_decision', so its ARs could not say what "
                    "routing.implicit_decisions declares (see "
                    f"{self.template_dir / mailbox.ar_template / META_FILE})"
                )
        # A template may name a mailbox this deployment does not run; a service it must know.
        for name, meta in self._metas.items():
            for service_name in meta.scope.services:
                if service_name not in config.services:
                    raise TemplateError(
                        f"{self.template_dir / name / META_FILE}: scope.services: unknown "
                        f"service {service_name!r} in template {name!r}"
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
            if not TEMPLATE_NAME.match(directory.name):
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
            meta_path = directory / META_FILE
            metas[directory.name] = parse_meta(meta_path, self._read(meta_path), directory.name)
            for part in (TEXT_FILE, HTML_FILE):
                path = directory / part
                self._sources[f"{directory.name}/{part}"] = (self._read(path), path)
        return metas

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
        if not self.checks_run:
            return template
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
            if self.checks_run:
                self._check_undeclared(meta, key, files[part], self._sources[key][0])
        return _Loaded(
            meta,
            compiled["subject"],
            compiled["text"],
            compiled["html"],
            MappingProxyType(files),
        )

    def _environments(
        self,
    ) -> tuple[ImmutableSandboxedEnvironment, ImmutableSandboxedEnvironment]:
        """The text and the HTML environments: the same sandbox, loader and filters."""
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
        text_env = ImmutableSandboxedEnvironment(
            autoescape=False, bytecode_cache=self._bytecode("text", common), **common
        )
        html_env = ImmutableSandboxedEnvironment(
            autoescape=True, bytecode_cache=self._bytecode("html", common), **common
        )
        for env in (text_env, html_env):
            env.filters["date_fr"] = self._date_filter
            env.filters["oneline"] = one_line
            env.filters["tel"] = tel_target
            env.filters["url_label"] = url_label
            env.filters["de"] = _of_filter
            env.filters["a"] = _to_filter
        text_env.filters["isolate"] = text_isolate
        html_env.filters["isolate"] = html_isolate
        text_env.filters["wrap"] = _wrap_filter
        return text_env, html_env

    def _passed_before(self) -> bool:
        return bool(self._cache and self._fingerprint and self._cache.passed(self._fingerprint))

    def _bytecode(self, kind: str, options: Mapping[str, Any]) -> jinja2.BytecodeCache | None:
        """The cache of compiled templates for one environment: its own entries, since the
        same partial compiles differently with and without autoescaping."""
        if self._cache is None:
            return None
        settings = {key: value for key, value in options.items() if key != "loader"}
        return self._cache.bytecode(f"sandboxed-{kind}-{sorted(settings.items())}")

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

    def _skeleton_env(self, html: bool) -> ImmutableSandboxedEnvironment:
        """The environment of skeleton renders: the same, its filters recording their calls
        on per-mail values (``once.deferring``)."""
        if html not in self._skeleton_envs:
            env = (self._html_env if html else self._text_env).overlay()
            env.filters = {key: deferring(value) for key, value in env.filters.items()}
            self._skeleton_envs[html] = env
        return self._skeleton_envs[html]

    def _request(
        self,
        meta: TemplateMeta,
        context: Mapping[str, object],
        translation: Translation | None,
    ) -> Request | None:
        """What ``render_once`` asks the skeletons for this mail: its settings (the key),
        its per-mail values, and how to render the skeleton. With translated paragraphs,
        whose HTML carries classes, the stylesheet is applied to each mail's HTML
        (``inline_each``)."""
        name = meta.name
        settings = [(key, value) for key, value in context.items() if key not in PER_MAIL]
        roots = {key: value for key, value in context.items() if key in PER_MAIL}
        if translation is None:
            return Request(
                name, repr(settings), roots, lambda slots: self._draft(name, {**context, **slots})
            )
        return self._translated(meta, context, translation, repr(settings), roots)

    def _translated(
        self,
        meta: TemplateMeta,
        context: Mapping[str, object],
        translation: Translation,
        settings: str,
        roots: dict[str, object],
    ) -> Request | None:
        """The request of a mail with translated paragraphs: those that show a per-mail
        value are values of the mail (``"ar.reference:text"``...), the others part of
        the skeleton."""
        keys = [part.text for part in meta.translated if part.shown(context)]
        moving = [
            key
            for key in keys
            if any(path.partition(".")[0] in PER_MAIL for path in translation.placeholders(key))
        ]
        for key in moving:
            paragraph = self._paragraph(translation, key, context)
            if paragraph is None:
                return None
            roots[f"{key}:text"], roots[f"{key}:html"] = paragraph

        def render(slots: Mapping[str, Slot]) -> Draft:
            text_section, html_section = self._paragraphs.section(translation, keys, context)
            for part, section in (("text", text_section), ("html", html_section)):
                paragraphs = section["paragraphs"]
                assert isinstance(paragraphs, list)
                section["paragraphs"] = [
                    slots[f"{key}:{part}"] if key in moving else paragraph
                    for key, paragraph in zip(keys, paragraphs, strict=True)
                ]
            mail = {**context, **{key: slots[key] for key in context if key in PER_MAIL}}
            text, html = (
                {**mail, "translation": text_section},
                {**mail, "translation": html_section},
            )
            return self._draft(meta.name, mail, text, html)

        key = repr((translation.language, keys, settings))
        return Request(meta.name, key, roots, render, inline_each=True, beyond_names=True)

    def _paragraph(
        self, translation: Translation, key: str, context: Mapping[str, object]
    ) -> tuple[object, object] | None:
        """One translated paragraph (text, HTML) for this mail, the last ones kept (a
        backlog's mails share a deadline); None when it cannot be rendered alone."""
        values: list[object] = [translation.language, key]
        for path in translation.placeholders(key):
            root, _, attribute = path.partition(".")
            value = context.get(root)
            if attribute:
                value = value.get(attribute) if isinstance(value, Mapping) else None
            values += exact_key(value)
            if path == TARGET_NAME:  # shown with its name in the language, if any
                values.append(translation.target_name(context.get("target")) or "")
        memo = tuple(values) if None not in values else None
        found = self._paragraph_memo.get(memo) if memo else None
        if found is None:
            try:
                text, html = self._paragraphs.section(translation, [key], context)
            except Exception:  # the full render reports it
                return None
            texts, markups = text["paragraphs"], html["paragraphs"]
            assert isinstance(texts, list) and isinstance(markups, list)
            found = (texts[0], markups[0])
            if memo:
                if len(self._paragraph_memo) >= _DATES_KEPT:
                    self._paragraph_memo.clear()
                self._paragraph_memo[memo] = found
        return found

    def _draft(
        self,
        name: str,
        subject: Mapping[str, object],
        text: Mapping[str, object] | None = None,
        html: Mapping[str, object] | None = None,
    ) -> Draft:
        """A template's subject, text and HTML (before the stylesheet), rendered in the
        skeleton environments, each with its context (the subject's, unless given);
        errors propagate (the caller renders in full)."""
        text_env, html_env = self._skeleton_env(False), self._skeleton_env(True)
        return (
            text_env.get_template(f"{name}/{META_FILE}#subject").render(subject),
            text_env.get_template(f"{name}/{TEXT_FILE}").render(text or subject),
            html_env.get_template(f"{name}/{HTML_FILE}").render(html or subject),
        )

    def _trees(self, name: str) -> list[tuple[str, jinja2.nodes.Template]]:
        """The syntax trees of every file a template uses (its partials too), by file."""
        todo = [f"{name}/{META_FILE}#subject", f"{name}/{TEXT_FILE}", f"{name}/{HTML_FILE}"]
        trees: list[tuple[str, jinja2.nodes.Template]] = []
        seen: set[str] = set()
        while todo:
            key = todo.pop()
            if key in seen or key not in self._sources:
                continue
            seen.add(key)
            source, path = self._sources[key]
            tree = self._env_for(key).parse(source)
            trees.append((str(path), tree))
            todo += [ref for ref in jinja_meta.find_referenced_templates(tree) if ref]
        return trees

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
                    problem = placeholder_problem(meta, part, placeholder)
                    if problem:
                        raise TemplateError(f"{translation.path}: {part.text}: {problem}")

    def _check_all(self) -> None:
        """Every template compiled (its static checks) and test-rendered; the pass recorded.
        What the first AR of a start would otherwise work out is kept in the cache too (each
        template's skeleton analysis, the deadline's public holidays), so that the first
        ``poll`` after ``mailbot check`` starts as fast as the next ones."""
        for name in self._metas:
            self._get(name)
        for name in self._metas:
            self._trial_render(name)
        if self._cache and self._fingerprint:
            from mailbot.core.workdays import YEARS  # numpy: not for a command that only lists

            for name in self._metas:
                self._skeletons.refusals(name)
            self._cache.public_holidays(None, YEARS)
            self._cache.record_pass(self._fingerprint)

    def _trial_render(self, name: str) -> None:
        meta = self._metas[name]
        for include_optional in (True, False):
            try:
                self.render(name, meta.examples(include_optional=include_optional))
            except TemplateError as exc:
                which = "all examples" if include_optional else "only the required examples"
                raise TemplateError(f"{exc} (while test-rendering {name!r} with {which})") from None

    # ---------------------------------------------------------------- rendering

    def _get(self, name: str) -> _Loaded:
        """A template, compiled on first use (two threads may both compile it: the same)."""
        loaded = self._templates.get(name)
        if loaded is not None:
            return loaded
        meta = self._metas.get(name)
        if meta is None:
            known = ", ".join(self.names()) or "none"
            raise TemplateError(f"unknown template {name!r} (known: {known})")
        loaded = self._templates[name] = self._prepare(name, meta)
        return loaded

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
                    context[key] = check_value(key, spec, value)
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
        """``date_fr`` in the renderer's zone, its last results kept: a backlog's mails
        share their deadline and often their minute of receipt, and Babel's formatting is
        most of a skeleton's fill (``render_once``). The styles show at most the local
        minute (``date_fr``), so that is the key; a style this does not know is not kept."""
        key = self._date_key(value, style)
        if key is None:
            return date_fr(value, timezone=self.timezone, style=style)
        found = self._dates.get(key)
        if found is None:
            found = date_fr(value, timezone=self.timezone, style=style)
            if len(self._dates) >= _DATES_KEPT:
                self._dates.clear()
            self._dates[key] = found
        return found

    def _date_key(self, value: object, style: str) -> tuple[object, ...] | None:
        if style not in _MINUTE_STYLES:
            return None
        if type(value) is date:
            return style, value
        if type(value) is not datetime or value.utcoffset() is None:
            return None  # naive: date_fr refuses it, each time
        local = value.astimezone(self._zone)
        if style == "date":
            return style, local.date()
        return style, local.replace(tzinfo=None, second=0, microsecond=0)


def _of_filter(value: object, article: str | None = None) -> str:
    """Template filter: « de » and a name that may hold its article, contracted as French
    says it (« relève {{ target.name|de }} » → « relève des services des impôts », never
    « de les »; ``core.articles.of_named``). Before ``upper``: ``|de|upper``."""
    return of_named(str(value), article)


def _to_filter(value: object, article: str | None = None) -> str:
    """Template filter: « à » and a name, contracted (« Adressez-vous {{ target.name|a }} »
    → « aux services des impôts », « au tribunal judiciaire »; ``core.articles.to_named``)."""
    return to_named(str(value), article)


def _wrap_filter(value: object, width: int = 76, indent: int = 0) -> str:
    """Template filter (text): a paragraph wrapped at ``width``, never inside a URL, an
    address, a phone number or a reference; continuation lines indented by ``indent``."""
    return "\n".join(wrap(str(value), width, subsequent_indent=" " * indent))
