"""An agent's edited reply as a mail: the text they typed, and an HTML part made from it.

The edited text is the agent's own words, so it is *data*, never a template: it is not
given to Jinja at all. The HTML part is the text escaped (markupsafe), paragraph by
paragraph, in a bare French document: what the citizen reads in HTML is exactly the text.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

from mailbot.core.plaintext import wrap_long_lines
from mailbot.render.rendering import RenderedMail

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")


def normalised(text: str) -> str:
    """LF line ends, no trailing spaces, no blank lines at either end: two texts that
    differ only there are the same text (a browser sends a textarea with CRLF). The
    signature separator "-- " keeps its space (RFC 3676 §4.3)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line if line == "-- " else line.rstrip() for line in lines).strip("\n")


def html_of_text(text: str) -> str:
    """The text as HTML: each paragraph a ``<p>``, line breaks ``<br>``, all escaped."""
    paragraphs = [
        Markup("<br>\n").join(escape(line) for line in block.split("\n"))
        for block in _PARAGRAPH_BREAK.split(normalised(text))
        if block.strip()
    ]
    body = Markup("\n").join(Markup("<p>{}</p>").format(p) for p in paragraphs)
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head><meta charset="utf-8"></head>\n'
        f'<body style="font-family: Arial, sans-serif; line-height: 1.5">\n{body}\n'
        "</body>\n</html>\n"
    )


def edited_mail(rendered: RenderedMail, text: str) -> RenderedMail:
    """The rendered mail with the agent's text in place of its text and HTML parts (the
    subject and languages are the template's)."""
    text = wrap_long_lines(normalised(text)) + "\n"
    return RenderedMail(rendered.subject, text, html_of_text(text), rendered.languages)


def lost_elements(rendered_text: str, edited_text: str, elements: dict[str, str]) -> list[str]:
    """The elements (a signature's) the rendered text holds and the edited one no longer
    does, whitespace-insensitively (an edit may re-wrap a line)."""

    def flat(value: str) -> str:
        return " ".join(value.split())

    before, after = flat(rendered_text), flat(edited_text)
    return [
        name
        for name, value in elements.items()
        if flat(value) and flat(value) in before and flat(value) not in after
    ]
