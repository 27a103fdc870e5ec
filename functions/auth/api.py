"""auth-api (functions-framework target `auth_api`): register, login, refresh, JWKS."""

from __future__ import annotations

from typing import Annotated, Any

from functions_framework import aio
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from functions.auth import keys, service, throttle
from functions.auth.passwords import hash_password
from functions.platform.config import settings
from functions.platform.database import database
from functions.platform.events import publish_after_commit
from functions.platform.problems import TooManyRequests, Unauthorized, json_api, json_body, json_response
from functions.platform.routing import Router
from saga.transaction import Database, Tx


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    password: Annotated[str, Field(min_length=8, max_length=1024)]


class LoginRequest(BaseModel):
    # Login does not re-apply the registration rules: a wrong guess is a 401, whatever its shape.
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(max_length=256, pattern=r"^[^\x00]*$")]  # PostgreSQL text holds no NUL
    password: Annotated[str, Field(max_length=1024)]


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Annotated[str, Field(min_length=1, max_length=8192)]


def _db() -> Database:
    return database(settings().database_url)


async def _register(request: Request) -> Response:
    body = Credentials.model_validate(await json_body(request))
    # Argon2 takes tens of milliseconds of CPU: off the event loop, and before the transaction.
    password_hash = await _db().call(hash_password, body.password)
    created, event = await _db().run(lambda tx: service.register(tx, body.username, password_hash))
    await publish_after_commit(service.outbox, [event])
    return json_response(created, 201)


def _limits() -> tuple[throttle.Limit, throttle.Limit]:
    config = settings()
    return (throttle.Limit("user", config.login_user_failures, config.login_user_window),
            throttle.Limit("address", config.login_address_failures, config.login_address_window))


def client_address(request: Request) -> str:
    """The caller's address: the entry our own proxies appended to X-Forwarded-For (the Istio ingress
    gateway in the cluster: SAGA_TRUSTED_PROXY_HOPS=1), else the peer. Entries left of those are
    the client's own say, and never trusted."""
    hops = settings().trusted_proxy_hops
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    if hops > 0 and len(forwarded) >= hops:
        return forwarded[-hops]
    return request.client.host if request.client is not None else "unknown"


async def _login(request: Request) -> Response:
    body = LoginRequest.model_validate(await json_body(request))
    by_user, by_address = _limits()
    keyed = [(by_user, body.username), (by_address, client_address(request))]
    wait = await _db().run(lambda tx: throttle.retry_after(tx, keyed))
    if wait is not None:
        raise TooManyRequests("too many failed logins; try again later", headers={"Retry-After": str(wait)})

    def login(tx: Tx) -> dict[str, Any]:
        tokens = service.login(tx, body.username, body.password)
        throttle.clear(tx, by_user, body.username)
        return tokens

    try:
        tokens = await _db().run(login)
    except Unauthorized:
        await _db().run(lambda tx: throttle.record_failure(tx, keyed))
        raise
    return json_response(tokens)


async def _refresh(request: Request) -> Response:
    body = RefreshRequest.model_validate(await json_body(request))
    tokens = await _db().run(lambda tx: service.refresh(tx, body.refresh_token))
    if tokens is None:
        raise Unauthorized("this refresh token was already used or revoked")
    return json_response(tokens)


async def _jwks(request: Request) -> Response:
    return json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


_router = Router(
    [
        ("/auth/register", ["POST"], _register),
        ("/auth/login", ["POST"], _login),
        ("/auth/refresh", ["POST"], _refresh),
        ("/.well-known/jwks.json", ["GET"], _jwks),
    ]
)


@aio.http
@json_api
async def auth_api(request: Request) -> Response:
    return await _router.dispatch(request)
