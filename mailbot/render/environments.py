"""A template directory's Jinja environments (text and HTML: the same sandbox, loader and
filters, their compiled templates cached), its stylesheet, and the filters of mailbot's own.

``Environments`` is the base of ``Renderer``'s parts (``render/loading``,
``render/rendering``, ``render/start_checks``, ``render/skeleton_requests``): each is a
mixin of the methods on one concept over it, so that each type-checks alone and
``Renderer`` (``render/templates``) puts them together and sets their state. Each part
derives from the one it calls: ``Loading`` from ``Environments``, ``Rendering`` from
``Loading``, ``StartChecks`` and ``SkeletonRequests`` from ``Rendering``. A part's own
state is declared in its class, where the parts deriving from it read it too
(``Loading._metas``, ``Rendering._paragraphs``); the rest here, with ``_skeletons``, which
``StartChecks`` and ``SkeletonRequests`` both read and neither derives from the other.

The private methods called across the parts are their contract, kept as they are named:
here ``_read``, ``_env_for``, ``_inline`` and the set-up ``Renderer.__init__`` calls
(``_environments``, ``_load_stylesheet``, ``_passed_before``); ``Loading._get`` (a template
compiled on first use: for every later part) and ``_load_partials``, ``_load_metas``,
``_compile`` (the set-up); ``Rendering._context`` (for ``SkeletonRequests``);
``StartChecks._check_translated`` and ``_check_all``, and ``SkeletonRequests._trees`` (the
set-up)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import css_inline
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailbot.core.articles import of_named, to_named
from mailbot.core.bidi import html_isolate, tel_target, text_isolate, url_label
from mailbot.core.dates import date_fr
from mailbot.core.plaintext import one_line, wrap
from mailbot.errors import TemplateError
from mailbot.render.cache import RenderCache
from mailbot.render.catalogue import PARTIALS_DIR, STYLESHEET

if TYPE_CHECKING:
    from mailbot.render.skeletons import Skeletons

DATES_KEPT = 4096
_MINUTE_STYLES = frozenset({"full", "date", "time", "numeric"})  # date_fr's, to the minute


class Environments:
    """The Jinja environments of one template directory, over its sources read once; the
    state every part of the renderer reads, set by ``Renderer.__init__``."""

    template_dir: Path
    timezone: str
    _zone: ZoneInfo
    _cache: RenderCache | None
    _fingerprint: str | None
    _sources: dict[str, tuple[str, Path]]
    _inliner: css_inline.CSSInliner | None
    _text_env: ImmutableSandboxedEnvironment
    _html_env: ImmutableSandboxedEnvironment
    _dates: dict[tuple[object, ...], str]
    # ``render_once``'s skeletons (``SkeletonRequests``), whose analyses a directory's start
    # checks record in the cache (``StartChecks._check_all``).
    _skeletons: Skeletons

    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TemplateError(f"{path}: not valid UTF-8") from None
        except OSError as exc:
            raise TemplateError(f"{path}: cannot read file: {exc.strerror}") from None

    def _load_source(self, name: str) -> tuple[str, str, Callable[[], bool]] | None:
        found = self._sources.get(name)
        if found is None:
            return None
        source, path = found
        return source, str(path), lambda: True

    def _env_for(self, key: str) -> ImmutableSandboxedEnvironment:
        return self._html_env if key.endswith(".html.j2") else self._text_env

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
            if len(self._dates) >= DATES_KEPT:
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
