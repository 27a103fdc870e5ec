"""Tokens an attacker could make (and a few only a key holder could, to prove each claim check):
shared by the verifier's unit tests and the end-to-end attack tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


ATTACKER = new_key()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Forger:
    def __init__(self, key: rsa.RSAPrivateKey, kid: str, issuer: str, audience: str, *, subject: str = "user-1",
                 customer_id: str = "12223") -> None:
        self.key, self.kid, self.issuer, self.audience = key, kid, issuer, audience
        self.subject, self.customer_id = subject, customer_id

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid access-token claims, changed as asked (None removes a claim)."""
        now = int(time.time())
        base = {"iss": self.issuer, "aud": self.audience, "sub": self.subject, "customer_id": self.customer_id,
                "roles": ["customer"], "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), "token_use": "access"}
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, payload: dict[str, Any] | None = None, *, key: Any = None,
              headers: dict[str, Any] | None = None) -> str:
        """RS256-signed with the real key (or `key`), headed with the real kid (or `headers`)."""
        return jwt.encode(payload or self.claims(), key or self.key, algorithm="RS256",
                          headers={"kid": self.kid, **(headers or {})})

    def alg_none(self) -> str:
        header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": self.kid}).encode())
        return f"{header}.{b64(json.dumps(self.claims()).encode())}."

    def hs256_with_public_key(self) -> str:
        """HMAC keyed with the RSA public key's PEM: the classic algorithm-confusion forgery."""
        public = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.kid}).encode())
        body = b64(json.dumps(self.claims()).encode())
        return f"{header}.{body}.{b64(hmac.new(public, f'{header}.{body}'.encode(), hashlib.sha256).digest())}"

    def jwk_injection(self) -> str:
        """Signed by the attacker, carrying the attacker's public key in the header."""
        numbers = ATTACKER.public_key().public_numbers()
        own = {"kty": "RSA", "n": b64(numbers.n.to_bytes(256, "big")), "e": b64(numbers.e.to_bytes(3, "big"))}
        return self.token(key=ATTACKER, headers={"jwk": own})

    @staticmethod
    def tampered(genuine: str, **changes: Any) -> str:
        """A genuine token with its claims changed and its signature kept."""
        header, body, signature = genuine.split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims.update(changes)
        return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
