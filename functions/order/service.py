"""Order use cases: place an order (start its saga), read orders and saga state.

Placing an order is one transaction: the idempotency record, the saga's first local step (the
PENDING order row), the saga instance and its first command in the outbox commit together."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from cloudevents.http import CloudEvent
from sqlalchemy.dialects.postgresql import insert

from functions.order.create_order_saga import CreateOrderSagaData, create_order_saga
from functions.order.schema import order_requests, orders, outbox, saga_history, saga_instances
from functions.platform.config import settings
from saga import outbox as outbox_
from saga.engine import SagaEngine
from saga.messages import stable_id
from saga.store import PostgresSagaStore

store = PostgresSagaStore(saga_instances, saga_history)
saga_engine = SagaEngine(create_order_saga, store, step_timeout=settings().step_timeout)

MAX_WAIT_SECONDS = 30.0


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key came with a different request body."""


def place_order(
    tx: sa.Connection, *, placed_by: str, customer_id: str, goods_id: int, goods_total: int,
    order_total: Decimal, idempotency_key: str | None,
) -> tuple[str, CloudEvent | None]:
    """Start a CreateOrderSaga; returns the order id and the command queued in the outbox (None
    when the Idempotency-Key names an order placed before)."""
    request = {"customerId": customer_id, "goodsId": goods_id, "goodsTotal": goods_total,
               "orderTotal": str(order_total)}
    if idempotency_key is None:
        order_id = str(uuid.uuid4())
    else:
        order_id = stable_id("order", placed_by, idempotency_key)
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        claimed = tx.execute(
            insert(order_requests)
            .values(placed_by=placed_by, idempotency_key=idempotency_key, order_id=order_id, request_hash=digest)
            .on_conflict_do_nothing()
            .returning(order_requests.c.order_id)
        ).first()
        if claimed is None:
            earlier = tx.execute(
                sa.select(order_requests.c.request_hash).where(
                    order_requests.c.placed_by == placed_by, order_requests.c.idempotency_key == idempotency_key
                )
            ).scalar_one()
            if earlier != digest:
                raise IdempotencyKeyReused(idempotency_key)
            return order_id, None
    data = CreateOrderSagaData(
        order_id=order_id, customer_id=customer_id, goods_id=goods_id, goods_total=goods_total,
        order_total=order_total, placed_by=placed_by,
    )
    command = saga_engine.start(tx, order_id, data)
    if command is not None:
        outbox_.add(tx, outbox, command)
    return order_id, command


def expire_overdue(engine: sa.Engine, *, limit: int = 500) -> list[str]:
    """The stuck-saga sweep: every overdue saga times out (or re-sends its overdue compensation),
    one transaction each, its command queued in the outbox with it. Returns the commands' ids."""
    with engine.connect() as tx:
        overdue = store.overdue(tx, create_order_saga.name, limit)
    queued = []
    for saga_id in overdue:
        with engine.begin() as tx:
            command = saga_engine.expire(tx, saga_id)
            if command is not None:
                outbox_.add(tx, outbox, command)
                queued.append(command["id"])
    return queued


def order_view(row: Any) -> dict[str, Any]:
    return {
        "orderId": row.order_id,
        "customerId": row.customer_id,
        "goodsId": row.goods_id,
        "goodsTotal": row.goods_total,
        "orderTotal": {"amount": str(row.order_total)},
        "state": row.state,
        "rejectionReason": row.rejection_reason,
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }


def find_order(engine: sa.Engine, order_id: str, *, wait: float = 0.0) -> Any | None:
    """The order row; with `wait`, hold until it leaves PENDING or the time is up (bounded)."""
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
    pause = 0.005
    while True:
        with engine.connect() as tx:
            row = tx.execute(sa.select(orders).where(orders.c.order_id == order_id)).first()
        if row is None or row.state != "PENDING" or time.monotonic() >= deadline:
            return row
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 1.5, 0.05)


def list_orders(tx: sa.Connection, *, customer_id: str | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(orders).order_by(orders.c.created_at.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(orders.c.customer_id == customer_id)
    return [order_view(row) for row in tx.execute(query)]
