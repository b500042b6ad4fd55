"""The console's answer form: which standard replies fit a message (the suggested one
first), the variables an agent fills (required ones marked, pre-filled from the message),
and sending exactly once — a double click or two tabs share one idempotency key derived
from the message's state when the form was shown, and a reply recorded since then (by a
colleague) stops the sending and is shown instead (collision detection)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mailbot.app.message_view import ThreadEvent, replies_since
from mailbot.app.reply import (
    FREE_TEMPLATE,
    FREE_TEXT,
    GREETING_NAME,
    Draft,
    Replies,
    Sent,
    is_reply_template,
)
from mailbot.app.requests import form_key as request_key
from mailbot.app.requests import previous
from mailbot.core.statuses import EventKind
from mailbot.errors import AnsweredMeanwhileError, RequestError
from mailbot.render.catalogue import TemplateMeta
from mailbot.render.edited import normalised
from mailbot.render.templates import Renderer
from mailbot.store import Store

FILLED_BY_MAILBOT = frozenset(
    {"reference", "received_at", "original_subject", "agent", "prefecture"}
)
MAX_VALUE = 5000  # characters of one variable
MAX_TEXT = 50_000  # characters of an edited reply
EDITED = "texte_modifie"  # the form's textarea: the rendered text, which the agent may edit
BASE = "texte_base"  # the text that textarea was filled with (unchanged: not edited)

# Where a description's first clause ends: a comma, a colon, a bracket or a full stop.
_FIRST_CLAUSE = re.compile(r",|\s+:|\s+\(|\.(?:\s|$)")


@dataclass(frozen=True)
class Field:
    """A variable the agent fills: its name, what it is, whether it is required."""

    name: str
    description: str
    required: bool
    multiline: bool

    @property
    def label(self) -> str:
        """The form's label: the description's first clause (« Civilité et nom de
        l'usager »), in French for the agent — the variable's name (``usager_nom``) is
        the template's, not theirs; the whole description stays as the hint."""
        first = _FIRST_CLAUSE.split(self.description.strip(), maxsplit=1)[0].strip()
        return first or self.name


@dataclass(frozen=True)
class Choice:
    name: str
    title: str
    description: str
    suggested: bool


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def choices(
    renderer: Renderer, mailbox: str, service: str, category: str | None, search: str = ""
) -> list[Choice]:
    """The standard replies that fit the message, the suggested one first: the one for
    its service whose name or title names its category, else the first for its service.
    ``search`` keeps those whose title, name or description hold every word."""
    fitting = [
        renderer.meta(name)
        for name in renderer.names()
        if is_reply_template(renderer.meta(name))
        and renderer.meta(name).scope.allows(mailbox=mailbox, service=service)
    ]
    own = [m for m in fitting if service in m.scope.services]
    named = [m for m in own if category and category in f"{m.name} {m.title.lower()}"]
    best: TemplateMeta | None = next(iter(named or own), None)
    ordered = sorted(fitting, key=lambda m: (m is not best, m not in own, m.title))
    wanted = _words(search)[:6]
    return [
        Choice(m.name, m.title, m.description, m is best)
        for m in ordered
        if all(w in " ".join(_words(f"{m.name} {m.title} {m.description}")) for w in wanted)
    ]


def fields(meta: TemplateMeta) -> list[Field]:
    """The variables the agent fills, required first."""
    found = [
        Field(
            name,
            spec.description,
            required and spec.type != "list",  # an empty list is the template's own case
            (spec.type == "text" and name == FREE_TEXT) or spec.type == "list",
        )
        for required, specs in ((True, meta.required), (False, meta.optional))
        for name, spec in specs.items()
        if name not in FILLED_BY_MAILBOT and spec.type in ("text", "integer", "list")
    ]
    return found


def _is_list(meta: TemplateMeta, name: str) -> bool:
    """A list variable: a box of one item per line (``Replies`` splits it)."""
    spec = meta.required.get(name) or meta.optional.get(name)
    return spec is not None and spec.type == "list"


def prefilled(meta: TemplateMeta, row: Any) -> dict[str, str]:
    """What the form shows before the agent types: the citizen's name for the greeting."""
    names = {*meta.required, *meta.optional}
    return {GREETING_NAME: row.sender_name} if GREETING_NAME in names and row.sender_name else {}


def draft_of(meta: TemplateMeta, form: Mapping[str, str]) -> Draft:
    """The agent's values as a Draft; RequestError naming a required variable left empty
    (the form marks them; this is the server's own check). An empty field is left out —
    the template's default — except the greeting's name, which mailbot fills from the
    citizen's mail when it is absent: the agent who emptied it wants « Bonjour, », as
    ``mailbot reply --var usager_nom=`` gives (preview and send alike)."""
    values = {f.name: str(form.get(f.name, "")).strip()[:MAX_VALUE] for f in fields(meta)}
    empty = [f.name for f in fields(meta) if f.required and not values[f.name]]
    if empty:
        raise RequestError(
            "variables",
            ", ".join(empty),
            "required, still empty",
            shown=f"des champs obligatoires sont encore vides : {', '.join(empty)}.",
        )
    filled = {
        k: v
        for k, v in values.items()
        if v or (k == GREETING_NAME and k in form) or _is_list(meta, k)
    }
    if meta.name == FREE_TEMPLATE:
        free = Draft.free(filled.pop(FREE_TEXT, ""))
        return replace(free, variables={**free.variables, **filled})
    return Draft.standard(meta.name, filled, edited_text(form))


def edited_text(form: Mapping[str, str]) -> str | None:
    """The agent's edit of the rendered text, None when they left the textarea as it was
    filled (then the text rendered from the variables goes, even if they changed since)."""
    text = str(form.get(EDITED, ""))[:MAX_TEXT]
    if EDITED not in form or normalised(text) == normalised(str(form.get(BASE, ""))):
        return None
    return text


@dataclass(frozen=True)
class Outcome:
    """What a send did: ``sent`` (None when stopped), and the replies recorded since the
    form was shown — a colleague's (collision: nothing was sent) or this very request's
    first run (a double click: nothing more was sent)."""

    sent: Sent | None
    since: list[ThreadEvent]

    @property
    def collision(self) -> bool:
        return self.sent is None


def form_key(row: Any, state: int) -> str:
    """The form's idempotency key: the message and its latest answer when the form was
    shown (``MessageView.answer_state``) — not its latest event, which an assignment or a
    correction moves: two tabs, one before and one after such an event, share the key."""
    return request_key("repondre", row, state)


def send_once(
    replies: Replies, store: Store, agent_id: str, row: Any, draft: Draft, state: int
) -> Outcome:
    """Send the reply unless an answer was recorded since the form was shown (``state``,
    checked again where the reply is queued, so two forms sent at the same instant with
    different keys send one mail). The key is the message's and the state's, and the
    agent's (``requests.once``): two tabs or a double click queue one mail; two agents at
    the same instant too, the second stopped by ``since`` where the reply is queued, and
    told of the colleague's reply (a collision)."""
    key = form_key(row, state)
    since = replies_since(store, row, state)
    # read after ``since``: a reply of this very key that ``since`` shows is seen done here
    done_before = previous(store, EventKind.REPLY_QUEUED, key, agent=agent_id) is not None
    if since and not done_before:
        return Outcome(None, since)
    try:
        sent = replies.send(agent_id, row.id, draft, key=key, since=state)
    except AnsweredMeanwhileError:
        return Outcome(None, replies_since(store, row, state))
    if not sent.repeated:
        return Outcome(sent, [])
    since = replies_since(store, row, state)
    # mailbot's own events ("" : the delivery of this very reply) are no colleague's answer
    if any(event.agent not in ("", agent_id) for event in since):
        return Outcome(None, since)
    return Outcome(sent, since)
