"""The console over real HTTP (uvicorn on loopback, httpx2): login wall, local login, CSRF,
security headers, cookie flags, rate limit, authorisation, error pages, logout."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import httpx2 as httpx
import pytest
import yaml
from joserfc.errors import BadSignatureError, InvalidClaimError
from rulesfile import dump_rules, load_rules
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from webtools import (
    HOST,
    PAGE_TIMEOUT,
    PASSWORD,
    ROOT,
    base_config,
    csrf_from,
    http_client,
    local_login,
    running_console,
)

from mailbot.cli import main
from mailbot.config import LocalAccountsConfig, LoginRateLimitConfig, OidcConfig, WebConfig
from mailbot.errors import ConfigError
from mailbot.logs import LogfmtFormatter
from mailbot.web.access import check, public, require
from mailbot.web.accounts import AccountsFile
from mailbot.web.app import create_app, settings_from_config
from mailbot.web.authz import Action
from mailbot.web.security import RateLimiter, safe_next
from mailbot.web.server import BackgroundServer, bind

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def session_cookie(response: object, name: str = "mailbot_session") -> str:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    found = [h for h in headers if h.startswith(f"{name}=")]
    assert found, headers
    return str(found[-1])


# --------------------------------------------------------------------------- login wall


def test_every_page_needs_a_login(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        home = client.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/connexion"
        deep = client.get("/file/permis?page=2")
        assert deep.status_code == 303
        assert deep.headers["location"] == "/connexion?suivant=%2Ffile%2Fpermis%3Fpage%3D2"
        htmx = client.get("/file/permis", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/connexion")
        login = client.get("/connexion")
        assert login.status_code == 200
        assert '<html lang="fr"' in login.text and "Connexion à la console mailbot" in login.text
        assert client.get("/static/js/console.js").status_code == 200
        assert client.get("/healthz").text == "ok"


def test_local_login_shows_the_agent_and_starts_a_new_session(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        page = client.get("/connexion")
        before = session_cookie(page)
        old_token = csrf_from(page.text)
        response = client.post(
            "/connexion",
            data={"identifiant": "LMoreau", "mot_de_passe": PASSWORD, "csrf_token": old_token},
        )
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert session_cookie(response) != before
        home = client.get("/")
        assert home.status_code == 200
        assert "Bonjour Léa Moreau" in home.text
        assert re.search(r'id="role">Chef de service<', home.text)
        assert "Direction des migrations" in home.text and "accueil général" in home.text
        assert "Se déconnecter" in home.text
        assert csrf_from(home.text) != old_token  # a fresh token with the new session
        assert console.events("login") == [
            {"method": "local", "agent": "lmoreau", "ip": "127.0.0.1"}
        ]


def test_an_administrators_home_says_what_the_role_is_for_and_links_its_pages(
    tmp_path: Path,
) -> None:
    """An administrator has no queue: their home page said « La file des courriels arrive
    bientôt », a queue that exists and will never be theirs. It says their role reads no
    citizen's mail, and links their pages (the menu's)."""
    with running_console(tmp_path, site=True) as console, console.client() as client:
        local_login(client, "tbernard")
        home = client.get("/")
        assert home.status_code == 200 and "Bonjour Thomas Bernard" in home.text
        assert "arrive bientôt" not in home.text and "sera remplacée" not in home.text
        callout = home.text.split('id="vos-pages"', 1)[1].split("</div>", 1)[0]
        assert "ne donne pas accès aux courriels des usagers" in callout
        assert 'href="/admin/quarantaine">Quarantaine<' in callout
        assert 'href="/admin/modeles">Modèles<' in callout


def test_the_templates_check_page_says_the_translations_gaps_in_french(tmp_path: Path) -> None:
    """`mailbot templates check` warns of a translation that does not name a re-orientation
    target, or names one rules.yaml does not have; the console's page of the same check
    said nothing of it. It says it, in French, without counting it a failure."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    for name, old, new in (
        ("uk.yaml", '  justice: "суди"\n', ""),
        ("tr.yaml", "targets:\n", 'targets:\n  jstice: "mahkemeler"\n'),
    ):
        path = root / "i18n" / name
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    database = f"sqlite:///{tmp_path / 'console.db'}"
    config = base_config().model_copy(update={"database": database, "templates": root})
    with running_console(tmp_path, site=True, config=config) as console, console.client() as c:
        local_login(c, "tbernard")
        page = c.get("/admin/modeles").text
    assert "modèles sont corrects." in page  # warnings, not failures
    gaps = page.split('id="traductions"', 1)[1]
    assert (
        "<code>uk.yaml</code> (uk) : aucun nom dans cette langue pour justice ; le nom"
        " français seul est affiché." in gaps
    )
    assert (
        "<code>tr.yaml</code> (tr) : jstice : n’est pas un organisme de réorientation de"
        " rules.yaml (routing.reorientation), jamais affiché." in gaps
    )


def test_login_by_email_and_wrong_password(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        wrong = local_login(client, "lmoreau", "not-the-password")
        assert wrong.status_code == 401
        assert "Identifiant ou mot de passe incorrect." in wrong.text
        assert client.get("/").status_code == 303
        unknown = local_login(client, "nobody", PASSWORD)
        assert unknown.status_code == 401
        assert "Identifiant ou mot de passe incorrect." in unknown.text
        good = local_login(client, "lea.moreau@seine-maritime.gouv.fr")
        assert good.status_code == 303
        failed = console.events("login_failed")
        assert [f["agent"] for f in failed] == ["lmoreau", "unknown"]
        assert all("password" not in str(f).lower() for f in failed)


def test_after_login_the_agent_goes_where_they_were_going(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        token = csrf_from(client.get("/connexion?suivant=/healthz").text)
        response = client.post(
            "/connexion",
            data={
                "identifiant": "cdurand",
                "mot_de_passe": PASSWORD,
                "csrf_token": token,
                "suivant": "/healthz",
            },
        )
        assert response.headers["location"] == "/healthz"


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil", "", None],
)
def test_next_is_never_another_site(target: str | None) -> None:
    assert safe_next(target) == "/"


def test_safe_next_keeps_local_paths() -> None:
    assert safe_next("/file/permis?page=2") == "/file/permis?page=2"


# --------------------------------------------------------------------------- CSRF


def test_state_changing_requests_need_the_csrf_token(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        form = {"identifiant": "cdurand", "mot_de_passe": PASSWORD}
        assert client.post("/connexion", data=form).status_code == 403
        client.get("/connexion")
        refused = client.post("/connexion", data=form | {"csrf_token": "x" * 43})
        assert refused.status_code == 403 and "Accès refusé" in refused.text
        assert client.get("/").status_code == 303  # not logged in
        assert local_login(client, "cdurand").status_code == 303
        token = csrf_from(client.get("/").text)
        for method in ("PUT", "DELETE", "PATCH"):
            assert client.request(method, "/deconnexion").status_code == 403
        # htmx sends the token in a header (static/js/console.js), not in the form
        out = client.post("/deconnexion", headers={"X-CSRF-Token": token})
        assert out.status_code == 303 and out.headers["location"] == "/connexion?deconnecte=1"
        assert client.get("/").status_code == 303
        denied = console.events("denied")
        assert len(denied) == 5 and {d["reason"] for d in denied} == {"csrf"}


@pytest.mark.parametrize(
    "kind",
    ["multipart-1001-fields", "urlencoded-1001-fields", "multipart-without-boundary"],
)
def test_a_form_too_many_fields_or_malformed_is_a_400_not_an_error(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Any visitor can post such a form (the login page's): the CSRF check reads it before
    any page, and the parser's refusal must be the 400 it is in a page, not the 500 page
    and an ERROR line ("web request failed") each time, which anyone could fill the log
    and its alerts with."""
    with running_console(tmp_path) as console, console.client() as client:
        token = csrf_from(client.get("/connexion").text)
        fields = {f"champ{i}": "x" for i in range(1001)}
        if kind == "multipart-1001-fields":
            sent = {"files": {k: (None, v) for k, v in (fields | {"csrf_token": token}).items()}}
        elif kind == "urlencoded-1001-fields":
            sent = {"data": fields | {"csrf_token": token}}
        else:
            sent = {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}
        with caplog.at_level("ERROR", logger="mailbot"):
            response = client.post("/connexion", **sent)  # type: ignore[arg-type]
        assert response.status_code == 400, response.status_code
        assert "Demande incorrecte" in response.text
        assert not [r for r in caplog.records if r.getMessage() == "web request failed"]


def test_a_token_from_another_session_is_refused(tmp_path: Path) -> None:
    with running_console(tmp_path) as console:
        with console.client() as other:
            stolen = csrf_from(other.get("/connexion").text)
        with console.client() as client:
            client.get("/connexion")
            response = client.post(
                "/connexion",
                data={"identifiant": "cdurand", "mot_de_passe": PASSWORD, "csrf_token": stolen},
            )
            assert response.status_code == 403


# --------------------------------------------------------------------------- headers, cookies


def test_security_headers_on_pages_errors_and_static_files(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        responses = {
            "login": client.get("/connexion"),
            "static": client.get("/static/vendor/dsfr/dsfr.min.css"),
            "csrf 403": client.post("/connexion"),
            "redirect": client.get("/"),
        }
        local_login(client, "cdurand")
        responses["404"] = client.get("/nulle-part")
        responses["home"] = client.get("/")
        for name, response in responses.items():
            headers = response.headers
            assert headers["content-security-policy"] == CSP, name
            assert headers["x-content-type-options"] == "nosniff", name
            assert headers["referrer-policy"] == "same-origin", name
            assert headers["x-frame-options"] == "DENY", name
            assert "strict-transport-security" not in headers, name  # plain http on loopback
        assert responses["home"].headers["cache-control"] == "no-store"
        assert "no-store" not in responses["static"].headers.get("cache-control", "")


def test_pages_have_no_inline_script_or_style(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        pages = [client.get("/connexion").text]
        local_login(client, "tbernard")
        pages += [client.get("/").text, client.get("/nulle-part").text]
        for html in pages:
            assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html)
            assert "<style" not in html and " style=" not in html
            assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


def test_session_cookie_on_loopback_http(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        cookie = session_cookie(local_login(client, "cdurand")).lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        assert "secure" not in cookie.replace("samesite", "")
        assert "max-age=28800" in cookie


def test_session_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    """public_url https (a reverse proxy in front): Secure cookie and HSTS."""
    AccountsFile(tmp_path / "accounts.yaml").set_password("cdurand", PASSWORD)
    (tmp_path / "secret").write_text("s" * 40, encoding="utf-8")
    web = WebConfig(
        public_url="https://mailbot.seine-maritime.gouv.fr",
        session_secret_file=tmp_path / "secret",
        local_accounts=LocalAccountsConfig(enabled=True, file=tmp_path / "accounts.yaml"),
    )
    config = base_config().model_copy(update={"web": web, "agents": ROOT / "agents.yaml"})
    app = create_app(settings_from_config(config, tmp_path / "rules.yaml"))
    with TestClient(app, base_url="https://mailbot.seine-maritime.gouv.fr") as client:
        page = client.get("/connexion")
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        token = csrf_from(page.text)
        response = client.post(
            "/connexion",
            data={"identifiant": "cdurand", "mot_de_passe": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        # The __Host- prefix: a browser takes this cookie only from this very host, Secure,
        # for every path and with no Domain, so a sibling site of the same domain
        # (another-service.gouv.fr) cannot plant its own session cookie on the console.
        cookie = session_cookie(response, "__Host-mailbot_session").lower()
        assert "; secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert "path=/;" in cookie and "domain=" not in cookie
        assert client.get("/").status_code == 200  # the session read back under its name


def test_web_config_refuses_unsafe_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain http on a non-loopback host"):
        WebConfig(public_url="http://mailbot.seine-maritime.gouv.fr")
    web = WebConfig(
        host="0.0.0.0",
        public_url="https://mailbot.seine-maritime.gouv.fr",
        local_accounts=LocalAccountsConfig(enabled=True),
    )
    config = base_config().model_copy(update={"web": web})
    with pytest.raises(ConfigError, match="a session secret is required"):
        settings_from_config(config, tmp_path / "rules.yaml")
    (tmp_path / "short").write_text("short", encoding="utf-8")
    short = web.model_copy(update={"session_secret_file": tmp_path / "short"})
    with pytest.raises(ConfigError, match="too short"):
        settings_from_config(config.model_copy(update={"web": short}), tmp_path / "rules.yaml")
    with pytest.raises(ConfigError, match="no login method"):
        settings_from_config(base_config(), tmp_path / "rules.yaml")


@pytest.mark.parametrize(
    ("issuer", "discovery"),
    [
        ("http://auth.agentconnect.gouv.fr/api/v2", None),
        ("https://auth.agentconnect.gouv.fr/api/v2", "http://auth.agentconnect.gouv.fr/.wk"),
        ("http://127.0.0.1@evil.example/api", None),  # loopback only in the user info
    ],
)
def test_the_identity_provider_is_reached_over_https(issuer: str, discovery: str | None) -> None:
    """Over plain http the client secret and the codes cross the network readable, and
    whoever answers the discovery document names the keys every ID token is checked with."""
    with pytest.raises(ValueError, match="must be an https URL"):
        OidcConfig(
            issuer=issuer, discovery_url=discovery, client_id="x", client_secret_env="X_SECRET"
        )


def test_a_loopback_test_provider_may_use_plain_http() -> None:
    for issuer in ("http://127.0.0.1:3999", "http://localhost:3999/x", "http://[::1]:3999"):
        assert OidcConfig(issuer=issuer, client_id="x", client_secret_env="X").issuer == issuer


class _RefusingProvider:
    """The Authlib client's callback step, refusing the ID token as Authlib does."""

    def __init__(self, error: Exception, issuer: str) -> None:
        self.error = error
        self.issuer = issuer

    async def load_server_metadata(self) -> dict[str, str]:
        return {"issuer": self.issuer}  # the configured one: the callback goes on

    async def authorize_access_token(self, request: Request) -> dict[str, str]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [BadSignatureError(), InvalidClaimError("iss"), InvalidClaimError("nonce")],
    ids=["signature", "issuer", "nonce"],
)
def test_a_refused_id_token_is_a_failed_login_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """A forged or replayed ID token (signature, issuer, nonce refused by Authlib) is the
    login refused and audited like any other, not an unexpected error (a 500 that no
    ``login_failed`` event records)."""
    monkeypatch.setenv("MAILBOT_TEST_OIDC_SECRET", "x" * 32)
    oidc = OidcConfig(
        issuer="http://127.0.0.1:9",
        client_id="mailbot",
        client_secret_env="MAILBOT_TEST_OIDC_SECRET",
    )
    with running_console(tmp_path, oidc=oidc) as console, console.client() as client:
        console.app.state.console.oidc.client = _RefusingProvider(error, oidc.issuer)
        response = client.get("/connexion/proconnect/retour?code=forged&state=forged")
        assert response.status_code == 400
        assert "Connexion impossible" in response.text
        assert client.get("/").status_code == 303  # not logged in
        assert console.events("login_failed") == [
            {
                "method": "oidc",
                "reason": f"ID token rejected: {type(error).__name__}",
                "ip": "127.0.0.1",
            }
        ]


def test_a_discovery_document_naming_another_issuer_is_a_failed_login(tmp_path: Path) -> None:
    """OpenID Connect Discovery 1.0 §4.3: the issuer a provider's configuration document
    names must be the one the client was configured for. A document naming another one (a
    wrong discovery URL, a proxy answering for someone else) names its own keys, and every
    ID token would be checked against them: the login is refused before anything is sent
    to that provider, and audited. A real node-oidc-provider serves the document."""
    from webtools import oidc_provider

    sock = bind(HOST, 0)
    with oidc_provider(sock.getsockname()[1], {}) as provider:
        oidc = provider.config().model_copy(
            update={
                "issuer": provider.issuer + "/autre",
                "discovery_url": provider.issuer + "/.well-known/openid-configuration",
            }
        )
        with (
            running_console(tmp_path, local=False, oidc=oidc, sock=sock) as console,
            console.client() as client,
        ):
            token = csrf_from(client.get("/connexion").text)
            response = client.post(
                "/connexion/proconnect", data={"csrf_token": token}, follow_redirects=False
            )
            assert response.status_code == 400, response.headers.get("location")
            assert "Connexion impossible" in response.text
            (failed,) = console.events("login_failed")
            assert failed["method"] == "oidc" and "issuer" in failed["reason"]
            assert provider.issuer + "/autre" in failed["reason"]


def test_rules_yaml_web_section_is_validated(tmp_path: Path) -> None:
    data = load_rules()
    data["web"] = {"port": 8443, "sesion_secret_env": "X"}
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    from mailbot.config import load_config

    with pytest.raises(ConfigError, match=r"web\.sesion_secret_env: unknown key"):
        load_config(path)


# --------------------------------------------------------------------------- rate limit


def test_login_attempts_are_rate_limited_per_account(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        for _ in range(5):
            assert local_login(client, "cdurand", "wrong-password").status_code == 401
        blocked = local_login(client, "cdurand")  # even the right password, for now
        assert blocked.status_code == 429
        assert "Trop de tentatives de connexion ont échoué" in blocked.text
        assert client.get("/").status_code == 303
        assert local_login(client, "lmoreau").status_code == 303  # other accounts are fine
        assert console.events("login_rate_limited") == [{"agent": "cdurand", "ip": "127.0.0.1"}]


def test_login_attempts_are_rate_limited_per_address(tmp_path: Path) -> None:
    limit = LoginRateLimitConfig(per_account=5, per_ip=3)
    with running_console(tmp_path, rate_limit=limit) as console, console.client() as client:
        for agent in ("cdurand", "lmoreau", "ngarnier"):
            assert local_login(client, agent, "wrong-password").status_code == 401
        assert local_login(client, "tbernard").status_code == 429


def test_concurrent_login_attempts_cannot_outrun_the_limit(tmp_path: Path) -> None:
    """Attempts sent at once are counted before their (slow) password checks: a burst of
    guesses gets no more tries than the same guesses one after the other."""
    attempts = 16
    with running_console(tmp_path) as console, console.client() as client:
        token = csrf_from(client.get("/connexion").text)
        form = {"identifiant": "cdurand", "mot_de_passe": "wrong-password", "csrf_token": token}

        def guess(_: int) -> int:
            with console.client() as other:
                other.cookies.update(client.cookies)
                return other.post("/connexion", data=form).status_code

        with ThreadPoolExecutor(max_workers=attempts) as pool:
            statuses = list(pool.map(guess, range(attempts)))
        assert statuses.count(401) == 5, statuses  # per_account: 5 checked, the rest 429
        assert statuses.count(429) == attempts - 5, statuses


def test_successful_logins_do_not_count_against_the_address(tmp_path: Path) -> None:
    limit = LoginRateLimitConfig(per_account=5, per_ip=2)
    with running_console(tmp_path, rate_limit=limit) as console:
        for agent in ("cdurand", "lmoreau", "ngarnier", "tbernard"):
            with console.client() as client:  # colleagues behind the prefecture's proxy
                assert local_login(client, agent).status_code == 303
        with console.client() as client:
            assert local_login(client, "cdurand", "wrong-password").status_code == 401


def test_rate_limiter_window_slides() -> None:
    now = [1000.0]
    limiter = RateLimiter(limit=2, window_seconds=900, clock=lambda: now[0])
    limiter.hit("a")
    now[0] += 600
    limiter.hit("a")
    assert limiter.blocked("a") and not limiter.blocked("b")
    now[0] += 301  # the first failure is now older than 15 minutes
    assert not limiter.blocked("a")
    limiter.hit("a")
    assert limiter.blocked("a")
    limiter.reset("a")
    assert not limiter.blocked("a")


# --------------------------------------------------------------------------- authorisation


@require(Action.VIEW_QUEUE, service=lambda request: request.path_params["service"])
async def queue_page(request: Request) -> Response:
    return PlainTextResponse(f"file {request.path_params['service']}")


@require(Action.VIEW_HOME)
async def message_page(request: Request) -> Response:
    service = request.query_params["service"]  # known only once the message is loaded
    check(request, Action.REPLY, service)
    return PlainTextResponse("message")


@require(Action.CHECK_TEMPLATES)
async def broken_page(request: Request) -> Response:
    raise RuntimeError("Objet : titre de séjour de Madame X")  # must not reach the log


TEST_PAGES = [
    Route("/test/file/{service}", queue_page),
    Route("/test/message", message_page),
    Route("/test/panne", broken_page),
]


def test_pages_are_authorised_on_every_request(tmp_path: Path) -> None:
    with running_console(tmp_path, pages=TEST_PAGES) as console, console.client() as client:
        local_login(client, "cdurand")  # agent, cartes-grises
        assert client.get("/test/file/cartes-grises").text == "file cartes-grises"
        denied = client.get("/test/file/etrangers")
        assert denied.status_code == 403 and "Accès refusé" in denied.text
        assert client.get("/test/message?service=cartes-grises").status_code == 200
        assert client.get("/test/message?service=permis").status_code == 403
        assert client.get("/test/panne").status_code == 403
        assert console.events("denied") == [
            {
                "agent": "cdurand",
                "action": action,
                "service": service,
                "path": path,
                "ip": "127.0.0.1",
            }
            for action, service, path in [
                ("view_queue", "etrangers", "/test/file/etrangers"),
                ("reply", "permis", "/test/message"),
                ("check_templates", "-", "/test/panne"),
            ]
        ]


def test_quality_mission_reads_every_service_but_does_not_reply(tmp_path: Path) -> None:
    with running_console(tmp_path, pages=TEST_PAGES) as console, console.client() as client:
        local_login(client, "ngarnier")
        for service in ("etrangers", "permis", "general"):
            assert client.get(f"/test/file/{service}").status_code == 200
        assert client.get("/test/message?service=permis").status_code == 403


def test_an_agent_removed_from_agents_yaml_is_logged_out(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        local_login(client, "cdurand")
        assert client.get("/").status_code == 200
        agents_file = console.settings.agents_path
        data = yaml.safe_load(agents_file.read_text(encoding="utf-8"))
        del data["agents"]["cdurand"]
        agents_file.write_text(dump_rules(data), encoding="utf-8")
        assert client.get("/").status_code == 303
        assert local_login(client, "cdurand").status_code == 401


def test_a_route_without_access_check_is_refused_at_start(tmp_path: Path) -> None:
    async def naked(request: Request) -> Response:
        return PlainTextResponse("no check")

    with (
        pytest.raises(TypeError, match="/naked has no access check"),
        running_console(tmp_path, pages=[Route("/naked", naked)]),
    ):
        pass
    opened = [Route("/open", public(naked))]
    with running_console(tmp_path, pages=opened) as console, console.client() as client:
        assert client.get("/open").text == "no check"


# --------------------------------------------------------------------------- errors, logout


def test_error_pages_are_french_and_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running_console(tmp_path, pages=TEST_PAGES) as console, console.client() as client:
        local_login(client, "tbernard")  # admin: may check templates
        missing = client.get("/nulle-part")
        assert missing.status_code == 404 and "Page non trouvée" in missing.text
        wrong_method = client.delete("/", headers={"X-CSRF-Token": csrf_from(client.get("/").text)})
        assert wrong_method.status_code == 405 and "Méthode non autorisée" in wrong_method.text
        with caplog.at_level("INFO", logger="mailbot"):
            failed = client.get("/test/panne")
        assert failed.status_code == 500 and "Erreur inattendue" in failed.text
        assert failed.headers["content-security-policy"] == CSP
        lines = "\n".join(LogfmtFormatter().format(r) for r in caplog.records)
        assert "exception=RuntimeError" in lines and "titre de séjour" not in lines


def test_logout_ends_the_session(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        local_login(client, "cdurand")
        token = csrf_from(client.get("/").text)
        out = client.post("/deconnexion", data={"csrf_token": token})
        assert out.headers["location"] == "/connexion?deconnecte=1"
        assert "Vous êtes déconnecté(e)." in client.get("/connexion?deconnecte=1").text
        assert client.get("/").status_code == 303
        assert console.events("logout") == [{"agent": "cdurand", "ip": "127.0.0.1"}]


def test_a_cookie_copied_before_logout_is_refused_after_it(tmp_path: Path) -> None:
    """Logout ends the session server-side: a copy of its cookie taken before (another
    browser, a stolen cookie) is no login afterwards, on every process serving the console
    (a second app on the same database here); a session not logged out keeps working."""
    with running_console(tmp_path) as console, console.client() as client:
        second = BackgroundServer(
            create_app(console.settings), console.settings.web, bind(HOST, 0)
        ).start()
        try:
            local_login(client, "cdurand")
            copied = client.cookies["mailbot_session"]
            with console.client() as colleague:
                local_login(colleague, "lmoreau")
                with (
                    copy_of(console.url, copied) as here,
                    copy_of(f"http://{HOST}:{second.port}", copied) as there,
                ):
                    assert here.get("/").status_code == there.get("/").status_code == 200
                    token = csrf_from(client.get("/").text)
                    client.post("/deconnexion", data={"csrf_token": token})
                    refused = here.get("/")
                    assert refused.status_code == 303, refused.text
                    assert refused.headers["location"] == "/connexion"
                    assert here.get("/", headers={"HX-Request": "true"}).status_code == 401
                    assert there.get("/").status_code == 303
                assert colleague.get("/").status_code == 200
        finally:
            second.stop()


def test_a_new_login_ends_the_session_it_replaces(tmp_path: Path) -> None:
    with running_console(tmp_path) as console, console.client() as client:
        local_login(client, "cdurand")
        copied = client.cookies["mailbot_session"]
        token = csrf_from(client.get("/").text)
        form = {"identifiant": "lmoreau", "mot_de_passe": PASSWORD, "csrf_token": token}
        assert client.post("/connexion", data=form).status_code == 303
        assert client.get("/").status_code == 200  # the new session
        with copy_of(console.url, copied) as old:
            assert old.get("/").status_code == 303


@contextlib.contextmanager
def copy_of(url: str, cookie: str) -> Iterator[httpx.Client]:
    """A client of ``url`` holding a copy of a session cookie."""
    with http_client(base_url=url, follow_redirects=False, timeout=PAGE_TIMEOUT) as client:
        client.cookies.set("mailbot_session", cookie)
        yield client


# --------------------------------------------------------------------------- passwd command


def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = ""
) -> tuple[int, str]:
    """mailbot's CLI in this process (its imports are slow to repeat); (exit code, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--config", str(tmp_path / "rules.yaml"), *args])
    return code, err.getvalue()


def test_passwd_command_writes_an_argon2_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_rules()
    data["agents"] = str(ROOT / "agents.yaml")
    data["templates"] = str(ROOT / "templates")
    data["web"] = {"local_accounts": {"enabled": True, "file": "secrets/accounts.yaml"}}
    (tmp_path / "rules.yaml").write_text(dump_rules(data), "utf-8")
    passwd = ("web", "passwd", "cdurand", "--password-stdin")
    code, err = run_cli(tmp_path, monkeypatch, *passwd, stdin=PASSWORD + "\n")
    assert code == 0, err
    accounts = tmp_path / "secrets" / "accounts.yaml"
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
    text = accounts.read_text(encoding="utf-8")
    assert "cdurand: $argon2id$" in text and PASSWORD not in text
    store = AccountsFile(accounts)
    # at full cost (the other tests' accounts are hashed cheaply: tests/web/webtools.py)
    strength = argon2.extract_parameters(store.hashes()["cdurand"])
    floor = argon2.profiles.RFC_9106_LOW_MEMORY
    assert strength.memory_cost >= floor.memory_cost and strength.time_cost >= floor.time_cost
    assert store.verify("cdurand", PASSWORD) and not store.verify("cdurand", "x" * 12)
    code, err = run_cli(tmp_path, monkeypatch, *passwd, stdin="short\n")
    assert code == 2 and "at least 12 characters" in err
    unknown = ("web", "passwd", "jpetit", "--password-stdin")
    code, err = run_cli(tmp_path, monkeypatch, *unknown, stdin=PASSWORD)
    assert code == 2 and "agents.jpetit: no such agent" in err
    assert store.verify("cdurand", PASSWORD)  # untouched by the refusals


def test_web_host_option_cannot_open_a_plain_http_console_to_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mailbot web --host 0.0.0.0`` on a ``public_url: http://localhost:8080``: refused,
    as the same host in rules.yaml is, before anything listens; ``--host 127.0.0.1`` serves."""
    served: list[str] = []
    monkeypatch.setattr(
        "mailbot.web.server.serve", lambda app, web, sock=None: served.append(web.host)
    )
    data = load_rules()
    data["agents"] = str(ROOT / "agents.yaml")
    data["templates"] = str(ROOT / "templates")
    data["database"] = f"sqlite:///{tmp_path / 'web.db'}"
    data["web"] = {
        "public_url": "http://localhost:8080",
        "local_accounts": {"enabled": True, "file": "accounts.yaml"},
    }
    (tmp_path / "rules.yaml").write_text(dump_rules(data), "utf-8")
    code, err = run_cli(tmp_path, monkeypatch, "web", "--host", "0.0.0.0")
    assert code == 2 and served == []
    assert "--host/--port: web: host '0.0.0.0' is not loopback" in err
    assert "public_url 'http://localhost:8080' is plain http" in err
    code, err = run_cli(tmp_path, monkeypatch, "web", "--host", "127.0.0.1")
    assert code == 0 and served == ["127.0.0.1"], err


def test_demo_accounts_file_holds_the_documented_accounts() -> None:
    from mailbot.web.demo import DEMO_ACCOUNTS, DEMO_PASSWORD

    store = AccountsFile(DEMO_ACCOUNTS)
    assert set(store.hashes()) == {"cdurand", "lmoreau", "ngarnier", "tbernard"}
    assert all(store.verify(agent, DEMO_PASSWORD) for agent in store.hashes())


def signed_session(secret: str, signed_ago: float, **ages: float) -> str:
    """A session cookie of cdurand as the console signs it, ``signed_ago`` seconds ago (the
    signature's own date, which the session's lifetime is checked against too); ``ages``:
    how long ago it logged in (``since``) and was last used (``seen``)."""
    from base64 import b64encode
    from json import dumps
    from time import time

    from itsdangerous import TimestampSigner

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time() - signed_ago)

    data = {"agent": "cdurand", "method": "local", "sid": "a-session", "csrf": "c" * 43}
    data |= {key: str(int(time() - age)) for key, age in ages.items()}
    return Signer(secret).sign(b64encode(dumps(data).encode())).decode()


def test_a_session_ends_after_twelve_hours_whatever_the_activity(tmp_path: Path) -> None:
    """A session cookie signed with the right key but older than 12 hours is not a login,
    however recently the agent used it."""
    with running_console(tmp_path) as console:
        secret = console.settings.session_secret
        for age, status in ((11 * 3600, 200), (12 * 3600 + 60, 303)):
            with console.client() as client:
                client.cookies.set(
                    "mailbot_session", signed_session(secret, 60, since=age, seen=60)
                )
                assert client.get("/").status_code == status, age


def test_an_agent_at_work_keeps_the_session_past_the_idle_limit_from_the_login(
    tmp_path: Path,
) -> None:
    """web.session_max_age_minutes (8 h) is how long a session lasts *without a request*
    (README): each request of the agent renews it, so an agent at work since 7 h 50 is not
    logged out ten minutes later in the middle of an answer. The renewed cookie is signed
    now and says when the agent was last seen."""
    from itsdangerous import TimestampSigner

    with running_console(tmp_path) as console, console.client() as client:
        secret = console.settings.session_secret
        worked = 7 * 3600 + 50 * 60
        client.cookies.set("mailbot_session", signed_session(secret, worked, since=worked))
        response = client.get("/")
        assert response.status_code == 200
        renewed = session_cookie(response).split(";")[0].split("=", 1)[1]
        TimestampSigner(secret).unsign(renewed, max_age=120)  # signed just now
        assert client.get("/").status_code == 200


def test_a_session_idle_too_long_is_no_login(tmp_path: Path) -> None:
    """A session the agent has not used for session_max_age_minutes is over, even though
    its cookie was signed again since (the console's own background requests do not count
    as the agent's activity)."""
    with running_console(tmp_path) as console, console.client() as client:
        secret = console.settings.session_secret
        idle = 8 * 3600 + 60
        client.cookies.set("mailbot_session", signed_session(secret, 30, since=idle, seen=idle))
        assert client.get("/").status_code == 303


def test_the_message_pages_presence_poll_does_not_keep_a_session_alive(tmp_path: Path) -> None:
    """The message page asks every 45 s who else has it open (htmx): a page left open on
    an empty desk is no activity, or the session would never be idle."""
    with running_console(tmp_path) as console, console.client() as client:
        secret = console.settings.session_secret
        worked = 7 * 3600 + 50 * 60
        client.cookies.set("mailbot_session", signed_session(secret, worked, since=worked))
        polled = client.get("/courriel/999999/presence", headers={"HX-Request": "true"})
        assert polled.status_code == 404  # past the login wall: the agent is logged in
        assert not [h for h in polled.headers.get_list("set-cookie") if "mailbot_session" in h]
