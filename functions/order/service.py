"""Order use cases: place an order (start its CreateOrderSaga), cancel an approved one (start its
CancelOrderSaga), time out overdue sagas, resume parked ones, read orders and sagas.

Placing an order is one transaction: the idempotency record, the saga's first local step (the
PENDING order row), the saga instance and its first command in the outbox commit together. So is a
cancel: the order read under its row lock, its semantic lock (CANCEL_PENDING), the saga and its first
command."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
from cloudevents.http import CloudEvent
from psycopg_pool import PoolTimeout

from functions.order.cancel_order_saga import CancelOrderSagaData, cancel_order_saga, cancel_order_saga_v1
from functions.order.create_order_saga import CreateOrderSagaData, create_order_saga
from functions.platform.config import settings
from saga import outbox as outbox_
from saga import tracing
from saga.dsl import RetryPolicy, SagaDefinition
from saga.engine import SagaEngine
from saga.errors import InvalidMessage, UnknownSaga
from saga.messages import SAGA_TYPE, stable_id
from saga.outbox import Outbox
from saga.store import PostgresSagaStore
from saga.transaction import Database, Tx

log = logging.getLogger(__name__)

store = PostgresSagaStore("orders")


def _retry(base: RetryPolicy) -> RetryPolicy:
    """The definition's budget, unless the deployment sets its own (the chaos run's short one)."""
    own = settings()
    return dataclasses.replace(
        base, attempts=base.attempts if own.retry_attempts is None else own.retry_attempts,
        first_delay=base.first_delay if own.retry_first_delay is None else own.retry_first_delay)


def _engine(definition: SagaDefinition[Any], *older: SagaDefinition[Any]) -> SagaEngine[Any]:
    """`definition`, the newest version, and the `older` ones that may still have sagas in flight."""
    return SagaEngine(definition, store, older=older, start_on=settings().start_versions.get(definition.name),
                      step_timeout=settings().step_timeout, retry=_retry(definition.retry))


saga_engine = _engine(create_order_saga)
cancel_engine = _engine(cancel_order_saga, cancel_order_saga_v1)
# Every saga type over an order, by name: one step handler, one sweep, one set of tables for all.
engines: dict[str, SagaEngine[Any]] = {engine.definition.name: engine for engine in (saga_engine, cancel_engine)}
if unknown := set(settings().start_versions) - set(engines):  # a misspelt name would silently end phase one
    raise ValueError(f"SAGA_START_VERSIONS names {sorted(unknown)}: the saga types here are {sorted(engines)}")
outbox = Outbox("orders.outbox")
# While its CreateOrderSaga decides, an order cannot be cancelled: the client is told to come back.
CANCEL_RETRY_AFTER_SECONDS = 1

ORDER_COLUMNS = ("order_id, customer_id, goods_id, goods_total, order_total, state, rejection_reason, "
                 "created_at, updated_at")
CLAIM_KEY = ("INSERT INTO orders.order_requests (placed_by, idempotency_key, order_id, request_hash) "
             "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING order_id")
EARLIER_REQUEST = "SELECT request_hash FROM orders.order_requests WHERE placed_by = %s AND idempotency_key = %s"
FIND = f"SELECT {ORDER_COLUMNS} FROM orders.orders WHERE order_id = %s"
LOCK_ORDER = "SELECT order_id, customer_id, goods_id, state FROM orders.orders WHERE order_id = %s FOR UPDATE"
TRACE_OF = "SELECT traceparent FROM orders.saga_instances WHERE saga_id = %s AND saga_type = %s"
SAGAS_OF = ("SELECT saga_type, parked_reason IS NOT NULL AS parked FROM orders.saga_instances WHERE saga_id = %s "
            "ORDER BY updated_at DESC")
LIST_ALL = f"SELECT {ORDER_COLUMNS} FROM orders.orders ORDER BY created_at DESC LIMIT %s"
LIST_FOR = f"SELECT {ORDER_COLUMNS} FROM orders.orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT %s"


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key came with a different request body."""


class OrderLocked(Exception):
    """The order is not in a state that can be cancelled (`state`); `retry_after` seconds when it may be."""

    def __init__(self, state: str, retry_after: int | None = None) -> None:
        super().__init__(state)
        self.state = state
        self.retry_after = retry_after


class AmbiguousSaga(Exception):
    """Several saga types over this id are parked: the caller must say which."""


def cancel_order(tx: Tx, order_id: str, *, by: str) -> CloudEvent | None:
    """Start a CancelOrderSaga on an APPROVED order (read under its row lock, so a concurrent cancel
    waits and then finds it CANCEL_PENDING); the command queued in the outbox. None if there is no such
    order. Raises OrderLocked otherwise: PENDING (its CreateOrderSaga holds the lock: retry after a
    moment), CANCEL_PENDING, REJECTED or CANCELLED (for good)."""
    order = tx.query(LOCK_ORDER, (order_id,)).one()
    if order is None:
        return None
    if order.state == "PENDING":
        sagas = {row.saga_type: row.parked for row in tx.query(SAGAS_OF, (order_id,)).all()}
        if sagas.get(create_order_saga.name):  # waiting for a person, not for a moment: no Retry-After
            raise OrderLocked("PENDING (its CreateOrderSaga is PARKED, waiting for an operator)")
        raise OrderLocked(order.state, CANCEL_RETRY_AFTER_SECONDS)
    if order.state != "APPROVED":
        raise OrderLocked(order.state)
    data = CancelOrderSagaData(order_id=order_id, customer_id=order.customer_id, goods_id=order.goods_id,
                               cancelled_by=by)
    command = cancel_engine.start(tx, order_id, data)
    assert command is not None, "a cancel always has credit and goods to give back"
    outbox_.add(tx, outbox, command)
    return command


def handle_reply(tx: Tx, event: CloudEvent) -> Callable[[], CloudEvent | None]:
    """The order-saga step handler: a reply moves the saga of its type (`sagatype`)."""
    engine = engines.get(str(event.get(SAGA_TYPE)))
    if engine is None:
        raise InvalidMessage(f"no saga type {event.get(SAGA_TYPE)!r} here (there are {sorted(engines)})")
    return engine.handle_reply(tx, event)


def place_order(
    tx: Tx, *, placed_by: str, customer_id: str, goods_id: int, goods_total: int,
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
        claimed = tx.query(CLAIM_KEY, (placed_by, idempotency_key, order_id, digest))
        earlier = tx.query(EARLIER_REQUEST, (placed_by, idempotency_key))
        if claimed.one() is None:
            if earlier.scalar() != digest:
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


def expire_overdue(database: Database, *, limit: int = 500) -> list[CloudEvent]:
    """The stuck-saga sweep: every overdue saga times out, has its overdue compensation re-sent or its
    due retry sent, one transaction each, its command queued in the outbox with it. Returns the
    commands. A saga that cannot be expired (data that no longer decodes, a failing handler) is logged
    with its id and rolled back, its failure counted (backoff, then PARKED), and the sweep goes on with
    the others; a database that is away stops it."""
    queued = []
    for engine in engines.values():
        name = engine.definition.name
        overdue = database.autocommit(lambda tx: store.overdue(tx, name, limit))  # noqa: B023
        for saga_id, traceparent in overdue:
            try:
                with tracing.joined(traceparent, f"sweep {name}", saga_id=saga_id), database.transaction() as tx:
                    command = engine.expire(tx, saga_id)
                    if command is not None:
                        outbox_.add(tx, outbox, command)
            except (psycopg.OperationalError, PoolTimeout):
                raise  # the database is away: every other saga would fail the same way; the next ping retries
            except Exception as exc:
                log.exception("saga %s could not be expired; the sweep goes on with the others", saga_id)
                _count_sweep_failure(database, engine, saga_id, f"{type(exc).__name__}: {exc}")
                continue
            if command is not None:
                queued.append(command)
    return queued


def _count_sweep_failure(database: Database, engine: SagaEngine[Any], saga_id: str, reason: str) -> None:
    """Back off from the saga, and park it past the budget, so it is not first again every sweep."""
    try:
        with database.transaction() as tx:
            parked = engine.sweep_failed(tx, saga_id, reason[:500])
    except (psycopg.OperationalError, PoolTimeout):
        raise
    except Exception:
        log.exception("saga %s: its failure could not be counted either", saga_id)
        return
    if parked:
        log.error("saga %s PARKED: the sweep failed on it past its budget (%s)", saga_id, reason)


def resume_saga(tx: Tx, saga_id: str, *, by: str, saga_type: str | None = None) -> CloudEvent:
    """`POST /admin/sagas/{id}/resume` and `saga resume`: take a PARKED saga up again; its command is
    queued in the outbox in the same transaction. Without `saga_type`, the one parked over this id."""
    if saga_type is None:
        sagas = tx.query(SAGAS_OF, (saga_id,)).all()
        parked = [row.saga_type for row in sagas if row.parked]
        if len(parked) > 1:
            raise AmbiguousSaga(f"sagas of types {sorted(parked)} are parked over {saga_id}: say which")
        # The parked one; with none parked, the last one to move (whose state the refusal then names).
        saga_type = parked[0] if parked else sagas[0].saga_type if sagas else create_order_saga.name
    engine = engines.get(saga_type)
    if engine is None:
        raise UnknownSaga(f"no saga type {saga_type}")
    with tracing.joined(tx.query(TRACE_OF, (saga_id, saga_type)).scalar(), f"resume {saga_type}", saga_id=saga_id):
        command = engine.resume(tx, saga_id, by=by)
        outbox_.add(tx, outbox, command)
    return command


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


def find_order(tx: Tx, order_id: str) -> Any | None:
    return tx.query(FIND, (order_id,)).one()


def list_orders(tx: Tx, *, customer_id: str | None, limit: int) -> list[dict[str, Any]]:
    found = tx.query(LIST_ALL, (limit,)) if customer_id is None else tx.query(LIST_FOR, (customer_id, limit))
    return [order_view(row) for row in found.all()]
