"""``render_once``: ``render()``'s very result from a skeleton per template and settings
(``mailbot.render.once``). What the skeletons are asked for a mail (its settings as the key,
its per-mail values, the render of its skeleton), the environments of skeleton renders
(filters that record their calls on per-mail values), and the syntax trees a template's
analysis reads."""

from __future__ import annotations

from collections.abc import Mapping

import jinja2
from jinja2 import meta as jinja_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailbot.render.catalogue import HTML_FILE, LANGUAGE, META_FILE, TEXT_FILE, TemplateMeta
from mailbot.render.environments import DATES_KEPT
from mailbot.render.rendering import RenderedMail, Rendering, clean_subject
from mailbot.render.skeleton_fill import PER_MAIL
from mailbot.render.skeleton_trace import Slot, deferring, exact_key
from mailbot.render.skeletons import Draft, Request
from mailbot.render.translations import TARGET_NAME, Translation, pick


class SkeletonRequests(Rendering):
    """Mails rendered from skeletons: ``render_once`` and what it asks ``Skeletons``
    (``_skeletons``, declared with the state the parts share in ``Environments``)."""

    _skeleton_envs: dict[bool, ImmutableSandboxedEnvironment]
    _paragraph_memo: dict[tuple[object, ...], tuple[object, object]]

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

    def _skeleton_env(self, html: bool) -> ImmutableSandboxedEnvironment:
        """The environment of skeleton renders: the same, its filters recording their calls
        on per-mail values (``skeleton_trace.deferring``)."""
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
                if len(self._paragraph_memo) >= DATES_KEPT:
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
