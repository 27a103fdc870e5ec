"""The auth service's tables, in PostgreSQL schema `auth`: users, refresh tokens (single use,
grouped in families so a reused token revokes its whole family), failed-login counters (the login
rate limit, shared by every auth pod), the outbox and the events the broker refused for good."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert

from saga.tables import outbox_table, parked_events_table

metadata = sa.MetaData(schema="auth")

# New customers are numbered from here; the dev stack's demo customer is 12223.
customer_ids = sa.Sequence("customer_ids", start=100000, metadata=metadata)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=True, unique=True),
    sa.Column("roles", ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("family_id", sa.Text, nullable=False, index=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

# Failed logins per key ("user:<name>", "address:<ip>") in the current window.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
)

outbox = outbox_table(metadata)
outbox_parked = parked_events_table(metadata)

DEV_USERS = (
    # (user id, username, password env var, dev default, customer id, roles)
    ("dev-admin", "admin", "SAGA_ADMIN_PASSWORD", "admin-password-dev", None, ["admin"]),
    ("dev-lisa", "lisa", "SAGA_DEMO_PASSWORD", "lisa-password-dev", "12223", ["customer"]),
)


def seed_dev(conn: sa.Connection) -> None:
    """The dev stack's users; re-running with another password in the env updates the hash.
    Never called in a cluster: there is no default credential there."""
    from functions.auth.passwords import hash_password

    for user_id, username, variable, default, customer_id, roles in DEV_USERS:
        password_hash = hash_password(os.environ.get(variable, default))
        conn.execute(
            insert(users)
            .values(user_id=user_id, username=username, password_hash=password_hash, customer_id=customer_id,
                    roles=roles)
            .on_conflict_do_update(index_elements=[users.c.username], set_={"password_hash": password_hash})
        )
