"""Authorisation at the door of every page: ``require`` wraps an endpoint, ``check`` serves
when the service is only known after loading the resource (a message's service).

A denial is a 403 page and an audit event. ``create_app`` refuses a page route that is
neither ``require``-d nor declared ``public``: no page can forget its check.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mailbot.web.authz import Action
from mailbot.web.identity import Principal

Endpoint = Callable[[Request], Awaitable[Response]]
GUARD = "__mailbot_guard__"
BACKGROUND = "__mailbot_background__"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


def current_agent(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # LoginRequired lets no anonymous request reach a guarded page
        raise HTTPException(401)
    return principal


def check(request: Request, action: Action, service: str | None = None) -> Principal:
    """The logged-in agent, if the policy lets them do ``action`` on ``service``; else 403."""
    principal = current_agent(request)
    if not principal.can(action, service):
        request.app.state.console.audit(
            "denied",
            agent=principal.agent_id,
            action=action.value,
            service=service or "-",
            path=request.url.path,
            ip=client_ip(request),
        )
        raise HTTPException(403)
    return principal


def require(
    action: Action, service: Callable[[Request], str | None] | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: ``service`` extracts the resource's service from the request
    (e.g. ``lambda r: r.path_params["service"]``)."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            check(request, action, service(request) if service else None)
            return await endpoint(request)

        setattr(guarded, GUARD, action)
        return guarded

    return wrap


def public(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint that anyone may reach, logged in or not (login, logout, health)."""
    setattr(endpoint, GUARD, "public")
    return endpoint


def guard_of(endpoint: Any) -> object:
    return getattr(endpoint, GUARD, None)


def background(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint the page calls by itself (a periodic htmx refresh), not the agent:
    its requests are no activity, and do not keep an idle session alive."""
    setattr(endpoint, BACKGROUND, True)
    return endpoint


def is_background(endpoint: Any) -> bool:
    return bool(getattr(endpoint, BACKGROUND, False))
