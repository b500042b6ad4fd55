"""OpenID Connect login with ProConnect (authorization code flow), through Authlib.

What ProConnect asks of a service provider, all done here: ``state`` and ``nonce`` of 43
random characters (≥ 32 required), PKCE (S256), the ID token's signature, issuer, audience
and nonce checked by Authlib; the **userinfo response is a signed JWT** (``application/jwt``),
verified here against the provider's JWKS (issuer, audience, same ``sub`` as the ID token);
logout through ``end_session_endpoint`` with ``id_token_hint`` and
``post_logout_redirect_uri``. Authlib keeps the flow's state in the session cookie.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.starlette_client import OAuth, OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import Response

from mailbot.config import OidcConfig
from mailbot.errors import MailbotError

log = logging.getLogger(__name__)

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class LoginError(MailbotError):
    """The identity provider's answer could not be trusted or understood."""


@dataclass(frozen=True)
class Identity:
    """What the provider vouches for, after every check."""

    subject: str
    email: str
    given_name: str | None
    usual_name: str | None
    id_token: str
    acr: str | None


class OidcLogin:
    def __init__(self, config: OidcConfig, redirect_uri: str, post_logout_uri: str) -> None:
        self.config = config
        self.redirect_uri = redirect_uri
        self.post_logout_uri = post_logout_uri
        client_kwargs: dict[str, Any] = {
            "scope": " ".join(config.scopes),
            "token_endpoint_auth_method": config.token_endpoint_auth_method,
        }
        if config.pkce:
            client_kwargs["code_challenge_method"] = "S256"
        oauth = OAuth()
        self.client: Any = oauth.register(
            name="oidc",
            client_id=config.client_id,
            client_secret=config.client_secret(),
            server_metadata_url=config.metadata_url,
            client_kwargs=client_kwargs,
        )

    @property
    def origin(self) -> str:
        """The provider's origin: login and logout forms redirect there (CSP form-action)."""
        parts = urlsplit(self.config.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    async def metadata(self) -> dict[str, Any]:
        """The provider's configuration document, once its issuer is checked: it must be
        the configured one (OpenID Connect Discovery 1.0 §4.3; a trailing "/" aside). A
        document naming another issuer (a wrong discovery URL, a host answering for
        another) also names the keys every ID token would be checked with."""
        try:
            metadata: dict[str, Any] = dict(await self.client.load_server_metadata())
        except (AuthlibBaseError, httpx2.HTTPError, ValueError) as exc:  # down, not JSON
            raise LoginError(f"discovery document unreadable: {type(exc).__name__}") from None
        named = metadata.get("issuer")
        if not isinstance(named, str) or named.rstrip("/") != self.config.issuer.rstrip("/"):
            raise LoginError(
                f"the discovery document names the issuer {named!r},"
                f" not the configured {self.config.issuer!r}"
            )
        return metadata

    async def start(self, request: Request) -> Response:
        """Redirect to the provider's authorization endpoint (its issuer checked first)."""
        await self.metadata()
        extra: dict[str, str] = {}
        if self.config.acr_values:
            extra["acr_values"] = self.config.acr_values
        response: Response = await self.client.authorize_redirect(
            request,
            self.redirect_uri,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            **extra,
        )
        return response

    async def finish(self, request: Request) -> Identity:
        """The callback: exchange the code, check the ID token, read the signed userinfo."""
        await self.metadata()
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            raise LoginError(f"authorization failed: {exc.error}") from None
        except (AuthlibBaseError, JoseError) as exc:
            # The ID token's signature, issuer, audience, nonce or dates refused: a forged
            # or replayed token is a failed login (refused, audited), not a server error.
            raise LoginError(f"ID token rejected: {type(exc).__name__}") from None
        claims = token.get("userinfo")
        if not claims or "id_token" not in token:
            raise LoginError("no ID token in the token response")
        acr = claims.get("acr")
        if self.config.acr_values and acr not in self.config.acr_values.split():
            raise LoginError(f"authentication level {acr!r} is not the one requested")
        info = await self.userinfo(token, claims["sub"])
        email = info.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise LoginError("the provider sent no e-mail address")
        return Identity(
            subject=str(claims["sub"]),
            email=email.strip().lower(),
            given_name=info.get("given_name"),
            usual_name=info.get("usual_name") or info.get("family_name"),
            id_token=token["id_token"],
            acr=acr,
        )

    async def userinfo(self, token: dict[str, Any], subject: str) -> dict[str, Any]:
        """The userinfo endpoint's answer, which must be a JWT signed with a key of the
        provider's JWKS, issued by it, for us, about the ID token's subject."""
        metadata = await self.metadata()
        response = await self.client.get(metadata["userinfo_endpoint"], token=token)
        if response.status_code != 200:
            raise LoginError(f"userinfo answered {response.status_code}")
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/jwt":
            raise LoginError(f"userinfo is {kind or 'untyped'}, not a signed JWT")
        supported = metadata.get("userinfo_signing_alg_values_supported") or ["RS256", "ES256"]
        algorithms = [a for a in supported if a in ASYMMETRIC]
        try:
            decoded = await self._decode(response.text.strip(), algorithms, refresh=False)
        except LoginError:
            decoded = await self._decode(response.text.strip(), algorithms, refresh=True)
        claims: dict[str, Any] = decoded
        registry = jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": self.config.client_id},
            sub={"essential": True, "value": subject},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise LoginError(f"userinfo claims rejected: {exc.error}") from None
        return claims

    async def _decode(self, text: str, algorithms: list[str], refresh: bool) -> dict[str, Any]:
        keys = KeySet.import_key_set(await self.client.fetch_jwk_set(force=refresh))
        try:
            token = jwt.decode(text, keys, algorithms=algorithms)
        except (JoseError, ValueError) as exc:
            raise LoginError(f"userinfo signature rejected: {type(exc).__name__}") from None
        return dict(token.claims)

    async def logout(self, request: Request, id_token: str | None) -> Response:
        """Redirect to the provider's end_session_endpoint (RP-initiated logout)."""
        response: Response = await self.client.logout_redirect(
            request,
            post_logout_redirect_uri=self.post_logout_uri,
            id_token_hint=id_token,
            state=secrets.token_urlsafe(32),
        )
        return response

    async def logout_returned(self, request: Request) -> bool:
        try:
            await self.client.validate_logout_response(request)
        except OAuthError:
            return False
        return True
