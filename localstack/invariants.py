"""The books must balance after every run (tests, benchmark): checked straight in the services' tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import sqlalchemy as sa

from functions.account.schema import accounts, credit_reservations
from functions.auth.schema import outbox_parked as auth_parked
from functions.goods.schema import DEMO_GOODS, goods, reservations
from functions.order.schema import orders, outbox, outbox_parked, saga_instances

DEMO_STOCK: dict[int, int] = {cast(int, item["id"]): cast(int, item["stock"]) for item in DEMO_GOODS}


def held_for_order(table: sa.Table) -> sa.ColumnElement[bool]:
    """A participant's reservation taken by an order's CreateOrderSaga (its cancel only releases it)."""
    return sa.and_(table.c.saga_type == "CreateOrderSaga", table.c.saga_id == orders.c.order_id)


def unbalanced_books(db: sa.Engine, initial_stock: Mapping[int, int] = DEMO_STOCK) -> dict[str, list[object]]:
    """Every violated invariant with its offending rows; empty when the books balance.
    `initial_stock`: the items to check, with the stock each started with."""
    initial = sa.case(*((goods.c.id == item, stock) for item, stock in initial_stock.items()))
    reserved_goods = (
        sa.select(reservations.c.goods_id, sa.func.sum(reservations.c.quantity).label("held"))
        .where(reservations.c.state == "RESERVED")
        .group_by(reservations.c.goods_id)
        .subquery()
    )
    held_credit = (
        sa.select(credit_reservations.c.customer_id, sa.func.sum(credit_reservations.c.amount).label("held"))
        .where(credit_reservations.c.state == "RESERVED")
        .group_by(credit_reservations.c.customer_id)
        .subquery()
    )
    with db.connect() as tx:
        found: dict[str, list[object]] = {
            # Every item starts at its seeded stock; stock + reserved must still add up to it.
            "goods stock + reserved != initial": list(
                tx.execute(
                    sa.select(goods.c.id, goods.c.stock, reserved_goods.c.held)
                    .outerjoin(reserved_goods, reserved_goods.c.goods_id == goods.c.id)
                    .where(goods.c.id.in_(list(initial_stock)))
                    .where(goods.c.stock + sa.func.coalesce(reserved_goods.c.held, 0) != initial)
                ).all()
            ),
            "credit limit != available + reserved": list(
                tx.execute(
                    sa.select(accounts.c.customer_id)
                    .outerjoin(held_credit, held_credit.c.customer_id == accounts.c.customer_id)
                    .where(accounts.c.credit_limit
                           != accounts.c.available_credit + sa.func.coalesce(held_credit.c.held, 0))
                ).all()
            ),
            "unfinished sagas": list(tx.execute(sa.select(saga_instances.c.saga_id).where(~saga_instances.c.finished))),
            "pending orders": list(tx.execute(sa.select(orders.c.order_id, orders.c.state)
                                              .where(orders.c.state.in_(("PENDING", "CANCEL_PENDING"))))),
            "approved orders without reserved goods": list(
                tx.execute(
                    sa.select(orders.c.order_id)
                    .outerjoin(reservations, held_for_order(reservations))
                    .where(orders.c.state == "APPROVED")
                    .where(sa.func.coalesce(reservations.c.state, "") != "RESERVED")
                )
            ),
            "rejected or cancelled orders still holding goods": list(
                tx.execute(
                    sa.select(orders.c.order_id, orders.c.state)
                    .join(reservations, held_for_order(reservations))
                    .where(orders.c.state.in_(("REJECTED", "CANCELLED")), reservations.c.state == "RESERVED")
                )
            ),
            "rejected or cancelled orders still holding credit": list(
                tx.execute(
                    sa.select(orders.c.order_id, orders.c.state)
                    .join(credit_reservations, held_for_order(credit_reservations))
                    .where(orders.c.state.in_(("REJECTED", "CANCELLED")), credit_reservations.c.state == "RESERVED")
                )
            ),
            "outbox not empty": list(tx.execute(sa.select(outbox.c.event_id))),
            # The broker refused them for good (saga/publisher.py): nothing the system sends should be.
            "events parked": [*tx.execute(sa.select(outbox_parked.c.event_id, outbox_parked.c.status)),
                              *tx.execute(sa.select(auth_parked.c.event_id, auth_parked.c.status))],
        }
    return {name: rows for name, rows in found.items() if rows}
