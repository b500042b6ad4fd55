"""The administrator's pages: mail left without an AR (quarantined, or without a
Return-Path) — list, one mail with its events, process it again — and the templates check.
They call ``app/quarantine`` and ``app/template_catalogue`` as ``mailbot quarantine`` and
``mailbot templates check`` do; no citizen's address is shown.

A mail **passed over** (the database refused even its quarantine row: no row, only an event
saying where it is on the server) is listed apart on the same page, shown and processed
again by that event (``P7``, as ``mailbot quarantine`` names it), through the same use
cases: the page knows its location and why, never its sender nor its subject. One the
server will not give, or handled by hand, is closed there with a reason (« Classer »,
``mailbot quarantine dismiss``): it leaves the list, and its page says who closed it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailbot.app import quarantine, template_catalogue
from mailbot.app.context import App
from mailbot.core.digests import WHY
from mailbot.core.incoming import Outcome, PassedOver
from mailbot.core.statuses import Attention, Decision
from mailbot.core.workdays import WorkingCalendar
from mailbot.errors import (
    MailbotError,
    MailGoneError,
    MessageError,
    RepeatedRequestError,
    RequestError,
    StoreError,
    UnreadableMailError,
)
from mailbot.mail.originals import Originals
from mailbot.web.access import require
from mailbot.web.authz import Action
from mailbot.web.backend import backend, originals
from mailbot.web.pages import NavItem, render

NAV = [
    NavItem("Quarantaine", "/admin/quarantaine", Action.VIEW_QUARANTINE),
    NavItem("Modèles", "/admin/modeles", Action.CHECK_TEMPLATES),
]


def _local(app: App, moment: datetime) -> str:
    zone = WorkingCalendar(timezone=app.config.timezone).zone
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{aware.astimezone(zone):%d/%m/%Y %H:%M}"


def _row(app: App, row: Any) -> dict[str, str]:
    """A row of ``waiting`` (which says why, ``attention``) or of ``details`` (which does not:
    a quarantined decision, else a missing Return-Path)."""
    why = getattr(row, "attention", None) or (
        Attention.QUARANTINE if row.decision == Decision.QUARANTINE else Attention.NO_RETURN_PATH
    )
    return {
        "id": str(row.id),
        "mailbox": row.mailbox,
        "received": _local(app, row.received_at),
        "why": WHY.get(why, why),
        "reasons": ", ".join(json.loads(row.reasons or "[]")),
        "subject": row.subject or "",
    }


def _passed(app: App, passed: PassedOver) -> dict[str, str]:
    """A mail passed over as the pages show it: where it is and why, nothing of the mail
    itself (no row holds its sender or subject; the server's copy is not read to list it)."""
    return {
        "id": str(passed.event_id),
        "mailbox": passed.mailbox or "?",
        "folder": passed.folder or "?",
        "uidvalidity": str(passed.uidvalidity) if passed.mailbox else "?",
        "uid": str(passed.uid) if passed.mailbox else "?",
        "at": _local(app, passed.at),
        "why": passed.why,
    }


def _waiting(app: App) -> tuple[list[Any], list[PassedOver]]:
    return quarantine.waiting(app.store), quarantine.passed_over(app.store)


@require(Action.VIEW_QUARANTINE)
async def quarantine_list(request: Request) -> Response:
    app = backend(request)
    rows, passed = await run_in_threadpool(_waiting, app)
    done = request.query_params.get("traite", "")
    recorded = request.query_params.get("enregistre", "")
    dismissed = request.query_params.get("classe", "")
    context = {
        "rows": [_row(app, r) for r in rows],
        "passed": [_passed(app, p) for p in passed],
        "request_done": done if done.isdigit() else "",
        "passed_done": recorded if recorded.isdigit() else "",
        "passed_dismissed": dismissed if dismissed.isdigit() else "",
    }
    return render(request, "quarantine.html.j2", context)


@require(Action.VIEW_QUARANTINE)
async def quarantine_show(request: Request) -> Response:
    app = backend(request)
    message_pk: int = request.path_params["id"]
    try:
        row, events = await run_in_threadpool(quarantine.details, app.store, message_pk)
    except MessageError:
        raise HTTPException(404) from None
    context = {
        "mail": _row(app, row) | {"folder": row.folder, "uid": str(row.uid)},
        "defects": ", ".join(json.loads(row.defects or "[]")),
        "events": [(_local(app, e.at), e.kind, e.detail or "") for e in events],
        "result": request.query_params.get("resultat"),
    }
    return render(request, "quarantine_mail.html.j2", context)


# Why a retry did not go through, as the pages' ``resultat`` names it (the first that matches).
_NOT_RETRIED: tuple[tuple[type[MailbotError] | tuple[type[MailbotError], ...], str], ...] = (
    ((MessageError, MailGoneError), "introuvable"),  # no longer where it was looked for
    (UnreadableMailError, "illisible"),  # found, but the server will not read it out
)


async def _retried(
    retry: Callable[[App, Originals, int], Outcome | None],
    app: App,
    found: Originals,
    key: int,
    first: tuple[tuple[type[MailbotError], str], ...] = (),
) -> tuple[Outcome | None, str]:
    """The retry's outcome (None when it failed) and its result for the page and the
    audit, alike for a quarantined row and a mail passed over; a 404 when there was
    nothing to retry (no such mail, or a double click's second). ``first``: failures one
    kind of mail names apart, looked at before the others; any other MailbotError is the
    mailbox not reached ("echec")."""
    try:
        outcome = await run_in_threadpool(retry, app, found, key)
    except MailbotError as exc:
        for kind, result in (*first, *_NOT_RETRIED):
            if isinstance(exc, kind):
                return None, result
        return None, "echec"
    if outcome is None:
        raise HTTPException(404)
    return outcome, "reste" if outcome.decision == Decision.QUARANTINE else "traite"


def _retry(app: App, originals: Originals, message_pk: int) -> Outcome | None:
    """None when there is no such mail left without an AR (a 404), or when a concurrent
    retry of the same mail (a double click) processed it first."""
    try:
        quarantine.unhandled_row(app.store, message_pk)
    except MessageError:
        return None
    try:
        outcome = quarantine.retry(app.store, app.pipeline, originals, message_pk)
    except RepeatedRequestError:
        return None
    app.outbox.deliver_due()
    return outcome


@require(Action.RELEASE_QUARANTINE)
async def quarantine_retry(request: Request) -> Response:
    """Process the mail again (its row is updated, never duplicated); the page then says
    whether it left the quarantine, or why it could not be fetched."""
    app = backend(request)
    message_pk: int = request.path_params["id"]
    console = request.app.state.console
    agent = request.state.principal.agent_id
    _, result = await _retried(_retry, app, originals(request), message_pk)
    console.audit("quarantine_retry", agent=agent, message=str(message_pk), result=result)
    if result == "traite":
        return RedirectResponse(f"/admin/quarantaine?traite={message_pk}", status_code=303)
    return RedirectResponse(f"/admin/quarantaine/{message_pk}?resultat={result}", status_code=303)


@require(Action.VIEW_QUARANTINE)
async def passed_over_show(request: Request) -> Response:
    """One mail passed over: its location, when and why, and the traceback its event
    keeps (safe: code locations and exception types); dismissed, who closed it, when and
    why, and no form. The page is an administrator's, as the quarantined rows' is
    (``Action.VIEW_QUARANTINE``). A mail a row records now (another retry) is no longer
    passed over: 404, as a quarantined row that left the quarantine."""
    return await _passed_page(request, request.path_params["id"])


async def _passed_page(
    request: Request, event_id: int, status: int = 200, reason: str = "", problem: str = ""
) -> Response:
    """The page of a mail passed over; ``problem``: the dismissal form's refusal (a 400,
    the reason typed kept)."""
    app = backend(request)
    try:
        case = await run_in_threadpool(quarantine.passed_over_case, app.store, event_id)
    except MessageError:
        raise HTTPException(404) from None
    passed, detail, dismissed = case.passed, case.detail, case.dismissed
    context = {
        "mail": _passed(app, passed),
        "trace": detail.split("\n", 1)[1].strip() if "\n" in detail else "",
        "retriable": bool(passed.mailbox),
        "dismissed": None
        if dismissed is None
        else {
            "at": _local(app, dismissed.at),
            "agent": dismissed.agent,
            "reason": dismissed.reason,
        },
        "result": request.query_params.get("resultat"),
        "reason": reason,
        "problem": problem,
    }
    return render(request, "quarantine_passed.html.j2", context, status_code=status)


def _still_passed_over(app: App, event_id: int) -> bool:
    try:
        quarantine.passed_over_details(app.store, event_id)
    except MessageError:
        return False
    return True


def _retry_passed(app: App, originals: Originals, event_id: int) -> Outcome | None:
    """None when no mail passed over waits under this event (a 404), or when a concurrent
    retry (a double click) recorded it first: its claim of the event, in the transaction
    that records the mail, lets one retry through."""
    if not _still_passed_over(app, event_id):
        return None
    try:
        outcome = quarantine.retry_passed_over(app.store, app.pipeline, originals, event_id)
    except RepeatedRequestError:
        return None
    except MessageError:
        if not _still_passed_over(app, event_id):  # recorded meanwhile by another retry
            return None
        raise
    app.outbox.deliver_due()
    return outcome


@require(Action.RELEASE_QUARANTINE)
async def passed_over_retry(request: Request) -> Response:
    """Read the mail passed over again at its location and process it as a new mail: a row
    records it now (its event goes to that row), whatever it owes is sent. The page then
    says whether it was recorded (the list; the row's page when it is quarantined now), or
    why not: not found at its location, found but refused by the server's FETCH (a mail
    Dovecot cannot read: no row can be made of nothing, so it stays passed over), the
    mailbox unreachable, the database refusing it again (it stays passed over, as it was)."""
    app = backend(request)
    event_id: int = request.path_params["id"]
    console = request.app.state.console
    agent = request.state.principal.agent_id
    # Refused again (or a transient error): it stays passed over, and the page says so.
    refused = ((StoreError, "refuse"),)
    outcome, result = await _retried(_retry_passed, app, originals(request), event_id, refused)
    console.audit("quarantine_retry", agent=agent, message=f"P{event_id}", result=result)
    if outcome is not None and result == "traite":
        return RedirectResponse(f"/admin/quarantaine?enregistre={event_id}", status_code=303)
    if outcome is not None and outcome.message_pk is not None:  # recorded, quarantined
        return RedirectResponse(
            f"/admin/quarantaine/{outcome.message_pk}?resultat=enregistre", status_code=303
        )
    return RedirectResponse(f"/admin/quarantaine/P{event_id}?resultat={result}", status_code=303)


def _dismiss(app: App, event_id: int, agent: str, reason: str) -> str:
    """``classe`` once dismissed; ``deja-classe`` when a dismissal committed first (a
    double click's second: nothing new). MessageError when there is nothing to dismiss
    (no such mail, a row records it): a 404, as a retry's. RequestError: no reason."""
    try:
        quarantine.dismiss_passed_over(app.store, event_id, agent, reason)
    except MessageError:
        if quarantine.passed_over_case(app.store, event_id).dismissed is not None:
            return "deja-classe"
        raise
    return "classe"


@require(Action.RELEASE_QUARANTINE)
async def passed_over_dismiss(request: Request) -> Response:
    """Close a mail passed over that was handled outside mailbot (`quarantine dismiss
    P7`): the reason is required; the mail leaves the list (which says so), the server's
    copy is left alone. A double click dismisses once: the second finds it dismissed and
    leads to its page, which says by whom. Audited as a retry is (``quarantine_dismiss``),
    the second click of a double click excepted (nothing was done)."""
    event_id: int = request.path_params["id"]
    async with request.form() as data:
        reason = str(data.get("motif") or "")[:2000]
    app = backend(request)
    console = request.app.state.console
    agent = request.state.principal.agent_id
    try:
        result = await run_in_threadpool(_dismiss, app, event_id, agent, reason)
    except RequestError as exc:
        console.audit("quarantine_dismiss", agent=agent, message=f"P{event_id}", result="motif")
        return await _passed_page(request, event_id, 400, reason, exc.shown or str(exc))
    except MessageError:
        raise HTTPException(404) from None
    if result == "deja-classe":
        return RedirectResponse(f"/admin/quarantaine/P{event_id}", status_code=303)
    console.audit("quarantine_dismiss", agent=agent, message=f"P{event_id}", result=result)
    return RedirectResponse(f"/admin/quarantaine?classe={event_id}", status_code=303)


@require(Action.CHECK_TEMPLATES)
async def templates_check(request: Request) -> Response:
    app = backend(request)
    found = await run_in_threadpool(template_catalogue.check_directory, app.config)
    failed = sum(1 for problems in found.problems.values() if problems)
    context = {
        "checks": sorted(found.problems.items()),
        "failed": failed,
        "total": len(found.problems),
        "gaps": found.gaps,
    }
    return render(request, "templates_check.html.j2", context)


ROUTES = [
    Route("/admin/quarantaine", quarantine_list, methods=["GET"], name="quarantine_list"),
    Route("/admin/quarantaine/{id:int}", quarantine_show, methods=["GET"], name="quarantine_mail"),
    Route(
        "/admin/quarantaine/{id:int}/retraiter",
        quarantine_retry,
        methods=["POST"],
        name="quarantine_retry",
    ),
    Route(
        "/admin/quarantaine/P{id:int}", passed_over_show, methods=["GET"], name="passed_over_mail"
    ),
    Route(
        "/admin/quarantaine/P{id:int}/retraiter",
        passed_over_retry,
        methods=["POST"],
        name="passed_over_retry",
    ),
    Route(
        "/admin/quarantaine/P{id:int}/classer",
        passed_over_dismiss,
        methods=["POST"],
        name="passed_over_dismiss",
    ),
    Route("/admin/modeles", templates_check, methods=["GET"], name="templates_check"),
]
