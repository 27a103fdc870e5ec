"""A definition upgrade on real PostgreSQL, with the real participants in-process: sagas started on v1
finish on v1 after the step function restarts on a build whose newest version is v2, while new sagas
start on v2; a build without v1 leaves a v1 saga untouched (the sweep parks it), and `saga versions`
reports what runs on which version."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from functions.account import schema as account_schema
from functions.order import create_order_saga as order_saga
from functions.order import service as order_service
from functions.order.saga_step import INBOX as ORDERS_INBOX
from functions.versions import versions as versions_command
from saga.dsl import SagaDefinition, step
from saga.engine import SagaEngine
from saga.errors import UnknownDefinition
from saga.transaction import Database
from tests.integration.delivery import deliver, drive, participant
from tests.integration.test_participants import new_goods

pytestmark = pytest.mark.integration

V1 = order_saga.create_order_saga
# v2 asks for credit before goods (the goods reservation becomes the pivot): a different path, visible.
V2: SagaDefinition[order_saga.CreateOrderSagaData] = (
    step().invoke_local(order_saga.create).with_compensation(order_saga.reject)
    .step().invoke_participant(order_saga.reserve_credit)
    .on_reply(order_saga.CustomerNotFound, order_saga.handle_customer_not_found)
    .on_reply(order_saga.CustomerCreditLimitExceeded, order_saga.handle_customer_credit_limit_exceeded)
    .on_timeout(order_saga.handle_timeout)
    .with_compensation(order_saga.release_credit)
    .step().invoke_participant(order_saga.reserve_goods)
    .on_reply(order_saga.GoodsReserved, order_saga.handle_goods_reserved)
    .on_reply(order_saga.GoodsStockLimit, order_saga.handle_goods_limit)
    .on_reply(order_saga.GoodsNotFound, order_saga.handle_goods_not_found)
    .on_timeout(order_saga.handle_timeout)
    .with_compensation(order_saga.release_goods)
    .pivot()
    .step().invoke_local(order_saga.approve)
    .build(name=V1.name, data_type=order_saga.CreateOrderSagaData, retry=V1.retry, version=2)
)


def new_order(db: sa.Engine, engine: SagaEngine[order_saga.CreateOrderSagaData], database: Database):  # type: ignore[no-untyped-def]
    goods_id = new_goods(db, stock=10, price="5.00")
    customer = f"v-{uuid.uuid4().hex[:12]}"
    with db.begin() as tx:
        account_schema.open_account(tx, customer, Decimal("100.00"))
    order_id = str(uuid.uuid4())
    data = order_saga.CreateOrderSagaData(order_id=order_id, customer_id=customer, goods_id=goods_id, goods_total=2,
                                          order_total=Decimal("10.00"), placed_by="test")
    return order_id, database.run_sync(lambda tx: engine.start(tx, order_id, data))


def described(database: Database, order_id: str) -> dict:  # type: ignore[type-arg]
    found = database.autocommit(lambda tx: order_service.store.describe(tx, order_id))
    assert found, f"no saga for {order_id}"
    return found[0]  # the order's CreateOrderSaga


def test_sagas_started_on_v1_finish_on_v1_across_a_restart_while_new_ones_start_on_v2(
    db: sa.Engine, database: Database, database_url: str
) -> None:
    before = SagaEngine(V1, order_service.store)  # the build running when the saga started
    old_id, old_first = new_order(db, before, database)
    goods_reply = deliver(database, *participant(old_first), old_first).reply  # in flight across the restart
    after = SagaEngine(V2, order_service.store, older=(V1,))  # the step function restarted on the new build
    new_id, new_first = new_order(db, after, database)
    old_rest = drive(database, ORDERS_INBOX, after.handle_reply, deliver(
        database, ORDERS_INBOX, "order-saga", after.handle_reply, goods_reply).reply)
    new_path = drive(database, ORDERS_INBOX, after.handle_reply, new_first)
    old, new = described(database, old_id), described(database, new_id)
    assert (old["definitionVersion"], new["definitionVersion"]) == (1, 2)
    assert [old_first["type"], *old_rest] == ["io.knativesaga.goods.reserve", "io.knativesaga.account.reservecredit"]
    assert new_path == ["io.knativesaga.account.reservecredit", "io.knativesaga.goods.reserve"]
    assert old["state"] == new["state"] == "COMPLETED"
    ended = database.autocommit(lambda tx: tx.query(
        "SELECT state FROM orders.orders WHERE order_id IN (%s, %s)", (old_id, new_id)).all())
    assert [row.state for row in ended] == ["APPROVED", "APPROVED"]

    listed = CliRunner().invoke(versions_command, ["--database-url", database_url])
    assert listed.exit_code == 0, listed.output
    rows = {(r["sagaType"], r["version"]): r for r in map(json.loads, listed.output.splitlines())}
    assert rows[(V1.name, 1)]["inThisBuild"] and rows[(V1.name, 1)]["sagas"] >= 1


def test_a_build_without_the_version_a_saga_started_on_refuses_it_and_changes_nothing(
    db: sa.Engine, database: Database, database_url: str
) -> None:
    ahead = SagaEngine(V2, order_service.store, older=(V1,))
    order_id, first = new_order(db, ahead, database)  # on v2
    reply = deliver(database, *participant(first), first).reply
    assert reply is not None
    before = described(database, order_id)
    older_build = SagaEngine(V1, order_service.store)  # rolled back to a build that only has v1
    with pytest.raises(UnknownDefinition, match="v2 is not in this build"):
        database.run_sync(lambda tx: older_build.handle_reply(tx, reply)())
    assert described(database, order_id)["version"] == before["version"]
    # `saga versions --check`, run against the service's real engine (v1 only), fails the deploy.
    checked = CliRunner().invoke(versions_command, ["--database-url", database_url, "--check"])
    assert checked.exit_code == 1 and "not in this build" in checked.output
    assert drive(database, ORDERS_INBOX, ahead.handle_reply, deliver(
        database, ORDERS_INBOX, "order-saga", ahead.handle_reply, reply).reply) == ["io.knativesaga.goods.reserve"]
    assert described(database, order_id)["state"] == "COMPLETED"
    assert CliRunner().invoke(versions_command, ["--database-url", database_url, "--check"]).exit_code == 0
