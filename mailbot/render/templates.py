"""``Renderer``, the mail templates of one directory rendered safely: its parts put together
and set up here (the environments, the loading, the rendering are its mixins' modules).

Safety rules, because the people who edit the templates are not the people who write
the mail they answer:

* templates run in Jinja2's immutable sandbox;
* a missing variable is an error that names it (``StrictUndefined``), never a blank;
* HTML parts are always autoescaped, text parts and the subject never are;
* what a citizen wrote (subject, name...) is only ever passed as *data*: ``{{ 7*7 }}`` in
  a subject comes out as those seven characters, ``<script>`` comes out escaped in HTML;
* the rendered subject is one line, capped in length, and goes into the header through
  ``mailbot.mail.compose``, which encodes it (RFC 2047) and refuses any line break.

The directory is read once, in ``Renderer.__init__``, and each template compiled once (when
first used, or all of them when the checks run); the checks render every template with the
examples of its ``meta.yaml`` so that a typo is reported at start-up, naming the file,
instead of at the first citizen's mail. Those checks run again only when
the directory changed since they last passed (``mailbot.render.cache`` keeps that record,
and Jinja's compiled templates), or when asked (``full_check``: ``mailbot check``). The
directory's layout and the meta.yaml model are ``mailbot.render.catalogue``'s.

``Renderer.render_once`` gives ``render``'s very result for the mails of a backlog from a
skeleton per template and settings, filled with each mail's values (``mailbot.render.once``).

``Renderer``'s methods come from one mixin per concept, each over the one before:
``environments`` (the Jinja environments, their filters, the stylesheet), ``loading`` (the
directory read, each template compiled on first use), ``rendering`` (``render``,
``RenderedMail``), then, both over ``rendering``, ``start_checks`` (the checks above, and
rules.yaml's against the templates) and ``skeleton_requests`` (``render_once``). This
module sets their state, in ``Renderer.__init__``; ``render/environments`` says what the
parts share and call on one another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailbot.core.plaintext import wrap_long_lines
from mailbot.errors import TemplateError
from mailbot.render.cache import RenderCache, fingerprint, open_cache
from mailbot.render.catalogue import LANGUAGE, PARTIALS_DIR, TRANSLATIONS_DIR
from mailbot.render.rendering import SUBJECT_MAX_CHARS, RenderedMail, clean_subject, clean_text
from mailbot.render.skeleton_requests import SkeletonRequests
from mailbot.render.skeletons import Skeletons
from mailbot.render.start_checks import StartChecks
from mailbot.render.translations import Paragraphs, load_translations

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from mailbot.render.loading import Loaded

__all__ = [
    "LANGUAGE",
    "SUBJECT_MAX_CHARS",
    "TRANSLATIONS_DIR",
    "RenderedMail",
    "Renderer",
    "clean_subject",
]

log = logging.getLogger(__name__)


class Renderer(StartChecks, SkeletonRequests):
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
            (clean_text, wrap_long_lines),
            log.warning,
            self._cache.analyses(self._fingerprint) if self._cache and self._fingerprint else None,
        )

        for key, (_, path) in self._sources.items():
            if key.startswith(PARTIALS_DIR + "/"):
                self._compile(key, path)

        # A template is compiled when first used (from the bytecode cache): a start that
        # sends one AR loads one template, not all of them. Checks compile them all now.
        self._metas = metas
        self._templates: dict[str, Loaded] = {}
        for meta in metas.values():
            self._check_translated(meta)
        if self.checks_run:
            self._check_all()
