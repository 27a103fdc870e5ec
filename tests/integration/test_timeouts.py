"""Step deadlines on real PostgreSQL: an overdue saga is timed out once by the sweep, its command
queued in the outbox in the same transaction; the account participant's release bars a late reserve,
including when the two race."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cloudevents.http import CloudEvent

from functions.account import schema as account_schema
from functions.account.messages import ReleaseCredit, ReserveCredit
from functions.account.release_credit import _release_credit
from functions.account.reserve_credit import INBOX as ACCOUNTS_INBOX
from functions.account.reserve_credit import _reserve_credit
from functions.goods.messages import GoodsReserved, ReleaseGoods
from functions.order import service as order_service
from functions.order.create_order_saga import CreateOrderSagaData, create_order_saga
from functions.order.saga_step import INBOX as ORDERS_INBOX
from functions.resume import resume as resume_command
from saga import outbox
from saga.engine import SagaEngine
from saga.messages import REPLY_KIND, reply_event
from saga.transaction import Database
from tests.integration.delivery import deliver
from tests.integration.test_participants import command

pytestmark = pytest.mark.integration

SHORT = 0.2  # seconds: a step deadline the test can outwait


def start_order(database: Database, step_timeout: float) -> tuple[str, CloudEvent]:
    """A saga started by an engine with `step_timeout`; returns (order id, its first command)."""
    order_id = str(uuid.uuid4())
    data = CreateOrderSagaData(order_id=order_id, customer_id="12223", goods_id=1, goods_total=1,
                               order_total=Decimal("37.00"), placed_by="test")
    engine = SagaEngine(create_order_saga, order_service.store, step_timeout=step_timeout)
    first = database.run_sync(lambda tx: engine.start(tx, order_id, data))
    assert first is not None
    return order_id, first


def overdue(database: Database, order_id: str) -> bool:
    overdue = database.autocommit(lambda tx: order_service.store.overdue(tx, create_order_saga.name, 10_000))
    return order_id in [saga_id for saga_id, _ in overdue]


def wait_overdue(database: Database, order_id: str) -> None:
    deadline = time.monotonic() + 10
    while not overdue(database, order_id):
        assert time.monotonic() < deadline, "the saga never became overdue"
        time.sleep(0.05)


def saga(database: Database, order_id: str) -> dict:  # type: ignore[type-arg]
    found = database.autocommit(lambda tx: order_service.store.describe(tx, order_id))
    assert found, f"no saga for {order_id}"
    return found[0]  # the order's CreateOrderSaga


def test_sweep_times_out_an_overdue_saga_once_and_queues_its_compensation(database: Database) -> None:
    order_id, reserve = start_order(database, SHORT)
    assert saga(database, order_id)["deadline"] is not None
    wait_overdue(database, order_id)
    with ThreadPoolExecutor(max_workers=3) as pool:  # three sweeps at once, as overlapping pings would
        queued = list(pool.map(lambda _: order_service.expire_overdue(database), range(3)))
    waiting = _outbox_ids(database)
    mine = [c["id"] for commands in queued for c in commands if c["id"] in waiting]
    state = saga(database, order_id)
    events = [h["event"] for h in state["history"]]
    assert events.count("TIMED_OUT") == 1, "timed out exactly once"
    assert state["compensating"] and not state["finished"]
    assert state["data"]["rejection_reason"] == "TIMED_OUT"
    release = [h for h in state["history"] if h["event"] == "COMPENSATION_SENT"]
    assert [h["commandType"] for h in release] == [ReleaseGoods.TYPE]
    assert release[0]["commandId"] in mine, "the compensation is in the outbox, committed with the state"
    assert not overdue(database, order_id), "a fresh deadline for the compensation"
    # The goods reply arrives late: recorded and ignored.
    late = reply_event(GoodsReserved(unit_price=Decimal("37.00")), command=reserve,
                       source="/functions/goods-reserve")
    assert deliver(database, ORDERS_INBOX, "order-saga", order_service.saga_engine.handle_reply, late).status == 202
    assert saga(database, order_id)["history"][-1]["event"] == "REPLY_IGNORED"


def test_an_answered_saga_is_not_timed_out(database: Database) -> None:
    order_id, reserve = start_order(database, 30.0)
    reply = reply_event(GoodsReserved(unit_price=Decimal("37.00")), command=reserve,
                        source="/functions/goods-reserve")
    deliver(database, ORDERS_INBOX, "order-saga", order_service.saga_engine.handle_reply, reply)
    order_service.expire_overdue(database)
    assert "TIMED_OUT" not in [h["event"] for h in saga(database, order_id)["history"]]
    assert saga(database, order_id)["deadline"] is not None, "waiting on the credit step, with a deadline"


def _outbox_ids(database: Database) -> set[str]:
    return {e["id"] for e in database.autocommit(lambda tx: outbox.pending(tx, order_service.outbox))}


def _account(db: sa.Engine, credit: str = "100.00") -> str:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    with db.begin() as tx:
        account_schema.open_account(tx, customer, Decimal(credit))
    return customer


def _available(db: sa.Engine, customer: str) -> Decimal:
    accounts = account_schema.accounts
    with db.connect() as tx:
        return tx.execute(
            sa.select(accounts.c.available_credit).where(accounts.c.customer_id == customer)).scalar_one()


def test_release_credit_gives_back_once_and_bars_a_late_reserve(db: sa.Engine, database: Database) -> None:
    customer = _account(db)
    saga_id = str(uuid.uuid4())
    reserve = command(ReserveCredit(customer_id=customer, amount=Decimal("30.00")), saga_id=saga_id, step=2)
    release = command(ReleaseCredit(customer_id=customer), saga_id=saga_id, step=2, direction="compensate")
    deliver(database, ACCOUNTS_INBOX, "account-reserve-credit", _reserve_credit, reserve)
    assert _available(db, customer) == Decimal("70.00")
    for _ in range(2):
        done = deliver(database, ACCOUNTS_INBOX, "account-release-credit", _release_credit, release)
        assert done.reply is not None and done.reply[REPLY_KIND] == "CreditReleased"
    assert _available(db, customer) == Decimal("100.00")
    # Released before its reserve arrived: the late reserve takes nothing.
    other = str(uuid.uuid4())
    deliver(database, ACCOUNTS_INBOX, "account-release-credit", _release_credit,
            command(ReleaseCredit(customer_id=customer), saga_id=other, step=2, direction="compensate"))
    late = deliver(database, ACCOUNTS_INBOX, "account-reserve-credit", _reserve_credit,
                   command(ReserveCredit(customer_id=customer, amount=Decimal("30.00")), saga_id=other, step=2))
    assert late.reply is not None and late.reply[REPLY_KIND] == "CustomerCreditLimitExceeded"
    assert _available(db, customer) == Decimal("100.00")


def test_racing_reserve_and_release_never_leave_credit_held(db: sa.Engine, database: Database) -> None:
    customer = _account(db, "1000.00")
    sagas = [str(uuid.uuid4()) for _ in range(20)]

    def race(saga_id: str) -> None:
        reserve = command(ReserveCredit(customer_id=customer, amount=Decimal("10.00")), saga_id=saga_id, step=2)
        release = command(ReleaseCredit(customer_id=customer), saga_id=saga_id, step=2, direction="compensate")
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = list(pool.map(
                lambda pair: deliver(database, ACCOUNTS_INBOX, pair[0], pair[1], pair[2]),
                [("account-reserve-credit", _reserve_credit, reserve),
                 ("account-release-credit", _release_credit, release)],
            ))
        for delivered in done:  # a lost race is a retryable failure; the dispatcher would redeliver
            if delivered.status >= 500:
                pytest.fail(f"a delivery failed: {delivered.problem}")

    for saga_id in sagas:
        race(saga_id)
    assert _available(db, customer) == Decimal("1000.00")
    held = account_schema.credit_reservations
    with db.connect() as tx:
        states = tx.execute(sa.select(held.c.state).where(held.c.saga_id.in_(sagas))).scalars().all()
    assert set(states) == {"RELEASED"} and len(states) == len(sagas)


def test_a_saga_that_cannot_be_expired_holds_back_no_other_and_parks_past_its_budget(
    database: Database, database_url: str
) -> None:
    """The oldest overdue saga's data no longer decodes, so expiring it fails: the sweep logs it, counts
    it (backoff), and goes on, and the healthy saga behind it times out. Past the budget the poisoned saga
    is PARKED; once its data is repaired, resuming it sends its awaited command again."""
    poisoned_id, first = start_order(database, SHORT)
    healthy_id, _ = start_order(database, SHORT)
    database.autocommit(lambda tx: tx.execute(
        "UPDATE orders.saga_instances SET data = data - 'order_id' WHERE saga_id = %s", (poisoned_id,)))
    try:
        wait_overdue(database, poisoned_id)
        wait_overdue(database, healthy_id)
        queued = order_service.expire_overdue(database)
        assert [c for c in queued if c["sagaid"] == healthy_id], "the healthy saga's compensation was queued"
        assert "TIMED_OUT" in [h["event"] for h in saga(database, healthy_id)["history"]]
        failed = saga(database, poisoned_id)
        assert [h["event"] for h in failed["history"]][-1] == "SWEEP_FAILED"
        assert "missing field 'order_id'" in failed["history"][-1]["reason"]
        assert not overdue(database, poisoned_id), "backed off: not first again on the next sweep"
        budget = order_service.saga_engine.retry.attempts
        for _ in range(budget):  # each backoff cut short: the sweep finds it again at once
            if saga(database, poisoned_id)["state"] == "PARKED":
                break
            database.autocommit(lambda tx: tx.execute(
                "UPDATE orders.saga_instances SET deadline = now() - interval '1 second' WHERE saga_id = %s",
                (poisoned_id,)))
            order_service.expire_overdue(database)
        parked = saga(database, poisoned_id)
        assert parked["state"] == "PARKED" and parked["deadline"] is None
        assert parked["parkedReason"].startswith(f"the sweep failed on it, attempt {budget} of {budget}")
        # `saga resume`, as an operator runs it: refused while the data is not repaired, nothing changes.
        resume = [poisoned_id, "--database-url", database_url, "--by", "operator"]
        refused = CliRunner().invoke(resume_command, resume)
        assert refused.exit_code == 1 and "its data still does not decode" in refused.output
        assert saga(database, poisoned_id)["version"] == parked["version"]
        database.autocommit(lambda tx: tx.execute(
            "UPDATE orders.saga_instances SET data = data || jsonb_build_object('order_id', saga_id) "
            "WHERE saga_id = %s", (poisoned_id,)))
        resumed = CliRunner().invoke(resume_command, resume)
        assert resumed.exit_code == 0, resumed.output
        # The awaited command again: a participant that acted on it answers from its inbox.
        assert json.loads(resumed.output) == {"sagaId": poisoned_id, "sagaType": "CreateOrderSaga", "state": "RUNNING",
                                              "queued": first["type"], "commandId": first["id"]}
        again = CliRunner().invoke(resume_command, resume)
        assert again.exit_code == 1 and "the saga is RUNNING; only a PARKED saga can be resumed" in again.output
        after = saga(database, poisoned_id)
        assert (after["state"], after["attempt"], after["parkedReason"]) == ("RUNNING", 1, None)
        assert [h["event"] for h in after["history"]][-2:] == ["RESUMED", "COMMAND_SENT"]
        assert database.autocommit(lambda tx: tx.query(
            "SELECT event_id FROM orders.outbox WHERE event_id = %s", (first["id"],)).one()) is not None
    finally:  # out of the other tests' sweeps
        database.autocommit(lambda tx: tx.execute(
            "UPDATE orders.saga_instances SET finished = true, deadline = NULL WHERE saga_id = %s", (poisoned_id,)))
