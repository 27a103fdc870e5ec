"""Registration, login and refresh-token rotation: plain functions over a transaction."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cloudevents.http import CloudEvent

from functions.auth.keys import signing_keys
from functions.auth.passwords import hash_password, needs_rehash, verify_password
from functions.platform.config import settings
from functions.platform.problems import Conflict, Unauthorized
from functions.platform.security import TokenVerifier
from saga import outbox as outbox_
from saga.messages import domain_event, stable_id
from saga.outbox import Outbox
from saga.transaction import Tx

USER_REGISTERED = "io.knativesaga.user.registered"
outbox = Outbox("auth.outbox")

USER_COLUMNS = "user_id, username, password_hash, customer_id, roles"
CREATE_USER = ("INSERT INTO auth.users (user_id, username, password_hash, customer_id, roles) "
               "VALUES (%s, %s, %s, nextval('auth.customer_ids')::text, %s) ON CONFLICT (username) DO NOTHING "
               "RETURNING customer_id")
USER_NAMED = f"SELECT {USER_COLUMNS} FROM auth.users WHERE username = %s"
USER_WITH_ID = f"SELECT {USER_COLUMNS} FROM auth.users WHERE user_id = %s"
REHASH = "UPDATE auth.users SET password_hash = %s WHERE user_id = %s"
SPEND = ("UPDATE auth.refresh_tokens SET used_at = now() WHERE jti = %s AND used_at IS NULL AND revoked_at IS NULL "
         "RETURNING family_id, user_id")
FAMILY = "SELECT family_id FROM auth.refresh_tokens WHERE jti = %s"
REVOKE = "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = %s AND revoked_at IS NULL"
ISSUE = "INSERT INTO auth.refresh_tokens (jti, user_id, family_id, expires_at) VALUES (%s, %s, %s, %s)"


def register(tx: Tx, username: str, password_hash: str) -> tuple[dict[str, str], CloudEvent]:
    """Create the user and, in the same transaction, queue the UserRegistered event that provisions
    the customer's credit account. `password_hash` is computed before (argon2: no lock held meanwhile)."""
    user_id = str(uuid.uuid4())
    customer_id = tx.query(CREATE_USER, (user_id, username, password_hash, ["customer"])).scalar()
    if customer_id is None:
        raise Conflict(f"username {username!r} is taken")
    event = domain_event(
        USER_REGISTERED, event_id=stable_id("user-registered", user_id), source="/functions/auth-api",
        key=customer_id, data={"user_id": user_id, "customer_id": customer_id, "username": username},
    )
    outbox_.add(tx, outbox, event)
    return {"userId": user_id, "customerId": customer_id}, event


def login(tx: Tx, username: str, password: str) -> dict[str, Any]:
    user = tx.query(USER_NAMED, (username,)).one()
    if not verify_password(user.password_hash if user else None, password) or user is None:
        raise Unauthorized("unknown username or wrong password")
    if needs_rehash(user.password_hash):
        tx.execute(REHASH, (hash_password(password), user.user_id))
    return _issue(tx, user, family_id=str(uuid.uuid4()))


def refresh(tx: Tx, token: str) -> dict[str, Any] | None:
    """Single use: the token is spent here. Presenting a spent one revokes its whole family and
    returns None; the caller commits that revocation before refusing the request."""
    claims = _verifier().verify(token, token_use="refresh")
    spent = tx.query(SPEND, (claims["jti"],)).one()
    if spent is None:
        family = tx.query(FAMILY, (claims["jti"],)).scalar()
        if family is not None:
            tx.execute(REVOKE, (family,))
        return None
    user = tx.query(USER_WITH_ID, (spent.user_id,)).one()
    return _issue(tx, user, family_id=spent.family_id)


def _issue(tx: Tx, user: Any, *, family_id: str) -> dict[str, Any]:
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
    expires = datetime.now(UTC) + timedelta(seconds=config.refresh_token_ttl)
    tx.execute(ISSUE, (refresh_jti, user.user_id, family_id, expires))
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
