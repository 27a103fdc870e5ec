"""The account service's tables, in PostgreSQL schema `accounts`: credit accounts, the credit
reservations held by sagas (keyed by saga type and id: one per saga), and the inbox.

Books balance: credit_limit = available_credit + the amounts of its RESERVED reservations."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from saga.tables import inbox_table, key_by_saga_type

metadata = sa.MetaData(schema="accounts")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("credit_limit", sa.Numeric(12, 2), nullable=False),
    sa.Column("available_credit", sa.Numeric(12, 2), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("available_credit >= 0", name="accounts_credit_not_negative"),
)

credit_reservations = sa.Table(
    "credit_reservations",
    metadata,
    # Keyed by the saga that holds it, type and id (`saga.participant.SagaRef`).
    sa.Column("saga_type", sa.Text, primary_key=True),
    sa.Column("saga_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("state IN ('RESERVED', 'RELEASED')", name="credit_reservations_state"),
)

inbox = inbox_table(metadata)

DEMO_CUSTOMER = "12223"  # user `lisa` in the dev stack (CONTRACT.md)


def open_account(conn: sa.Connection, customer_id: str, credit: Decimal) -> bool:
    """Create the account unless it exists; True if it was created."""
    created = conn.execute(
        insert(accounts)
        .values(customer_id=customer_id, credit_limit=credit, available_credit=credit)
        .on_conflict_do_nothing()
        .returning(accounts.c.customer_id)
    ).first()
    return created is not None


def upgrade(conn: sa.Connection) -> None:
    """Keys changed since the table was first created (create_all adds only missing tables)."""
    if sa.inspect(conn).has_table(credit_reservations.name, schema=metadata.schema):
        key_by_saga_type(conn, credit_reservations, legacy_type="CreateOrderSaga")


def seed_dev(conn: sa.Connection) -> None:
    open_account(conn, DEMO_CUSTOMER, Decimal("100.00"))
