"""Fixtures for the web console: Chromium (Debian's, through Playwright), a page that
may only reach loopback, and the axe-core runner. Nothing downloads a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deskworld import Desk, ReadWorld, copied_world, read_world
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from servers import DovecotServer, SmtpServer
from webtools import CHROMIUM, CHROMIUM_ARGS, SETUP_HINT, run_axe


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it lives, and a later test of the same xdist worker that sends mail in-process
# (asyncio.run) would then fail. Closed at the end of each browser module, it never outlives it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: {SETUP_HINT}", pytrace=False)
    chromium = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    yield chromium
    chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile (no cookies) that can reach 127.0.0.1 only, in French."""
    ctx = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    ctx.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("http://127.0.0.1:", "data:"))
            else route.abort()
        ),
    )
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that records Content-Security-Policy refusals and script errors."""
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.problems = problems  # type: ignore[attr-defined]
    yield tab


@pytest.fixture
def axe() -> Any:
    """axe(page) -> the page's accessibility violations (axe-core, WCAG 2.1 A/AA)."""
    return run_axe


@pytest.fixture(scope="session")
def read_desk(tmp_path_factory: pytest.TempPathFactory, dovecot: DovecotServer) -> ReadWorld:
    """The desk's world as the real pipeline read it, once per test process (it was once
    per module: seven files, ~2.5 s each, in each xdist worker that ran one of their
    tests): the tests only get copies of it (``desk``), never this one. Its mailboxes
    outlive a Dovecot restart (restart tests), as any user's do."""
    if not dovecot.running:  # a previous test stopped it (restart tests)
        dovecot.start()
    return read_world(tmp_path_factory.mktemp("desk"), dovecot)


@pytest.fixture
def desk(
    tmp_path: Path, dovecot: DovecotServer, read_desk: ReadWorld, smtp_server: SmtpServer
) -> Iterator[Desk]:
    """The desk's world: mail read from Dovecot by the pipeline, replies to aiosmtpd; a
    copy of the module's (database and mailboxes), the test's own to change."""
    if not dovecot.running:
        dovecot.start()
    desk = copied_world(read_desk, tmp_path, dovecot, smtp_server)
    yield desk
    desk.app.close()
