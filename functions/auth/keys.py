"""The RS256 signing key(s): loaded from the PEM in the environment (a Kubernetes Secret in the
cluster, a generated git-ignored file locally); `kid` is the RFC 7638 thumbprint. Several keys can
be served in the JWKS (rotation); the first one signs."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from functions.platform.config import settings

_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _b64(numbers.n), "e": _b64(numbers.e)}


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    numbers = public_key.public_numbers()
    canonical = json.dumps({"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")


def load_keys(pem_text: str) -> list[SigningKey]:
    keys = []
    for block in _PEM_BLOCK.findall(pem_text):
        key = serialization.load_pem_private_key(block.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the JWT signing key must be RSA")
        keys.append(SigningKey(thumbprint(key.public_key()), key))
    if not keys:
        raise ValueError("SAGA_JWT_PRIVATE_KEY holds no RSA private key")
    return keys


@functools.cache
def signing_keys() -> list[SigningKey]:
    return load_keys(settings().jwt_private_key_pem)


def jwks() -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in signing_keys()]}


def generate_private_key_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
