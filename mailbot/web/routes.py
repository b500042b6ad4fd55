"""The console's own routes: home, local login, ProConnect login, logout, health."""

from __future__ import annotations

import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailbot.web import outage
from mailbot.web.access import client_ip, public, require
from mailbot.web.authz import SERVICE_SCOPED, Action
from mailbot.web.oidc import LoginError
from mailbot.web.pages import csrf_token, render
from mailbot.web.security import LAST_SEEN, SESSION_ID, safe_next

if TYPE_CHECKING:
    from mailbot.web.app import Console

LOGGED_OUT = "/connexion?deconnecte=1"
ACTION_LABELS = {
    Action.VIEW_QUEUE: "Consulter la file des courriels",
    Action.VIEW_MESSAGE: "Lire les courriels",
    Action.REPLY: "Répondre aux usagers",
    Action.VIEW_INDICATORS: "Consulter les indicateurs de délai",
    Action.REASSIGN: "Réaffecter un courriel à un autre service",
    Action.VIEW_QUARANTINE: "Consulter les courriels en quarantaine",
    Action.RELEASE_QUARANTINE: "Libérer un courriel de la quarantaine",
    Action.CHECK_TEMPLATES: "Contrôler les modèles de réponse",
}


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


@require(Action.VIEW_HOME)
async def home(request: Request) -> Response:
    console = _console(request)
    principal = request.state.principal
    known = list(console.service_names)
    rights: list[tuple[str, list[str]]] = []
    for action, label in ACTION_LABELS.items():
        if action in SERVICE_SCOPED:
            names = [console.service_names[s] for s in principal.services_for(action, known)]
            if names:
                rights.append((label, names))
        elif principal.can(action):
            rights.append((label, []))
    services = [console.service_names.get(s, s) for s in principal.services]
    reads_mail = bool(principal.services_for(Action.VIEW_MESSAGE, known))
    return render(
        request,
        "home.html.j2",
        {"services": services, "rights": rights, "reads_mail": reads_mail},
    )


def _login_page(request: Request, status: int = 200, **context: Any) -> Response:
    console = _console(request)
    values = {
        "oidc": console.oidc is not None,
        "oidc_name": console.oidc.config.name if console.oidc else "",
        "local": console.accounts is not None,
        "suivant": safe_next(request.query_params.get("suivant")),
        "logged_out": request.query_params.get("deconnecte") == "1",
        "error": None,
        "login": "",
    }
    values.update(context)
    return render(request, "login.html.j2", values, status_code=status)


@public
async def login_form(request: Request) -> Response:
    if request.state.principal is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


async def _establish(request: Request, agent_id: str, method: str, **extra: str) -> None:
    """A fresh session for the agent (nothing kept from before: no fixation), with a new
    random id; the session it replaces is ended, copies of its cookie included."""
    await _console(request).end_session(request)
    request.session.clear()
    since = str(int(time.time()))
    session_id = secrets.token_urlsafe(32)
    request.session.update(
        {
            "agent": agent_id,
            "method": method,
            "since": since,
            LAST_SEEN: since,
            SESSION_ID: session_id,
            **extra,
        }
    )
    csrf_token(request)


async def _established(
    request: Request, agent_id: str, method: str, **extra: str
) -> outage.Refusal | None:
    """``_establish``, or the database's refusal (read-only, unreachable) to end the
    session the login replaces: the login is then refused (503), the session left as it
    was, rather than a replaced session's copies left valid. A first login writes nothing
    (the session is a signed cookie): it works while the database refuses writes."""
    return await _refused_by_database(request, _establish(request, agent_id, method, **extra))


@public
async def login_local(request: Request) -> Response:
    console = _console(request)
    if console.accounts is None:
        raise HTTPException(404)
    async with request.form() as form:
        login = str(form.get("identifiant") or "")[:200].strip()
        password = str(form.get("mot_de_passe") or "")[:1024]
        target = safe_next(str(form.get("suivant") or ""))
    ip = client_ip(request)
    agent_id = console.directory.find(login) if login else None
    key = agent_id or login.lower()
    if console.per_ip.blocked(ip) or console.per_account.blocked(key):
        console.audit("login_rate_limited", agent=agent_id or "unknown", ip=ip)
        message = (
            "Trop de tentatives de connexion ont échoué. Pour protéger les comptes, la"
            " connexion est bloquée quelques minutes : réessayez plus tard."
        )
        return _login_page(request, 429, error=message, login=login)
    if not login or not password:
        return _login_page(
            request, 400, error="Saisissez votre identifiant et votre mot de passe.", login=login
        )
    # Counted before the password check, with no await since the check of the limits: a
    # burst of guesses sent at once would otherwise all pass it while argon2 works.
    console.per_ip.hit(ip)
    console.per_account.hit(key)
    if not await run_in_threadpool(console.accounts.verify, agent_id, password):
        console.audit("login_failed", method="local", agent=agent_id or "unknown", ip=ip)
        return _login_page(
            request, 401, error="Identifiant ou mot de passe incorrect.", login=login
        )
    assert agent_id is not None
    console.per_ip.release(ip)  # a success is no failed attempt (agents share the proxy)
    console.per_account.reset(key)
    refused = await _established(request, agent_id, "local")
    if refused is not None:
        return _login_page(request, 503, error=outage.login_refused(refused), login=login)
    console.audit("login", method="local", agent=agent_id, ip=ip)
    return RedirectResponse(target, status_code=303)


@public
async def oidc_start(request: Request) -> Response:
    console = _console(request)
    if console.oidc is None:
        raise HTTPException(404)
    async with request.form() as form:
        request.session["suivant"] = safe_next(str(form.get("suivant") or ""))
    try:
        return await console.oidc.start(request)
    except LoginError as exc:
        return _oidc_failed(request, exc)


def _oidc_failed(request: Request, exc: LoginError) -> Response:
    """A ProConnect login refused, at its start or its return: audited, and a page that
    says so (the reason is the audit's, never the agent's)."""
    _console(request).audit("login_failed", method="oidc", reason=str(exc), ip=client_ip(request))
    message = (
        "La connexion avec ProConnect n'a pas abouti. Revenez à la page de connexion et réessayez."
    )
    return render(
        request,
        "error.html.j2",
        {"status": 400, "title": "Connexion impossible", "message": message},
        status_code=400,
    )


@public
async def oidc_callback(request: Request) -> Response:
    console = _console(request)
    if console.oidc is None:
        raise HTTPException(404)
    ip = client_ip(request)
    try:
        identity = await console.oidc.finish(request)
    except LoginError as exc:
        return _oidc_failed(request, exc)
    target = safe_next(request.session.pop("suivant", None))
    agent_id = console.directory.by_email(identity.email)
    if agent_id is None:
        console.audit("denied", reason="unknown_email", email=identity.email, ip=ip)
        await console.end_session(request)
        request.session.clear()
        request.session["id_token"] = identity.id_token  # to end the ProConnect session
        context = {"email": identity.email, "given_name": identity.given_name or ""}
        return render(request, "unknown_agent.html.j2", context, status_code=403)
    refused = await _established(request, agent_id, "oidc", id_token=identity.id_token)
    if refused is not None:
        return _login_page(request, 503, error=outage.login_refused(refused))
    console.audit("login", method="oidc", agent=agent_id, ip=ip)
    return RedirectResponse(target, status_code=303)


@public
async def logout(request: Request) -> Response:
    console = _console(request)
    id_token = request.session.get("id_token")
    agent_id = request.session.get("agent")
    refused = await _ended(request)  # a copy of the cookie is refused too
    request.session.clear()
    if agent_id:
        console.audit("logout", agent=str(agent_id), ip=client_ip(request))
    if console.oidc is not None and isinstance(id_token, str):
        return await console.oidc.logout(request, id_token)
    if refused is not None:
        return outage.outage_page(request, outage.logout_unrecorded(refused))
    return RedirectResponse(LOGGED_OUT, status_code=303)


async def _ended(request: Request) -> outage.Refusal | None:
    """End the session in the database, or the database's refusal (read-only,
    unreachable): the logout then still ends it in this browser, and says so (a session
    copied elsewhere stays valid until its idle limit)."""
    return await _refused_by_database(request, _console(request).end_session(request))


async def _refused_by_database(
    request: Request, work: Coroutine[Any, Any, object]
) -> outage.Refusal | None:
    """``work`` awaited; the database's refusal (read-only, unreachable) said and returned
    rather than raised: the caller tells the agent (any other error is a bug: raised)."""
    try:
        await work
    except Exception as exc:
        refused = outage.refusal(exc)
        if refused is None:
            raise
        outage.warn(request, refused)
        return refused
    return None


@public
async def logout_returned(request: Request) -> Response:
    console = _console(request)
    if console.oidc is not None:
        await console.oidc.logout_returned(request)
    return RedirectResponse(LOGGED_OUT, status_code=303)


@public
async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


@public
async def accessibility(request: Request) -> Response:
    """The accessibility statement every page's footer links to: public, as the law asks
    of it (loi 2005-102 art. 47, décret 2019-768), even to an agent not logged in."""
    return render(request, "accessibility.html.j2")


ROUTES = [
    Route("/", home, name="home"),
    Route("/connexion", login_form, methods=["GET"], name="login"),
    Route("/connexion", login_local, methods=["POST"], name="login_local"),
    Route("/connexion/proconnect", oidc_start, methods=["POST"], name="oidc_start"),
    Route("/connexion/proconnect/retour", oidc_callback, methods=["GET"], name="oidc_callback"),
    Route("/deconnexion", logout, methods=["POST"], name="logout"),
    Route("/deconnexion/retour", logout_returned, methods=["GET"], name="logout_returned"),
    Route("/healthz", health, methods=["GET"], name="health"),
    Route("/accessibilite", accessibility, methods=["GET"], name="accessibility"),
]
