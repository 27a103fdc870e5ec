"""The verifiers' cache of the auth function's public keys: fetched once per period, an unknown key
fetched for at most once per cool-down, a retired one refused once the cache expires, and an
unreachable auth function answered with 503 at once rather than waited on by every request."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest

from functions.auth.keys import SigningKey, thumbprint
from functions.platform.security import JwksKeys, KeyServiceUnavailable
from tests.forgery import new_key


def jwk_set(*keys: Any) -> dict[str, Any]:
    return {"keys": [SigningKey(thumbprint(k.public_key()), k).public_jwk() for k in keys]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Auth:
    """The auth function's JWKS endpoint: what it serves, how often it was asked, whether it answers."""

    def __init__(self, *keys: Any) -> None:
        self.served = jwk_set(*keys)
        self.fetches = 0
        self.down = False

    def __call__(self, url: str) -> Any:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return self.served


def kid(key: Any) -> str:
    return thumbprint(key.public_key())


def ready(keys: JwksKeys, key_id: str) -> Any:
    asyncio.run(keys.ready_for(key_id))
    return keys.get(key_id)


def test_keys_are_fetched_once_per_period_and_a_new_one_is_usable_at_once() -> None:
    first, second = new_key(), new_key()
    auth, clock = Auth(first), Clock()
    keys = JwksKeys("http://auth/jwks", cache_seconds=300, fetch=auth, clock=clock)
    assert isinstance(ready(keys, kid(first)), jwt.algorithms.RSAPublicKey)
    assert ready(keys, kid(first)) is not None and auth.fetches == 1, "cached"
    auth.served = jwk_set(first, second)  # a key added by rotation
    clock.now += keys.cooldown + 1
    assert ready(keys, kid(second)) is not None and auth.fetches == 2, "an unknown kid fetches again"


def test_an_unknown_kid_fetches_at_most_once_per_cool_down() -> None:
    known = new_key()
    auth, clock = Auth(known), Clock()
    keys = JwksKeys("http://auth/jwks", cache_seconds=300, fetch=auth, clock=clock)
    ready(keys, kid(known))
    clock.now += keys.cooldown + 1
    for _ in range(5):
        assert ready(keys, "forged-kid") is None
    assert auth.fetches == 2, "a flood of forged kids costs the auth function one fetch"
    clock.now += keys.cooldown + 1
    ready(keys, "forged-kid")
    assert auth.fetches == 3


def test_a_retired_key_stops_verifying_when_the_cache_expires() -> None:
    retired, current = new_key(), new_key()
    auth, clock = Auth(retired, current), Clock()
    keys = JwksKeys("http://auth/jwks", cache_seconds=60, fetch=auth, clock=clock)
    assert ready(keys, kid(retired)) is not None
    auth.served = jwk_set(current)
    clock.now += 30
    assert ready(keys, kid(retired)) is not None, "still cached"
    clock.now += 31
    assert ready(keys, kid(retired)) is None
    assert ready(keys, kid(current)) is not None


def test_an_unreachable_auth_function_is_a_fast_503_not_a_wait_per_request() -> None:
    key = new_key()
    auth, clock = Auth(key), Clock()
    keys = JwksKeys("http://auth/jwks", cache_seconds=60, fetch=auth, clock=clock)
    ready(keys, kid(key))
    auth.down = True
    clock.now += 61  # expired, and the auth function does not answer

    async def many() -> list[BaseException | None]:
        async def one() -> BaseException | None:
            await keys.ready_for(kid(key))
            try:
                keys.get(kid(key))
            except KeyServiceUnavailable as exc:
                return exc
            return None

        return await asyncio.gather(*(one() for _ in range(10)))

    results = asyncio.run(many())
    assert all(isinstance(r, KeyServiceUnavailable) for r in results)
    assert auth.fetches == 2, "one failed fetch, not one per waiting request"
    auth.down = False
    clock.now += 2  # past the retry interval
    assert ready(keys, kid(key)) is not None


def test_without_a_fetch_nothing_verifies() -> None:
    keys = JwksKeys("http://auth/jwks", cache_seconds=60, fetch=Auth(), clock=Clock())
    with pytest.raises(KeyServiceUnavailable):
        keys.get("any")
