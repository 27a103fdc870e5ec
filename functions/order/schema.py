"""The order service's tables, in its own PostgreSQL schema `orders`: orders, the idempotency keys of
order requests, the instances and history of its sagas (CreateOrderSaga, CancelOrderSaga), its inbox,
its outbox and the events the broker refused for good."""

from __future__ import annotations

import sqlalchemy as sa

from saga.tables import inbox_table, outbox_table, parked_events_table, saga_tables, upgrade_saga_tables

metadata = sa.MetaData(schema="orders")
# PENDING: its CreateOrderSaga decides; CANCEL_PENDING: its CancelOrderSaga runs (the semantic lock).
ORDER_STATES = ("PENDING", "APPROVED", "REJECTED", "CANCEL_PENDING", "CANCELLED")

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("goods_id", sa.Integer, nullable=False),
    sa.Column("goods_total", sa.Integer, nullable=False),
    sa.Column("order_total", sa.Numeric(12, 2), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("rejection_reason", sa.Text, nullable=True),
    sa.Column("placed_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint(f"state IN ({', '.join(repr(state) for state in ORDER_STATES)})", name="orders_state"),
)

# One row per (caller, Idempotency-Key): the same key from the same caller yields the same order.
order_requests = sa.Table(
    "order_requests",
    metadata,
    sa.Column("placed_by", sa.Text, primary_key=True),
    sa.Column("idempotency_key", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

saga_instances, saga_history = saga_tables(metadata)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
outbox_parked = parked_events_table(metadata)


def upgrade(conn: sa.Connection) -> None:
    """What changed since the tables were first created (create_all adds only missing tables)."""
    inspector = sa.inspect(conn)
    if inspector.has_table(saga_instances.name, schema=metadata.schema):
        upgrade_saga_tables(conn, saga_instances, saga_history)
    checks = ({c["name"]: c["sqltext"] for c in inspector.get_check_constraints(orders.name, schema=metadata.schema)}
              if inspector.has_table(orders.name, schema=metadata.schema) else {})
    if "orders_state" in checks and "CANCELLED" not in str(checks["orders_state"]):  # the states cancelling added
        # NOT VALID, then VALIDATE: the table is not locked against writes while its rows are checked.
        states = ", ".join(f"'{state}'" for state in ORDER_STATES)
        conn.execute(sa.text("ALTER TABLE orders.orders DROP CONSTRAINT orders_state"))
        conn.execute(sa.text(f"ALTER TABLE orders.orders ADD CONSTRAINT orders_state CHECK (state IN ({states})) "
                             "NOT VALID"))
        conn.execute(sa.text("ALTER TABLE orders.orders VALIDATE CONSTRAINT orders_state"))
