"""Answering from the message page: the live preview (htmx; rendered by the very code
that sends) and sending — a standard reply or a free one — through ``app.reply`` once per
form (a double click or two tabs send one mail), stopped when a colleague answered since
the page was opened. Authorised on the message's service; CSRF checked by the middleware."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailbot.app import answer_form, message_view
from mailbot.app.reply import FREE_TEMPLATE, Replies
from mailbot.errors import MailbotError, RequestError, SignatureLostError
from mailbot.render import safe_html
from mailbot.web import outage
from mailbot.web.access import current_agent, require
from mailbot.web.answer import SIGNATURE_LABELS, allowed_templates, signature_gaps
from mailbot.web.authz import Action
from mailbot.web.backend import agents, backend
from mailbot.web.message_pages import message_of, refused_by_database, show_message
from mailbot.web.pages import render


async def _form(request: Request) -> dict[str, str]:
    async with request.form() as form:
        return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


def _draft_parts(request: Request, row: Any, values: dict[str, str]) -> tuple[Any, Any]:
    """The chosen template's meta (one this message may use: else 400) and the service."""
    app = backend(request)
    service = message_view.service_of(app.config, row)
    meta = allowed_templates(request, row, service).get(values.get("modele", ""))
    if meta is None:
        raise HTTPException(400)
    return meta, service


def _refusal(request: Request, meta: Any, values: dict[str, str]) -> str:
    """Why this form cannot be sent yet, in French ("" when it can)."""
    gaps = signature_gaps(request, meta)
    if gaps:
        return (
            "Envoi impossible : votre signature est incomplète (article L111-2 du code des"
            f" relations entre le public et l'administration). Il manque : {', '.join(gaps)}."
            " Demandez à l'administrateur de compléter votre profil."
        )
    empty = [f"« {_label(meta, f)} »" for f in _blank_required(meta, values)]
    if empty:
        return f"Envoi impossible : champ obligatoire vide : {', '.join(empty)}."
    return ""


def _blank_required(meta: Any, values: dict[str, str]) -> list[answer_form.Field]:
    """The required fields left blank (spaces pass the browser's own check)."""
    return [
        f for f in answer_form.fields(meta) if f.required and not values.get(f.name, "").strip()
    ]


def _field_errors(meta: Any, values: dict[str, str]) -> dict[str, str]:
    """Each blank required field's error, by the id of its input in the page: the page
    shown again marks that input and gives it the focus (RGAA 11.10, 11.11), in the form
    that was sent (the standard reply's or the free one's)."""
    prefix = "libre-" if meta.name == FREE_TEMPLATE else "var-"
    return {
        prefix + f.name: f"« {_label(meta, f)} » est obligatoire : remplissez ce champ."
        for f in _blank_required(meta, values)
    }


def _label(meta: Any, field: answer_form.Field) -> str:
    """A field as the agent sees it on the form, never its variable's name (`statut_dossier`)."""
    return "Votre texte" if meta.name == FREE_TEMPLATE and field.name == "texte" else field.label


@require(Action.VIEW_HOME)  # REPLY on the message's service, checked once it is loaded
async def preview(request: Request) -> Response:
    row = await run_in_threadpool(message_of, request, Action.REPLY)
    values = await _form(request)
    meta, _ = _draft_parts(request, row, values)
    problem = _refusal(request, meta, values)
    ids = "apercu-libre" if meta.name == FREE_TEMPLATE else "apercu"  # its region's id
    context: dict[str, Any] = {"problem": problem, "preview": None, "html": None, "ids": ids}
    if not problem:
        app = backend(request)
        replies = Replies(app.config, app.store, app.renderer, agents(request))
        agent_id = current_agent(request).agent_id
        try:
            draft = answer_form.draft_of(meta, values)
            shown = await run_in_threadpool(replies.preview, agent_id, row.id, draft)
        except MailbotError as exc:
            context["problem"] = f"Aperçu impossible : {_why(exc)}"
        else:
            context["preview"] = shown
            context["html"] = Markup(safe_html.clean(shown.html).html) if shown.html else None
            if not shown.edited and answer_form.EDITED in values:  # keep the textarea in step
                context["refresh"] = shown.text
    return render(request, "_preview.html.j2", context)


def _why(exc: MailbotError) -> str:
    """A refusal in French where the agent can act on it."""
    if isinstance(exc, SignatureLostError):
        lost = ", ".join(SIGNATURE_LABELS.get(name, name) for name in exc.missing)
        return (
            f"le texte modifié ne contient plus votre signature complète (il manque : {lost}) ;"
            " une réponse est toujours signée (article L111-2 du code des relations entre le"
            " public et l'administration)."
        )
    return exc.shown or str(exc)  # the English message only for a refusal with no French


@require(Action.VIEW_HOME)  # REPLY on the message's service, checked once it is loaded
async def send(request: Request) -> Response:
    row = await run_in_threadpool(message_of, request, Action.REPLY)
    values = await _form(request)
    meta, _ = _draft_parts(request, row, values)
    state = int(values["etat"]) if values.get("etat", "").isdigit() else -1
    problem = _refusal(request, meta, values)
    if problem or state < 0:
        problem = problem or "Formulaire incomplet."
        invalid = _field_errors(meta, values)
        return await show_message(
            request, row, 400, problem=problem, values=values, invalid=invalid
        )
    app = backend(request)
    replies = Replies(app.config, app.store, app.renderer, agents(request))
    agent_id = current_agent(request).agent_id
    try:
        draft = answer_form.draft_of(meta, values)
        outcome = await run_in_threadpool(
            answer_form.send_once, replies, app.store, agent_id, row, draft, state
        )
    except RequestError as exc:
        problem = f"Envoi impossible : {_why(exc)}"
        return await show_message(request, row, 400, problem=problem, values=values)
    except Exception as exc:  # the database's refusal: the draft shown again, kept
        refused = outage.refusal(exc)
        if refused is None:
            raise
        return await refused_by_database(request, row, refused, values=values)
    if outcome.collision:
        return await show_message(request, row, 409, collision=outcome.since, values=values)
    target = f"/?envoye={row.reference}"
    return RedirectResponse(target, 303, background=BackgroundTask(app.outbox.deliver_due))


ROUTES = [
    Route("/courriel/{message:int}/apercu", preview, methods=["POST"], name="preview"),
    Route("/courriel/{message:int}/reponse", send, methods=["POST"], name="send"),
]
