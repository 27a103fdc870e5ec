"""The CancelOrderSaga: an APPROVED order cancelled by its customer or an admin. It runs over the same
order id as the order's CreateOrderSaga, on the same engine, step handler, sweep and tables.

v2: lock (local: the order becomes CANCEL_PENDING, the semantic lock; the pivot) -> return goods ->
release credit -> cancelled (local: CANCELLED). v1 released the credit first; v2 returns the goods first,
because stock is what other customers wait for (an item can sell out) while the credit is only this
customer's. Sagas started on v1 finish on v1 (`older=` in the engine); a two-phase rollout
(`SAGA_START_VERSIONS=CancelOrderSaga=1` until every replica runs this build) keeps new cancels on v1
until no replica is left that lacks v2. Nothing can refuse a cancel once its lock is taken, so the lock is
the pivot and every step after it is retriable and never compensated: a participant that refuses (goods
take no returns during a stocktake) or stays silent is tried again with backoff, and past the budget the
saga is PARKED with its order CANCEL_PENDING, listed first by `GET /admin/sagas`, until a person resumes
it. The releases name the CreateOrderSaga's reservations (`held_by`): that saga holds them.
"""

from __future__ import annotations

import dataclasses

from functions.account.messages import ReleaseCredit
from functions.goods.messages import ReleaseGoods
from functions.order.create_order_saga import RETRY, create_order_saga, end_order
from saga.dsl import SagaDefinition, step
from saga.transaction import Tx

LOCK = ("UPDATE orders.orders SET state = 'CANCEL_PENDING', updated_at = now() "
        "WHERE order_id = %s AND state = 'APPROVED'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CancelOrderSagaData:
    order_id: str
    customer_id: str
    goods_id: int
    cancelled_by: str


Data = CancelOrderSagaData


def lock(tx: Tx, data: Data) -> None:
    """The caller read the order APPROVED under its row lock in this transaction."""
    tx.execute(LOCK, (data.order_id,))


def release_order_credit(data: Data) -> ReleaseCredit:
    return ReleaseCredit(customer_id=data.customer_id, held_by=create_order_saga.name)


def return_order_goods(data: Data) -> ReleaseGoods:
    return ReleaseGoods(goods_id=data.goods_id, held_by=create_order_saga.name)


def cancelled(tx: Tx, data: Data) -> None:
    end_order(tx, data.order_id, "CANCELLED", None)


cancel_order_saga_v1: SagaDefinition[Data] = (
    step()
    .invoke_local(lock)
    .pivot()
    .step()
    .invoke_participant(release_order_credit)
    .step()
    .invoke_participant(return_order_goods)
    .step()
    .invoke_local(cancelled)
    .build(name="CancelOrderSaga", data_type=CancelOrderSagaData, retry=RETRY, version=1)
)

cancel_order_saga: SagaDefinition[Data] = (
    step()
    .invoke_local(lock)
    .pivot()
    .step()
    .invoke_participant(return_order_goods)
    .step()
    .invoke_participant(release_order_credit)
    .step()
    .invoke_local(cancelled)
    .build(name="CancelOrderSaga", data_type=CancelOrderSagaData, retry=RETRY, version=2)
)
