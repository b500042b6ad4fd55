"""The console's ASGI application: settings from rules.yaml, the middleware stack, the
login/logout routes and the home page. Pages added later pass their routes to
``create_app(settings, pages=[...])`` and use ``require``/``render`` (see README).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mailbot.app import sessions
from mailbot.app.context import App
from mailbot.config import Config, WebConfig, is_loopback
from mailbot.errors import ConfigError
from mailbot.mail.originals import Originals
from mailbot.web import desk, routes
from mailbot.web.access import guard_of, is_background
from mailbot.web.accounts import AccountsFile
from mailbot.web.audit import AuditSink, log_event
from mailbot.web.backend import backend
from mailbot.web.identity import AgentDirectory, Principal
from mailbot.web.oidc import OidcLogin
from mailbot.web.pages import HOME, STATIC, NavItem, environment, error_page
from mailbot.web.security import (
    LAST_SEEN,
    SESSION_ID,
    Csrf,
    ErrorPages,
    LoginRequired,
    RateLimiter,
    SecurityHeaders,
    content_security_policy,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "mailbot_session"
# Over https the cookie's name carries the __Host- prefix: browsers then accept it only
# Secure, from this very host, for path "/" and without a Domain, so a site elsewhere under
# the same domain (another-service.gouv.fr) cannot plant its own session on the console
# (login CSRF, session fixation by a cookie set for the parent domain).
HOST_PREFIX = "__Host-"
LOGIN_PATH = "/connexion"
MAX_SESSION_SECONDS = 12 * 3600
STATIC_PATHS = re.compile(r"^/static/")


@dataclass(frozen=True)
class Settings:
    """Everything the console needs, resolved from rules.yaml (paths, secrets)."""

    config: Config
    agents_path: Path
    accounts_path: Path | None  # None: local accounts disabled
    session_secret: str
    audit: AuditSink = log_event
    site: dict[str, str] = field(default_factory=dict)
    # The use cases' collaborators (store, renderer, outbox): built from ``config`` on
    # first use unless given (tests, the demo); ``originals`` finds a citizen's mail again
    # (IMAP by default; the demo's Maildir).
    backend: App | None = None
    originals: Originals | None = None

    def __post_init__(self) -> None:
        # The header's texts (frozen: set once, here); the prefecture's name is rules.yaml's.
        defaults = {
            "prefecture": self.config.prefecture.name,
            "service": "mailbot — courriels des usagers",
            "tagline": "Traitement des courriels des usagers",
        }
        object.__setattr__(self, "site", defaults | self.site)

    @property
    def web(self) -> WebConfig:
        return self.config.web


def settings_from_config(
    config: Config, config_path: Path, audit: AuditSink = log_event
) -> Settings:
    """Resolve the web section: files beside rules.yaml, the session secret (env or file;
    a random one, valid until restart, only for plain http on loopback)."""
    web = config.web
    oidc_on = web.oidc is not None and web.oidc.enabled
    if not oidc_on and not web.local_accounts.enabled:
        raise ConfigError(
            str(config_path),
            "web",
            "no login method: configure web.oidc or enable web.local_accounts",
        )
    secret = web.session_secret()
    if secret is None:
        host = web.base_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if web.secure_cookies or not is_loopback(host):
            raise ConfigError(
                str(config_path),
                "web.session_secret_env",
                "a session secret is required (session_secret_env or session_secret_file)",
            )
        secret = secrets.token_urlsafe(32)
        log.info("web session secret generated for this run (loopback only)")
    elif len(secret) < 32:
        raise ConfigError(
            str(config_path),
            "web.session_secret_env",
            "the session secret is too short (at least 32 characters)",
        )
    for warning in web.warnings():  # a proxy not trusted: every agent one client
        log.warning(warning)
    accounts = web.local_accounts.file if web.local_accounts.enabled else None
    return Settings(
        config=config,
        agents_path=config.agents,
        accounts_path=accounts,
        session_secret=secret,
        audit=audit,
    )


@dataclass
class Console:
    """Shared state of the running console, at ``request.app.state.console``."""

    settings: Settings
    env: ImmutableSandboxedEnvironment
    directory: AgentDirectory
    accounts: AccountsFile | None
    oidc: OidcLogin | None
    per_account: RateLimiter
    per_ip: RateLimiter
    audit: AuditSink
    service_names: dict[str, str]
    category_names: dict[str, str]  # every category known, to its label (else its key)
    nav: list[NavItem]

    @property
    def site(self) -> dict[str, str]:
        return self.settings.site

    async def principal(self, request: Request) -> Principal | None:
        """The session's agent, unless the session is older than MAX_SESSION_SECONDS (a
        cap whatever the activity, like ProConnect's 12-hour session) or idle for longer
        than web.session_max_age_minutes (the agent's last request: ``LAST_SEEN``, else
        the login), the agent left, or the session was ended (logout): the database says
        so, whichever process served the logout. A session without an id (none can be
        ended) is no login."""
        session = request.session
        agent_id = session.get("agent")
        method = session.get("method", "local")
        since = str(session.get("since", "0"))
        seen = str(session.get(LAST_SEEN, since))
        session_id = session.get(SESSION_ID)
        if not isinstance(agent_id, str) or not isinstance(session_id, str):
            return None
        now = time.time()
        idle = self.settings.web.session_max_age_minutes * 60
        if not since.isdigit() or now - int(since) > MAX_SESSION_SECONDS:
            return None
        if not seen.isdigit() or now - int(seen) > idle:
            return None
        found = self.directory.principal(agent_id, str(method))
        if found is None or await run_in_threadpool(_ended, request, session_id):
            return None
        return found

    async def end_session(self, request: Request) -> None:
        """Refuse the request's session from now on, in every process, wherever its
        cookie was copied (logout, or a new login replacing it); kept until it would
        have expired anyway (12 hours after its login)."""
        session_id = request.session.get(SESSION_ID)
        if not isinstance(session_id, str):
            return
        since = str(request.session.get("since", ""))
        start = int(since) if since.isdigit() else int(time.time())
        expires = datetime.fromtimestamp(start + MAX_SESSION_SECONDS, UTC)
        await run_in_threadpool(_end, request, session_id, expires)


def _ended(request: Request, session_id: str) -> bool:
    return sessions.ended(backend(request).store, session_id)


def _end(request: Request, session_id: str, expires: datetime) -> None:
    sessions.end(backend(request).store, session_id, expires)


def create_app(
    settings: Settings,
    pages: Sequence[BaseRoute] = (),
    templates: Path | None = None,
    nav: Sequence[NavItem] = (),
) -> Starlette:
    """The console. ``pages`` are extra routes (queue, message...), each guarded by
    ``require`` or marked ``public``; ``templates`` an extra template folder, searched before
    the console's own; ``nav`` the main menu's links after "Accueil"."""
    web = settings.web
    base = web.base_url
    oidc = None
    if web.oidc is not None and web.oidc.enabled:
        oidc = OidcLogin(
            web.oidc, f"{base}/connexion/proconnect/retour", f"{base}/deconnexion/retour"
        )
    window = web.login_rate_limit.window_minutes * 60
    console = Console(
        settings=settings,
        env=environment(templates),
        directory=AgentDirectory(settings.agents_path, settings.config),
        accounts=AccountsFile(settings.accounts_path) if settings.accounts_path else None,
        oidc=oidc,
        per_account=RateLimiter(web.login_rate_limit.per_account, window),
        per_ip=RateLimiter(web.login_rate_limit.per_ip, window),
        audit=settings.audit,
        service_names={key: s.name for key, s in settings.config.services.items()},
        category_names=_category_names(settings.config),
        nav=[HOME, *nav],
    )
    console.directory.agents()  # a broken agents.yaml stops the start, with its location
    own = [*desk.ROUTES, *routes.ROUTES]  # desk first: its queue is the home page
    app = Starlette(
        routes=[
            *own,
            *pages,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=_middleware(settings, console, [*own, *pages]),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.console = console
    return app


def _middleware(settings: Settings, console: Console, pages: list[BaseRoute]) -> list[Middleware]:
    """The stack, outermost first: headers, error pages, session, CSRF, the login wall
    (which knows the public pages, and the page's own background requests that are no
    activity of the agent's)."""
    web = settings.web
    background = [r.path_regex for r in pages if isinstance(r, Route) and is_background(r.endpoint)]
    csp = content_security_policy([console.oidc.origin] if console.oidc else [])
    return [
        Middleware(SecurityHeaders, csp=csp, hsts=web.secure_cookies),
        Middleware(ErrorPages),
        Middleware(
            SessionMiddleware,
            secret_key=settings.session_secret,
            session_cookie=session_cookie_name(web),
            max_age=web.session_max_age_minutes * 60,
            same_site="lax",
            https_only=web.secure_cookies,
        ),
        Middleware(Csrf, audit=settings.audit),
        Middleware(
            LoginRequired,
            lookup=console.principal,
            public=_public_paths(pages),
            login_path=LOGIN_PATH,
            background=background,
        ),
    ]


def session_cookie_name(web: WebConfig) -> str:
    """The session cookie's name: ``__Host-mailbot_session`` over https (the prefix needs
    the Secure flag, which plain http on loopback cannot set), ``mailbot_session`` else."""
    return HOST_PREFIX + SESSION_COOKIE if web.secure_cookies else SESSION_COOKIE


def _category_names(config: Config) -> dict[str, str]:
    """Each category as agents read it: its label in rules.yaml (``routing.category_names``),
    else its key; none without routing."""
    routing = config.routing
    if routing is None:
        return {}
    return {key: routing.category_names.get(key, key) for key in routing.categories}


def _public_paths(pages: Sequence[BaseRoute]) -> list[re.Pattern[str]]:
    """The paths anyone may reach; a page route with no access check stops the start."""
    public = [STATIC_PATHS]
    for route in pages:
        if not isinstance(route, Route):
            continue
        guard = guard_of(route.endpoint)
        if guard is None:
            raise TypeError(
                f"route {route.path} has no access check: decorate it with require(...) or public"
            )
        if guard == "public":
            public.append(route.path_regex)
    return public


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_page(request, exc.status_code, headers=exc.headers)


__all__ = ["Console", "Route", "Settings", "create_app", "settings_from_config"]
