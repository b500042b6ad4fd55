"""HTTP-level defences, as ASGI middleware: headers (CSP...), error pages, CSRF, login wall,
and the login rate limiter.

Order in the app (outermost first): SecurityHeaders, ErrorPages, Session (Starlette),
Csrf, LoginRequired, then the routes.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailbot.web import outage
from mailbot.web.pages import CSRF_KEY, error_page

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def content_security_policy(form_targets: Iterable[str] = ()) -> str:
    """No inline script or style anywhere; forms may only lead to us (and the identity
    provider, whose pages a login or logout form redirects to)."""
    form_action = " ".join(["'self'", *form_targets])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            f"form-action {form_action}",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    """Adds the security headers to every response, errors included."""

    def __init__(self, app: ASGIApp, csp: str, hsts: bool) -> None:
        self.app = app
        self.headers = {
            "content-security-policy": csp,
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
            "x-frame-options": "DENY",
            "cross-origin-opener-policy": "same-origin",
            "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
        }
        if hsts:
            self.headers["strict-transport-security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if not static:  # pages carry personal data: never cached
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ErrorPages:
    """An unexpected exception becomes the French 500 page (with the headers above), and a
    log line naming the exception type only: its message could quote a mail. The
    database refusing the work for a while (read-only, unreachable: ``web/outage``) is no
    bug: a 503 page saying so, and a WARNING with its reason."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        body = bytearray()  # what the request sent, for a draft the database refused

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def tracking_receive() -> Message:
            message = await receive()
            room = outage.DRAFT_BODY_LIMIT - len(body)
            if message["type"] == "http.request" and room > 0:
                body.extend(message.get("body", b"")[:room])
            return message

        keeps_draft = scope["method"] not in SAFE_METHODS  # a form's text: a draft to give back
        try:
            await self.app(scope, tracking_receive if keeps_draft else receive, tracking_send)
        except Exception as exc:
            refused = outage.refusal(exc)
            if refused is not None and not started:
                await self._refused(scope, receive, send, refused, bytes(body))
                return
            if refused is not None:  # after the page (a delivery in the background): said
                outage.warn(Request(scope), refused)
                return
            log.error(
                "web request failed",
                extra={"path": scope["path"], "exception": type(exc).__name__},
            )
            if started:
                raise
            await error_page(Request(scope), 500)(scope, receive, send)

    @staticmethod
    async def _refused(
        scope: Scope, receive: Receive, send: Send, refused: outage.Refusal, body: bytes
    ) -> None:
        """The database refused the request (read-only, unreachable): the 503 page, with
        the reply the agent typed to copy, and one WARNING."""
        request = Request(scope)
        safe = request.method in SAFE_METHODS
        outage.warn(request, refused, safe)
        shown = outage.page_text(refused, safe)
        draft = outage.draft_of(request.headers.get("content-type", ""), body)
        await outage.outage_page(request, shown, draft=draft)(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Csrf:
    """Every state-changing request (POST, PUT, PATCH, DELETE...) must carry the session's
    token, in the X-CSRF-Token header (htmx, see static/js/console.js) or the ``csrf_token``
    form field; otherwise 403. The body is read once here and replayed to the route."""

    def __init__(
        self, app: ASGIApp, audit: Callable[..., None], max_body: int = 10_000_000
    ) -> None:
        self.app = app
        self.audit = audit
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, self.max_body)
        request = Request(scope)
        if body is None:
            await error_page(request, 413)(scope, receive, send)
            return
        replay = _replay(body, receive)
        expected = request.session.get(CSRF_KEY)
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
            try:
                supplied = await _form_token(scope, _replay(body, receive))
            except (HTTPException, MultiPartException):  # too many fields, malformed
                await error_page(request, 400)(scope, receive, send)
                return
        if not (
            isinstance(expected, str)
            and supplied
            and hmac.compare_digest(expected.encode(), supplied.encode())
        ):
            self.audit("denied", reason="csrf", path=scope["path"], ip=_client(scope))
            await error_page(request, 403)(scope, receive, send)
            return
        await self.app(scope, replay, send)


async def _form_token(scope: Scope, receive: Receive) -> str | None:
    """The form's ``csrf_token`` field. The parser's refusal (over 1000 fields, a part over
    1 MB, a multipart body without its boundary) is raised here, outside the routes, where
    no exception handler turns it into its 400: the caller does."""
    async with Request(scope, receive).form() as form:
        field = form.get(CSRF_FIELD)
        return field if isinstance(field, str) else None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


# The session's random id (secrets.token_urlsafe at login): what logout ends server-side.
SESSION_ID = "sid"
# When the agent last made a request (epoch seconds, as a string like "since"): the idle
# limit (web.session_max_age_minutes) counts from it. Written at most once a minute, each
# write renewing the cookie (and its signature's date).
LAST_SEEN = "seen"
SEEN_STEP = 60
PrincipalLookup = Callable[[Request], Awaitable[Any]]


class LoginRequired:
    """Every path but the public ones (routes marked ``public``, static files) needs a
    logged-in agent still in agents.yaml, whose session was not ended (logout); the agent
    (a Principal, or None on public paths) is put in ``request.state.principal`` for pages
    and the policy."""

    def __init__(
        self,
        app: ASGIApp,
        lookup: PrincipalLookup,
        public: Iterable[re.Pattern[str]],
        login_path: str,
        background: Iterable[re.Pattern[str]] = (),
    ) -> None:
        self.app = app
        self.lookup = lookup
        self.public = tuple(public)
        self.login_path = login_path
        self.background = tuple(background)  # the page's own refreshes: not the agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = scope["session"]
        principal = await self.lookup(Request(scope)) if session.get("agent") else None
        if principal is None and session.get("agent"):
            session.clear()  # expired, ended, or the agent left agents.yaml
        scope.setdefault("state", {})["principal"] = principal
        path: str = scope["path"]
        if principal is not None and not any(p.match(path) for p in self.background):
            seen_now(session)
        if principal is not None or any(p.match(path) for p in self.public):
            await self.app(scope, receive, send)
            return
        await self._to_login(scope)(scope, receive, send)

    def _to_login(self, scope: Scope) -> Response:
        request = Request(scope)
        target = self.login_path
        if scope["method"] == "GET" and scope["path"] != "/":
            target += "?" + _next_query(request)
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)


def seen_now(session: dict[str, Any]) -> None:
    """The agent is active: their session's idle time starts again. Starlette sends the
    cookie again only when the session changed, so without this its signature's date (which
    its lifetime is checked against) stayed the login's: 8 hours after it, an agent at work
    was logged out, and one away for hours was not."""
    now = int(time.time())
    seen = str(session.get(LAST_SEEN, ""))
    if not seen.isdigit() or now - int(seen) >= SEEN_STEP:
        session[LAST_SEEN] = str(now)


def _next_query(request: Request) -> str:
    from urllib.parse import urlencode

    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return urlencode({"suivant": path})


def safe_next(value: str | None) -> str:
    """Where to go after login: a local path only, never another site (open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class RateLimiter:
    """Failed attempts per key within a sliding window (in memory, per process)."""

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        hits = self._hits[key]
        horizon = self.clock() - self.window
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key)) >= self.limit

    def hit(self, key: str) -> None:
        with self._lock:
            if len(self._hits) > 10_000:  # many addresses or logins: forget the expired
                for old in [k for k in self._hits if not self._recent(k)]:
                    del self._hits[old]
            self._recent(key).append(self.clock())

    def reset(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)

    def release(self, key: str) -> None:
        """Take back one hit: an attempt counted before its outcome was known succeeded."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()
