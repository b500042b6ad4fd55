"""Test harness for the web console: a console on a free loopback port (uvicorn in a
thread), the real OpenID provider (node-oidc-provider, tests/oidc), Chromium through
Playwright, and axe-core (tests/web/node_modules, installed by scripts/setup-tests)."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml
from argon2 import PasswordHasher
from playwright.sync_api import Page

from mailbot.config import (
    Config,
    LocalAccountsConfig,
    LoginRateLimitConfig,
    OidcConfig,
    WebConfig,
    load_config,
)
from mailbot.web.accounts import HEADER
from mailbot.web.app import Settings, create_app, settings_from_config
from mailbot.web.audit import Recorder
from mailbot.web.server import BackgroundServer, bind
from mailbot.web.site import console_app

ROOT = Path(__file__).resolve().parents[2]
# How long a test waits for a page: no test times the console, and a page that renders every
# template (/admin/modeles) took over 10 s while the suite shared two cores at a load of 12.
PAGE_TIMEOUT = 60
HOST = "127.0.0.1"
SETUP_HINT = "run scripts/setup-tests (it installs node, npm packages and Chromium)"
AXE = ROOT / "tests" / "web" / "node_modules" / "axe-core" / "axe.min.js"
OIDC_DIR = ROOT / "tests" / "oidc"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery"  # local accounts in tests
CLIENT_ID = "mailbot-console"


def base_config() -> Config:
    return load_config(ROOT / "rules.yaml")


_HASHED: dict[tuple[str, ...], str] = {}
# Test accounts' hashes are argon2id at its lowest cost: an argon2 hash carries its own
# parameters, and verifying one at the product's (64 MiB, 3 passes, 4 lanes) took 0.27 s
# of CPU per login, ~60 s of the suite's (177 logins). The login code is the product's;
# test_passwd_command_writes_an_argon2_hash checks that the product hashes at full cost.
_TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def accounts_yaml(agents: tuple[str, ...]) -> str:
    """An accounts file giving these agents PASSWORD, as ``mailbot web passwd`` writes it."""
    if agents not in _HASHED:
        hashes = {agent: _TEST_HASHER.hash(PASSWORD) for agent in sorted(agents)}
        _HASHED[agents] = HEADER + yaml.safe_dump({"accounts": hashes}, allow_unicode=True)
    return _HASHED[agents]


@dataclass
class RunningConsole:
    url: str
    settings: Settings
    audit: Recorder
    server: BackgroundServer
    workdir: Path
    app: Any = None

    def events(self, name: str) -> list[dict[str, str]]:
        return [fields for event, fields in self.audit.events if event == name]

    def client(self) -> httpx.Client:
        return http_client(base_url=self.url, follow_redirects=False, timeout=PAGE_TIMEOUT)


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for every client of the process: httpx builds one per client by
    default, loading the CA bundle each time (~40 ms of CPU; 15-20 s over the suite, most
    of it in the loops that wait for a server), though the tests only speak plain HTTP."""
    return ssl.create_default_context()


def http_client(**options: Any) -> httpx.Client:
    """An httpx client sharing the process's TLS context."""
    return httpx.Client(verify=_tls(), **options)


def http_get(url: str, timeout: float) -> httpx.Response:
    with http_client(timeout=timeout) as client:
        return client.get(url)


@contextmanager
def running_console(
    workdir: Path,
    *,
    local: bool = True,
    oidc: OidcConfig | None = None,
    accounts: tuple[str, ...] = ("cdurand", "lmoreau", "ngarnier", "tbernard"),
    rate_limit: LoginRateLimitConfig | None = None,
    agents: Path | None = None,
    pages: list[Any] | None = None,
    sock: Any = None,
    config: Config | None = None,
    site: bool = False,
    mailbot_app: Any = None,
    backend: Any = None,
    originals: Any = None,
) -> Iterator[RunningConsole]:
    """A console serving on a free loopback port until the block ends: ``config`` (else
    rules.yaml with a database of the test's own); with ``site``, every page of the console
    (mailbot.web.site); ``backend`` or ``mailbot_app`` (an App) and ``originals`` serve the
    pages that read the store and the citizens' mail."""
    sock = sock or bind(HOST, 0)
    port = sock.getsockname()[1]
    web = WebConfig(
        host=HOST,
        port=port,
        oidc=oidc,
        local_accounts=LocalAccountsConfig(enabled=local, file=workdir / "accounts.yaml"),
        login_rate_limit=rate_limit or LoginRateLimitConfig(),
    )
    if config is None:  # rules.yaml, with a database of the test's own
        database = f"sqlite:///{workdir / 'console.db'}"
        config = base_config().model_copy(update={"database": database})
    config = config.model_copy(update={"web": web})
    if agents is None:
        agents = workdir / "agents.yaml"
        shutil.copy(ROOT / "agents.yaml", agents)
    config = config.model_copy(update={"agents": agents})
    if local:
        (workdir / "accounts.yaml").write_text(accounts_yaml(accounts), encoding="utf-8")
    audit = Recorder()
    settings = settings_from_config(config, workdir / "rules.yaml", audit=audit)
    settings = dataclasses.replace(settings, backend=backend or mailbot_app, originals=originals)
    app = console_app(settings) if site else create_app(settings, pages=pages or [])
    server = BackgroundServer(app, web, sock).start()
    try:
        yield RunningConsole(f"http://{HOST}:{port}", settings, audit, server, workdir, app)
    finally:
        server.stop()


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "no CSRF meta tag in the page"
    return found.group(1)


def local_login(client: httpx.Client, login: str, password: str = PASSWORD) -> httpx.Response:
    token = csrf_from(client.get("/connexion").text)
    return client.post(
        "/connexion",
        data={"identifiant": login, "mot_de_passe": password, "csrf_token": token},
    )


def browser_login(page: Page, url: str, agent: str) -> None:
    """Log ``agent`` in through the console's own login form over HTTP (its CSRF token, its
    password check, its session) and give the session's cookie to the page's browser.
    Chromium renders the two pages of a login at ~1.5-2.5 s of its CPU on CI's machine: the
    tests about logging in (test_console_browser.py, the refused login's focus) drive the
    form in the browser; the others start logged in, as an agent's browser does."""
    with http_client(base_url=url, follow_redirects=False, timeout=PAGE_TIMEOUT) as client:
        response = local_login(client, agent)
        assert response.status_code == 303, f"login of {agent}: {response.status_code}"
        cookies = [(cookie.name, cookie.value) for cookie in client.cookies.jar]
    assert cookies, f"login of {agent}: no session cookie"
    page.context.add_cookies(
        [{"name": name, "value": value, "url": url} for name, value in cookies]
    )


# --------------------------------------------------------------------------- the provider


@dataclass
class OidcAccount:
    email: str
    password: str
    given_name: str
    usual_name: str
    sub: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass
class OidcProvider:
    issuer: str
    client_secret_file: Path
    process: subprocess.Popen[str]
    accounts: dict[str, OidcAccount]

    def config(self, acr_values: str | None = "eidas1") -> OidcConfig:
        return OidcConfig(
            issuer=self.issuer,
            client_id=CLIENT_ID,
            client_secret_file=self.client_secret_file,
            acr_values=acr_values,
        )


def node_ready() -> None:
    if shutil.which("node") is None:
        raise RuntimeError(f"node is not installed: {SETUP_HINT}")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"tests/oidc/node_modules is missing: {SETUP_HINT}")


@contextmanager
def oidc_provider(
    console_port: int, accounts: dict[str, OidcAccount], unsigned_userinfo: bool = False
) -> Iterator[OidcProvider]:
    """node-oidc-provider on a free loopback port, its client registered for the console
    that will listen on ``console_port``."""
    node_ready()
    work = Path(tempfile.mkdtemp(prefix="mailbot-oidc-"))
    sock = bind(HOST, 0)
    port = sock.getsockname()[1]
    sock.close()
    issuer = f"http://{HOST}:{port}"
    secret = secrets.token_urlsafe(32)
    console = f"http://{HOST}:{console_port}"
    settings = {
        "issuer": issuer,
        "port": port,
        "client": {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "redirect_uris": [f"{console}/connexion/proconnect/retour"],
            "post_logout_redirect_uris": [f"{console}/deconnexion/retour"],
        },
        "accounts": {
            key: {
                "password": a.password,
                "sub": a.sub,
                "email": a.email,
                "given_name": a.given_name,
                "usual_name": a.usual_name,
            }
            for key, a in accounts.items()
        },
        "unsigned_userinfo": unsigned_userinfo,
    }
    (work / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    (work / "client_secret").write_text(secret, encoding="utf-8")
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs"), str(work / "settings.json")],
        cwd=OIDC_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("ready"):
            process.kill()
            _, err = process.communicate(timeout=5)
            raise RuntimeError(f"the OpenID provider did not start: {err[-2000:]}")
        _wait_http(f"{issuer}/.well-known/openid-configuration")
        yield OidcProvider(issuer, work / "client_secret", process, accounts)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def _wait_http(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.05)


# --------------------------------------------------------------------------- axe-core


def run_axe(page: Page) -> list[dict[str, Any]]:
    """Inject axe-core into the page and return its violations (WCAG 2.x A/AA rules)."""
    if not AXE.is_file():
        raise RuntimeError(f"axe-core is missing ({AXE}): {SETUP_HINT}")
    # Evaluated through the DevTools protocol: the page's CSP (no inline script) stays on.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        """async () => await axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',
                                            'best-practice']},
            resultTypes: ['violations'],
        })"""
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def serious(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
