"""Token verification refuses every forged, tampered, expired or misused token."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from functions.auth.keys import thumbprint
from functions.platform.problems import Unauthorized
from functions.platform.security import TokenVerifier, principal_from
from tests.forgery import ATTACKER, Forger, new_key

ISSUER, AUDIENCE = "https://auth.test", "knative-saga"
SIGNING = new_key()
KID = thumbprint(SIGNING.public_key())
FORGE = Forger(SIGNING, KID, ISSUER, AUDIENCE)
claims, token = FORGE.claims, FORGE.token


@pytest.fixture
def verifier() -> TokenVerifier:
    keys = {KID: SIGNING.public_key()}  # the JWKS as the verifier would have fetched it
    return TokenVerifier(ISSUER, AUDIENCE, keys.get)


def test_valid_access_token_yields_the_principal(verifier: TokenVerifier) -> None:
    principal = principal_from(verifier.verify(token()))
    assert (principal.user_id, principal.customer_id, principal.is_admin) == ("user-1", "12223", False)


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        (lambda: "not-a-jwt", "malformed"),
        (lambda: token(claims(exp=int(time.time()) - 60)), "expired"),
        (lambda: token(claims(iss="https://evil.example")), "wrong issuer"),
        (lambda: token(claims(aud="someone-else")), "wrong audience"),
        (FORGE.alg_none, "alg none"),
        (FORGE.hs256_with_public_key, "HS256 keyed with the public key"),
        (lambda: token(key=ATTACKER), "attacker-signed with a real kid"),
        (lambda: token(headers={"jku": "https://evil.example/jwks.json"}), "jku injection"),
        (lambda: token(headers={"jwk": {"kty": "RSA"}}), "jwk injection"),
        (lambda: jwt.encode(claims(), SIGNING, algorithm="RS256"), "no kid"),
        (lambda: token(headers={"kid": "unknown"}), "unknown kid"),
        (lambda: Forger.tampered(token(), roles=["admin"]), "tampered payload"),
        (lambda: token(claims(token_use="refresh")), "refresh token as access token"),
        (lambda: token(claims(jti=None)), "no jti"),
        (lambda: token(claims(sub=None)), "no subject"),
    ],
)
def test_forged_or_misused_tokens_are_refused(verifier: TokenVerifier, forged: Any, why: str) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(forged())
