"""The CreateOrderSaga: the whole business flow of an order, top to bottom, with its handlers.

create (local, compensated by reject) -> reserve goods (compensated by release goods)
-> reserve credit (compensated by release credit) -> approve (local). The goods reply carries the
authoritative unit price; an order whose total differs is rejected with PRICE_MISMATCH after its goods
are released. A participant that does not answer before the step deadline rejects the order with
TIMED_OUT; its step is compensated too, in case it acted and its reply is late. Release credit is sent
only then: a refused credit reservation holds nothing.

Reserve credit is the pivot (Richardson's go/no-go step): it is the last step that can refuse, so once
it succeeds the saga only goes forward; approve, after it, is retriable (a local step: it commits with the
pivot's reply or neither does) and never compensated. Every step before the pivot can be undone. A
compensation that fails (goods refuse a return during a stocktake) or goes unanswered is tried again
with backoff (RETRY); past the budget the saga is PARKED, the order stays PENDING, and a person resumes
it (`saga resume`, `POST /admin/sagas/{id}/resume`).
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

from functions.account.messages import CustomerCreditLimitExceeded, CustomerNotFound, ReleaseCredit, ReserveCredit
from functions.goods.messages import GoodsNotFound, GoodsReserved, GoodsStockLimit, ReleaseGoods, ReserveGoods
from saga.dsl import RetryPolicy, SagaDefinition, StepFailed, fail, step
from saga.transaction import Tx

# Who waits for an order to end (GET /orders/{id}?wait, the benchmark) listens here; the notice is
# sent when the transaction that ended the order commits (PostgreSQL NOTIFY is transactional).
ORDER_ENDED = "orders_ended"
CREATE_ORDER = ("INSERT INTO orders.orders (order_id, customer_id, goods_id, goods_total, order_total, state, "
                "placed_by) VALUES (%s, %s, %s, %s, %s, 'PENDING', %s)")
END_ORDER = "UPDATE orders.orders SET state = %s, rejection_reason = %s, updated_at = now() WHERE order_id = %s"
NOTIFY_END = "SELECT pg_notify(%s, %s)"
# Sized for the cluster's one-minute sweep: a failing compensation is tried 8 times over ~11 minutes
# (5 s, 10 s, ... 320 s apart, each wait rounded up to a sweep), an unanswered one over ~19.
RETRY = RetryPolicy(attempts=8, first_delay=5.0, max_delay=600.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CreateOrderSagaData:
    order_id: str
    customer_id: str
    goods_id: int
    goods_total: int
    order_total: Decimal
    placed_by: str
    unit_price: Decimal | None = None
    rejection_reason: str | None = None


Data = CreateOrderSagaData


def create(tx: Tx, data: Data) -> None:
    tx.execute(CREATE_ORDER, (data.order_id, data.customer_id, data.goods_id, data.goods_total, data.order_total,
                              data.placed_by))


def reject(tx: Tx, data: Data) -> None:
    end_order(tx, data.order_id, "REJECTED", data.rejection_reason)


def approve(tx: Tx, data: Data) -> None:
    end_order(tx, data.order_id, "APPROVED", None)


def end_order(tx: Tx, order_id: str, state: str, reason: str | None) -> None:
    """The order's final state, and the notice to whoever waits for it (sent at commit)."""
    tx.execute(END_ORDER, (state, reason, order_id))
    notice = {"orderId": order_id, "state": state, "rejectionReason": reason}
    tx.execute(NOTIFY_END, (ORDER_ENDED, json.dumps(notice)))


def reserve_goods(data: Data) -> ReserveGoods:
    return ReserveGoods(goods_id=data.goods_id, quantity=data.goods_total)


def handle_goods_reserved(data: Data, reply: GoodsReserved) -> Data | StepFailed[Data]:
    priced = dataclasses.replace(data, unit_price=reply.unit_price)
    if reply.unit_price * data.goods_total != data.order_total:
        return fail(dataclasses.replace(priced, rejection_reason="PRICE_MISMATCH"))
    return priced


def handle_goods_limit(data: Data, reply: GoodsStockLimit) -> Data:
    return dataclasses.replace(data, rejection_reason="INSUFFICIENT_GOODS")


def handle_goods_not_found(data: Data, reply: GoodsNotFound) -> Data:
    return dataclasses.replace(data, rejection_reason="UNKNOWN_GOODS")


def release_goods(data: Data) -> ReleaseGoods:
    return ReleaseGoods(goods_id=data.goods_id)


def reserve_credit(data: Data) -> ReserveCredit:
    return ReserveCredit(customer_id=data.customer_id, amount=data.order_total)


def release_credit(data: Data) -> ReleaseCredit:
    return ReleaseCredit(customer_id=data.customer_id)


def handle_timeout(data: Data) -> Data:
    return dataclasses.replace(data, rejection_reason="TIMED_OUT")


def handle_customer_not_found(data: Data, reply: CustomerNotFound) -> Data:
    return dataclasses.replace(data, rejection_reason="UNKNOWN_CUSTOMER")


def handle_customer_credit_limit_exceeded(data: Data, reply: CustomerCreditLimitExceeded) -> Data:
    return dataclasses.replace(data, rejection_reason="INSUFFICIENT_CREDIT")


create_order_saga: SagaDefinition[Data] = (
    step()
    .invoke_local(create)
    .with_compensation(reject)
    .step()
    .invoke_participant(reserve_goods)
    .on_reply(GoodsReserved, handle_goods_reserved)
    .on_reply(GoodsStockLimit, handle_goods_limit)
    .on_reply(GoodsNotFound, handle_goods_not_found)
    .on_timeout(handle_timeout)
    .with_compensation(release_goods)
    .step()
    .invoke_participant(reserve_credit)
    .on_reply(CustomerNotFound, handle_customer_not_found)
    .on_reply(CustomerCreditLimitExceeded, handle_customer_credit_limit_exceeded)
    .on_timeout(handle_timeout)
    .with_compensation(release_credit)
    .pivot()
    .step()
    .invoke_local(approve)
    .build(name="CreateOrderSaga", data_type=CreateOrderSagaData, retry=RETRY)
)
