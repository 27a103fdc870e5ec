"""Registration, login and refresh-token rotation: plain functions over a connection."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import sqlalchemy as sa
from cloudevents.http import CloudEvent

from functions.auth.keys import signing_keys
from functions.auth.passwords import hash_password, needs_rehash, verify_password
from functions.auth.schema import customer_ids, outbox, refresh_tokens, users
from functions.platform.config import settings
from functions.platform.problems import Conflict, Unauthorized
from functions.platform.security import TokenVerifier
from saga import outbox as outbox_
from saga.messages import domain_event, stable_id

USER_REGISTERED = "io.knativesaga.user.registered"


def register(tx: sa.Connection, username: str, password: str) -> tuple[dict[str, str], CloudEvent]:
    """Create the user and, in the same transaction, queue the UserRegistered event that provisions
    the customer's credit account."""
    if tx.execute(sa.select(users.c.user_id).where(users.c.username == username)).first() is not None:
        raise Conflict(f"username {username!r} is taken")
    user_id = str(uuid.uuid4())
    customer_id = str(tx.execute(customer_ids.next_value()).scalar_one())
    try:
        with tx.begin_nested():
            tx.execute(
                sa.insert(users).values(
                    user_id=user_id, username=username, password_hash=hash_password(password),
                    customer_id=customer_id, roles=["customer"],
                )
            )
    except sa.exc.IntegrityError as exc:  # a concurrent registration of the same name won
        raise Conflict(f"username {username!r} is taken") from exc
    event = domain_event(
        USER_REGISTERED, event_id=stable_id("user-registered", user_id), source="/functions/auth-api",
        key=customer_id, data={"user_id": user_id, "customer_id": customer_id, "username": username},
    )
    outbox_.add(tx, outbox, event)
    return {"userId": user_id, "customerId": customer_id}, event


def login(tx: sa.Connection, username: str, password: str) -> dict[str, Any]:
    user = tx.execute(sa.select(users).where(users.c.username == username)).first()
    if not verify_password(user.password_hash if user else None, password) or user is None:
        raise Unauthorized("unknown username or wrong password")
    if needs_rehash(user.password_hash):
        rehashed = hash_password(password)
        tx.execute(sa.update(users).where(users.c.user_id == user.user_id).values(password_hash=rehashed))
    return _issue(tx, user, family_id=str(uuid.uuid4()))


def refresh(tx: sa.Connection, token: str) -> dict[str, Any] | None:
    """Single use: the token is spent here. Presenting a spent one revokes its whole family and
    returns None; the caller commits that revocation before refusing the request."""
    claims = _verifier().verify(token, token_use="refresh")
    spent = tx.execute(
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.jti == claims["jti"], refresh_tokens.c.used_at.is_(None),
               refresh_tokens.c.revoked_at.is_(None))
        .values(used_at=sa.func.now())
        .returning(refresh_tokens.c.family_id, refresh_tokens.c.user_id)
    ).first()
    if spent is None:
        family = tx.execute(
            sa.select(refresh_tokens.c.family_id).where(refresh_tokens.c.jti == claims["jti"])
        ).scalar_one_or_none()
        if family is not None:
            tx.execute(
                sa.update(refresh_tokens)
                .where(refresh_tokens.c.family_id == family, refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=sa.func.now())
            )
        return None
    user = tx.execute(sa.select(users).where(users.c.user_id == spent.user_id)).one()
    return _issue(tx, user, family_id=spent.family_id)


def _issue(tx: sa.Connection, user: Any, *, family_id: str) -> dict[str, Any]:
    config = settings()
    key = signing_keys()[0]
    now = int(time.time())
    common = {"iss": config.jwt_issuer, "aud": config.jwt_audience, "sub": user.user_id, "iat": now}
    access = {
        **common, "exp": now + config.access_token_ttl, "jti": str(uuid.uuid4()), "token_use": "access",
        "customer_id": user.customer_id, "roles": list(user.roles),
    }
    refresh_jti = str(uuid.uuid4())
    refresh_claims = {**common, "exp": now + config.refresh_token_ttl, "jti": refresh_jti, "token_use": "refresh"}
    tx.execute(
        sa.insert(refresh_tokens).values(
            jti=refresh_jti, user_id=user.user_id, family_id=family_id,
            expires_at=datetime.now(UTC) + timedelta(seconds=config.refresh_token_ttl),
        )
    )
    headers = {"kid": key.kid}
    return {
        "access_token": jwt.encode(access, key.private_key, algorithm="RS256", headers=headers),
        "refresh_token": jwt.encode(refresh_claims, key.private_key, algorithm="RS256", headers=headers),
        "token_type": "Bearer",
        "expires_in": config.access_token_ttl,
    }


def _verifier() -> TokenVerifier:
    """Refresh tokens are verified against this function's own keys, no JWKS round trip."""
    config = settings()
    keys = {key.kid: key.private_key.public_key() for key in signing_keys()}
    return TokenVerifier(config.jwt_issuer, config.jwt_audience, keys.get)
