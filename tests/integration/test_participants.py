"""Participants and the saga step handler on real PostgreSQL: each delivery is handled once, a
redelivery gets the same reply, concurrent duplicates apply once, bad events change nothing."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa
from cloudevents.http import CloudEvent

from functions.account import schema as account_schema
from functions.account.messages import USER_REGISTERED, ReserveCredit
from functions.account.provision import INBOX as ACCOUNTS_INBOX
from functions.account.provision import _provision
from functions.account.reserve_credit import _reserve_credit
from functions.goods import schema as goods_schema
from functions.goods.messages import GoodsReserved, ReleaseGoods, ReserveGoods
from functions.goods.release import _release
from functions.goods.reserve import INBOX as GOODS_INBOX
from functions.goods.reserve import _reserve
from functions.order import service as order_service
from functions.order.saga_step import INBOX as ORDERS_INBOX
from saga.messages import REPLY_KIND, command_event, domain_event, reply_event, stable_id
from saga.transaction import Database
from tests.integration.delivery import deliver

pytestmark = pytest.mark.integration


def new_goods(db: sa.Engine, *, stock: int, price: str = "5.00") -> int:
    goods_id = random.randint(1_000_000, 2_000_000_000)
    with db.begin() as tx:
        tx.execute(
            sa.insert(goods_schema.goods).values(id=goods_id, name="test", unit_price=Decimal(price), stock=stock)
        )
    return goods_id


def stock_of(db: sa.Engine, goods_id: int) -> int:
    with db.connect() as tx:
        return tx.execute(sa.select(goods_schema.goods.c.stock).where(goods_schema.goods.c.id == goods_id)).scalar_one()


def command(cmd: object, *, saga_id: str | None = None, step: int = 1, direction: str = "invoke",
            saga_type: str = "CreateOrderSaga") -> CloudEvent:
    saga_id = saga_id or str(uuid.uuid4())
    return command_event(
        cmd, event_id=stable_id(saga_type, saga_id, step, direction), source=f"/sagas/{saga_type}",  # type: ignore[arg-type]
        saga_type=saga_type, saga_id=saga_id, step=step,
    )


def goods_reserve(database: Database, event: CloudEvent):  # type: ignore[no-untyped-def]
    return deliver(database, GOODS_INBOX, "goods-reserve", _reserve, event)


def test_redelivered_reserve_command_returns_same_reply_and_reserves_once(db: sa.Engine, database: Database) -> None:
    goods_id = new_goods(db, stock=10)
    event = command(ReserveGoods(goods_id=goods_id, quantity=3))
    first, second = goods_reserve(database, event), goods_reserve(database, event)
    assert first.status == second.status == 200
    assert first.reply is not None and second.reply is not None
    assert first.reply[REPLY_KIND] == "GoodsReserved"
    assert (first.reply["id"], first.reply.get_data()) == (second.reply["id"], second.reply.get_data())
    assert stock_of(db, goods_id) == 7


def test_concurrent_duplicate_deliveries_reserve_once(db: sa.Engine, database: Database) -> None:
    goods_id = new_goods(db, stock=10)
    event = command(ReserveGoods(goods_id=goods_id, quantity=4))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: goods_reserve(database, event), range(4)))
    assert {r.status for r in results} == {200}
    assert len({r.reply["id"] for r in results if r.reply is not None}) == 1
    assert stock_of(db, goods_id) == 6


def test_same_saga_reserves_once_even_under_a_new_command_id(db: sa.Engine, database: Database) -> None:
    goods_id = new_goods(db, stock=10)
    saga_id = str(uuid.uuid4())
    goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=2), saga_id=saga_id))
    again = goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=2), saga_id=saga_id, step=9))
    assert again.reply is not None and again.reply[REPLY_KIND] == "GoodsReserved"
    assert stock_of(db, goods_id) == 8


def test_release_gives_stock_back_once(db: sa.Engine, database: Database) -> None:
    goods_id = new_goods(db, stock=10)
    saga_id = str(uuid.uuid4())
    goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=5), saga_id=saga_id))
    release = command(ReleaseGoods(goods_id=goods_id), saga_id=saga_id, direction="compensate")
    first = deliver(database, GOODS_INBOX, "goods-release", _release, release)
    assert first.reply is not None and first.reply.get_data() == {"quantity": 5}
    # Redelivered, and re-sent under another id: nothing more is given back.
    deliver(database, GOODS_INBOX, "goods-release", _release, release)
    other = command(ReleaseGoods(goods_id=goods_id), saga_id=saga_id, step=7, direction="compensate")
    assert deliver(database, GOODS_INBOX, "goods-release", _release, other).reply.get_data() == {"quantity": 0}
    assert stock_of(db, goods_id) == 10


def test_two_saga_types_over_one_id_hold_apart_and_a_release_names_whose_it_releases(
    db: sa.Engine, database: Database
) -> None:
    goods_id, saga_id = new_goods(db, stock=10), str(uuid.uuid4())
    goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=2), saga_id=saga_id))
    other = goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=3), saga_id=saga_id,
                                            saga_type="OtherSaga"))
    assert other.reply is not None and other.reply[REPLY_KIND] == "GoodsReserved", "its own reservation, not a repeat"
    assert stock_of(db, goods_id) == 5
    # A cancel-like saga releases the CreateOrderSaga's reservation by name, and only that one.
    release = command(ReleaseGoods(goods_id=goods_id, held_by="CreateOrderSaga"), saga_id=saga_id, step=2,
                      saga_type="CancelOrderSaga")
    released = deliver(database, GOODS_INBOX, "goods-release", _release, release)
    assert released.reply is not None and released.reply.get_data() == {"quantity": 2}
    assert stock_of(db, goods_id) == 7
    with db.connect() as tx:
        held = dict(tx.execute(sa.select(goods_schema.reservations.c.saga_type, goods_schema.reservations.c.state)
                               .where(goods_schema.reservations.c.saga_id == saga_id)).all())
    assert held == {"CreateOrderSaga": "RELEASED", "OtherSaga": "RESERVED"}, "no marker for the cancel saga itself"


def test_release_without_reservation_is_safe_and_blocks_a_late_reserve(db: sa.Engine, database: Database) -> None:
    goods_id = new_goods(db, stock=10)
    saga_id = str(uuid.uuid4())
    release = command(ReleaseGoods(goods_id=goods_id), saga_id=saga_id, direction="compensate")
    assert deliver(database, GOODS_INBOX, "goods-release", _release, release).reply.get_data() == {"quantity": 0}
    late = goods_reserve(database, command(ReserveGoods(goods_id=goods_id, quantity=3), saga_id=saga_id))
    assert late.reply is not None and late.reply[REPLY_KIND] == "GoodsStockLimit"
    assert stock_of(db, goods_id) == 10


@pytest.mark.parametrize(
    "data",
    [{"goods_id": 1}, {"goods_id": "one", "quantity": 1}, {"goods_id": 1, "quantity": True}, "not an object"],
)
def test_malformed_command_is_refused_and_changes_nothing(db: sa.Engine, database: Database, data: object) -> None:
    event = command(ReserveGoods(goods_id=1, quantity=1))
    bad = CloudEvent(dict(event.get_attributes()), data)
    result = goods_reserve(database, bad)
    assert result.status == 400
    assert result.problem is not None and result.problem["status"] == 400
    with db.connect() as tx:
        inbox = goods_schema.inbox
        handled = tx.execute(
            sa.select(sa.func.count()).select_from(inbox).where(inbox.c.event_id == event["id"])
        ).scalar_one()
    assert handled == 0


def test_redelivered_credit_command_reserves_once(db: sa.Engine, database: Database) -> None:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    with db.begin() as tx:
        account_schema.open_account(tx, customer, Decimal("100.00"))
    event = command(ReserveCredit(customer_id=customer, amount=Decimal("60.00")), step=2)
    replies = [deliver(database, ACCOUNTS_INBOX, "account-reserve-credit", _reserve_credit, event) for _ in range(2)]
    assert [r.reply[REPLY_KIND] for r in replies if r.reply is not None] == ["CreditReserved", "CreditReserved"]
    second = deliver(
        database, ACCOUNTS_INBOX, "account-reserve-credit", _reserve_credit,
        command(ReserveCredit(customer_id=customer, amount=Decimal("60.00")), step=2),
    )
    assert second.reply is not None and second.reply[REPLY_KIND] == "CustomerCreditLimitExceeded"
    with db.connect() as tx:
        accounts = account_schema.accounts
        available = tx.execute(
            sa.select(accounts.c.available_credit).where(accounts.c.customer_id == customer)
        ).scalar_one()
    assert available == Decimal("40.00")


def test_user_registered_provisions_the_account_once(db: sa.Engine, database: Database) -> None:
    customer = f"c-{uuid.uuid4().hex[:12]}"
    event = domain_event(
        USER_REGISTERED, event_id=stable_id("user-registered", customer), source="/functions/auth-api", key=customer,
        data={"user_id": "u-" + customer, "customer_id": customer, "username": "u" + customer},
    )
    for _ in range(2):
        assert deliver(database, ACCOUNTS_INBOX, "account-provision", _provision, event).status == 202
    with db.connect() as tx:
        rows = tx.execute(
            sa.select(account_schema.accounts).where(account_schema.accounts.c.customer_id == customer)
        ).all()
    assert [(r.credit_limit, r.available_credit) for r in rows] == [(Decimal("100.00"), Decimal("100.00"))]


def test_duplicate_replies_advance_the_saga_once(db: sa.Engine, database: Database) -> None:
    order_id, reserve = database.run_sync(lambda tx: order_service.place_order(
        tx, placed_by="test", customer_id="12223", goods_id=1, goods_total=2, order_total=Decimal("74"),
        idempotency_key=None,
    ))
    assert reserve is not None
    reply = reply_event(GoodsReserved(unit_price=Decimal("37.00")), command=reserve, source="/functions/goods-reserve")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda _: deliver(database, ORDERS_INBOX, "order-saga", order_service.saga_engine.handle_reply, reply),
                range(3),
            )
        )
    commands = {r.reply["id"] for r in results if r.reply is not None}
    assert len(commands) == 1, "every delivery of the reply re-sends the one command it caused"
    [saga] = database.autocommit(lambda tx: order_service.store.describe(tx, order_id))
    assert saga["version"] == 2, "created at version 1, advanced exactly once"
    assert [h["event"] for h in saga["history"]].count("REPLY_RECEIVED") == 1
