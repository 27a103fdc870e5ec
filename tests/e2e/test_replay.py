"""Replay on the whole local stack (real Kafka and PostgreSQL): re-delivering all of history, even
while orders keep arriving, changes no row; redriven dead letters finish their sagas; and the same
check catches a handler that is not idempotent.

The tests run in order on a stack of their own (own database, topics and consumer groups), since
replaying from `earliest` re-delivers everything in its broker topic and the last test breaks a
handler on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from functions.account.schema import metadata as account_tables
from functions.goods.schema import metadata as goods_tables
from functions.order.schema import metadata as order_tables
from localstack.databases import throwaway_database
from localstack.infra import Infra, repo_root, suite_port_shift
from localstack.invariants import unbalanced_books
from saga.eventing.topology import Topology
from saga.replay.engine import ConsumedWatch, Kafka, Replayer
from tests.e2e.client import Api, Customer, order_body
from tests.e2e.conftest import GATEWAY

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(GATEWAY), reason="replays the local stack's Kafka")]

CHICKEN, APPLE = 1, 2
Row = dict[str, Any]
Snapshot = dict[str, dict[tuple[Any, ...], Row]]
# Balances that new orders legitimately move: checked against the new orders' reservations instead.
BALANCES = {"goods.goods": ("id", "stock", "goods.reservations", "goods_id", "quantity"),
            "accounts.accounts": ("customer_id", "available_credit", "accounts.credit_reservations",
                                  "customer_id", "amount")}


@dataclass
class Rig:
    api: Api
    db: sa.Engine
    topology_file: Path
    stack: Any

    @property
    def topology(self) -> Topology:
        return Topology.read(self.topology_file)


@pytest.fixture(scope="module")
def rig(infra: Infra) -> Iterator[Rig]:
    from localstack.stack import Stack

    repo = repo_root()
    with throwaway_database(infra.database_url, "saga_replay") as url:
        db = sa.create_engine(url)
        try:
            shift = suite_port_shift()
            root = repo / ".local" / ("test" if not shift else f"test-{shift}") / "replay"
            with Stack(repo, root, replace(infra, database_url=url),
                       port_offset=20000 + shift, idle_seconds=300,
                       kafka_suffix=f".{sa.make_url(url).database}") as stack:
                api = Api(stack.public_urls)
                yield Rig(api, db, stack.topology_file, stack)
                api.close()
        finally:
            db.dispose()


def saga_replay(rig: Rig, *args: str, expect: int = 0) -> dict[str, Any]:
    """`saga replay ... --json` through the console entry point, as an operator runs it."""
    command = [str(Path(sys.executable).with_name("saga")), "replay", "--topology", str(rig.topology_file), "--json",
               *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == expect, f"{command} exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def snapshot(db: sa.Engine) -> Snapshot:
    """Every row of the order, goods and account services, by primary key."""
    found: Snapshot = {}
    with db.connect() as tx:
        for tables in (order_tables, goods_tables, account_tables):
            for table in tables.sorted_tables:
                key = [c.name for c in table.primary_key.columns]
                rows = tx.execute(sa.select(table)).mappings().all()
                found[table.fullname] = {tuple(r[k] for k in key): dict(r) for r in rows}
    return found


def changed(before: Snapshot, after: Snapshot, *, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Keys of rows that were there before and differ or are gone now."""
    return {table: bad for table, rows in before.items()
            if table not in skip and (bad := [k for k, row in rows.items() if after[table].get(k) != row])}


def unexplained_balances(before: Snapshot, after: Snapshot) -> list[str]:
    """Stock and credit must have moved by exactly what the new reservations hold, nothing more."""
    problems = []
    for table, (key, balance, holds, owner, amount) in BALANCES.items():
        new_holds = [row for k, row in after[holds].items() if k not in before[holds] and row["state"] == "RESERVED"]
        for k, row in before[table].items():
            expected = row[balance] - sum(h[amount] for h in new_holds if h[owner] == row[key])
            if after[table][k][balance] != expected:
                problems.append(f"{table} {k}: {balance} {after[table][k][balance]}, expected {expected}")
            if {c: v for c, v in after[table][k].items() if c != balance} != {
                    c: v for c, v in row.items() if c != balance}:
                problems.append(f"{table} {k}: changed beyond {balance}")
    return problems


def settle(topology: Topology, timeout: float = 120) -> None:
    """Until every Trigger has consumed the whole broker topic and nothing new is written."""
    watch = ConsumedWatch(topology, Kafka(topology.bootstrap))
    try:
        deadline = time.monotonic() + timeout
        for _ in range(100):
            targets = watch.targets()
            watch.wait(targets, max(1.0, deadline - time.monotonic()), lambda done, total: None)
            if watch.targets() == targets:
                return
        raise AssertionError("the broker topic kept growing")
    finally:
        watch.close()


def place_mix(api: Api, customers: list[Customer], count: int, first: int = 0) -> list[tuple[Customer, str]]:
    """Orders of the three kinds: approved (an apple, 10.00), credit-rejected after goods were reserved
    (3 chickens for 111.00: compensation), stock-rejected (more apples than exist)."""
    placed = []
    for i in range(first, first + count):
        customer = customers[i % len(customers)]
        kind = i % 5
        if kind == 3:
            body = order_body(customer.customer_id, CHICKEN, 3, "111.00")
        elif kind == 4:
            body = order_body(customer.customer_id, APPLE, 100_000, "1000000.00")
        else:
            body = order_body(customer.customer_id, APPLE, 1, "10.00")
        response = api.place_order(customer.token, body)
        assert response.status_code == 202, response.text
        placed.append((customer, response.json()["orderId"]))
    return placed


def settled_states(api: Api, placed: list[tuple[Customer, str]]) -> dict[str, str]:
    return {order_id: api.settled(customer.token, order_id)["state"] for customer, order_id in placed}


@pytest.fixture(scope="module")
def customers(rig: Rig) -> list[Customer]:
    return [rig.api.new_customer() for _ in range(6)]


def test_replaying_every_trigger_from_earliest_changes_nothing(rig: Rig, customers: list[Customer]) -> None:
    states = settled_states(rig.api, place_mix(rig.api, customers, 15))
    assert set(states.values()) == {"APPROVED", "REJECTED"}
    settle(rig.topology)
    before = snapshot(rig.db)

    plan = saga_replay(rig, "--all-triggers", "--from", "earliest", "--dry-run")
    assert plan["dry_run"] and plan["total"]["delivered"] == 0
    types = {t for row in plan["triggers"].values() for t in row["types"]}
    assert {"io.knativesaga.goods.reserve", "io.knativesaga.goods.release", "io.knativesaga.saga.reply",
            "io.knativesaga.account.reservecredit", "io.knativesaga.user.registered"} <= types
    assert plan["triggers"]["goods-release"]["matched"] == 3, "one release per credit-rejected order"
    assert snapshot(rig.db) == before, "a dry run changes nothing"

    done = saga_replay(rig, "--all-triggers", "--from", "earliest", "--wait")
    assert done["total"]["matched"] == plan["total"]["matched"]
    assert done["total"]["delivered"] == done["total"]["matched"], done
    assert done["total"]["dead_lettered"] == 0
    settle(rig.topology)
    after = snapshot(rig.db)
    assert not changed(before, after)
    assert after == before, "no new order, reservation, release, saga step or inbox entry"


def test_replay_while_orders_keep_arriving(rig: Rig, customers: list[Customer]) -> None:
    settle(rig.topology)
    before = snapshot(rig.db)
    placed: list[tuple[Customer, str]] = []
    stop = threading.Event()

    def keep_ordering() -> None:
        for _ in range(40):  # bounded: at most 40 orders, one every 50 ms
            if stop.is_set():
                return
            placed.extend(place_mix(rig.api, customers, 1, first=len(placed)))
            time.sleep(0.05)

    orders = threading.Thread(target=keep_ordering)
    orders.start()
    try:
        done = saga_replay(rig, "--all-triggers", "--from", "earliest", "--wait")
    finally:
        stop.set()
        orders.join(timeout=60)
    assert placed, "orders arrived during the replay"
    assert done["total"]["dead_lettered"] == 0
    states = settled_states(rig.api, placed)
    settle(rig.topology)
    after = snapshot(rig.db)
    assert not changed(before, after, skip=tuple(BALANCES)), "rows that existed before the replay are untouched"
    assert not unexplained_balances(before, after)
    new_orders = set(after["orders.orders"]) - set(before["orders.orders"])
    assert new_orders == {(order_id,) for order_id in states}, "the only new orders are the ones placed"
    # Keyed (saga type, saga id): the id is the order's.
    new_reservations = {k[-1] for k in set(after["goods.reservations"]) - set(before["goods.reservations"])}
    assert new_reservations <= set(states), "reservations only for the new orders"
    assert not unbalanced_books(rig.db)


def test_redriven_dead_letters_finish_their_sagas(rig: Rig) -> None:
    customers = [rig.api.new_customer() for _ in range(5)]
    replayer = Replayer(rig.topology)
    try:
        assert replayer.redrive(rig.topology.triggers, dry_run=True)["goods-reserve"].matched == 0
        rig.stack.redeploy("goods-reserve", "tests/e2e/faults.py", "goods_reserve_rejecting_apples")
        apples = [rig.api.place_order(c.token, order_body(c.customer_id, APPLE, 1, "10.00")) for c in customers[:4]]
        chicken = rig.api.place_order(customers[4].token, order_body(customers[4].customer_id, CHICKEN, 1, "37.00"))
        assert rig.api.settled(customers[4].token, chicken.json()["orderId"])["state"] == "APPROVED"
        deadline = time.monotonic() + 60
        while replayer.redrive([rig.topology.trigger("goods-reserve")], dry_run=True)["goods-reserve"].matched < 4:
            assert time.monotonic() < deadline, "the rejected commands did not reach the dead-letter topic"
            time.sleep(0.2)
    finally:
        replayer.close()
    for placed, customer in zip(apples, customers, strict=False):
        order = rig.api.call("order", "GET", f"/orders/{placed.json()['orderId']}", token=customer.token).json()
        assert order["state"] == "PENDING", "parked: the saga waits for its goods"

    rig.stack.redeploy("goods-reserve")  # the fix
    redriven = saga_replay(rig, "--dead-letters", "--trigger", "goods-reserve", "--wait")
    row = redriven["triggers"]["goods-reserve"]
    assert (row["matched"], row["delivered"], row["dead_lettered"]) == (4, 4, 0)
    for placed, customer in zip(apples, customers, strict=False):
        order = rig.api.settled(customer.token, placed.json()["orderId"])
        assert order["state"] == "APPROVED", json.dumps(order)
    again = saga_replay(rig, "--dead-letters")
    assert again["total"]["matched"] == 0, "a redrive takes only what was parked since the last one"
    settle(rig.topology)
    assert not unbalanced_books(rig.db)


def test_replay_exposes_a_handler_that_is_not_idempotent(rig: Rig) -> None:
    """The check the tests above rely on can fail: with a handler that applies every delivery, the
    same replay changes the stock. (Last in this module: it leaves the books unbalanced.)"""
    settle(rig.topology)
    before = snapshot(rig.db)
    rig.stack.redeploy("goods-reserve", "tests/e2e/faults.py", "goods_reserve_applying_every_delivery")
    try:
        saga_replay(rig, "--trigger", "goods-reserve", "--from", "earliest", "--wait")
    finally:
        rig.stack.redeploy("goods-reserve")
    difference = changed(before, snapshot(rig.db))
    assert set(difference) == {"goods.goods"}, difference
    assert unbalanced_books(rig.db)["goods stock + reserved != initial"]
