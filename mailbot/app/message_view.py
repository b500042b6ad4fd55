"""One citizen's message as the console's message page shows it: the mail itself, read
again from its mailbox when the page opens (bodies are never stored; a mail moved is
found by its Message-ID, a mail gone is said plainly), its HTML made inert, its thread of
events with who and when, its relances, and why it was routed where it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbot.app.bounces import BounceNote, bounce_note
from mailbot.app.requests import MessageRef, tracked_message
from mailbot.app.requests import service_of as service_of  # its home; the faces read it here
from mailbot.core.statuses import ANSWERS, EventKind
from mailbot.errors import MailboxError, MailGoneError, MessageError
from mailbot.mail import display
from mailbot.mail.originals import Originals
from mailbot.render import safe_html
from mailbot.store import Store
from mailbot.store import console as stored

PEOPLE_KEYS = ("agent", "assignee", "service", "template", "reason", "how", "note", "to")


@dataclass(frozen=True)
class ThreadEvent:
    """An event of the message's thread: what, when, who (an agent id, or "" for mailbot)
    and the details an agent may read (never a mail body)."""

    at: datetime
    kind: str
    agent: str
    details: dict[str, str]
    # A reopening by the citizen's mail after the answer (new mail to read), not after a
    # closing without a reply: the thread names the two apart.
    after_answer: bool = False


@dataclass(frozen=True)
class Hit:
    rule: str
    detail: str


@dataclass(frozen=True)
class MessageView:
    row: Any  # the message's row
    service: str
    mail: display.ShownMail | None  # None: not readable now (``unavailable`` says why)
    html: safe_html.CleanHtml | None
    unavailable: str  # "" or "gone" or "unreachable"
    thread: list[ThreadEvent]
    follow_ups: list[Any]
    hits: list[Hit]
    suggested: dict[str, Any]  # a weak routing decision's suggestion ({} when none)
    state: int  # the latest event's id: what the page saw (the actions' idempotency keys)
    answer_state: int  # the latest answer's (ANSWERS): the answer form's key and collisions
    # Our mails to the citizen that bounced (app/bounces), oldest first: the page's alert.
    bounces: tuple[BounceNote, ...] = ()


def find(store: Store, ref: MessageRef) -> Any:
    """A tracked message (RequestError when none): its row, for the face's access check."""
    return tracked_message(store, ref)


def read_mail(originals: Originals, row: Any) -> tuple[display.ShownMail | None, str]:
    """The mail as shown, or None with why: "gone" (deleted or moved out of reach) or
    "unreachable" (the server did not answer)."""
    try:
        fetched = originals.fetch(row)
    except MailGoneError:
        return None, "gone"
    except (MailboxError, MessageError, OSError):
        return None, "unreachable"
    return display.show(fetched.raw, truncated=fetched.size > len(fetched.raw)), ""


def open_message(config: Any, store: Store, originals: Originals, row: Any) -> MessageView:
    """Everything the message page shows about ``row`` (a tracked message)."""
    mail, unavailable = read_mail(originals, row)
    html = safe_html.clean(mail.html, mail.images) if mail and mail.html else None
    recorded = store.events(row.id)
    thread = [_event(e) for e in recorded]
    bounced = (bounce_note(e.detail) for e in recorded if e.kind == EventKind.BOUNCED)
    routing = _json(row.routing)
    hits = [Hit(str(h.get("rule", "")), str(h.get("detail", ""))) for h in routing.get("hits", [])]
    return MessageView(
        row=row,
        service=service_of(config, row),
        mail=mail,
        html=html,
        unavailable=unavailable,
        thread=thread,
        follow_ups=stored.follow_ups(store.engine, row.id),
        hits=hits,
        suggested=dict(routing.get("suggested") or {}),
        state=stored.last_event_id(store.engine, row.id),
        answer_state=stored.last_event_id(store.engine, row.id, ANSWERS),
        bounces=tuple(note for note in bounced if note is not None),
    )


def attachment(originals: Originals, row: Any, index: int) -> tuple[display.Attachment, bytes]:
    """An attachment of the message's mail, read again (MailGoneError when gone), whole:
    AttachmentUnavailable when it cannot be (a mail read only in part)."""
    return originals.attachment(row, index)


def replies_since(store: Store, row: Any, state: int) -> list[ThreadEvent]:
    """Replies recorded on the message after the event ``state`` (what a page saw): another
    agent answered meanwhile, and sending must stop and show it (collision)."""
    return [_event(e) for e in store.events(row.id) if e.id > state and e.kind in ANSWERS]


def _json(text: str | None) -> dict[str, Any]:
    if not text or not text.startswith("{"):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(row: Any) -> ThreadEvent:
    detail = _json(row.detail)
    shown = {k: str(detail[k]) for k in PEOPLE_KEYS if detail.get(k) not in (None, "")}
    if detail.get("edited") is True:  # an agent's reply whose text they changed
        shown["edited"] = "oui"
    agent = shown.pop("agent", "")
    return ThreadEvent(row.at, str(row.kind), agent, shown, detail.get("answered") is True)
