"""Render a mail once per key, then fill in each mail's own values (issue 14, point 6).

An AR differs from the next one of the same template, service and transfer only by a few
values: the reference, the dates, the citizen's subject (``PER_MAIL``). Rendering the whole
template and applying the stylesheet (css_inline) for every mail costs ~1 ms; rendering it
once with *slots* in place of those values and filling the slots per mail costs a few
string operations. That is only right where the output depends on those values in ways the
fill reproduces exactly, so three safeguards stand between a skeleton and a citizen:

1. **The syntax tree** (``problems``): a per-mail value may only be printed (``{{ }}``),
   possibly through filters whose other arguments are constants, tested in an ``if`` (or
   ``or``/``and``/``not``), or printed inside a ``{% filter %}`` block. Any other use (an
   assignment, a comparison, an attribute, a concatenation, a loop, a macro or a ``set``
   block around it) keeps that template on full rendering.
2. **The trace** (``Trace``): the skeleton render gives the template ``Slot`` objects. A
   filter applied to a slot, or to text holding one, is recorded and replayed on each
   mail's values; printing a slot writes a unique marker; the truth of a slot (an ``if``)
   is recorded as a *guard* that each later mail must meet (another truth value: another
   skeleton). Anything else done to a slot raises ``Unsupported``: full rendering.
3. **Verification**: the first mails of each skeleton are rendered both ways and
   compared; any difference sends its key to full rendering for good, logged once.

Escaping is reproduced exactly: a marker records how many times the text around it was
HTML-escaped, and the value is escaped as many times with markupsafe, as Jinja does. The
stylesheet is applied to the skeleton, so a value in the HTML must also come out of
css_inline's parser and serializer as it went in; ``html_value`` does what they do to
escaped text (``'``, ``"``, ``<`` in attributes, no-break space) and refuses anything
else (tags but ``<bdi>``, control characters, ...): that mail's HTML is then filled
before the stylesheet and inlined (exact, ~0.3 ms more). The same goes for every mail
whose values are not the four names of ``PER_MAIL`` (translated paragraphs: their HTML has
classes the stylesheet styles); those need a template that builds no string it could read
again (``builders``). The filled text is never evaluated again: a ``{{ 7*7 }}`` in a
subject stays seven characters; the text part is cleaned and wrapped as ``render()``
does it (``TextPlan``); filters are assumed pure (the shipped ones are).

The parts, one module each: ``skeleton_tree`` (safeguard 1: ``problems``, ``builders``),
``skeleton_trace`` (safeguard 2: ``Slot``, ``Trace``, ``deferring``, ``traced``),
``skeleton_fill`` (the markers, ``fill_text``, ``html_value``, ``fill_html``) and
``skeletons`` (safeguard 3 and the cache of skeletons by key: ``Skeletons``, ``Request``,
``TextPlan``). This module is their face: every name importable from it before still is.
"""

from __future__ import annotations

from mailbot.render.skeleton_fill import (
    CLOSE,
    OPEN,
    PER_MAIL,
    Parts,
    Unsupported,
    escapes,
    fill_html,
    fill_text,
    html_contexts,
    html_value,
    shown,
    split,
)
from mailbot.render.skeleton_trace import (
    MEMO_SIZE,
    Op,
    Slot,
    Trace,
    deferring,
    exact_key,
    traced,
)
from mailbot.render.skeleton_tree import builders, problems
from mailbot.render.skeletons import (
    CHECKED_MAILS,
    MAX_KEYS,
    MAX_VARIANTS,
    Analysis,
    Draft,
    Memo,
    Request,
    Skeleton,
    Skeletons,
    TextPlan,
)

__all__ = [
    "CHECKED_MAILS",
    "CLOSE",
    "MAX_KEYS",
    "MAX_VARIANTS",
    "MEMO_SIZE",
    "OPEN",
    "PER_MAIL",
    "Analysis",
    "Draft",
    "Memo",
    "Op",
    "Parts",
    "Request",
    "Skeleton",
    "Skeletons",
    "Slot",
    "TextPlan",
    "Trace",
    "Unsupported",
    "builders",
    "deferring",
    "escapes",
    "exact_key",
    "fill_html",
    "fill_text",
    "html_contexts",
    "html_value",
    "problems",
    "shown",
    "split",
    "traced",
]
