"""The console as served: the pages of every module, assembled in one place.

Each page module exports ``ROUTES`` (and ``NAV``, its menu links); adding a module to the
console is one line in each list below.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from mailbot.app.context import App
from mailbot.web import admin_pages, indicators_pages
from mailbot.web.app import Settings, create_app
from mailbot.web.backend import attach
from mailbot.web.pages import NavItem

PAGES: list[BaseRoute] = [
    *indicators_pages.ROUTES,
    *admin_pages.ROUTES,
]
NAV: list[NavItem] = [
    *indicators_pages.NAV,
    *admin_pages.NAV,
]


def console_app(settings: Settings, app: App | None = None) -> Starlette:
    """The console with every page; ``app`` the application layer to use (the demo's, the
    worker's), else one built from ``settings.config`` on first use."""
    web_app = create_app(settings, pages=PAGES, nav=NAV)
    if app is not None:
        attach(web_app, app)
    return web_app
