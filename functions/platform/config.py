"""Configuration from the environment, read once per process. Dev defaults are for the local
stack; in the cluster every value comes from the Knative Service's env (and Secrets)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from decimal import Decimal


def normalise_database_url(url: str) -> str:
    """Accept postgres:// and postgresql:// URLs; the project's driver is psycopg (3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    jwt_issuer: str
    jwt_audience: str
    jwks_url: str
    jwt_private_key_pem: str
    access_token_ttl: int
    refresh_token_ttl: int
    k_sink: str
    initial_credit: Decimal
    service_name: str
    step_timeout: float  # seconds a saga waits for a participant's reply before compensating
    # The retry budget of compensations and retriable steps, when a deployment replaces the
    # definition's (None: the definition's own).
    retry_attempts: int | None
    retry_first_delay: float | None
    # Saga type -> the definition version new sagas start on, when not the newest (a two-phase rollout).
    start_versions: dict[str, int]
    login_user_failures: int  # failed logins per username within the window before 429
    login_user_window: float
    login_address_failures: int  # failed logins per client address within the window before 429
    login_address_window: float
    jwks_cache_seconds: float  # how long verifiers keep the JWKS (a retired key verifies until then)
    trusted_proxy_hops: int  # X-Forwarded-For entries appended by our own proxies (the ingress gateway)


def _versions(text: str) -> dict[str, int]:
    """`CancelOrderSaga=1,CreateOrderSaga=1` -> {name: version}."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[1].strip().isdigit() for pair in pairs):
        raise ValueError(f"SAGA_START_VERSIONS must be NAME=VERSION[,NAME=VERSION...], not {text!r}")
    return {name.strip(): int(version) for name, version in pairs}


@functools.cache
def settings() -> Settings:
    env = os.environ.get
    return Settings(
        database_url=normalise_database_url(env("DATABASE_URL", "postgresql+psycopg://saga:saga@127.0.0.1:55432/saga")),
        jwt_issuer=env("SAGA_JWT_ISSUER", "https://auth.knative-saga.example"),
        jwt_audience=env("SAGA_JWT_AUDIENCE", "knative-saga"),
        jwks_url=env("SAGA_JWKS_URL", "http://127.0.0.1:8083/.well-known/jwks.json"),
        jwt_private_key_pem=env("SAGA_JWT_PRIVATE_KEY", ""),
        access_token_ttl=int(env("SAGA_ACCESS_TOKEN_TTL", "900")),
        refresh_token_ttl=int(env("SAGA_REFRESH_TOKEN_TTL", str(14 * 24 * 3600))),
        k_sink=env("K_SINK", ""),
        initial_credit=Decimal(env("SAGA_INITIAL_CREDIT", "100.00")),
        service_name=env("K_SERVICE", "local"),
        step_timeout=float(env("SAGA_STEP_TIMEOUT_SECONDS", "60")),
        retry_attempts=int(value) if (value := env("SAGA_RETRY_ATTEMPTS")) else None,
        retry_first_delay=float(value) if (value := env("SAGA_RETRY_FIRST_DELAY_SECONDS")) else None,
        start_versions=_versions(env("SAGA_START_VERSIONS", "")),
        login_user_failures=int(env("SAGA_LOGIN_USER_FAILURES", "5")),
        login_user_window=float(env("SAGA_LOGIN_USER_WINDOW_SECONDS", "300")),
        login_address_failures=int(env("SAGA_LOGIN_ADDRESS_FAILURES", "20")),
        login_address_window=float(env("SAGA_LOGIN_ADDRESS_WINDOW_SECONDS", "60")),
        jwks_cache_seconds=float(env("SAGA_JWKS_CACHE_SECONDS", "300")),
        trusted_proxy_hops=int(env("SAGA_TRUSTED_PROXY_HOPS", "0")),
    )
