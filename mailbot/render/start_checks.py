"""What a ``Renderer`` checks of its templates: at start, every translated paragraph
declared; when the directory did not pass before (or ``mailbot check``), every template
compiled and test-rendered with its examples, the pass recorded in the render cache; and
rules.yaml against the templates (``check_config``). The checks of the templates as a
reader gets them are ``render/checks``'s (``mailbot templates check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbot.errors import TemplateError
from mailbot.render.catalogue import META_FILE, TRANSLATIONS_DIR, TemplateMeta, placeholder_problem
from mailbot.render.rendering import Rendering

if TYPE_CHECKING:
    from mailbot.config import Config


class StartChecks(Rendering):
    """The renderer's own checks of its templates, and of rules.yaml against them."""

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
