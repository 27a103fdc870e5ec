"""The goods service's tables, in PostgreSQL schema `goods`: the catalogue with its stock, the
reservations held by sagas (keyed by saga type and id: one per saga), and the participant inbox.

Books balance: for every item, stock + quantity of its RESERVED reservations = initial stock."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from saga.tables import inbox_table, key_by_saga_type

metadata = sa.MetaData(schema="goods")

goods = sa.Table(
    "goods",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    # While the item is counted, nothing is put back on its shelf: a release is refused (FAILURE) and
    # the saga tries again later (a compensation that fails for a while).
    sa.Column("stocktake", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("stock >= 0", name="goods_stock_not_negative"),
    sa.CheckConstraint("unit_price >= 0", name="goods_price_not_negative"),
)

reservations = sa.Table(
    "reservations",
    metadata,
    # Keyed by the saga that holds it, type and id (`saga.participant.SagaRef`).
    sa.Column("saga_type", sa.Text, primary_key=True),
    sa.Column("saga_id", sa.Text, primary_key=True),
    sa.Column("goods_id", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("state IN ('RESERVED', 'RELEASED')", name="reservations_state"),
)

inbox = inbox_table(metadata)

DEMO_GOODS = (
    {"id": 1, "name": "chicken", "unit_price": Decimal("37.00"), "stock": 100},
    {"id": 2, "name": "apple", "unit_price": Decimal("10.00"), "stock": 200},
)


def upgrade(conn: sa.Connection) -> None:
    """Columns added since the table was first created (create_all adds only missing tables)."""
    if sa.inspect(conn).has_table(goods.name, schema=metadata.schema):
        conn.execute(sa.text("ALTER TABLE goods.goods ADD COLUMN IF NOT EXISTS stocktake boolean NOT NULL "
                             "DEFAULT false"))
    if sa.inspect(conn).has_table(reservations.name, schema=metadata.schema):
        key_by_saga_type(conn, reservations, legacy_type="CreateOrderSaga")


def seed_catalogue(conn: sa.Connection) -> None:
    """The contract's demo catalogue (local stack and cluster alike); an existing item is left as it is."""
    conn.execute(insert(goods).values(list(DEMO_GOODS)).on_conflict_do_nothing())
