"""The message page: the citizen's mail read again from its mailbox (inert HTML, remote
images blocked, attachments to download), the thread with who and when, why it was routed
here, and who else has it open. Authorised on the message's service, on every request."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailbot.app import assignment, message_actions, message_view, presence, queue
from mailbot.app.answered import AnsweredHow
from mailbot.app.bounces import BounceNote
from mailbot.core.dates import date_fr
from mailbot.core.statuses import EventKind, NoReplyReason
from mailbot.errors import AttachmentUnavailable, MailboxError, MessageError, RequestError
from mailbot.mail.display import safe_filename
from mailbot.mail.forward import size_fr
from mailbot.web import outage
from mailbot.web.access import background, check, current_agent, require
from mailbot.web.answer import answer_context
from mailbot.web.authz import Action
from mailbot.web.backend import agents, backend, originals, today
from mailbot.web.pages import citizen_text, render
from mailbot.web.queue_pages import SETTLED_LABELS, URGENCY_LABELS

EVENT_LABELS = {
    "received": "Courriel reçu",
    "ar_queued": "Accusé de réception préparé",
    "ar_sent": "Accusé de réception envoyé",
    # Recorded after a restore of the database (``mailbot restored``): the lost database
    # presumably sent it; nothing was sent again.
    "ar_presumed_sent": "Accusé de réception présumé envoyé (base restaurée, non renvoyé)",
    "follow_up": "Relance de l'usager",
    "transferred": "Transmis à un service",
    "reoriented": "Réorienté",
    "notice_sent": "Avis de transmission envoyé à l'usager",
    "forward_sent": "Courriel transmis au service",
    "reply": "Réponse à l'usager",
    "reply_queued": "Réponse préparée",
    "reply_sent": "Réponse envoyée",
    "answered_elsewhere": "Répondu par un autre moyen",
    "routing_corrected": "Orientation corrigée",
    "assigned": "Attribution",
    "no_reply_needed": "Clos sans réponse",
    "reopened": "Rouvert : l'usager a écrit de nouveau",
    "reopened:agent": "Rouvert par un agent",  # an agent undid a closing (``event_label``)
    # The citizen wrote again after the answer: back in the queue to be read (``event_label``)
    "reopened:answered": "Nouveau message de l'usager après la réponse",
    "follow_up_read": "Nouveau message de l'usager lu, sans réponse à donner",
    "send_deferred": "Envoi différé",
    "send_failed": "Échec d'envoi",
    "send_requeued": "Remis dans la file d'envoi après une panne",
    "bounced": "Courriel à l'usager non distribué (retour du serveur destinataire)",
}
DETAIL_LABELS = {
    "assignee": "attribué à",
    "service": "service",
    "template": "modèle",
    "reason": "motif",
    "how": "moyen",
    "note": "précision",
    "to": "destinataire",
    "edited": "texte modifié par l'agent",
}
INERT_TYPES = ("html", "xml", "script", "svg", "css")  # "script": java-, ecma-, jscript, live-


def event_label(event: message_view.ThreadEvent) -> str:
    """How the thread names an event: by its kind, and for a kind both mailbot and an agent
    record (a reopening: the citizen's relance, or an agent's), by who did it; the
    citizen's mail after the answer apart from a reopening after a closing."""
    if event.after_answer and f"{event.kind}:answered" in EVENT_LABELS:
        return EVENT_LABELS[f"{event.kind}:answered"]
    if event.agent and f"{event.kind}:agent" in EVENT_LABELS:
        return EVENT_LABELS[f"{event.kind}:agent"]
    return EVENT_LABELS.get(event.kind, event.kind)


def bounce_alert(note: BounceNote, timezone: str) -> tuple[str, str]:
    """A bounce as the page's alert says it: « Le courriel envoyé à l'usager le … n'a pas
    pu être distribué : adresse inconnue (5.1.1). Contactez l'usager par un autre moyen. »,
    and which mail it was with the remote server's words (its diagnostic, one short line)."""
    when = note.sent_at or note.bounced_at
    sent = f" le {date_fr(when, timezone=timezone)}" if when else ""
    said = f" Réponse du serveur distant : « {note.diagnostic} »." if note.diagnostic else ""
    return (
        f"Le courriel envoyé à l'usager{sent} n'a pas pu être distribué : {note.reason}."
        " Contactez l'usager par un autre moyen.",
        f"Courriel concerné : {note.what}.{said}",
    )


def message_of(request: Request, action: Action = Action.VIEW_MESSAGE) -> Any:
    """The message of the path, if the agent may do ``action`` on its service (403 else;
    404 when there is no such tracked message)."""
    app = backend(request)
    try:
        row = message_view.find(app.store, request.path_params["message"])
    except RequestError as exc:
        raise HTTPException(404) from exc
    check(request, action, message_view.service_of(app.config, row))
    return row


def agent_names(request: Request) -> dict[str, str]:
    lookup = agents(request)
    names = {}
    for agent_id in request.app.state.console.directory.agents():
        agent = lookup(agent_id)
        if agent is not None:
            names[agent_id] = f"{agent.first_name or ''} {agent.last_name or ''}".strip()
    return names


@require(Action.VIEW_HOME)  # the message's service is checked once it is loaded
async def message_page(request: Request) -> Response:
    row = await run_in_threadpool(message_of, request)
    return await show_message(request, row)


@require(Action.VIEW_HOME)  # the message's service is checked once it is loaded
async def message_by_reference(request: Request) -> Response:
    """``/courriel/SM-2026-000123``: the message page named by its reference, for a link
    written before the message had a row (the note of a forward, built before the message
    is recorded); sent on to the page itself, after the same checks (404, 403)."""
    row = await run_in_threadpool(message_of, request)
    return RedirectResponse(f"/courriel/{row.id}", status_code=303)


def mail_date(header: str, timezone: str) -> str:
    """The citizen's Date header in French, in the prefecture's time (« vendredi 20 novembre
    2026 à 8 h 47 »): as written (« Fri, 20 Nov 2026 08:47:12 +0100 ») it was English in a
    French page. A header no parser reads is shown as it is."""
    try:
        written = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return header
    if written.tzinfo is None:  # « -0000 »: the time is UTC, its zone unknown (RFC 5322)
        written = written.replace(tzinfo=UTC)
    return date_fr(written, timezone=timezone)


async def show_message(request: Request, row: Any, status: int = 200, **extra: Any) -> Response:
    """The message page (also shown again, with ``extra``, after a refused action)."""
    principal = current_agent(request)
    app = backend(request)
    view = await run_in_threadpool(
        message_view.open_message, app.config, app.store, originals(request), row
    )
    await run_in_threadpool(presence.opened, app.store, principal.agent_id, row.id, app.clock)
    others = await run_in_threadpool(
        presence.others, app.store, principal.agent_id, row.id, app.clock
    )
    context = {
        "view": view,
        "standing": queue.standing(app.config, row, today(request)),
        "settled": await run_in_threadpool(queue.settled, app.store, row),
        "mail_html": Markup(view.html.html) if view.html else None,
        "others": others,
        "names": agent_names(request),
        "event_labels": EVENT_LABELS,
        "event_label": event_label,
        "event_details": event_details,
        "can_reply": principal.can(Action.REPLY, view.service),
        "urgency": URGENCY_LABELS,
        "settled_labels": SETTLED_LABELS,
        "citizen_text": citizen_text(row.language),
        "mail_date": mail_date(view.mail.date if view.mail else "", app.config.timezone),
        "bounce_alerts": [bounce_alert(n, app.config.timezone) for n in view.bounces],
    }
    context.update(_actions(request, row, view.service))
    context["offer"] = await run_in_threadpool(
        message_actions.offer, app.store, row, view.thread, ZoneInfo(app.config.timezone)
    )
    values = extra.pop("values", None)
    invalid = extra.pop("invalid", None)
    context.update(
        await run_in_threadpool(
            answer_context, request, row, view.service, view.answer_state, values, invalid
        )
    )
    context.update(extra)
    return render(request, "message.html.j2", context, status_code=status)


async def refused_by_database(
    request: Request, row: Any, refused: outage.Refusal, **extra: Any
) -> Response:
    """An action the database refused (read-only, unreachable): the message page again,
    503, its error alert saying what was (not) done, the form as the agent filled it in
    (``extra``: ``values``, ``kept``). The WARNING once the page is shown: should reading it
    fail too (the database unreachable), the error page says it, and logs it, once."""
    problem = outage.nothing_done(refused)
    page = await show_message(request, row, 503, problem=problem, **extra)
    outage.warn(request, refused)
    return page


@background  # every 45 s, agent or not: no activity (the idle session still ends)
@require(Action.VIEW_HOME)  # the message's service is checked once it is loaded
async def presence_fragment(request: Request) -> Response:
    """The page's periodic refresh (htmx, every 45 s): the agent still has it open; who
    else has."""
    row = await run_in_threadpool(message_of, request)
    principal = current_agent(request)
    app = backend(request)
    await run_in_threadpool(presence.opened, app.store, principal.agent_id, row.id, app.clock)
    others = await run_in_threadpool(
        presence.others, app.store, principal.agent_id, row.id, app.clock
    )
    context = {"others": others, "names": agent_names(request), "view": {"row": row}}
    return render(request, "_presence.html.j2", context)


ACTION_NOTICES = {
    "attribuer": "L'attribution est enregistrée.",
    "corriger": "La correction de l'orientation est enregistrée.",
    "rouvrir": "Le courriel est rouvert : il est de nouveau dans la file, avec son échéance"
    " d'origine.",
}
NO_REPLY_LABELS = {
    NoReplyReason.SPAM: "Indésirable (spam, message abusif)",
    NoReplyReason.DUPLICATE: "Doublon d'une demande traitée par ailleurs",
    NoReplyReason.NO_QUESTION: "Aucune question (remerciements, information)",
    NoReplyReason.OTHER: "Autre motif (à préciser)",
}
HOW_LABELS = {
    AnsweredHow.PHONE: "Par téléphone",
    AnsweredHow.COUNTER: "Au guichet",
    AnsweredHow.LETTER: "Par courrier",
}
# Details an event stores as a code, named in the history as the form named them.
CODED_DETAILS: dict[tuple[str, str], dict[str, str]] = {
    (EventKind.NO_REPLY_NEEDED, "reason"): {str(k): v for k, v in NO_REPLY_LABELS.items()},
    (EventKind.ANSWERED_ELSEWHERE, "how"): {str(k): v for k, v in HOW_LABELS.items()},
}


def event_details(event: message_view.ThreadEvent) -> list[tuple[str, str]]:
    """An event's details as the history shows them: French names, and a code (« phone »,
    « duplicate ») as the form that recorded it said it."""
    return [
        (DETAIL_LABELS.get(key, key), CODED_DETAILS.get((event.kind, key), {}).get(value, value))
        for key, value in event.details.items()
    ]


def _actions(request: Request, row: Any, service: str) -> dict[str, Any]:
    """The other actions' forms: who may be given the message, where it may go."""
    principal = current_agent(request)
    app = backend(request)
    directory = request.app.state.console.directory.agents()
    routing = app.config.routing
    return {
        "can_act": principal.can(Action.REPLY, service),
        "can_reassign": principal.can(Action.REASSIGN, service),
        # « Ne plus traiter »: the agent who has the message lets it go (the use case's rule)
        "can_release": row.assignee == principal.agent_id
        and principal.can(
            assignment.needed(principal.agent_id, None, row.assignee).action, service
        ),
        "colleagues": sorted(
            agent_id for agent_id, agent in directory.items() if service in agent.console_services
        ),
        "me": principal.agent_id,
        "transfer_services": [s for s in app.config.services if s != service],
        "categories": list(routing.categories) if routing else [],
        "no_reply_labels": NO_REPLY_LABELS,
        "how_labels": HOW_LABELS,
        "notice": ACTION_NOTICES.get(request.query_params.get("fait", ""), ""),
        # a refused form's fields by action, shown again as the agent filled them in
        # (``show_message``'s ``kept``)
        "kept": {},
    }


@require(Action.VIEW_HOME)  # the message's service is checked once it is loaded
async def download(request: Request) -> Response:
    row = await run_in_threadpool(message_of, request)
    index = int(request.path_params["index"])
    try:
        meta, data = await run_in_threadpool(
            message_view.attachment, originals(request), row, index
        )
    except AttachmentUnavailable as exc:
        return not_served(request, row, exc)
    except (MessageError, MailboxError) as exc:
        raise HTTPException(404) from exc
    name = safe_filename(meta.filename, f"piece-jointe-{index}")
    disposition = "attachment; filename*=utf-8''" + quote(name, safe="")
    media_type = served_type(meta.content_type)
    return Response(data, media_type=media_type, headers={"content-disposition": disposition})


def not_served(request: Request, row: Any, refused: AttachmentUnavailable) -> Response:
    """The page an agent gets instead of an attachment of a huge mail that cannot be
    served whole: why, and where the whole mail is (its mailbox and its reference) — never
    the start of the file as if it were the citizen's document."""
    box = backend(request).config.mailboxes.get(row.mailbox)
    where = (
        f"Le courriel complet, avec ses pièces jointes, est dans la boîte"
        f" {box.address if box else row.mailbox}, sous la référence {row.reference} :"
        " ouvrez-le dans votre messagerie."
    )
    if refused.reason == "too_large":
        status, why = (
            413,
            f"Cette pièce jointe ({size_fr(refused.size)} dans le courriel) est trop"
            " volumineuse pour être téléchargée depuis la console.",
        )
    else:
        status, why = (
            502,
            "Ce courriel est trop volumineux pour être lu en entier par la console, et"
            " cette pièce jointe n'a pas pu être obtenue complète du serveur de messagerie :"
            " elle n'est pas proposée tronquée.",
        )
    context = {"status": status, "title": "Pièce jointe non téléchargeable"}
    return render(request, "error.html.j2", {**context, "message": f"{why} {where}"}, status)


def served_type(declared: str) -> str:
    """The type an attachment is served with: its own, unless a browser could render it as
    a page or run it (as a script or a stylesheet of this origin, which the CSP allows)."""
    if any(word in declared for word in INERT_TYPES):
        return "application/octet-stream"
    return declared


ROUTES = [
    Route("/courriel/{message:int}", message_page, methods=["GET"], name="message"),
    # after the row ids' route: a reference is what is not a number
    Route(
        "/courriel/{message:str}",
        message_by_reference,
        methods=["GET"],
        name="message_by_reference",
    ),
    Route("/courriel/{message:int}/presence", presence_fragment, methods=["GET"], name="presence"),
    Route(
        "/courriel/{message:int}/piece-jointe/{index:int}",
        download,
        methods=["GET"],
        name="attachment",
    ),
]
