"""The application layer behind the console: one ``App`` (store, renderer, pipeline, outbox)
per running console, built from the console's configuration on first use, or handed in by
``mailbot demo --web`` (the demo's database and file transport) and ``mailbot run`` (the
worker's own)."""

from __future__ import annotations

import threading
from datetime import date, datetime

from starlette.applications import Starlette
from starlette.requests import Request

from mailbot.app.context import App, app_from_config
from mailbot.core.workdays import WorkingCalendar

_lock = threading.Lock()


def attach(web_app: Starlette, app: App) -> None:
    """Give the console this App instead of building one from its configuration."""
    web_app.state.mailbot_app = app


def mailbot_app(request: Request) -> App:
    state = request.app.state
    with _lock:
        app: App | None = getattr(state, "mailbot_app", None)
        if app is None:
            app = app_from_config(state.console.settings.config)
            state.mailbot_app = app
    return app


def today(app: App) -> date:
    """The prefecture's date now (the app's clock, in rules.yaml's timezone)."""
    zone = WorkingCalendar(timezone=app.config.timezone).zone
    now: datetime = app.clock()
    return now.astimezone(zone).date()
