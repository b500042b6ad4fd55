"""The use cases' collaborators for the console's pages: one ``App`` (store, renderer,
pipeline, outbox) per running console — handed in by ``mailbot demo --web`` and ``mailbot run``
(their own), carried by the settings (tests), or built from rules.yaml on first use — and the
agents as the console reads them (agents.yaml, reloaded)."""

from __future__ import annotations

import threading
from datetime import date
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request

from mailbot.app.context import App, app_from_config
from mailbot.app.requests import AgentLookup
from mailbot.config import Agent
from mailbot.mail.originals import ImapOriginals, Originals

_LOCK = threading.Lock()


def attach(web_app: Starlette, app: App) -> None:
    """Give the console this App instead of building one from its configuration."""
    web_app.state.backend = app


def backend(request: Request) -> App:
    """The console's ``App``: built once, on the first page that needs it."""
    state = request.app.state
    with _LOCK:
        built: App | None = getattr(state, "backend", None)
        if built is None:
            settings = state.console.settings
            built = settings.backend or app_from_config(settings.config)
            state.backend = built
        return built


def originals(request: Request) -> Originals:
    """Where a citizen's mail is read again: IMAP, or the demo's Maildir."""
    settings = request.app.state.console.settings
    found: Originals = settings.originals or ImapOriginals(settings.config)
    return found


def agents(request: Request) -> AgentLookup:
    """agents.yaml as the console reads it (reloaded when it changes)."""
    directory = request.app.state.console.directory

    def lookup(agent_id: str) -> Agent | None:
        found: Agent | None = directory.agents().get(agent_id)
        return found

    return lookup


def today(request: Request) -> date:
    """Today, in the prefecture's time zone, by the backend's clock."""
    app = backend(request)
    return app.clock().astimezone(ZoneInfo(app.config.timezone)).date()
