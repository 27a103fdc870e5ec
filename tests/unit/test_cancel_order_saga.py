"""The CancelOrderSaga through the real engine, over the same order id as the order's CreateOrderSaga
and in the same (in-memory) store: two saga types, one id, nothing shared but the id."""

from __future__ import annotations

from decimal import Decimal

from functions.account.messages import CreditReleased, CreditReserved, ReleaseCredit
from functions.goods.messages import GoodsReleased, GoodsReleaseRefused, GoodsReserved, ReleaseGoods
from functions.order.cancel_order_saga import LOCK, CancelOrderSagaData, cancel_order_saga, cancel_order_saga_v1
from functions.order.create_order_saga import END_ORDER, CreateOrderSagaData, create_order_saga
from saga.dsl import RetryPolicy
from saga.engine import Event, SagaEngine
from saga.messages import SAGA_TYPE
from tests.unit.fakes import InMemorySagaStore, RecordingTx, answer, applied

ORDER = "order-9"
BUDGET = RetryPolicy(attempts=2, first_delay=1.0, max_delay=1.0)


def approved(store: InMemorySagaStore, tx: RecordingTx) -> list[str]:
    """The order's CreateOrderSaga, run to APPROVED; the ids of the commands it sent."""
    create = SagaEngine(create_order_saga, store)
    data = CreateOrderSagaData(order_id=ORDER, customer_id="12223", goods_id=1, goods_total=2,
                               order_total=Decimal("74"), placed_by="user-1")
    reserve = create.start(tx, ORDER, data)
    assert reserve is not None
    credit = applied(create, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    assert credit is not None
    assert applied(create, tx, answer(credit, CreditReserved(available_credit=Decimal("26")))) is None
    return [reserve["id"], credit["id"]]


def cancelling(by: str = "user-1") -> CancelOrderSagaData:
    return CancelOrderSagaData(order_id=ORDER, customer_id="12223", goods_id=1, cancelled_by=by)


def test_a_cancel_releases_what_the_create_saga_holds_and_ends_cancelled() -> None:
    store, tx = InMemorySagaStore(), RecordingTx()
    create_ids = approved(store, tx)
    cancel = SagaEngine(cancel_order_saga, store, older=(cancel_order_saga_v1,))
    release_goods = cancel.start(tx, ORDER, cancelling())
    assert release_goods is not None and release_goods["type"] == ReleaseGoods.TYPE, "v2: the scarce stock first"
    assert release_goods[SAGA_TYPE] == "CancelOrderSaga"
    assert release_goods.get_data() == {"goods_id": 1, "held_by": "CreateOrderSaga"}
    assert (LOCK, (ORDER,)) in tx.statements, "the semantic lock, in the transaction that starts the saga"
    release_credit = applied(cancel, tx, answer(release_goods, GoodsReleased(quantity=2)))
    assert release_credit is not None and release_credit["type"] == ReleaseCredit.TYPE
    assert release_credit.get_data() == {"customer_id": "12223", "held_by": "CreateOrderSaga"}
    assert applied(cancel, tx, answer(release_credit, CreditReleased(amount=Decimal("74")))) is None
    assert [params[0] for sql, params in tx.statements if sql == END_ORDER] == ["APPROVED", "CANCELLED"]
    # Two sagas over one id, each whole: ids never collide, each keeps its own instance and history.
    assert not {release_credit["id"], release_goods["id"]} & set(create_ids)
    create_saga, cancel_saga = store.instances[("CreateOrderSaga", ORDER)], store.instances[("CancelOrderSaga", ORDER)]
    assert create_saga.finished and not create_saga.compensating
    assert cancel_saga.finished and not cancel_saga.compensating
    assert [str(h.event) for h in store.history[("CancelOrderSaga", ORDER)]].count("FINISHED") == 1


def test_a_refused_return_is_retried_never_compensated_and_parks_past_the_budget() -> None:
    store, tx = InMemorySagaStore(), RecordingTx()
    approved(store, tx)
    cancel = SagaEngine(cancel_order_saga, store, older=(cancel_order_saga_v1,), retry=BUDGET)
    goods = cancel.start(tx, ORDER, cancelling("admin"))
    assert goods is not None and goods["type"] == ReleaseGoods.TYPE
    assert applied(cancel, tx, answer(goods, GoodsReleaseRefused(reason="STOCKTAKE"))) is None
    assert store.history[("CancelOrderSaga", ORDER)][-1].event == Event.RETRY_SCHEDULED
    store.past_deadline.add(ORDER)
    again = cancel.expire(tx, ORDER)
    store.past_deadline.clear()
    assert again is not None and again["id"] != goods["id"] and again["type"] == ReleaseGoods.TYPE
    assert applied(cancel, tx, answer(again, GoodsReleaseRefused(reason="STOCKTAKE"))) is None
    parked = store.instances[("CancelOrderSaga", ORDER)]
    assert parked.parked_reason is not None and not parked.compensating, "after the pivot: never compensated"
    resumed = cancel.resume(tx, ORDER, by="admin")
    credit = applied(cancel, tx, answer(resumed, GoodsReleased(quantity=2)))
    assert credit is not None and credit["type"] == ReleaseCredit.TYPE
    assert applied(cancel, tx, answer(credit, CreditReleased(amount=Decimal("74")))) is None
    assert [params[0] for sql, params in tx.statements if sql == END_ORDER] == ["APPROVED", "CANCELLED"]


def test_a_two_phase_rollout_starts_on_v1_until_flipped_and_each_cancel_finishes_on_its_own_version() -> None:
    """Phase one: every replica runs the build with v2, but new cancels still start on v1 (a replica of
    the old build could not drive a v2 one). Phase two: new cancels start on v2; v1 ones finish on v1."""
    store, tx = InMemorySagaStore(), RecordingTx()
    approved(store, tx)
    phase_one = SagaEngine(cancel_order_saga, store, older=(cancel_order_saga_v1,), start_on=1)
    first = phase_one.start(tx, ORDER, cancelling())
    assert first is not None and first["type"] == ReleaseCredit.TYPE, "v1: credit first"
    phase_two = SagaEngine(cancel_order_saga, store, older=(cancel_order_saga_v1,))  # restarted, flipped
    second = applied(phase_two, tx, answer(first, CreditReleased(amount=Decimal("74"))))
    assert second is not None and second["type"] == ReleaseGoods.TYPE, "still v1's path"
    assert applied(phase_two, tx, answer(second, GoodsReleased(quantity=2))) is None
    finished = store.history[("CancelOrderSaga", ORDER)]
    assert [h.detail.get("definitionVersion") for h in finished if h.event in (Event.STARTED, Event.FINISHED)] == [1, 1]
