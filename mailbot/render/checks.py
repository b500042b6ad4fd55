"""Checks of the templates as a reader gets them: balanced HTML, working links, 78-column
text, text and HTML that say the same, a complete signature, no ``style=""``
(``mailbot templates check``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser

from mailbot.core.parity import differences
from mailbot.core.plaintext import WIDTH, columns
from mailbot.errors import TemplateError
from mailbot.render.catalogue import HTML_FILE, PARTIALS_DIR, TEXT_FILE
from mailbot.render.templates import Renderer

VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
LINK = re.compile(r"^(https?://[^\s\"'<>]+|mailto:[^\s\"'<>]+@[^\s\"'<>]+|tel:\+?[0-9]+)$")
SIGNATURE_FIELDS = ("first_name", "last_name", "function", "service", "postal_address", "phone")
INLINE_STYLE = re.compile(r"\sstyle\s*=", re.IGNORECASE)


class _HtmlChecker(HTMLParser):
    """Tag balance and link targets: what makes a mail render wrong in Outlook."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.stack: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"unexpected </{tag}> (open: {'/'.join(self.stack) or 'none'})")
            if tag in self.stack:
                del self.stack[self.stack.index(tag) :]
            return
        self.stack.pop()


def html_problems(markup: str) -> list[str]:
    checker = _HtmlChecker()
    checker.feed(markup)
    checker.close()
    problems = list(checker.problems)
    if checker.stack:
        problems.append(f"unclosed <{'>, <'.join(checker.stack)}>")
    problems += [f"broken link {href!r}" for href in checker.links if not LINK.match(href)]
    return problems


def check_template(
    renderer: Renderer,
    name: str,
    examples: Mapping[str, object],
    language: str | None = "fr",
) -> list[str]:
    """Everything wrong with one rendering: empty parts, HTML, links, incomplete signature,
    text lines over 78 characters, and text and HTML parts that do not say the same."""
    try:
        mail = renderer.render(name, examples, language=language)
        written = renderer.render(name, examples, language=language, inline=False).html
    except TemplateError as exc:
        return [str(exc)]
    problems = []
    if not mail.text.strip():
        problems.append("empty text part")
    if not mail.html.strip():
        problems.append("empty HTML part")
    problems += [f"HTML: {p}" for p in html_problems(written)]
    problems += [
        f"text: broken link {url!r}"
        for url in re.findall(r"\bhttps?:\S*", mail.text)
        if not LINK.match(url.rstrip(".,;:)"))
    ]
    problems += [
        f"text: line {number} is {columns(line)} columns wide (at most {WIDTH})"
        for number, line in enumerate(mail.text.split("\n"), 1)
        if columns(line) > WIDTH
    ]
    if renderer.meta(name).text_matches_html:
        problems += differences(mail.text, mail.html)
    reference = examples.get("reference")
    if isinstance(reference, str):
        problems += [
            f"{part}: lacks the reference {reference}"
            for part, body in (("text", mail.text), ("HTML", mail.html))
            if reference not in body
        ]
    agent = examples.get("agent")
    if isinstance(agent, Mapping):
        for key in SIGNATURE_FIELDS:
            value = str(agent.get(key) or "")
            for part, body in (("text", mail.text), ("HTML", mail.html)):
                if value and value not in body and _escaped(value) not in body:
                    problems.append(f"{part}: signature lacks agent.{key} ({value!r})")
    return problems


def _escaped(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")
    )


def style_problems(renderer: Renderer, name: str) -> list[str]:
    """HTML sources style through classes of _partials/mail.css, never style=""."""
    directory = renderer.template_dir / name
    files = [directory / HTML_FILE, directory / TEXT_FILE]
    if name == PARTIALS_DIR:
        files = sorted(directory.glob("*.html.j2"))
    return [
        f'{path.name}: line {number}: style="…": use a class of {PARTIALS_DIR}/mail.css'
        for path in files
        if path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1)
        if INLINE_STYLE.search(line)
    ]


def check_all(renderer: Renderer, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Render every template with its examples (required-only too) and in every language.

    ``names``: those templates only (an unknown one is a TemplateError), for a check of
    the template just edited: each template costs its renderings in every language, and
    the whole catalogue is most of a second. The shared partials' styles are checked
    whatever the names, since every template includes them."""
    known = renderer.names()
    wanted = known if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise TemplateError(f"no such template: {', '.join(unknown)}")
    report: dict[str, list[str]] = {}
    partials = style_problems(renderer, PARTIALS_DIR)
    if partials:
        report[PARTIALS_DIR] = partials
    for name in wanted:
        meta = renderer.meta(name)
        problems = style_problems(renderer, name)
        problems += check_template(renderer, name, meta.examples())
        problems += [
            f"(required only) {p}"
            for p in check_template(renderer, name, meta.examples(include_optional=False))
        ]
        if meta.translated:
            for language in renderer.translations:
                for optional in (True, False):
                    examples = meta.examples(include_optional=optional)
                    problems += [
                        f"({language}) {p}"
                        for p in check_template(renderer, name, examples, language)
                    ]
        report[name] = list(dict.fromkeys(problems))
    return report
