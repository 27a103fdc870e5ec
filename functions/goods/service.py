"""Goods business rules: plain functions over a connection, called inside the delivery transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from functions.goods.messages import (
    GoodsNotFound,
    GoodsReleased,
    GoodsReserved,
    GoodsStockLimit,
    ReleaseGoods,
    ReserveGoods,
)
from functions.goods.schema import goods, reservations
from saga.messages import Reply


def reserve_goods(tx: sa.Connection, saga_id: str, command: ReserveGoods) -> Reply:
    item = tx.execute(sa.select(goods).where(goods.c.id == command.goods_id).with_for_update()).first()
    if item is None:
        return GoodsNotFound()
    held = tx.execute(
        sa.select(reservations.c.state).where(reservations.c.saga_id == saga_id).with_for_update()
    ).scalar_one_or_none()
    if held == "RESERVED":
        # Already reserved for this saga (a command re-sent under another id): never twice.
        return GoodsReserved(unit_price=item.unit_price)
    if held == "RELEASED" or command.quantity < 1 or item.stock < command.quantity:
        # RELEASED: the saga was compensated before this (late) command; reserve nothing.
        return GoodsStockLimit(available=item.stock)
    tx.execute(sa.update(goods).where(goods.c.id == item.id).values(stock=goods.c.stock - command.quantity))
    tx.execute(
        sa.insert(reservations).values(
            saga_id=saga_id, goods_id=item.id, quantity=command.quantity, state="RESERVED"
        )
    )
    return GoodsReserved(unit_price=item.unit_price)


def release_goods(tx: sa.Connection, saga_id: str, command: ReleaseGoods) -> Reply:
    """Give back what the saga reserved; with no reservation, leave a RELEASED marker so a late
    ReserveGoods for the same saga reserves nothing. The item row is locked first, as reserve_goods
    does: else a reservation committed between our read and our marker would be left held."""
    tx.execute(sa.select(goods.c.id).where(goods.c.id == command.goods_id).with_for_update())
    held = tx.execute(
        sa.select(reservations).where(reservations.c.saga_id == saga_id).with_for_update()
    ).first()
    if held is None:
        tx.execute(
            insert(reservations)
            .values(saga_id=saga_id, goods_id=command.goods_id, quantity=0, state="RELEASED")
            .on_conflict_do_nothing()
        )
        return GoodsReleased(quantity=0)
    if held.state == "RELEASED":
        return GoodsReleased(quantity=0)
    tx.execute(sa.update(goods).where(goods.c.id == held.goods_id).values(stock=goods.c.stock + held.quantity))
    tx.execute(
        sa.update(reservations)
        .where(reservations.c.saga_id == saga_id)
        .values(state="RELEASED", updated_at=sa.func.now())
    )
    return GoodsReleased(quantity=held.quantity)


def describe_goods(tx: sa.Connection, goods_id: int) -> dict[str, object] | None:
    item = tx.execute(sa.select(goods).where(goods.c.id == goods_id)).first()
    if item is None:
        return None
    return {"id": item.id, "name": item.name, "unitPrice": str(item.unit_price), "stock": item.stock}
