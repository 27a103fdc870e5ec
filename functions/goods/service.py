"""Goods business rules, as saga participant actions: each queues the reads it needs and returns
the decision (`saga.participant`), run inside the delivery's transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.goods.messages import (
    GoodsNotFound,
    GoodsReleased,
    GoodsReleaseRefused,
    GoodsReserved,
    GoodsStockLimit,
    ReleaseGoods,
    ReserveGoods,
)
from saga.messages import Reply
from saga.participant import SagaRef
from saga.transaction import Tx

# Ids and quantities are PostgreSQL integers (`::integer`): a value beyond that range is refused as
# malformed (a 400, to the dead letters), as the API answers 404 for such an id.
ITEM = "SELECT id, unit_price, stock, stocktake FROM goods.goods WHERE id = %s::integer FOR UPDATE"
HELD = "SELECT goods_id, quantity, state FROM goods.reservations WHERE saga_type = %s AND saga_id = %s FOR UPDATE"
TAKE = "UPDATE goods.goods SET stock = stock - %s WHERE id = %s"
GIVE_BACK = "UPDATE goods.goods SET stock = stock + %s WHERE id = %s"
RESERVE = ("INSERT INTO goods.reservations (saga_type, saga_id, goods_id, quantity, state) "
           "VALUES (%s, %s, %s, %s::integer, 'RESERVED')")
RELEASE = ("UPDATE goods.reservations SET state = 'RELEASED', updated_at = now() "
           "WHERE saga_type = %s AND saga_id = %s")
MARK_RELEASED = ("INSERT INTO goods.reservations (saga_type, saga_id, goods_id, quantity, state) "
                 "VALUES (%s, %s, %s::integer, 0, 'RELEASED') ON CONFLICT DO NOTHING")
DESCRIBE = "SELECT id, name, unit_price, stock FROM goods.goods WHERE id = %s"


def reserve_goods(tx: Tx, saga: SagaRef, command: ReserveGoods) -> Callable[[], Reply]:
    item, held = tx.query(ITEM, (command.goods_id,)), tx.query(HELD, (saga.type, saga.id))

    def decide() -> Reply:
        found, reservation = item.one(), held.one()
        if found is None:
            return GoodsNotFound()
        if reservation is not None and reservation.state == "RESERVED":
            # Already reserved for this saga (a command re-sent under another id): never twice.
            return GoodsReserved(unit_price=found.unit_price)
        if reservation is not None or command.quantity < 1 or found.stock < command.quantity:
            # RELEASED: the saga was compensated before this (late) command; reserve nothing.
            return GoodsStockLimit(available=found.stock)
        tx.execute(TAKE, (command.quantity, found.id))
        tx.execute(RESERVE, (saga.type, saga.id, found.id, command.quantity))
        return GoodsReserved(unit_price=found.unit_price)

    return decide


def release_goods(tx: Tx, saga: SagaRef, command: ReleaseGoods) -> Callable[[], Reply]:
    """Give back what the saga reserved; with no reservation, leave a RELEASED marker so a late
    ReserveGoods for the same saga reserves nothing. During a stocktake nothing goes back on the shelf:
    refused, the saga tries again later. The item row is locked first, as reserve_goods
    does: else a reservation committed between our read and our marker would be left held."""
    holder = SagaRef(command.held_by or saga.type, saga.id)
    item = tx.query(ITEM, (command.goods_id,))
    held = tx.query(HELD, (holder.type, holder.id))

    def decide() -> Reply:
        found, reservation = item.one(), held.one()
        if reservation is not None and reservation.state == "RESERVED" and found is not None and found.stocktake:
            return GoodsReleaseRefused(reason="STOCKTAKE")
        if reservation is None:
            tx.execute(MARK_RELEASED, (holder.type, holder.id, command.goods_id))
            return GoodsReleased(quantity=0)
        if reservation.state == "RELEASED":
            return GoodsReleased(quantity=0)
        tx.execute(GIVE_BACK, (reservation.quantity, reservation.goods_id))
        tx.execute(RELEASE, (holder.type, holder.id))
        return GoodsReleased(quantity=reservation.quantity)

    return decide


def describe_goods(tx: Tx, goods_id: int) -> dict[str, Any] | None:
    item = tx.query(DESCRIBE, (goods_id,)).one()
    if item is None:
        return None
    return {"id": item.id, "name": item.name, "unitPrice": str(item.unit_price), "stock": item.stock}
