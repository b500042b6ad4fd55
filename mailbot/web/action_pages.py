"""The message page's other actions, each through its use case and recorded with who,
when and why: assign (take it, or give it to a colleague), transfer to another service
with a reason, answered elsewhere (phone, counter, letter) with a reason, correct the
service or category, close as needing no reply with a reason, reopen a message closed so
by mistake, mark the citizen's mail after the answer read (nothing to answer). Every POST
is authorised on the message's service (and CSRF-checked by the middleware); a form is
done once per message state (its idempotency key), so a double click does it once. What
the message's state allows is the use cases' to refuse (``app/message_actions``): the
page only hides what they would refuse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailbot.app import assignment, corrections, message_view, no_reply
from mailbot.app.answered import AnsweredHow, mark_answered
from mailbot.app.requests import form_key
from mailbot.app.transfer import Transfers
from mailbot.core.statuses import NoReplyReason
from mailbot.errors import MailbotError
from mailbot.web import outage
from mailbot.web.access import check, current_agent, require
from mailbot.web.authz import Action
from mailbot.web.backend import agents, backend, originals
from mailbot.web.message_pages import message_of, refused_by_database, show_message

Handler = Callable[[Request, Any, dict[str, str], str], Awaitable[str]]


def _key(name: str, row: Any, form: dict[str, str]) -> str:
    """The form's idempotency key (one per message state): a form without its state is
    refused (400) rather than done without a key, which a double click would do twice."""
    state = form.get("etat", "")
    if not state.isdigit():
        raise HTTPException(400, "Formulaire incomplet.")
    return form_key(name, row, state)


async def _assign(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    me = current_agent(request).agent_id
    target = form.get("a", "").strip() or None  # "": to nobody (« Ne plus traiter »)
    check(request, assignment.needed(me, target, row.assignee).action, service)
    app = backend(request)
    await run_in_threadpool(
        assignment.assign,
        app.config,
        app.store,
        agents(request),
        me,
        row.id,
        target,
        _key("attribuer", row, form),
    )
    return f"/courriel/{row.id}?fait=attribuer"


async def _transfer(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    check(request, Action.REASSIGN, service)
    app = backend(request)
    transfers = Transfers(
        app.config, app.store, app.renderer, agents(request), originals(request), app.clock
    )
    await run_in_threadpool(
        transfers.transfer,
        current_agent(request).agent_id,
        row.id,
        form.get("service", ""),
        form.get("motif", ""),
        _key("transferer", row, form),
    )
    return "/?fait=transferer"


async def _answered(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    check(request, Action.REPLY, service)
    how = form.get("moyen", "")
    if how not in AnsweredHow._value2member_map_:
        raise HTTPException(400)
    app = backend(request)
    await run_in_threadpool(
        lambda: mark_answered(
            app.config,
            app.store,
            agents(request),
            current_agent(request).agent_id,
            row.id,
            AnsweredHow(how),
            form.get("motif", ""),
            key=_key("repondu-ailleurs", row, form),
            clock=app.clock,
        )
    )
    return "/?fait=repondu-ailleurs"


async def _correct(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    """A new service is a transfer too (notice, forward, reason); a category alone is only
    recorded. Both teach the routing."""
    check(request, Action.REASSIGN, service)
    app = backend(request)
    transfers = Transfers(
        app.config, app.store, app.renderer, agents(request), originals(request), app.clock
    )
    moved = await run_in_threadpool(
        corrections.correct_in_console,
        transfers,
        current_agent(request).agent_id,
        row.id,
        (form.get("service", ""), form.get("categorie", "")),
        form.get("motif", ""),
        _key("corriger", row, form),
    )
    return "/?fait=transferer" if moved else f"/courriel/{row.id}?fait=corriger"


async def _no_reply(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    check(request, Action.REPLY, service)
    reason = form.get("motif", "")
    if reason not in NoReplyReason._value2member_map_:
        raise HTTPException(400)
    app = backend(request)
    await run_in_threadpool(
        no_reply.close_without_reply,
        app.config,
        app.store,
        agents(request),
        current_agent(request).agent_id,
        row.id,
        NoReplyReason(reason),
        form.get("precision", ""),
        _key("sans-reponse", row, form),
    )
    return "/?fait=sans-reponse"


async def _reopen(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    """Undo « Aucune réponse nécessaire »: whoever may close may reopen."""
    check(request, Action.REPLY, service)
    app = backend(request)
    await run_in_threadpool(
        no_reply.reopen,
        app.config,
        app.store,
        agents(request),
        current_agent(request).agent_id,
        row.id,
        form.get("motif", ""),
        _key("rouvrir", row, form),
    )
    return f"/courriel/{row.id}?fait=rouvrir"


async def _mark_read(request: Request, row: Any, form: dict[str, str], service: str) -> str:
    """The citizen's mail after the answer read, nothing to answer: whoever may reply may."""
    check(request, Action.REPLY, service)
    app = backend(request)
    await run_in_threadpool(
        no_reply.mark_read,
        app.config,
        app.store,
        agents(request),
        current_agent(request).agent_id,
        row.id,
        _key("lu", row, form),
    )
    return "/?fait=lu"


HANDLERS: dict[str, Handler] = {
    "attribuer": _assign,
    "transferer": _transfer,
    "repondu-ailleurs": _answered,
    "corriger": _correct,
    "sans-reponse": _no_reply,
    "rouvrir": _reopen,
    "lu": _mark_read,
}


@require(Action.VIEW_HOME)  # each handler checks its action on the message's service
async def act(request: Request) -> Response:
    handler = HANDLERS.get(request.path_params["action"])
    if handler is None:
        raise HTTPException(404)
    row = await run_in_threadpool(message_of, request)
    async with request.form() as data:
        form = {k: v[:2000] for k, v in data.items() if isinstance(v, str)}
    service = message_view.service_of(backend(request).config, row)
    kept = {request.path_params["action"]: form}  # the form as it was filled in
    try:
        target = await handler(request, row, form, service)
    except Exception as exc:
        refused = outage.refusal(exc)  # the database's (a TransientStoreError's too)
        if refused is not None:
            return await refused_by_database(request, row, refused, kept=kept)
        if not isinstance(exc, MailbotError):
            raise
        problem = f"Action impossible : {exc.shown or exc}"  # English only where no French
        return await show_message(request, row, 400, problem=problem, kept=kept)
    app = backend(request)
    return RedirectResponse(target, 303, background=BackgroundTask(app.outbox.deliver_due))


ROUTES = [Route("/courriel/{message:int}/action/{action}", act, methods=["POST"], name="act")]
