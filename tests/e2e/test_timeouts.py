"""A participant that does not answer: the saga times out at its step deadline (10 s on the test
stack), compensates and ends REJECTED with TIMED_OUT; the participant's late answer is ignored and
what it did is undone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from functions.goods.schema import reservations
from localstack.stack import Stack
from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e


@contextmanager
def frozen(stack: Stack, name: str) -> Iterator[None]:
    """The function's processes stopped (SIGSTOP): it accepts connections and never answers."""
    gateway = stack.gateway
    assert gateway is not None
    # Held as a request in flight would be, so the idle reaper cannot scale it to zero now.
    group = gateway.hold(name)
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)
        gateway.release(name)


def history(api: Api, token: str, order_id: str) -> list[str]:
    return [h["event"] for h in api.call("order", "GET", f"/orders/{order_id}/saga", token=token).json()["history"]]


def test_silent_participant_times_out_and_its_late_answer_is_undone(
    api: Api, stack: Stack, customer: Customer
) -> None:
    with frozen(stack, "goods-reserve"):
        placed = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10))
        assert placed.status_code == 202
        order_id = placed.json()["orderId"]
        order = api.settled(customer.token, order_id)
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", "TIMED_OUT")
    events = history(api, customer.token, order_id)
    assert events.count("TIMED_OUT") == 1 and "COMPENSATION_DONE" in events
    # Thawed, goods-reserve answers the command it was holding: too late, so ignored...
    deadline = time.monotonic() + 45
    while "REPLY_IGNORED" not in history(api, customer.token, order_id):
        assert time.monotonic() < deadline, "the late reply never arrived"
        time.sleep(0.2)
    # ...and it reserved nothing (released before it arrived) or gave it back.
    with sa.create_engine(stack.infra.database_url).connect() as tx:
        held = tx.execute(sa.select(reservations).where(reservations.c.saga_id == order_id)).one()
    assert held.state == "RELEASED"
    assert api.account(customer.token, customer.customer_id)["availableCredit"] == "100.00"
