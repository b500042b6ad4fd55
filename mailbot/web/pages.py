"""Rendering the console's pages: the project's own sandboxed, autoescaped Jinja2 environment.

Pages are templates under mailbot/web/templates extending ``base.html.j2`` (DSFR layout in
French). ``render`` adds what every page needs (the agent, the CSRF token, static URLs);
``is_htmx`` tells an htmx request, for which a page returns only its fragment.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailbot.core.language import RIGHT_TO_LEFT
from mailbot.mail.forward import size_fr
from mailbot.render.cache import open_cache
from mailbot.web.authz import Action

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
CSRF_KEY = "csrf"


@dataclass(frozen=True)
class NavItem:
    """A link of the main menu, shown to agents allowed ``action`` (on some service)."""

    label: str
    path: str
    action: Action


HOME = NavItem("Accueil", "/", Action.VIEW_HOME)


def environment(extra: Path | None = None) -> ImmutableSandboxedEnvironment:
    """The console's templates, plus ``extra`` (searched first) for pages added later.

    Their compiled form is kept in mailbot's cache directory, as the renderer's is
    (``render.cache``): a console started again loads each page instead of compiling it
    (the message page: ~0.1 s of its first display). Jinja checks every entry against its
    template's source, so an edited page is compiled afresh; no usable cache directory
    means compiling, as before."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(TEMPLATES)]
    if extra is not None:
        loaders.insert(0, jinja2.FileSystemLoader(extra))
    cache = open_cache()
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Its own entries: the same file compiles differently under other settings.
        bytecode_cache=cache.bytecode("console-pages") if cache is not None else None,
    )
    env.filters["citizen_text"] = citizen_text
    # A file's size as a French reader writes it (« 740 ko », « 31,5 Mo »), as everywhere.
    env.filters["ko"] = size_fr
    return env


def citizen_text(language: str | None) -> Markup:
    """The lang and dir attributes of the citizen's own text (subject, body): a screen
    reader reads an Arabic mail with an Arabic voice, and it runs right to left (RGAA 8.7).
    Empty when the language was not told: the page's French is then the best guess. Also
    the templates' ``citizen_text`` filter (the queue's subjects)."""
    if not language:
        return Markup("")
    direction = "rtl" if language in RIGHT_TO_LEFT else "ltr"
    return Markup(' lang="{}" dir="{}"').format(language, direction)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (forms and htmx send it back)."""
    token = request.session.get(CSRF_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = token
    return token


def is_htmx(request: Request) -> bool:
    """An htmx request that wants a fragment (not a boosted full-page navigation)."""
    return request.headers.get("hx-request") == "true" and "hx-boosted" not in request.headers


def static_url(request: Request, path: str) -> str:
    return f"{request.scope.get('root_path', '')}/static/{path}"


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    env: ImmutableSandboxedEnvironment = request.app.state.console.env
    console = request.app.state.console
    principal = getattr(request.state, "principal", None)
    known = list(console.service_names)
    values: dict[str, Any] = {
        "agent": principal,
        "nav": [
            item
            for item in console.nav
            if principal is not None
            and (principal.can(item.action) or principal.services_for(item.action, known))
        ],
        "csrf_token": csrf_token(request) if "session" in request.scope else "",
        "static": lambda path: static_url(request, path),
        "service_names": console.service_names,
        "category_names": console.category_names,
        "site": console.site,
        "path": request.url.path,
    }
    values.update(context or {})
    html = env.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=headers)


ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "Demande incorrecte",
        "La demande n'a pas pu être traitée. Revenez à la page précédente et réessayez.",
    ),
    403: (
        "Accès refusé",
        "Vous n'avez pas les droits nécessaires pour accéder à cette page ou faire cette"
        " action. Si vous pensez que c'est une erreur, contactez l'administrateur de mailbot.",
    ),
    404: (
        "Page non trouvée",
        "La page que vous cherchez est introuvable. Vérifiez l'adresse ou revenez à l'accueil.",
    ),
    405: ("Méthode non autorisée", "Cette page ne peut pas être utilisée de cette façon."),
    413: ("Demande trop volumineuse", "Les données envoyées dépassent la taille autorisée."),
    429: (
        "Trop de tentatives",
        "Trop de tentatives de connexion ont échoué. Patientez quelques minutes avant de"
        " réessayer.",
    ),
    500: (
        "Erreur inattendue",
        "Une erreur s'est produite de notre côté. Réessayez dans un instant ; si le problème"
        " persiste, contactez l'administrateur de mailbot.",
    ),
}


def error_page(
    request: Request,
    status: int,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The French error page for ``status`` (unknown statuses read as 400 or 500)."""
    fallback = 500 if status >= 500 else 400
    title, text = ERRORS.get(status, ERRORS[fallback])
    context = {"status": status, "title": title, "message": message or text}
    return render(request, "error.html.j2", context, status_code=status, headers=headers)
