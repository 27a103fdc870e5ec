"""Every branch of the CreateOrderSaga through the real engine, with an in-memory store."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from functions.account.messages import (
    CreditReleased,
    CreditReserved,
    CustomerCreditLimitExceeded,
    CustomerNotFound,
    ReleaseCredit,
    ReserveCredit,
)
from functions.goods.messages import (
    GoodsNotFound,
    GoodsReleased,
    GoodsReserved,
    GoodsStockLimit,
    ReleaseGoods,
    ReserveGoods,
)
from functions.order.create_order_saga import (
    CREATE_ORDER,
    END_ORDER,
    ORDER_ENDED,
    CreateOrderSagaData,
    create_order_saga,
)
from saga.engine import SagaEngine
from saga.errors import InvalidMessage, UnknownSaga
from saga.messages import CAUSATION_ID, PARTITION_KEY, SAGA_ID, SAGA_TYPE
from tests.unit.fakes import InMemorySagaStore, RecordingTx, answer, applied

SAGA_ID_ = "order-1"


def order(total: str = "74", quantity: int = 2) -> CreateOrderSagaData:
    return CreateOrderSagaData(
        order_id=SAGA_ID_, customer_id="12223", goods_id=1, goods_total=quantity,
        order_total=Decimal(total), placed_by="user-1",
    )


@pytest.fixture
def store() -> InMemorySagaStore:
    return InMemorySagaStore()


@pytest.fixture
def engine(store: InMemorySagaStore) -> SagaEngine[CreateOrderSagaData]:
    return SagaEngine(create_order_saga, store)


def order_states(tx: RecordingTx) -> list[tuple[str, str | None]]:
    """The order row's life as the local steps wrote it; every end is notified to its waiters."""
    states: list[tuple[str, str | None]] = []
    for index, (sql, params) in enumerate(tx.statements):
        if sql == CREATE_ORDER:
            states.append(("PENDING", None))
        elif sql == END_ORDER:
            states.append((params[0], params[1]))
            notify_sql, (channel, notice) = tx.statements[index + 1]
            assert "pg_notify" in notify_sql and channel == ORDER_ENDED
            assert json.loads(notice) == {"orderId": params[2], "state": params[0], "rejectionReason": params[1]}
    return states


def test_start_creates_pending_order_and_sends_reserve_goods(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    command = engine.start(tx, SAGA_ID_, order())
    assert command is not None
    assert command["type"] == ReserveGoods.TYPE
    assert command.get_data() == {"goods_id": 1, "quantity": 2}
    assert command[SAGA_ID] == command[PARTITION_KEY] == SAGA_ID_
    assert command[SAGA_TYPE] == "CreateOrderSaga"
    assert order_states(tx) == [("PENDING", None)]
    assert store.instances[SAGA_ID_].awaiting == command["id"]
    assert store.events(SAGA_ID_) == [
        ("STARTED", "CreateOrderSaga"), ("LOCAL_DONE", "create"), ("COMMAND_SENT", "reserve_goods"),
    ]


def test_command_ids_are_stable_across_reexecution() -> None:
    first = SagaEngine(create_order_saga, InMemorySagaStore()).start(RecordingTx(), SAGA_ID_, order())
    again = SagaEngine(create_order_saga, InMemorySagaStore()).start(RecordingTx(), SAGA_ID_, order())
    assert first is not None and again is not None
    assert first["id"] == again["id"]


def test_approved_order_reserves_goods_then_credit_then_approves(
    engine: SagaEngine, store: InMemorySagaStore
) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order("74", 2))
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37.00"))))
    assert credit is not None and credit["type"] == ReserveCredit.TYPE
    assert credit.get_data() == {"customer_id": "12223", "amount": "74"}
    assert applied(engine, tx, answer(credit, CreditReserved(available_credit=Decimal("26")))) is None
    assert order_states(tx) == [("PENDING", None), ("APPROVED", None)]
    saga = store.instances[SAGA_ID_]
    assert saga.finished and not saga.compensating
    assert saga.data["unit_price"] == "37.00"
    assert [e for e, _ in store.events(SAGA_ID_)][-3:] == ["REPLY_RECEIVED", "LOCAL_DONE", "FINISHED"]


def test_credit_exceeded_releases_goods_then_rejects(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order("111", 3))
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    release = applied(engine, tx, answer(credit, CustomerCreditLimitExceeded(available_credit=Decimal("100"))))
    assert release is not None and release["type"] == ReleaseGoods.TYPE
    assert store.instances[SAGA_ID_].compensating
    assert order_states(tx) == [("PENDING", None)], "the order is rejected only after the goods are released"
    assert applied(engine, tx, answer(release, GoodsReleased(quantity=3))) is None
    assert order_states(tx)[-1] == ("REJECTED", "INSUFFICIENT_CREDIT")
    assert store.instances[SAGA_ID_].finished
    compensations = [name for event, name in store.events(SAGA_ID_) if event.startswith("COMPENSATION")]
    assert compensations == ["release_goods", "release_goods", "reject"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(GoodsStockLimit(available=1), "INSUFFICIENT_GOODS"), (GoodsNotFound(), "UNKNOWN_GOODS")],
)
def test_goods_failure_rejects_without_releasing(engine: SagaEngine, store: InMemorySagaStore, reply, reason) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    assert applied(engine, tx, answer(reserve, reply)) is None, "nothing was reserved, nothing to release"
    assert order_states(tx) == [("PENDING", None), ("REJECTED", reason)]
    assert store.instances[SAGA_ID_].finished


def test_price_mismatch_releases_the_reserved_goods(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order("70", 2))
    release = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37.00"))))
    assert release is not None and release["type"] == ReleaseGoods.TYPE
    applied(engine, tx, answer(release, GoodsReleased(quantity=2)))
    assert order_states(tx)[-1] == ("REJECTED", "PRICE_MISMATCH")


def test_unknown_customer_releases_goods(engine: SagaEngine) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    release = applied(engine, tx, answer(credit, CustomerNotFound()))
    applied(engine, tx, answer(release, GoodsReleased(quantity=2)))
    assert order_states(tx)[-1] == ("REJECTED", "UNKNOWN_CUSTOMER")


def test_duplicate_reply_is_ignored(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    reply = answer(reserve, GoodsReserved(unit_price=Decimal("37")))
    assert applied(engine, tx, reply) is not None
    version = store.instances[SAGA_ID_].version
    assert applied(engine, tx, reply) is None
    assert store.instances[SAGA_ID_].version == version
    assert store.events(SAGA_ID_)[-1] == ("REPLY_IGNORED", "GoodsReserved")


def test_stale_reply_to_an_older_command_is_ignored(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    # A late failure reply to the goods command must not start compensation now.
    assert applied(engine, tx, answer(reserve, GoodsStockLimit(available=0))) is None
    saga = store.instances[SAGA_ID_]
    assert not saga.compensating and saga.awaiting == credit["id"]


def test_reply_after_the_saga_finished_is_ignored(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    applied(engine, tx, answer(reserve, GoodsNotFound()))
    statements = len(tx.statements)
    assert applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37")))) is None
    assert len(tx.statements) == statements


def test_reply_for_unknown_saga_is_refused(engine: SagaEngine) -> None:
    tx = RecordingTx()
    other = SagaEngine(create_order_saga, InMemorySagaStore()).start(tx, "elsewhere", order())
    with pytest.raises(UnknownSaga):
        applied(engine, tx, answer(other, GoodsNotFound()))


def test_reply_without_causation_is_invalid(engine: SagaEngine) -> None:
    tx = RecordingTx()
    reply = answer(engine.start(tx, SAGA_ID_, order()), GoodsNotFound())
    attributes = dict(reply.get_attributes())
    del attributes[CAUSATION_ID]
    from cloudevents.http import CloudEvent

    with pytest.raises(InvalidMessage):
        applied(engine, tx, CloudEvent(attributes, reply.get_data()))


def test_silent_goods_participant_times_out_releases_and_ignores_the_late_reply(
    engine: SagaEngine, store: InMemorySagaStore
) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    assert store.instances[SAGA_ID_].deadline_after == engine.step_timeout
    assert engine.expire(tx, SAGA_ID_) is None, "not overdue yet: nothing happens"
    store.past_deadline.add(SAGA_ID_)
    release = engine.expire(tx, SAGA_ID_)
    assert release is not None and release["type"] == ReleaseGoods.TYPE, "the step may have acted: undo it"
    assert applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37")))) is None
    assert applied(engine, tx, answer(release, GoodsReleased(quantity=2))) is None
    assert order_states(tx)[-1] == ("REJECTED", "TIMED_OUT")
    events = [event for event, _ in store.events(SAGA_ID_)]
    assert events.count("TIMED_OUT") == 1 and "REPLY_IGNORED" in events
    assert store.instances[SAGA_ID_].finished and store.instances[SAGA_ID_].deadline_after is None


def test_silent_credit_participant_times_out_releasing_credit_then_goods(
    engine: SagaEngine, store: InMemorySagaStore
) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    store.past_deadline.add(SAGA_ID_)
    release_credit = engine.expire(tx, SAGA_ID_)
    store.past_deadline.clear()
    assert release_credit is not None and release_credit["type"] == ReleaseCredit.TYPE
    assert release_credit.get_data() == {"customer_id": "12223", "held_by": None}
    assert applied(engine, tx, answer(credit, CreditReserved(available_credit=Decimal("26")))) is None
    release_goods = applied(engine, tx, answer(release_credit, CreditReleased(amount=Decimal("74"))))
    assert release_goods is not None and release_goods["type"] == ReleaseGoods.TYPE
    assert applied(engine, tx, answer(release_goods, GoodsReleased(quantity=2))) is None
    assert order_states(tx) == [("PENDING", None), ("REJECTED", "TIMED_OUT")]


def test_refused_credit_sends_no_release_credit(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order("111", 3))
    credit = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    release = applied(engine, tx, answer(credit, CustomerCreditLimitExceeded(available_credit=Decimal("100"))))
    assert release is not None and release["type"] == ReleaseGoods.TYPE


def test_overdue_compensation_is_sent_again_and_either_answer_finishes_it(
    engine: SagaEngine, store: InMemorySagaStore
) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order("70", 2))
    first = applied(engine, tx, answer(reserve, GoodsReserved(unit_price=Decimal("37"))))
    assert first is not None and first["type"] == ReleaseGoods.TYPE
    store.past_deadline.add(SAGA_ID_)
    again = engine.expire(tx, SAGA_ID_)
    # The same id: a participant that acted on the first answers from its inbox, not twice.
    assert again is not None and again["type"] == ReleaseGoods.TYPE and again["id"] == first["id"]
    assert order_states(tx) == [("PENDING", None)], "a compensation is retried, never dropped"
    assert store.events(SAGA_ID_)[-1] == ("COMPENSATION_SENT", "release_goods")
    store.past_deadline.clear()
    assert applied(engine, tx, answer(first, GoodsReleased(quantity=2))) is None
    assert order_states(tx)[-1] == ("REJECTED", "PRICE_MISMATCH"), "the reason is the original one"
    assert applied(engine, tx, answer(again, GoodsReleased(quantity=2))) is None, "the second answer: ignored"
    assert store.events(SAGA_ID_)[-1] == ("REPLY_IGNORED", "GoodsReleased")


def test_a_finished_saga_never_times_out(engine: SagaEngine, store: InMemorySagaStore) -> None:
    tx = RecordingTx()
    reserve = engine.start(tx, SAGA_ID_, order())
    applied(engine, tx, answer(reserve, GoodsNotFound()))
    store.past_deadline.add(SAGA_ID_)
    assert engine.expire(tx, SAGA_ID_) is None
    assert order_states(tx)[-1] == ("REJECTED", "UNKNOWN_GOODS")
