"""JWT verification for every function that serves users: RS256 only, key chosen by `kid` from the
auth function's JWKS, issuer, audience, expiry and token use checked. Istio checks the same in the
cluster; this is the defence in depth, and the only check in the local stack."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Request

from functions.platform.config import settings
from functions.platform.problems import Forbidden, ServiceUnavailable, Unauthorized

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]
# Header parameters that point at keys chosen by the token's author: never trusted, so refused.
FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c")
LEEWAY_SECONDS = 5

KeyLookup = Callable[[str], Any]  # kid -> public key; None when unknown


@dataclass(frozen=True)
class Principal:
    user_id: str
    customer_id: str | None
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class KeyServiceUnavailable(Exception):
    """The JWKS could not be fetched: not the caller's fault."""


class TokenVerifier:
    def __init__(self, issuer: str, audience: str, key_for: KeyLookup) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key_for = key_for

    def verify(self, token: str, *, token_use: str = "access") -> dict[str, Any]:
        """The token's claims; raises Unauthorized for anything short of a valid token of that use."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("the token is not a well-formed JWT") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"only {ALGORITHM} tokens are accepted")
        if any(name in header for name in FORBIDDEN_HEADERS):
            raise Unauthorized("tokens that name their own key are refused")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token has no key id (kid)")
        try:
            key = self._key_for(kid)
        except KeyServiceUnavailable as exc:
            raise ServiceUnavailable("the signing keys cannot be fetched right now") from exc
        if key is None:
            raise Unauthorized("the token was not signed by a known key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid: {type(exc).__name__}") from exc
        if claims.get("token_use") != token_use:
            raise Unauthorized(f"this is not an {token_use} token")
        return claims


def principal_from(claims: dict[str, Any]) -> Principal:
    roles = claims.get("roles") or []
    customer = claims.get("customer_id")
    return Principal(
        user_id=str(claims["sub"]),
        customer_id=str(customer) if customer is not None else None,
        roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
    )


def jwks_key_lookup(jwks_url: str, cache_seconds: float = 300.0) -> KeyLookup:
    """Keys from the auth function's JWKS, cached for `cache_seconds`; an unknown kid triggers one
    refetch (a new key is usable at once), a retired key stops verifying when the cache expires."""
    # No per-kid cache (it never expires, so a retired key would verify forever): the JWK set is cached.
    client = jwt.PyJWKClient(jwks_url, cache_keys=False, lifespan=cache_seconds, timeout=5,
                             cooldown_duration=min(30.0, cache_seconds))

    def key_for(kid: str) -> Any:
        try:
            return client.get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError as exc:
            raise KeyServiceUnavailable(str(exc)) from exc
        except jwt.PyJWKClientError:
            return None

    return key_for


@functools.cache
def _verifier() -> TokenVerifier:
    config = settings()
    return TokenVerifier(config.jwt_issuer, config.jwt_audience,
                         jwks_key_lookup(config.jwks_url, config.jwks_cache_seconds))


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a Bearer token is required")
    return token.strip()


def authenticate(request: Request) -> Principal:
    return principal_from(_verifier().verify(bearer_token(request)))


def require_customer_access(principal: Principal, customer_id: str) -> None:
    if not principal.is_admin and principal.customer_id != customer_id:
        raise Forbidden("this belongs to another customer")
