"""Screenshots of the web console's pages in headless Chromium, to look at the layout.

    python scripts/web_screenshots.py [OUTDIR]

Runs the demo (`mailbot demo`, into a temporary directory), starts the console on its data
with the demo accounts (mailbot/demo_data/accounts.yaml) on a free loopback port, logs in
through the local form with Playwright driving Debian's Chromium, and writes
OUTDIR/login.png, login-mobile.png, login-error.png, home.png, home-mobile.png,
not-found.png and login-proconnect.png (ProConnect configured beside local accounts; the
provider is never contacted), then one PNG per line of PAGES (a console page as one demo
agent sees it: add a page with one line). Nothing is downloaded: the browser is
/usr/bin/chromium.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from mailbot.app.context import App, build_app  # noqa: E402
from mailbot.cli import DEMO_MAILDIR  # noqa: E402
from mailbot.cli import main as mailbot  # noqa: E402
from mailbot.config import OidcConfig, load_config  # noqa: E402
from mailbot.mail.originals import MaildirOriginals  # noqa: E402
from mailbot.web.app import create_app  # noqa: E402
from mailbot.web.demo import DEMO_PASSWORD, demo_settings  # noqa: E402
from mailbot.web.server import BackgroundServer, bind  # noqa: E402
from mailbot.web.site import console_app  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
DEMO_MONTH = "2026-11"  # the demo's mail (mailbot/demo_data) arrives in November 2026
# (file name, demo agent, path): one line per console page
# FIRST: the first message of the agent's queue; "#id" after a path: the window scrolled there
FIRST = "@first"
PAGES = [
    ("queue", "cdurand", "/"),
    ("message", "cdurand", FIRST),
    ("answer-form", "cdurand", FIRST + "#repondre"),
    ("indicators", "ngarnier", f"/indicateurs?service=tous&periode={DEMO_MONTH}"),
    ("indicators-head", "lmoreau", f"/indicateurs?service=general&periode={DEMO_MONTH}"),
    ("quarantine", "tbernard", "/admin/quarantaine"),
    ("templates-check", "tbernard", "/admin/modeles"),
]


def login(page: Page, url: str, agent: str, password: str) -> None:
    page.goto(url + "/connexion")
    page.fill("#identifiant", agent)
    page.fill("#mot_de_passe", password)
    page.click("#bouton-connexion")


def proconnect_login_page(browser: Browser, out: Path) -> None:
    """The login page with both methods, as a site with ProConnect and local accounts."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "secret").write_text("not-used-for-a-screenshot", encoding="utf-8")
        oidc = OidcConfig(
            issuer="https://auth.agentconnect.gouv.fr/api/v2",
            client_id="screenshot",
            client_secret_file=Path(tmp) / "secret",
        )
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        settings = demo_settings(load_config(ROOT / "rules.yaml"), ROOT / "rules.yaml", port)
        web = settings.web.model_copy(update={"oidc": oidc})
        settings = dataclasses.replace(
            settings, config=settings.config.model_copy(update={"web": web})
        )
        server = BackgroundServer(create_app(settings), web, sock).start()
        try:
            context = browser.new_context(locale="fr-FR", viewport=DESKTOP)
            page = context.new_page()
            page.goto(f"{web.base_url}/connexion")
            page.screenshot(path=out / "login-proconnect.png", full_page=True)
            context.close()
        finally:
            server.stop()


def demo_app(work: Path) -> App:
    """`mailbot demo` into ``work`` (its table not shown), and an App on its database."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = mailbot(["--config", str(ROOT / "rules.yaml"), "demo", "--out", str(work)])
    if code != 0:
        raise SystemExit(f"mailbot demo failed ({code})")
    return build_app(work / "rules.yaml")


def pages(browser: Browser, url: str, out: Path) -> None:
    """One screenshot per line of PAGES, each agent logged in once."""
    contexts = {}
    for name, agent, path in PAGES:
        if agent not in contexts:
            contexts[agent] = browser.new_context(locale="fr-FR", viewport=DESKTOP)
            page = contexts[agent].new_page()
            login(page, url, agent, DEMO_PASSWORD)
            page.wait_for_selector("#agent-connecte")
        page = contexts[agent].pages[0]
        path, _, part = path.partition("#")
        if path == FIRST:
            page.goto(url + "/", wait_until="networkidle")
            path = page.locator('a[href^="/courriel/"]').first.get_attribute("href") or "/"
        page.goto(url + path, wait_until="networkidle")  # the chart image too
        if part:  # the window scrolled to that part
            page.locator(f"#{part}").evaluate("element => element.scrollIntoView()")
            page.screenshot(path=out / f"{name}.png")
        else:
            page.screenshot(path=out / f"{name}.png", full_page=True)
    for context in contexts.values():
        context.close()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "web-screenshots"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mailbot-screens-"))
    app = demo_app(work)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = demo_settings(load_config(ROOT / "rules.yaml"), ROOT / "rules.yaml", port)
    maildirs = {name: DEMO_MAILDIR / name for name in app.config.mailboxes}
    settings = dataclasses.replace(settings, originals=MaildirOriginals(maildirs))
    server = BackgroundServer(console_app(settings, app), settings.web, sock).start()
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for name, viewport in (("", DESKTOP), ("-mobile", MOBILE)):
                context = browser.new_context(locale="fr-FR", viewport=viewport)
                page = context.new_page()
                page.goto(url + "/connexion")
                page.screenshot(path=out / f"login{name}.png", full_page=True)
                if not name:
                    login(page, url, "lmoreau", "pas-le-bon-mot-de-passe")
                    page.screenshot(path=out / "login-error.png", full_page=True)
                login(page, url, "lmoreau", DEMO_PASSWORD)
                page.wait_for_selector("#role")
                page.screenshot(path=out / f"home{name}.png", full_page=True)
                if not name:
                    page.goto(url + "/nulle-part")
                    page.screenshot(path=out / "not-found.png", full_page=True)
                context.close()
            proconnect_login_page(browser, out)
            pages(browser, url, out)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for png in sorted(out.glob("*.png")):
        print(png)


if __name__ == "__main__":
    main()
