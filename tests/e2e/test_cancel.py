"""Cancelling an order through the whole stack: a CancelOrderSaga over the same order id as its
CreateOrderSaga, the order's semantic lock (CANCEL_PENDING), 409s with the current state, Retry-After
while the order is PENDING, and cancels racing approvals."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from localstack.stack import Stack
from tests.e2e.client import Api, Customer, order_body
from tests.e2e.test_timeouts import frozen

pytestmark = pytest.mark.e2e

APPLE, APPLE_PRICE = 2, 10


def place(api: Api, customer: Customer, quantity: int = 1) -> str:
    placed = api.place_order(customer.token, order_body(customer.customer_id, APPLE, quantity, quantity * APPLE_PRICE))
    assert placed.status_code == 202, placed.text
    return str(placed.json()["orderId"])


def cancel(api: Api, token: str, order_id: str) -> Any:
    return api.call("order", "POST", f"/orders/{order_id}/cancel", token=token)


def wait_final(api: Api, token: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        order = api.call("order", "GET", f"/orders/{order_id}", token=token, params={"wait": 10}).json()
        if order["state"] not in ("PENDING", "CANCEL_PENDING"):
            return dict(order)
    raise AssertionError(f"order {order_id} never ended")


def stock(api: Api, token: str) -> int:
    return int(api.call("goods", "GET", f"/goods/{APPLE}", token=token).json()["stock"])


def credit(api: Api, customer: Customer) -> str:
    return str(api.call("account", "GET", f"/account/{customer.customer_id}", token=customer.token)
               .json()["availableCredit"])


def test_an_approved_order_is_cancelled_and_gives_back_its_credit_and_goods(api: Api, customer: Customer) -> None:
    order_id = place(api, customer, quantity=3)
    assert api.settled(customer.token, order_id)["state"] == "APPROVED"
    stock_before, credit_before = stock(api, customer.token), credit(api, customer)
    accepted = cancel(api, customer.token, order_id)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"orderId": order_id, "state": "CANCEL_PENDING"}
    assert accepted.headers["Location"] == f"/orders/{order_id}"
    assert wait_final(api, customer.token, order_id)["state"] == "CANCELLED"
    assert stock(api, customer.token) == stock_before + 3
    assert credit(api, customer) == "100.00" and credit_before == "70.00"
    sagas = api.call("order", "GET", f"/orders/{order_id}/saga", token=customer.token).json()
    assert (sagas["sagaType"], sagas["state"]) == ("CreateOrderSaga", "COMPLETED")
    [other] = sagas["otherSagas"]
    assert (other["sagaType"], other["state"], other["sagaId"]) == ("CancelOrderSaga", "COMPLETED", order_id)
    assert other["definitionVersion"] == 2
    assert [h["name"] for h in other["history"] if h["event"] == "COMMAND_SENT"] == [
        "return_order_goods", "release_order_credit"]
    again = cancel(api, customer.token, order_id)
    assert again.status_code == 409 and "is CANCELLED" in again.json()["detail"]
    assert "Retry-After" not in again.headers


def test_only_an_approved_order_of_ones_own_can_be_cancelled(api: Api, customer: Customer) -> None:
    rejected = api.place_order(customer.token, order_body(customer.customer_id, APPLE, 1, 999))  # wrong price
    order_id = str(rejected.json()["orderId"])
    assert api.settled(customer.token, order_id)["state"] == "REJECTED"
    refused = cancel(api, customer.token, order_id)
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert "is REJECTED" in refused.json()["detail"]
    assert cancel(api, api.new_customer().token, order_id).status_code == 403
    assert cancel(api, customer.token, "00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_pending_order_answers_409_with_retry_after(api: Api, stack: Stack, customer: Customer) -> None:
    with frozen(stack, "goods-reserve"):  # the CreateOrderSaga waits: the order stays PENDING
        order_id = place(api, customer)
        refused = cancel(api, customer.token, order_id)
        assert refused.status_code == 409, refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and "is PENDING" in refused.json()["detail"]
    api.settled(customer.token, order_id)


def _place_and_cancel(api: Api, customer: Customer) -> tuple[str, list[int]]:
    """An order and, at once, its cancel, retried as Retry-After says while the order is PENDING."""
    order_id, answers = place(api, customer), []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = cancel(api, customer.token, order_id)
        answers.append(answer.status_code)
        if answer.status_code != 409 or "Retry-After" not in answer.headers:
            break
        time.sleep(min(int(answer.headers["Retry-After"]), 2) / 10)  # the order usually decides within ms
    return order_id, answers


def test_cancels_racing_approvals_end_every_order_approved_or_cancelled(api: Api) -> None:
    customers = [api.new_customer() for _ in range(4)]  # 5 orders of 10.00 each: within 100.00 of credit
    with ThreadPoolExecutor(max_workers=20) as pool:
        raced = list(pool.map(lambda n: (customers[n % 4], *_place_and_cancel(api, customers[n % 4])), range(20)))
    ends = {}
    for customer, order_id, answers in raced:
        assert answers[-1] == 202, f"{order_id}: {answers}"
        assert set(answers[:-1]) <= {409}, "only 'still PENDING' before the cancel was accepted"
        ends[order_id] = wait_final(api, customer.token, order_id)["state"]
    assert set(ends.values()) == {"CANCELLED"}, ends
    for customer in customers:  # every cancel gave its credit back
        assert credit(api, customer) == "100.00"
