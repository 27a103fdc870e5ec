"""JWT verification for every function that serves users: RS256 only, key chosen by `kid` from the
auth function's JWKS, issuer, audience, expiry and token use checked. Istio checks the same in the
cluster; this is the defence in depth, and the only check in the local stack."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

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
        kid = key_id(token)
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


def key_id(token: str) -> str:
    """The `kid` of an RS256 token that names no key of its own; Unauthorized for anything else."""
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
    return kid


def principal_from(claims: dict[str, Any]) -> Principal:
    roles = claims.get("roles") or []
    customer = claims.get("customer_id")
    return Principal(
        user_id=str(claims["sub"]),
        customer_id=str(customer) if customer is not None else None,
        roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
    )


class JwksKeys:
    """The auth function's public keys by `kid`, parsed once per fetch and kept `cache_seconds`: a
    new key is usable at once (an unknown kid refetches, at most once per cool-down), a retired key
    stops verifying when the cache expires. Fetched off the event loop."""

    RETRY_FAILED_SECONDS = 1.0  # after a failed fetch, requests fail fast (503) this long

    def __init__(self, url: str, cache_seconds: float = 300.0, *,
                 fetch: Callable[[str], Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.cooldown = min(30.0, cache_seconds)
        self._fetch = fetch or _fetch_json
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")  # the last successful fetch
        self._tried_at = float("-inf")  # the last attempt
        self._failure: Exception | None = None
        self._lock = asyncio.Lock()

    def get(self, kid: str) -> Any | None:
        if self._clock() - self._fetched_at > self.cache_seconds:
            raise KeyServiceUnavailable(str(self._failure or "the signing keys are not loaded"))
        return self._keys.get(kid)

    async def ready_for(self, kid: str) -> None:
        """Fetch the keys when they are stale, or when `kid` is unknown and the cool-down is over."""
        def due() -> bool:
            now = self._clock()
            if now - self._fetched_at > self.cache_seconds:  # stale: fetch, unless it just failed
                return self._failure is None or now - self._tried_at > self.RETRY_FAILED_SECONDS
            return kid not in self._keys and now - self._tried_at > self.cooldown

        if due():
            async with self._lock:  # one fetch for all the requests that need it
                if due():
                    await self._refresh()

    async def _refresh(self) -> None:
        self._tried_at = self._clock()
        try:
            document = await asyncio.to_thread(self._fetch, self.url)
            keys = {jwk.key_id: jwk.key for jwk in jwt.PyJWKSet.from_dict(document).keys
                    if jwk.key_id and jwk.public_key_use in (None, "sig")}
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            self._failure = exc
            return
        self._keys, self._fetched_at, self._failure = keys, self._clock(), None


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


@functools.cache
def _keys() -> JwksKeys:
    config = settings()
    return JwksKeys(config.jwks_url, config.jwks_cache_seconds)


@functools.cache
def _verifier() -> TokenVerifier:
    config = settings()
    return TokenVerifier(config.jwt_issuer, config.jwt_audience, _keys().get)


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a Bearer token is required")
    return token.strip()


async def authenticate(request: Request) -> Principal:
    token = bearer_token(request)
    await _keys().ready_for(key_id(token))
    return principal_from(_verifier().verify(token))


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only an admin may do this")


def require_customer_access(principal: Principal, customer_id: str) -> None:
    if not principal.is_admin and principal.customer_id != customer_id:
        raise Forbidden("this belongs to another customer")
