"""Token verification refuses every forged, tampered, expired or misused token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from functions.auth.keys import thumbprint
from functions.platform.problems import Unauthorized
from functions.platform.security import TokenVerifier, principal_from

ISSUER, AUDIENCE = "https://auth.test", "knative-saga"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING = new_key()
KID = thumbprint(SIGNING.public_key())
ATTACKER = new_key()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "customer_id": "12223", "roles": ["customer"],
            "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), "token_use": "access"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(payload: dict[str, Any] | None = None, *, key: Any = SIGNING, headers: dict[str, Any] | None = None,
          algorithm: str = "RS256") -> str:
    return jwt.encode(payload or claims(), key, algorithm=algorithm, headers={"kid": KID, **(headers or {})})


@pytest.fixture
def verifier() -> TokenVerifier:
    keys = {KID: SIGNING.public_key()}  # the JWKS as the verifier would have fetched it
    return TokenVerifier(ISSUER, AUDIENCE, keys.get)


def test_valid_access_token_yields_the_principal(verifier: TokenVerifier) -> None:
    principal = principal_from(verifier.verify(token()))
    assert (principal.user_id, principal.customer_id, principal.is_admin) == ("user-1", "12223", False)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def public_pem() -> bytes:
    public = SIGNING.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def hs256_with_public_key() -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def tampered() -> str:
    header, _, signature = token().split(".")
    return f"{header}.{b64(json.dumps(claims(roles=['admin'])).encode())}.{signature}"


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        (lambda: "not-a-jwt", "malformed"),
        (lambda: token(claims(exp=int(time.time()) - 60)), "expired"),
        (lambda: token(claims(iss="https://evil.example")), "wrong issuer"),
        (lambda: token(claims(aud="someone-else")), "wrong audience"),
        (lambda: unsigned({"alg": "none", "kid": KID}, claims()), "alg none"),
        (hs256_with_public_key, "HS256 keyed with the public key"),
        (lambda: token(key=ATTACKER), "attacker-signed with a real kid"),
        (lambda: token(headers={"jku": "https://evil.example/jwks.json"}), "jku injection"),
        (lambda: token(headers={"jwk": {"kty": "RSA"}}), "jwk injection"),
        (lambda: jwt.encode(claims(), SIGNING, algorithm="RS256"), "no kid"),
        (lambda: token(headers={"kid": "unknown"}), "unknown kid"),
        (tampered, "tampered payload"),
        (lambda: token(claims(token_use="refresh")), "refresh token as access token"),
        (lambda: token(claims(jti=None)), "no jti"),
        (lambda: token(claims(sub=None)), "no subject"),
    ],
)
def test_forged_or_misused_tokens_are_refused(verifier: TokenVerifier, forged: Any, why: str) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(forged())
