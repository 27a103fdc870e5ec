"""Registration, login, single-use refresh tokens and the JWKS, through HTTP."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.client import Api

pytestmark = pytest.mark.e2e


def register(api: Api, username: str, password: str = "a-long-password"):  # type: ignore[no-untyped-def]
    return api.call("auth", "POST", "/auth/register", json={"username": username, "password": password})


def test_username_is_unique(api: Api) -> None:
    name = f"u-{uuid.uuid4().hex[:12]}"
    assert register(api, name).status_code == 201
    again = register(api, name)
    assert again.status_code == 409
    assert again.headers["Content-Type"].startswith("application/problem+json")


def test_short_password_is_422_naming_the_field(api: Api) -> None:
    response = register(api, f"u-{uuid.uuid4().hex[:12]}", "short")
    assert response.status_code == 422
    assert response.json()["field"] == "password"


def test_bad_credentials_are_401(api: Api) -> None:
    response = api.call("auth", "POST", "/auth/login", json={"username": "lisa", "password": "wrong-password"})
    assert response.status_code == 401
    unknown = api.call("auth", "POST", "/auth/login", json={"username": "nobody-here", "password": "whatever-pw"})
    assert unknown.status_code == 401


def test_refresh_token_is_single_use_and_reuse_revokes_the_family(api: Api) -> None:
    name = f"u-{uuid.uuid4().hex[:12]}"
    register(api, name)
    first = api.login(name, "a-long-password")
    assert (first["token_type"], first["expires_in"]) == ("Bearer", 900)
    rotated = api.call("auth", "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    reused = api.call("auth", "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    # The reuse revoked the whole family, the token issued by the rotation included.
    assert api.call("auth", "POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    name = f"u-{uuid.uuid4().hex[:12]}"
    register(api, name)
    tokens = api.login(name, "a-long-password")
    assert api.call("goods", "GET", "/goods/1", token=tokens["refresh_token"]).status_code == 401
    assert api.call("goods", "GET", "/goods/1", token=tokens["access_token"]).status_code == 200


def test_jwks_serves_the_rs256_signing_key(api: Api) -> None:
    response = api.call("auth", "GET", "/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert {key["kty"], key["use"], key["alg"]} == {"RSA", "sig", "RS256"}
    assert key["kid"] and key["n"] and key["e"]
    assert "d" not in key and "p" not in key, "no private key material"


def test_malformed_json_is_400(api: Api) -> None:
    response = api.call("auth", "POST", "/auth/login", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/problem+json")
