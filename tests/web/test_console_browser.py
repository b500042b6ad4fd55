"""The console in Debian's headless Chromium: ProConnect-style login end to end against a
real OpenID provider (node-oidc-provider, started here), logout through its
end_session_endpoint, local login, and accessibility (axe-core) of the login and home pages.
The browser may only reach 127.0.0.1 (see conftest)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, expect
from webtools import (
    HOST,
    PASSWORD,
    OidcAccount,
    OidcProvider,
    RunningConsole,
    oidc_provider,
    running_console,
    serious,
)

from mailbot.web.server import bind

LEA = OidcAccount(
    email="lea.moreau@seine-maritime.gouv.fr",
    password="mot-de-passe-op-lea",
    given_name="Léa",
    usual_name="Moreau",
)
STRANGER = OidcAccount(
    email="jean.inconnu@interieur.gouv.fr",
    password="mot-de-passe-op-jean",
    given_name="Jean",
    usual_name="Inconnu",
)


@pytest.fixture(scope="module")
def oidc_console() -> Iterator[tuple[RunningConsole, OidcProvider]]:
    """A console whose only login is the provider (as in production with ProConnect)."""
    sock = bind(HOST, 0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        oidc_provider(sock.getsockname()[1], {"lea": LEA, "jean": STRANGER}) as provider,
        running_console(Path(tmp), local=False, oidc=provider.config(), sock=sock) as console,
    ):
        yield console, provider


def provider_login(page: Page, account: OidcAccount) -> None:
    page.fill("#op-email", account.email)
    page.fill("#op-password", account.password)
    page.click("#op-submit")


def test_proconnect_login_and_logout_in_chromium(
    page: Page, oidc_console: tuple[RunningConsole, OidcProvider]
) -> None:
    console, provider = oidc_console
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    page.goto(console.url + "/")
    expect(page).to_have_url(console.url + "/connexion")
    expect(page.locator("#connexion-locale")).to_have_count(0)  # no local accounts here
    page.click("#bouton-proconnect")
    expect(page).to_have_url(f"{provider.issuer}/interaction/" + page.url.rsplit("/", 1)[-1])

    authorize = next(r for r in seen if r.url.startswith(provider.issuer + "/auth?"))
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize.url).query).items()}
    assert query["response_type"] == "code" and query["client_id"] == "mailbot-console"
    assert query["scope"] == "openid email given_name usual_name"
    assert query["acr_values"] == "eidas1"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == console.url + "/connexion/proconnect/retour"

    provider_login(page, LEA)
    expect(page).to_have_url(console.url + "/")
    expect(page.locator("#profil")).to_contain_text("Bonjour Léa Moreau")
    expect(page.locator("#role")).to_have_text("Chef de service")
    expect(page.locator("#agent-connecte")).to_contain_text("Léa Moreau")
    expect(page.locator("main")).to_contain_text("ProConnect")
    assert console.events("login")[-1] == {"method": "oidc", "agent": "lmoreau", "ip": HOST}

    callback = next(r.url for r in seen if "/connexion/proconnect/retour?" in r.url)
    page.click("text=Se déconnecter")
    expect(page).to_have_url(console.url + "/connexion?deconnecte=1")
    expect(page.locator("main")).to_contain_text("Vous êtes déconnecté(e).")
    end = next(r for r in seen if r.url.startswith(provider.issuer + "/session/end?"))
    params = {k: v[0] for k, v in parse_qs(urlsplit(end.url).query).items()}
    assert params["id_token_hint"].count(".") == 2  # the ID token, a JWS
    assert params["post_logout_redirect_uri"] == console.url + "/deconnexion/retour"
    assert console.events("logout")[-1]["agent"] == "lmoreau"

    # The provider's session ended too: logging in again asks for the password.
    page.goto(console.url + "/")
    page.click("#bouton-proconnect")
    expect(page.locator("#op-password")).to_be_visible()
    # The authorization code and state of the first login cannot be replayed.
    page.goto(callback)
    expect(page.locator("h1")).to_have_text("Connexion impossible")
    assert page.problems == []  # type: ignore[attr-defined]


def test_unknown_email_gets_a_clear_403(
    page: Page, oidc_console: tuple[RunningConsole, OidcProvider]
) -> None:
    console, _ = oidc_console
    page.goto(console.url + "/connexion")
    page.click("#bouton-proconnect")
    provider_login(page, STRANGER)
    expect(page.locator("h1")).to_have_text("Accès non autorisé")
    expect(page.locator("#message-erreur")).to_contain_text("jean.inconnu@interieur.gouv.fr")
    expect(page.locator("#message-erreur")).to_contain_text("n’est associée à aucun agent")
    expect(page.locator("#message-erreur")).to_contain_text("Bonjour Jean")  # from userinfo
    assert page.request.get(console.url + "/", max_redirects=0).status == 303
    denied = console.events("denied")[-1]
    assert denied["reason"] == "unknown_email"
    assert denied["email"] == STRANGER.email
    page.click("text=Se déconnecter de ProConnect")
    expect(page).to_have_url(console.url + "/connexion?deconnecte=1")


def test_local_login_in_chromium_with_accessible_pages(
    page: Page, axe: Any, tmp_path: Path
) -> None:
    with running_console(tmp_path) as console:
        page.goto(console.url + "/")
        expect(page).to_have_url(console.url + "/connexion")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        login_violations = axe(page)
        assert serious(login_violations) == []

        page.fill("#identifiant", "ngarnier")
        page.fill("#mot_de_passe", "wrong-password")
        page.click("#bouton-connexion")
        expect(page.locator("#erreur-connexion")).to_contain_text("incorrect")
        assert serious(axe(page)) == []

        page.fill("#identifiant", "ngarnier")
        page.fill("#mot_de_passe", PASSWORD)
        page.click("#bouton-connexion")
        # The home page is the queue of the agent's services (every one, for quality).
        expect(page.locator("h1")).to_have_text("File des courriels")
        expect(page.locator("#profil")).to_contain_text("Bonjour Nathalie Garnier")
        expect(page.locator("#role")).to_have_text("Mission qualité")
        expect(page.locator("#filtre-service")).to_contain_text("Direction des migrations")
        home_violations = axe(page)
        assert serious(home_violations) == []
        # Skip link, main landmark, header and footer of the DSFR layout.
        expect(page.locator("a[href='#contenu']")).to_have_text("Aller au contenu")
        expect(page.locator("main#contenu")).to_have_count(1)
        expect(page.locator("header.fr-header .fr-logo")).to_contain_text("Seine-Maritime")
        expect(page.locator("footer.fr-footer")).to_have_count(1)
        # DSFR's script ran (it marks the page) and nothing broke the CSP.
        expect(page.locator("html")).to_have_attribute("data-fr-js", "true")
        assert page.evaluate("typeof htmx") == "object"
        assert page.problems == []  # type: ignore[attr-defined]
        print(
            f"axe: login {len(login_violations)} violations, home {len(home_violations)}"
            " (none serious or critical)"
        )


def test_unsigned_userinfo_is_refused(page: Page, tmp_path: Path) -> None:
    """ProConnect signs userinfo; a provider answering plain JSON is not believed."""
    sock = bind(HOST, 0)
    with (
        oidc_provider(sock.getsockname()[1], {"lea": LEA}, unsigned_userinfo=True) as provider,
        running_console(tmp_path, local=False, oidc=provider.config(), sock=sock) as console,
    ):
        page.goto(console.url + "/connexion")
        page.click("#bouton-proconnect")
        provider_login(page, LEA)
        expect(page.locator("h1")).to_have_text("Connexion impossible")
        assert page.request.get(console.url + "/", max_redirects=0).status == 303
        failed = console.events("login_failed")
        assert failed == [
            {
                "method": "oidc",
                "reason": "userinfo is application/json, not a signed JWT",
                "ip": HOST,
            }
        ]
