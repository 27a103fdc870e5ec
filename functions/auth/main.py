"""Auth functions (functions-framework targets): register, login, refresh, JWKS; and the sweep of
the auth outbox."""

from __future__ import annotations

from typing import Annotated, Any

import functions_framework
from flask import Request
from pydantic import BaseModel, ConfigDict, Field

from functions.auth import keys, schema, service, throttle
from functions.platform.config import settings
from functions.platform.database import engine
from functions.platform.events import publish_after_commit, relay_for, sweep_target
from functions.platform.problems import TooManyRequests, Unauthorized, json_api, json_response
from functions.platform.routing import Router


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


def _db():  # type: ignore[no-untyped-def]
    return engine(settings().database_url)


def _register(request: Request) -> Any:
    body = Credentials.model_validate(request.get_json(force=True))
    with _db().begin() as tx:
        created, event = service.register(tx, body.username, body.password)
    publish_after_commit(relay_for(_db(), schema.outbox), [event["id"]])
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
    return request.remote_addr or "unknown"


def _login(request: Request) -> Any:
    body = LoginRequest.model_validate(request.get_json(force=True))
    by_user, by_address = _limits()
    keyed = [(by_user, body.username), (by_address, client_address(request))]
    with _db().begin() as tx:
        wait = throttle.retry_after(tx, keyed)
    if wait is not None:
        raise TooManyRequests("too many failed logins; try again later", headers={"Retry-After": str(wait)})
    try:
        with _db().begin() as tx:
            tokens = service.login(tx, body.username, body.password)
            throttle.clear(tx, by_user, body.username)
    except Unauthorized:
        with _db().begin() as tx:
            throttle.record_failure(tx, keyed)
        raise
    return json_response(tokens)


def _refresh(request: Request) -> Any:
    body = RefreshRequest.model_validate(request.get_json(force=True))
    with _db().begin() as tx:
        tokens = service.refresh(tx, body.refresh_token)
    if tokens is None:
        raise Unauthorized("this refresh token was already used or revoked")
    return json_response(tokens)


def _jwks(request: Request) -> Any:
    return json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


_router = Router(
    [
        ("/auth/register", ["POST"], _register),
        ("/auth/login", ["POST"], _login),
        ("/auth/refresh", ["POST"], _refresh),
        ("/.well-known/jwks.json", ["GET"], _jwks),
    ]
)


@functions_framework.http
@json_api
def auth_api(request: Request) -> Any:
    return _router.dispatch(request)


outbox_relay = functions_framework.http(sweep_target(_db, schema.outbox))
