"""One mail rendered from a template and its variables: each variable checked against its
declared type, the three parts rendered (translated paragraphs after the French text in the
citizen's language), the subject cut to one line, the text cleaned and wrapped, the
stylesheet applied to the HTML; an error names the template file and line."""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass

import jinja2

from mailbot.core.plaintext import one_line, wrap_long_lines
from mailbot.errors import TemplateError
from mailbot.render.catalogue import LANGUAGE, TemplateMeta, check_value
from mailbot.render.loading import Loaded, Loading
from mailbot.render.translations import Paragraphs, Translation, pick

SUBJECT_MAX_CHARS = 200
_BLANK_LINES = re.compile(r"\n{3,}")


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


def clean_text(text: str) -> str:
    """Forgiving whitespace: LF line ends, no trailing spaces, at most one blank line in a row."""
    lines = [
        line if line == "-- " else line.rstrip()  # keep the signature delimiter "-- "
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


class Rendering(Loading):
    """``render``: one mail from a template and its variables."""

    translations: dict[str, Translation]
    _paragraphs: Paragraphs

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
            text=wrap_long_lines(clean_text(text)),
            html=(self._inline(markup) if inline else markup).strip() + "\n",
            languages=(LANGUAGE, translation.tag) if translation else (LANGUAGE,),
        )

    def language_of(self, language: str | None) -> str:
        """The language the translated paragraphs of a mail would be in ("fr": none)."""
        translation = pick(self.translations, language)
        return translation.language if translation else LANGUAGE

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

    def _run(self, loaded: Loaded, part: str, context: Mapping[str, object]) -> str:
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
