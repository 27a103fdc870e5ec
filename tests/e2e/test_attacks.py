"""Authentication under attack, through HTTP on the whole stack: every forged, misused or stolen
token is refused with 401 problem+json (never a 5xx) by every function that serves users; SQL in the
login fields is only text; logins are rate-limited per user and per client address (429 with
Retry-After); a rotated signing key is served beside the old one until the old one is retired."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from functions.auth.keys import generate_private_key_pem, load_keys
from localstack.stack import Stack
from tests.e2e.client import DEMO_PASSWORD, Api
from tests.forgery import ATTACKER, Forger

pytestmark = pytest.mark.e2e

PROTECTED = [("order", "GET", "/orders"), ("goods", "GET", "/goods/1"), ("account", "GET", "/account/12223")]
ISSUER, AUDIENCE = "https://auth.knative-saga.example", "knative-saga"


@pytest.fixture
def forger(stack: Stack) -> Forger:
    """Forgeries against the stack's real signing key, posing as lisa with the admin role."""
    real = load_keys(stack.gateway.functions["auth-api"].env["SAGA_JWT_PRIVATE_KEY"])[0]  # type: ignore[union-attr]
    return Forger(real.private_key, real.kid, ISSUER, AUDIENCE, subject="dev-lisa")


ATTACKS: dict[str, Callable[[Forger, dict[str, Any]], str]] = {
    "alg none": lambda f, _: f.alg_none(),
    "HS256 keyed with the RSA public key": lambda f, _: f.hs256_with_public_key(),
    "attacker-signed with the real kid": lambda f, _: f.token(f.claims(roles=["admin"]), key=ATTACKER),
    "jku header pointing at the attacker's keys": lambda f, _: f.token(
        key=ATTACKER, headers={"jku": "http://127.0.0.1:1/jwks.json"}),
    "jwk header carrying the attacker's key": lambda f, _: f.jwk_injection(),
    "tampered claims (roles raised to admin)": lambda f, tokens: f.tampered(tokens["access_token"], roles=["admin"]),
    "expired": lambda f, _: f.token(f.claims(iat=int(time.time()) - 3600, exp=int(time.time()) - 60)),
    "wrong issuer": lambda f, _: f.token(f.claims(iss="https://evil.example")),
    "wrong audience": lambda f, _: f.token(f.claims(aud="another-service")),
    "unknown kid": lambda f, _: jwt.encode(f.claims(), ATTACKER, algorithm="RS256", headers={"kid": "not-ours"}),
    "refresh token used as an access token": lambda f, tokens: tokens["refresh_token"],
    "truncated signature": lambda f, tokens: tokens["access_token"][:-8],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_forged_and_misused_tokens_are_refused_everywhere(api: Api, forger: Forger, attack: str) -> None:
    tokens = api.login("lisa", DEMO_PASSWORD)
    token = ATTACKS[attack](forger, tokens)
    for service, method, path in PROTECTED:
        answer = api.call(service, method, path, token=token)
        assert answer.status_code == 401, f"{attack} on {service}: {answer.status_code} {answer.text}"
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert "Traceback" not in answer.text and "BEGIN" not in answer.text
    # A genuine token still works: the refusals were about the forgery, not the caller.
    assert api.call("order", "GET", "/orders", token=tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("username", ["' OR '1'='1", "lisa'--", "lisa'; DROP TABLE auth.users; --", "\\x00lisa"])
def test_sql_in_login_is_only_a_wrong_username(api: Api, username: str) -> None:
    answer = api.call("auth", "POST", "/auth/login", json={"username": username, "password": "' OR '1'='1"})
    assert answer.status_code == 401 and answer.headers["Content-Type"].startswith("application/problem+json")
    assert api.login("lisa", DEMO_PASSWORD)["token_type"] == "Bearer", "the users table is intact"


def test_a_reused_refresh_token_is_refused_and_its_family_revoked(api: Api) -> None:
    first = api.login("lisa", DEMO_PASSWORD)
    second = api.call("auth", "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    stolen = api.call("auth", "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401
    # The thief's replay revokes the family: the legitimate holder's newer token is dead too.
    assert api.call("auth", "POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def _register(api: Api) -> tuple[str, str]:
    username, password = f"rl-{uuid.uuid4().hex[:12]}", f"pw-{uuid.uuid4().hex}"
    registered = api.call("auth", "POST", "/auth/register", json={"username": username, "password": password})
    assert registered.status_code == 201
    return username, password


def _login(api: Api, username: str, password: str, **headers: str) -> Any:
    return api.call("auth", "POST", "/auth/login", json={"username": username, "password": password},
                    headers=headers)


def _wait_out(api: Api, username: str, password: str, refused: Any) -> None:
    """Retry-After says when the limit lifts; the login works again then (bounded)."""
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 10, "the test stack's window is 10 s"
    deadline = time.monotonic() + wait + 10
    while _login(api, username, password).status_code == 429:
        assert time.monotonic() < deadline, "still refused long after Retry-After"
        time.sleep(0.5)


def test_failed_logins_are_limited_per_user(api: Api, stack: Stack) -> None:
    username, password = _register(api)
    for _ in range(5):
        assert _login(api, username, "wrong-password").status_code == 401
    refused = _login(api, username, password)
    assert refused.status_code == 429, "even the right password waits: the guesser cannot tell"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert api.login("lisa", DEMO_PASSWORD)["access_token"], "other users are not affected"
    _wait_out(api, username, password, refused)
    assert _login(api, username, password).status_code == 200


def test_failed_logins_are_limited_per_client_address(api: Api, stack: Stack) -> None:
    # Credential stuffing: many usernames, one address. The limit is 20 failures per window (fewer
    # attempts if earlier tests failed logins from this address within it).
    # Each claims another address in X-Forwarded-For: only the entry our own proxy appended counts.
    answers = [_login(api, f"nobody-{uuid.uuid4().hex[:10]}", "guess-password",
                      **{"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(21)]
    assert 429 in answers and set(answers[:answers.index(429)]) <= {401}, answers
    refused = _login(api, "lisa", DEMO_PASSWORD)
    assert refused.status_code == 429 and "Retry-After" in refused.headers, "every user at that address waits"
    _wait_out(api, "lisa", DEMO_PASSWORD, refused)
    assert _login(api, "lisa", DEMO_PASSWORD).status_code == 200


def _verified(api: Api, token: str) -> bool:
    """Whether every user-facing function accepts the token now."""
    return all(api.call(s, m, p, token=token).status_code == 200 for s, m, p in PROTECTED)


def _until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.2)


def test_signing_key_rotation(api: Api, stack: Stack) -> None:
    """Publish the new key beside the old, sign with it, retire the old: tokens of both verify until
    the old key is retired (and the verifiers' JWKS cache expires), then only the new one."""
    old_pem = stack.gateway.functions["auth-api"].env["SAGA_JWT_PRIVATE_KEY"]  # type: ignore[union-attr]
    new_pem = generate_private_key_pem()
    old_kid, new_kid = load_keys(old_pem)[0].kid, load_keys(new_pem)[0].kid
    old_token = api.login("lisa", DEMO_PASSWORD)["access_token"]
    try:
        stack.redeploy("auth-api", env={"SAGA_JWT_PRIVATE_KEY": new_pem + old_pem})  # new signs, both served
        served = [k["kid"] for k in api.call("auth", "GET", "/.well-known/jwks.json").json()["keys"]]
        assert served == [new_kid, old_kid]
        new_token = api.login("lisa", DEMO_PASSWORD)["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        _until(lambda: _verified(api, new_token) and _verified(api, old_token), "both keys verify")

        stack.redeploy("auth-api", env={"SAGA_JWT_PRIVATE_KEY": new_pem})  # the old key retired
        served = [k["kid"] for k in api.call("auth", "GET", "/.well-known/jwks.json").json()["keys"]]
        assert served == [new_kid]
        _until(lambda: all(api.call(s, m, p, token=old_token).status_code == 401 for s, m, p in PROTECTED),
               "the retired key stops verifying once the JWKS caches expire")
        assert _verified(api, new_token)
    finally:
        stack.redeploy("auth-api", env={"SAGA_JWT_PRIVATE_KEY": old_pem})
        _until(lambda: _verified(api, old_token), "the session's original key verifies again")
