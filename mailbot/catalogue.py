"""The agents' side of the templates: list, show, preview, check, and the variables of a reply.

Kept apart from the CLI so that the future web console calls the same functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

from mailbot.config import Agent, Config
from mailbot.errors import TemplateError
from mailbot.render import Renderer, TemplateMeta
from mailbot.translations import SECTIONS, Translation, section

VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
LINK = re.compile(r"^(https?://[^\s\"'<>]+|mailto:[^\s\"'<>]+@[^\s\"'<>]+|tel:\+?[0-9]+)$")
SIGNATURE_FIELDS = ("first_name", "last_name", "function", "service", "postal_address", "phone")


def agent_variables(agent: Agent, config: Config) -> dict[str, object]:
    """The ``agent`` mapping of a standard reply: the profile plus its service's contacts."""
    service = config.services[agent.service]
    return {
        "first_name": agent.first_name,
        "last_name": agent.last_name,
        "function": agent.function,
        "service": service.name,
        "postal_address": service.postal_address,
        "phone": service.phone,
        "website": service.website,
        "email": agent.email or service.email,
    }


def matches(meta: TemplateMeta, service: str | None, language: str | None) -> bool:
    if language and meta.language != language:
        return False
    return not service or not meta.scope.services or service in meta.scope.services


def listing(
    renderer: Renderer, service: str | None = None, language: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for name in renderer.names():
        meta = renderer.meta(name)
        if matches(meta, service, language):
            scope = (
                "; ".join(
                    part
                    for part in (
                        "boîtes " + ", ".join(meta.scope.mailboxes) if meta.scope.mailboxes else "",
                        "services " + ", ".join(meta.scope.services) if meta.scope.services else "",
                    )
                    if part
                )
                or "tous"
            )
            rows.append(
                {
                    "name": name,
                    "title": meta.title,
                    "scope": scope,
                    "language": meta.language,
                    "variables": [*meta.required, *(f"[{v}]" for v in meta.optional)],
                }
            )
    return rows


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


def check_template(renderer: Renderer, name: str, examples: Mapping[str, object]) -> list[str]:
    """Everything wrong with one rendering: empty parts, HTML, links, incomplete signature."""
    try:
        mail = renderer.render(name, examples)
    except TemplateError as exc:
        return [str(exc)]
    problems = []
    if not mail.text.strip():
        problems.append("empty text part")
    if not mail.html.strip():
        problems.append("empty HTML part")
    problems += [f"HTML: {p}" for p in html_problems(mail.html)]
    problems += [
        f"text: broken link {url!r}"
        for url in re.findall(r"\bhttps?:\S*", mail.text)
        if not LINK.match(url.rstrip(".,;:)"))
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


SAMPLE_VALUES = {
    "reference": "SM-2026-000123",
    "received_date": "26/11/2026 14:05",
    "service_name": "Bureau des titres — permis de conduire",
    "service_phone": "02 32 76 50 00",
    "service_email": "pref-permis@seine-maritime.gouv.fr",
    "service_website": "https://permisdeconduire.ants.gouv.fr",
    "service_address": "7 place de la Madeleine, 76036 Rouen Cedex",
    "target_name": "votre mairie",
    "target_website": "https://www.service-public.fr",
}


def check_all(
    renderer: Renderer, translations: Mapping[str, Translation] | None = None
) -> dict[str, list[str]]:
    """Render every template with its examples (required-only too) and in every language."""
    report: dict[str, list[str]] = {}
    every_part = [(sec, key) for sec, keys in SECTIONS.items() for key in keys]
    for name in renderer.names():
        meta = renderer.meta(name)
        problems = check_template(renderer, name, meta.examples())
        problems += [
            f"(required only) {p}"
            for p in check_template(renderer, name, meta.examples(include_optional=False))
        ]
        if "translation" in meta.optional:
            for language, translation in (translations or {}).items():
                examples = dict(meta.examples())
                examples["translation"] = section(translation, every_part, SAMPLE_VALUES)
                problems += [f"({language}) {p}" for p in check_template(renderer, name, examples)]
        report[name] = problems
    return report
